"""Per-step metrics files read streaming and bounded, listed and paged as OpenAI events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from gateway.models import JobEvent
from gateway.provider import PageQuery
from gateway.step_metrics import EventLog, MetricsBlock, StepMetrics, message_of, read_csv

COLUMNS = {"train_loss": "train_loss", "valid_loss": "valid_loss"}


async def _chunks(text: str, size: int = 7) -> AsyncIterator[bytes]:
    raw = text.encode()
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


async def _read(text: str, **kwargs: int) -> StepMetrics | None:
    return await read_csv(
        _chunks(text), step_column="step", columns=COLUMNS, what="results.csv", **kwargs
    )


async def test_read_csv_keeps_openai_keys_and_leaves_empty_cells_out() -> None:
    metrics = await _read("step,train_loss,valid_loss,other\r\n1,0.5,,9\r\n2,0.25,0.75,9\r\n")
    assert metrics is not None
    assert [metrics.data(i) for i in range(len(metrics))] == [
        {"step": 1, "train_loss": 0.5},
        {"step": 2, "train_loss": 0.25, "valid_loss": 0.75},
    ]


async def test_read_csv_without_the_step_column_is_none() -> None:
    assert await _read("epoch,train_loss\n1,0.5\n") is None


async def test_read_csv_skips_bad_rows_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = "step,train_loss\n1,0.5\nx,0.4\n3,nan\n4,abc\n5,0.1\n"
    with caplog.at_level(logging.WARNING):
        metrics = await _read(text)
    assert metrics is not None
    assert [metrics.data(i) for i in range(len(metrics))] == [
        {"step": 1, "train_loss": 0.5},
        {"step": 3},  # NaN is no JSON number: left out, not made up
        {"step": 5, "train_loss": 0.1},
    ]
    assert metrics.skipped == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["results.csv line 3: skipped a row that is not numbers"]


async def test_read_csv_is_bounded_to_the_newest_rows() -> None:
    rows = "".join(f"{step},{step / 10}\n" for step in range(1, 1001))
    metrics = await _read("step,train_loss\n" + rows, max_rows=100)
    assert metrics is not None and len(metrics) == 100
    assert metrics.data(0)["step"] == 901 and metrics.first_row == 900


async def test_read_csv_skips_a_line_too_long() -> None:
    text = "step,train_loss\n1,0.5\n2," + "9" * 500 + "\n3,0.3\n"
    metrics = await _read(text, max_line_bytes=100)
    assert metrics is not None
    assert [metrics.data(i)["step"] for i in range(len(metrics))] == [1, 3]


def test_message_of_names_each_metric() -> None:
    assert message_of({"step": 3, "train_loss": 0.5}) == "Step 3: training loss=0.5000"


def _message(name: str, at: int) -> JobEvent:
    return JobEvent(id=name, created_at=at, level="info", message=name)


async def _log() -> EventLog:
    metrics = await _read("step,train_loss\n" + "".join(f"{s},0.{s}\n" for s in range(1, 6)))
    assert metrics is not None
    block = MetricsBlock.of(metrics, 200, "job-1", "results.csv")
    return EventLog([_message("created", 100), _message("done", 200)], [block])


async def test_event_log_is_newest_first_with_the_block_by_its_time() -> None:
    events, has_more = (await _log()).page(PageQuery(limit=100))
    assert not has_more
    assert [e.id for e in events][:1] == ["done"] and events[-1].id == "created"
    assert [e.data["step"] for e in events[1:-1]] == [5, 4, 3, 2, 1]
    assert all(e.type == "metrics" for e in events[1:-1])


async def test_event_log_pages_by_after_with_stable_ids() -> None:
    log = await _log()
    seen: list[str] = []
    after: str | None = None
    while True:
        events, has_more = log.page(PageQuery(limit=2, after=after))
        seen += [e.id for e in events]
        if not has_more:
            break
        after = events[-1].id
    assert seen == [e.id for e in (await _log()).page(PageQuery(limit=100))[0]]
    assert len(seen) == 7 and len(set(seen)) == 7


async def test_event_log_unknown_after_is_an_empty_page() -> None:
    log = await _log()
    assert log.page(PageQuery(limit=5, after="ftevent-gone")) == ([], False)
    first = log.page(PageQuery(limit=100))[0][1].id
    assert log.page(PageQuery(limit=5, after=first[:-1] + "99")) == ([], False)
