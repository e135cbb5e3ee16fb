"""What a job's metrics events say about its training: pure, so it is tested without a terminal.

OpenAI's metrics events (``type: "metrics"``) carry ``data.step``, ``data.total_steps``
and the losses; the gateway gives every provider's in that shape. Nothing here is
invented: a value no event gave is ``None`` and shown as unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class Training:
    """Every metrics event seen so far, by step."""

    train_loss: dict[int, float] = field(default_factory=dict)
    valid_loss: dict[int, float] = field(default_factory=dict)
    total_steps: int | None = None
    seen: set[str] = field(default_factory=set)
    # (monotonic time, step) when a step was first seen: the rate behind the ETA.
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None

    def add(self, events: Iterable[Mapping[str, Any]], now: float) -> None:
        """Take a page of events (any order, repeats ignored)."""
        for event in events:
            event_id = event.get("id")
            if event.get("type") != "metrics" or not isinstance(event_id, str):
                continue
            if event_id in self.seen:
                continue
            self.seen.add(event_id)
            data = event.get("data")
            if isinstance(data, Mapping):
                self._add_data(data, now)

    def _add_data(self, data: Mapping[str, Any], now: float) -> None:
        step = _number(data.get("step"))
        if step is None:
            return
        step_number = int(step)
        total = _number(data.get("total_steps"))
        if total is not None:
            self.total_steps = int(total)
        for name, series in (("train_loss", self.train_loss), ("valid_loss", self.valid_loss)):
            value = _number(data.get(name))
            if value is not None:
                series[step_number] = value
        if self.first is None or step_number < self.first[1]:
            self.first = (now, step_number)
        if self.last is None or step_number > self.last[1]:
            self.last = (now, step_number)

    @property
    def step(self) -> int | None:
        return self.last[1] if self.last else None

    def latest(self, series: dict[int, float]) -> float | None:
        return series[max(series)] if series else None

    def eta_seconds(self, estimated_finish: int | None, wall_now: float) -> float | None:
        """Seconds left: the provider's estimate when it gives one, else the step rate."""
        if estimated_finish:
            return max(0.0, estimated_finish - wall_now)
        if not (self.first and self.last and self.total_steps):
            return None
        elapsed, done = self.last[0] - self.first[0], self.last[1] - self.first[1]
        if elapsed <= 0 or done <= 0:
            return None
        return (self.total_steps - self.last[1]) * elapsed / done


def sparkline(values: list[float], width: int = 40) -> str:
    """The values as block characters, the last ``width`` buckets (each its bucket's mean)."""
    if not values:
        return ""
    if len(values) > width:
        size = len(values) / width
        values = [
            sum(bucket) / len(bucket)
            for i in range(width)
            if (bucket := values[int(i * size) : int((i + 1) * size)])
        ]
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in values)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
