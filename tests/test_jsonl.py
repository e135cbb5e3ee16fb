"""The streaming JSONL reader: line numbers, bounded buffering, problems reported in one go."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Iterable

import msgspec
import pytest

from gateway import jsonl
from gateway.errors import RateLimited
from gateway.jsonl import InvalidLines, LineInvalid, LineSplitter, checked, converted
from gateway.line_budget import LineBudget, LineLimits, use_line_limits
from gateway.streams import rechunk
from gateway.training import check_openai_line, decode_chat_line, message_text


async def stream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def split_everywhere(data: bytes) -> list[list[bytes]]:
    """The data cut at every position, plus one byte at a time."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return [*cuts, [data[i : i + 1] for i in range(len(data))]]


def test_line_splitter_numbers_lines_as_an_editor_does() -> None:
    data = b'{"a":1}\r\n\n  \n{"b":2}\n{"c":3}'
    for pieces in split_everywhere(data):
        splitter = LineSplitter()
        lines = [line for piece in pieces for line in splitter.feed(piece)]
        lines += splitter.finish()
        assert lines == [(1, b'{"a":1}'), (4, b'{"b":2}'), (5, b'{"c":3}')], pieces


def _limited(max_line_bytes: int, budget: int) -> contextvars.Context:
    """A context whose line limits are these (as the middleware sets them per request)."""
    context = contextvars.copy_context()
    context.run(use_line_limits, LineLimits(max_line_bytes, LineBudget(budget)))
    return context


def test_line_splitter_refuses_a_line_without_end() -> None:
    def feed_forever() -> None:
        splitter = LineSplitter(param="training_file", what="training file")
        splitter.feed(b"ok\n")
        for _ in range(5):
            splitter.feed(b"xxxx")

    with pytest.raises(InvalidLines) as caught:
        _limited(10, 1000).run(feed_forever)
    assert caught.value.param == "training_file"
    assert caught.value.problems == [(2, "longer than 10 bytes (limits.max_line_bytes)")]


def test_partial_lines_draw_on_one_budget_and_give_it_back() -> None:
    budget = LineBudget(100)
    context = contextvars.copy_context()
    context.run(use_line_limits, LineLimits(1000, budget))
    first = context.run(LineSplitter)
    second = context.run(LineSplitter)
    first.feed(b"x" * 20)  # a partial line of 20 bytes, held three times over
    assert budget.held == 60
    with pytest.raises(RateLimited) as caught:
        second.feed(b"y" * 20)  # 60 more would pass the 100
    assert caught.value.code == "line_buffer_full"
    assert budget.held == 60
    assert first.feed(b"\n") == [(1, b"x" * 20)]
    first.feed(b"")  # the line was dealt with: only the (empty) partial is held now
    assert budget.held == 0
    third = context.run(LineSplitter)  # a refused upload ends; a new one gets budget
    third.feed(b"z" * 20)
    assert budget.held == 60
    for splitter in (first, second, third):
        splitter.close()
    assert budget.held == 0


async def test_checked_passes_bytes_through_unchanged() -> None:
    data = b'{"messages":[{"role":"user","content":"hi"}]}\n' * 3
    pieces = [data[:10], data[10:70], data[70:]]
    assert await collect(checked(stream(pieces), check_openai_line, param="file")) == data


async def test_checked_reports_each_bad_line_with_its_number() -> None:
    good = b'{"messages":[{"role":"user","content":"hi"}]}'
    data = b"\n".join([good, b"{not json", good, b'{"messages":[{"role":"robot"}]}', good])
    yielded = []
    with pytest.raises(InvalidLines) as caught:
        async for chunk in checked(stream([data]), check_openai_line, param="file"):
            yielded.append(chunk)
    assert [number for number, _ in caught.value.problems] == [2, 4]
    assert "not valid JSON" in caught.value.problems[0][1]
    assert "messages[0].role" in caught.value.problems[1][1]
    assert caught.value.status == 400 and caught.value.param == "file"
    assert "line 2:" in caught.value.message and "line 4:" in caught.value.message
    assert yielded == []  # nothing handed on once a bad line is seen in the chunk


