"""Per-step training metrics read from a provider's metrics file, as OpenAI metrics events.

Providers that keep step metrics write them as CSV files (Azure's results file, Bedrock's
``step_wise_training_metrics.csv``). :func:`read_csv` reads such a file as it streams,
holding each row as a few numbers and at most ``max_rows`` rows (the newest, since
events are listed newest first and a long job has hundreds of thousands of steps).
:class:`EventLog` lists them among a job's other events without building an object per
row, and pages them OpenAI's way: newest first, ``after`` the id of the last event seen.

Only OpenAI's keys are given (``step``, ``train_loss``, ``train_mean_token_accuracy``,
``valid_loss``, ``valid_mean_token_accuracy``, ``full_valid_loss``,
``full_valid_mean_token_accuracy``); a cell that is empty, or not a finite number, is
left out of its event, never made up. A row that cannot be read is skipped and logged
(file and line): metrics are a side channel, and one bad row upstream must not make the
job's event list a 502.
"""

from __future__ import annotations

import csv
import logging
import math
from array import array
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.ids import stable_id
from gateway.models import JobEvent
from gateway.provider import PageQuery

log = logging.getLogger(__name__)

METRIC_KEYS = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
MAX_ROWS = 200_000  # per file: ~ 60 bytes a row, so a job's metrics stay near 12 MB
MAX_LINE_BYTES = 64 * 1024
_MISSING = math.nan
_LABELS = {
    "train_loss": "training loss",
    "train_mean_token_accuracy": "training accuracy",
    "valid_loss": "validation loss",
    "valid_mean_token_accuracy": "validation accuracy",
    "full_valid_loss": "full validation loss",
    "full_valid_mean_token_accuracy": "full validation accuracy",
}


@dataclass(slots=True)
class StepMetrics:
    """The rows of one metrics file: ``rows[i]`` is file row ``first_row + i``."""

    keys: tuple[str, ...]
    steps: array[int] = field(default_factory=lambda: array("q"))
    values: array[float] = field(default_factory=lambda: array("d"))  # len(keys) per row
    first_row: int = 0
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.steps)

    def data(self, index: int) -> dict[str, float | int]:
        width = len(self.keys)
        answer: dict[str, float | int] = {"step": self.steps[index]}
        for offset, key in enumerate(self.keys):
            value = self.values[index * width + offset]
            if not math.isnan(value):
                answer[key] = value
        return answer

    def _append(self, step: int, row: Sequence[float]) -> None:
        self.steps.append(step)
        self.values.extend(row)

    def _trim(self, keep: int) -> None:
        drop = len(self.steps) - keep
        if drop > 0:
            del self.steps[:drop]
            del self.values[: drop * len(self.keys)]
            self.first_row += drop


