"""``GET /metrics``: counters, histograms and gauges in Prometheus' text format.

Written here rather than taken from a client library: the gateway needs a handful of
series, and the text format is a few lines (https://prometheus.io/docs/instrumenting/
exposition_formats/). Labels are bounded by design: a route is the route's template
(``/v1/files/{file_id}``, never the raw path, so ids neither leak nor multiply series),
a provider is a plugin's slug, a status one of a few dozen codes.

Each worker process (``serve --workers N``) counts its own requests: a scrape is
answered by whichever worker the kernel hands the connection to, and says which in
``finetune_gateway_worker_info``.

Plugins report bytes they write to an object store with ``note_staged``; like the
upstream request ids, it finds the current request's metrics through a context variable,
so a plugin needs no reference to the app.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiohttp import web

from gateway import keys

# Seconds: from a cached answer (under a millisecond) to a many-GB upload (minutes).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
UNMATCHED_ROUTE = "(unmatched)"
NO_PROVIDER = ""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Histogram:
    """Observations per bucket (not cumulative; cumulated when rendered), sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs in that bound's bucket (le = "<=").
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


_Labels = tuple[tuple[str, str], ...]


class Metrics:
    """The series of one gateway process."""

    def __init__(self, worker: int = 0) -> None:
        self.worker = worker
        self.requests: dict[_Labels, int] = {}
        self.latency: dict[_Labels, Histogram] = {}
        self.upstream_latency: dict[_Labels, Histogram] = {}
        self.uploaded: dict[_Labels, int] = {}
        self.staged: dict[_Labels, int] = {}
        self.in_flight = 0
        # Renderers of other series (the webhooks'), appended to the page.
        self.extra: list[Callable[[list[str]], None]] = []

    def observe_request(
        self,
        *,
        route: str,
        method: str,
        provider: str,
        status: int,
        seconds: float,
        upstream_seconds: float | None,
    ) -> None:
        counted: _Labels = (
            ("route", route), ("method", method), ("provider", provider), ("status", str(status)),
        )  # fmt: skip
        self.requests[counted] = self.requests.get(counted, 0) + 1
        timed: _Labels = (("route", route), ("method", method), ("provider", provider))
        _histogram(self.latency, timed).observe(seconds)
        if upstream_seconds is not None:
            _histogram(self.upstream_latency, timed).observe(upstream_seconds)

    def add_uploaded(self, provider: str, size: int) -> None:
        labels = (("provider", provider),)
        self.uploaded[labels] = self.uploaded.get(labels, 0) + size

    def add_staged(self, provider: str, size: int) -> None:
        labels = (("provider", provider),)
        self.staged[labels] = self.staged.get(labels, 0) + size

    def render(self) -> str:
        out: list[str] = []
        prefix = "finetune_gateway_"
        _header(out, prefix + "worker_info", "gauge", "The worker process that answered")
        out.append(f'{prefix}worker_info{{worker="{self.worker}",pid="{os.getpid()}"}} 1')
        _counter(out, prefix + "requests_total", "Requests answered", self.requests)
        _histograms(
            out, prefix + "request_duration_seconds", "Time to answer a request", self.latency
        )
        _histograms(
            out,
            prefix + "upstream_duration_seconds",
            "Time spent in provider calls, per request",
            self.upstream_latency,
        )
        _counter(
            out, prefix + "uploaded_bytes_total", "File bytes received from clients", self.uploaded
        )
        _counter(
            out,
            prefix + "staged_bytes_total",
            "Bytes written to a provider's object store (originals and conversions)",
            self.staged,
        )
        _header(out, prefix + "requests_in_flight", "gauge", "Requests being handled now")
        out.append(f"{prefix}requests_in_flight {self.in_flight}")
        _header(out, "process_resident_memory_bytes", "gauge", "Resident memory of this worker")
        out.append(f"process_resident_memory_bytes {_rss_bytes()}")
        for render in self.extra:
            render(out)
        out.append("")
        return "\n".join(out)


def _histogram(series: dict[_Labels, Histogram], labels: _Labels) -> Histogram:
    found = series.get(labels)
    if found is None:
        found = series[labels] = Histogram(LATENCY_BUCKETS)
    return found


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _counter(out: list[str], name: str, help_text: str, series: dict[_Labels, int]) -> None:
    _header(out, name, "counter", help_text)
    out.extend(
        f"{name}{_render_labels(labels)} {value}" for labels, value in sorted(series.items())
    )


def _histograms(
    out: list[str], name: str, help_text: str, series: dict[_Labels, Histogram]
) -> None:
    _header(out, name, "histogram", help_text)
    for labels, histogram in sorted(series.items()):
        cumulative = 0
        for bound, count in zip((*histogram.bounds, None), histogram.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound is None else repr(bound)
            out.append(f"{name}_bucket{_render_labels((*labels, ('le', le)))} {cumulative}")
        out.append(f"{name}_sum{_render_labels(labels)} {histogram.total!r}")
        out.append(f"{name}_count{_render_labels(labels)} {histogram.count}")


def _render_labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels)
    return f"{{{inner}}}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux
        return 0


# The current request's metrics and provider, for plugins' ``note_staged`` (see above).
_current: ContextVar[tuple[Metrics, web.Request] | None] = ContextVar(
    "finetune_gateway_metrics", default=None
)


def track(metrics: Metrics, request: web.Request) -> None:
    """Make ``metrics`` the one ``note_staged`` counts into, for the current request."""
    _current.set((metrics, request))


def note_staged(size: int) -> None:
    """Count ``size`` bytes written to an object store for the current request."""
    current = _current.get()
    if current is not None:
        metrics, request = current
        metrics.add_staged(request.get(keys.PROVIDER, NO_PROVIDER), size)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_of(request: web.Request) -> str:
    """The method, or "other": HTTP lets a client make up methods, and each would be a
    new series."""
    return request.method if request.method in _METHODS else "other"


def route_of(request: web.Request) -> str:
    """The route's template, never the raw path: ids stay out of labels."""
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical
