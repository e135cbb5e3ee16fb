"""A job's metrics events as plottable series: pure, so it is table-tested apart from I/O.

OpenAI's metrics events (``type: "metrics"``) carry ``data.step`` and the losses and
accuracies; the gateway gives every provider's in that shape. A long series is cut to
at most ``buckets`` buckets on the server, and each bucket keeps its minimum and its
maximum (in step order): a spike or a dip is never averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

import msgspec

# What is plotted, in the order the page shows it; every other number is ignored.
SERIES = (
    "train_loss",
    "valid_loss",
    "full_valid_loss",
    "train_mean_token_accuracy",
    "valid_mean_token_accuracy",
    "full_valid_mean_token_accuracy",
)

Point = tuple[int, float]


class Data(msgspec.Struct, gc=False):
    """What is read of an event's ``data``: the step and the series, nothing else
    (``Any``: a value of the wrong type is skipped, never a failed page)."""

    step: Any = None
    train_loss: Any = None
    valid_loss: Any = None
    full_valid_loss: Any = None
    train_mean_token_accuracy: Any = None
    valid_mean_token_accuracy: Any = None
    full_valid_mean_token_accuracy: Any = None


class Event(msgspec.Struct, gc=False):
    id: Any = None
    type: Any = None
    data: Data | None = None


class EventPage(msgspec.Struct, gc=False):
    data: list[Event] = []
    has_more: bool = False


# Decoded straight from a provider's answer: a hundred thousand events without a dict
# for each (the fields of OpenAI's event objects not named above are skipped).
_decoder = msgspec.json.Decoder(EventPage)


def decode_page(raw: bytes) -> EventPage:
    """A page of events as a provider gave it (JSON bytes)."""
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError:  # an odd shape somewhere: read it item by item
        return page_of(msgspec.json.decode(raw))


def page_of(page: Any) -> EventPage:
    """A page of events from plain values (a provider's answer as builtins)."""
    if not isinstance(page, dict):
        return EventPage()
    events = []
    for item in page.get("data") or []:
        if isinstance(item, dict):
            data = item.get("data")
            events.append(
                Event(
                    id=item.get("id"),
                    type=item.get("type"),
                    data=msgspec.convert(data, Data) if isinstance(data, dict) else None,
                )
            )
    return EventPage(data=events, has_more=page.get("has_more") is True)


def collect(events: Iterable[Event]) -> dict[str, dict[int, float]]:
    """Every metrics event's values by series and step (a repeated step: the last seen)."""
    found: list[dict[int, float]] = [{} for _ in SERIES]
    values_of = attrgetter(*SERIES)
    for event in events:
        data = event.data
        if data is None or event.type != "metrics":
            continue
        step = data.step
        if type(step) is not int:
            step = _number(step)
            if step is None:
                continue
        at = int(step)
        for series, value in zip(found, values_of(data), strict=True):
            # The common case first: a plain finite float (a hundred thousand events).
            if type(value) is float and math.isfinite(value):
                series[at] = value
            elif value is not None and (number := _number(value)) is not None:
                series[at] = number
    return {name: series for name, series in zip(SERIES, found, strict=True) if series}


def downsample(points: list[Point], buckets: int) -> list[Point]:
    """``points`` (sorted by step) cut to ``buckets`` buckets, each kept as its minimum
    and maximum in step order (one point where they coincide): at most 2 * buckets."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    if len(points) <= 2 * buckets:
        return list(points)
    values = [value for _, value in points]
    out: list[Point] = []
    size = len(points) / buckets
    for bucket in range(buckets):
        start, end = int(bucket * size), int((bucket + 1) * size)
        if start == end:
            continue
        chunk = values[start:end]
        low = start + chunk.index(min(chunk))
        high = start + chunk.index(max(chunk))
        if low == high:
            out.append(points[low])
        else:
            out.extend((points[min(low, high)], points[max(low, high)]))
    return out


def series_of(events: Iterable[Event], buckets: int) -> dict[str, Any]:
    """The page's answer: per series its (downsampled) points and how many there were."""
    answer: dict[str, Any] = {}
    for name, by_step in collect(events).items():
        points = sorted(by_step.items())
        kept = downsample(points, buckets)
        answer[name] = {
            "total": len(points),
            "downsampled": len(kept) < len(points),
            "points": [[step, value] for step, value in kept],
        }
    return answer


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