async def read_csv(
    chunks: AsyncIterator[bytes],
    *,
    step_column: str,
    columns: Mapping[str, str],
    what: str,
    max_rows: int = MAX_ROWS,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> StepMetrics | None:
    """The rows of the CSV ``chunks``: ``step_column`` and each of ``columns`` (CSV name
    to OpenAI key) that the header has. None when the file has no ``step_column``.
    ``what`` names the file in the warnings."""
    header: dict[str, int] | None = None
    metrics: StepMetrics | None = None
    wanted: list[tuple[int, str]] = []
    line_number = 0
    async for line in _lines(chunks, max_line_bytes, what):
        line_number += 1
        if line is None:
            _skip(metrics, what, line_number, "a line longer than the gateway reads")
            continue
        cells = _cells(line)
        if header is None:
            header = {name.strip(): index for index, name in enumerate(cells)}
            if step_column not in header:
                log.warning("%s has no %r column; its metrics are not read", what, step_column)
                return None
            wanted = [(header[name], key) for name, key in columns.items() if name in header]
            metrics = StepMetrics(keys=tuple(key for _, key in wanted))
            continue
        if not cells or cells == [""]:
            continue
        assert metrics is not None
        try:
            step = int(cells[header[step_column]])
            row = [_number(cells[index]) if index < len(cells) else _MISSING for index, _ in wanted]
        except (ValueError, IndexError):
            _skip(metrics, what, line_number, "a row that is not numbers")
            continue
        metrics._append(step, row)
        if len(metrics) >= 2 * max_rows:
            metrics._trim(max_rows)
    if metrics is not None:
        if len(metrics) > max_rows:
            log.warning("%s has more than %d rows; only the newest are kept", what, max_rows)
        metrics._trim(max_rows)
    return metrics


def _skip(metrics: StepMetrics | None, what: str, line: int, problem: str) -> None:
    if metrics is not None:
        metrics.skipped += 1
        if metrics.skipped > 1:
            return  # one warning a file: a broken file must not flood the log
    log.warning("%s line %d: skipped %s", what, line, problem)


def _number(cell: str) -> float:
    cell = cell.strip()
    if not cell:
        return _MISSING
    value = float(cell)
    return value if math.isfinite(value) else _MISSING  # JSON has no NaN or infinity


def _cells(line: str) -> list[str]:
    return next(csv.reader([line]), [])


async def _lines(
    chunks: AsyncIterator[bytes], max_line_bytes: int, what: str
) -> AsyncIterator[str | None]:
    """The decoded lines of ``chunks``; None in place of a line too long to hold."""
    pending = b""
    too_long = False
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            if too_long:
                too_long = False
                yield None
                continue
            yield raw.decode("utf-8", "replace").rstrip("\r")
        if len(pending) > max_line_bytes:
            pending, too_long = b"", True
    if too_long:
        yield None
    elif pending.strip():
        yield pending.decode("utf-8", "replace").rstrip("\r")


def message_of(data: Mapping[str, float | int]) -> str:
    shown = ", ".join(f"{_LABELS[key]}={data[key]:.4f}" for key in METRIC_KEYS if key in data)
    return f"Step {data['step']}: {shown}" if shown else f"Step {data['step']}"


@dataclass(slots=True)
class MetricsBlock:
    """One file's rows as metrics events, all at ``created_at`` (the file's time: the
    files give no time per step), with ids derived from the job, the file and the row."""

    metrics: StepMetrics
    created_at: int
    id_base: str  # a stable_id; the row number follows it

    @classmethod
    def of(cls, metrics: StepMetrics, created_at: int, *parts: str) -> MetricsBlock:
        return cls(metrics, created_at, stable_id("ftevent-", *parts) + "-")

    def __len__(self) -> int:
        return len(self.metrics)

    def event(self, index: int) -> JobEvent:
        """Row ``index`` counted from the newest."""
        position = len(self.metrics) - 1 - index
        data = self.metrics.data(position)
        return JobEvent(
            id=f"{self.id_base}{self.metrics.first_row + position}",
            created_at=self.created_at,
            level="info",
            message=message_of(data),
            type="metrics",
            data=dict(data),
        )

    def index_of(self, event_id: str) -> int | None:
        if not event_id.startswith(self.id_base):
            return None
        try:
            row = int(event_id[len(self.id_base) :])
        except ValueError:
            return None
        position = row - self.metrics.first_row
        if not 0 <= position < len(self.metrics):
            return None
        return len(self.metrics) - 1 - position


class EventLog:
    """A job's events newest first: ``messages`` (any order) and the metrics blocks,
    each block placed by its time, just before (older than) messages of the same second.
    Blocks are listed in the order given when their times tie, so give the newer first.
    """

    def __init__(self, messages: Sequence[JobEvent], blocks: Sequence[MetricsBlock]) -> None:
        ordered = sorted(messages, key=lambda e: e.created_at, reverse=True)
        self._parts: list[list[JobEvent] | MetricsBlock] = []
        rest = list(ordered)
        for block in sorted(blocks, key=lambda b: b.created_at, reverse=True):
            newer = [e for e in rest if e.created_at >= block.created_at]
            rest = rest[len(newer) :]
            self._parts.extend([newer, block])
        self._parts.append(rest)
        self._ids = {e.id: e for e in messages}

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)

    def _events(self, start: int) -> Iterator[JobEvent]:
        for part in self._parts:
            if start >= len(part):
                start -= len(part)
                continue
            if isinstance(part, MetricsBlock):
                for index in range(start, len(part)):
                    yield part.event(index)
            else:
                yield from part[start:]
            start = 0

    def _index_of(self, event_id: str) -> int | None:
        offset = 0
        for part in self._parts:
            if isinstance(part, MetricsBlock):
                found = part.index_of(event_id)
                if found is not None:
                    return offset + found
            elif event_id in self._ids:
                for index, event in enumerate(part):
                    if event.id == event_id:
                        return offset + index
            offset += len(part)
        return None

    def page(self, query: PageQuery) -> tuple[list[JobEvent], bool]:
        """OpenAI's paging: the events after ``query.after`` (from the newest when None),
        at most ``query.limit``, and whether more follow. An unknown ``after`` is an empty
        page, as ``gateway.paging.page_of`` answers."""
        start = 0
        if query.after is not None:
            found = self._index_of(query.after)
            if found is None:
                return [], False
            start = found + 1
        chosen: list[JobEvent] = []
        for event in self._events(start):
            if len(chosen) == query.limit:
                return chosen, True
            chosen.append(event)
        return chosen, False