async def test_checked_stops_reading_after_enough_problems() -> None:
    read = 0

    async def endless_garbage() -> AsyncIterator[bytes]:
        nonlocal read
        while True:
            read += 1
            yield b"nope\n"

    with pytest.raises(InvalidLines) as caught:
        await collect(checked(endless_garbage(), check_openai_line, param="file"))
    assert len(caught.value.problems) == jsonl.MAX_REPORTED_LINES
    assert read == jsonl.MAX_REPORTED_LINES
    assert "possibly more" in caught.value.message


async def test_checked_refuses_an_empty_file() -> None:
    with pytest.raises(InvalidLines, match="no lines"):
        await collect(checked(stream([b"\n\n"]), check_openai_line, param="file"))


async def test_converted_turns_every_line_in_order() -> None:
    data = b"1\n2\r\n\n3"
    for pieces in split_everywhere(data):
        out = await collect(converted(stream(pieces), lambda line: line * 2, param="file"))
        assert out == b"11\n22\n33\n"


async def test_converted_yields_nothing_after_a_bad_line() -> None:
    def convert(line: bytes) -> bytes:
        if line == b"bad":
            raise LineInvalid("cannot take this")
        return line

    yielded = []
    with pytest.raises(InvalidLines) as caught:
        async for chunk in converted(
            stream([b"a\n", b"bad\nb\n", b"c\n"]), convert, param="training_file"
        ):
            yielded.append(chunk)
    assert yielded == [b"a\n"]
    assert caught.value.problems == [(2, "cannot take this")]
    assert caught.value.param == "training_file"


async def test_rechunk_gives_exact_pieces_whatever_came_in() -> None:
    data = bytes(range(256)) * 5
    for sizes in ([1] * 50, [7, 300, 1, 900], [len(data)]):
        pieces, start = [], 0
        for size in sizes:
            pieces.append(data[start : start + size])
            start += size
        pieces.append(data[start:])
        out = [piece async for piece in rechunk(stream(pieces), 100)]
        assert b"".join(out) == data
        assert [len(piece) for piece in out] == [100] * 12 + [80]
    assert [piece async for piece in rechunk(stream([b"", b""]), 100)] == []


def test_message_text_refuses_what_it_cannot_carry() -> None:
    line = decode_chat_line(
        b'{"messages":[{"role":"user","content":[{"type":"text","text":"a"},'
        b'{"type":"text","text":"b"}]},{"role":"user","content":[{"type":"image_url",'
        b'"image_url":{"url":"data:image/png;base64,AAAA"}}]},'
        b'{"role":"assistant","tool_calls":[{"id":"x"}]}]}'
    )
    assert message_text(line.messages[0], "messages[0]") == "ab"
    with pytest.raises(LineInvalid, match=r"messages\[1\]\.content\[0\] is an image"):
        message_text(line.messages[1], "messages[1]")
    with pytest.raises(LineInvalid, match=r"messages\[2\] has a tool call"):
        message_text(line.messages[2], "messages[2]")


@pytest.mark.parametrize(
    ("line", "valid"),
    [
        (b'{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}', True),
        (
            b'{"input":{"messages":[{"role":"user","content":"q"}]},'
            b'"preferred_output":[{"role":"assistant","content":"y"}],'
            b'"non_preferred_output":[{"role":"assistant","content":"n"}]}',
            True,
        ),
        # A chat line whose text happens to name a preference key is still a chat line.
        (b'{"messages":[{"role":"user","content":"preferred_output"}]}', True),
        (b'{"messages":[]}', False),
        (b'{"prompt":"q","completion":"a"}', False),
        (b'{"input":{"messages":[]},"preferred_output":[]}', False),
        (b"[1,2]", False),
    ],
)
def test_check_openai_line_accepts_chat_and_preference_lines(line: bytes, valid: bool) -> None:
    if valid:
        check_openai_line(line)
    else:
        with pytest.raises((msgspec.ValidationError, LineInvalid)):
            check_openai_line(line)
