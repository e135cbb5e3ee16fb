"""A job's metrics events as plottable series: pure, so it is table-tested apart from I/O.

OpenAI's metrics events (``type: "metrics"``) carry ``data.step`` and the losses and
accuracies; the gateway gives every provider's in that shape. A long series is cut to
at most ``points`` buckets on the server, and each bucket keeps its minimum and its
maximum (in step order): a spike or a dip is never averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

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


def collect(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, float]]:
    """Every metrics event's values by series and step (a repeated step: the last seen)."""
    found: dict[str, dict[int, float]] = {}
    for event in events:
        data = event.get("data")
        if event.get("type") != "metrics" or not isinstance(data, Mapping):
            continue
        step = _number(data.get("step"))
        if step is None:
            continue
        for name in SERIES:
            value = _number(data.get(name))
            if value is not None:
                found.setdefault(name, {})[int(step)] = value
    return found


def downsample(points: list[Point], buckets: int) -> list[Point]:
    """``points`` (sorted by step) cut to ``buckets`` buckets, each kept as its minimum
    and maximum in step order (one point where they coincide): at most 2 * buckets."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    if len(points) <= 2 * buckets:
        return list(points)
    out: list[Point] = []
    size = len(points) / buckets
    for bucket in range(buckets):
        chunk = points[int(bucket * size) : int((bucket + 1) * size)]
        if not chunk:
            continue
        low = min(chunk, key=lambda p: p[1])
        high = max(chunk, key=lambda p: p[1])
        if low is high:
            out.append(low)
        else:
            out.extend(sorted((low, high)))
    return out


def series_of(events: Iterable[Mapping[str, Any]], buckets: int) -> dict[str, Any]:
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
