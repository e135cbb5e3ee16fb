"""Streaming JSONL: check or convert a training file line by line, in bounded memory.

Training files can be many GB, so they are never held whole: bytes arrive in chunks, are
split into lines (numbered from 1, as an editor shows them), and each line goes through a
provider's check or converter. A bad line does not stop the read at once: the first
``MAX_REPORTED_LINES`` problems are collected so the user can fix them in one go, then
``InvalidLines`` is raised. Whoever consumes the stream (an S3 multipart upload, a GCS
resumable session) aborts what it wrote when the iterator raises; that is how nothing is
kept from a bad file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec

from gateway.errors import BadRequest
from gateway.line_budget import HELD_PER_BYTE, budget_spent, current_line_limits

MAX_REPORTED_LINES = 10

LineCheck = Callable[[bytes], None]
LineConvert = Callable[[bytes], bytes]


class LineInvalid(ValueError):
    """Raised by a line check or converter; the message says what is wrong with the line."""


class InvalidLines(BadRequest):
    """A training file with bad lines: the first few, each with its line number."""

    def __init__(self, problems: list[tuple[int, str]], *, param: str, what: str) -> None:
        if not problems:
            message = f"The {what} has no lines: a training file needs one JSON object per line"
        else:
            shown = "; ".join(f"line {number}: {text}" for number, text in problems)
            more = " (and possibly more)" if len(problems) >= MAX_REPORTED_LINES else ""
            message = f"The {what} has invalid lines{more}: {shown}"
        super().__init__(message, param=param, code="invalid_training_file")
        self.problems = problems


def describe(exc: Exception) -> str:
    """One line of text for why a line was refused."""
    if isinstance(exc, msgspec.DecodeError):
        return f"not valid JSON ({exc})"
    if isinstance(exc, msgspec.ValidationError):
        return str(exc)
    if isinstance(exc, RecursionError):  # msgspec's own guard, on decoding or encoding
        return "nested too deeply"
    return str(exc) or type(exc).__name__


LINE_ERRORS = (
    LineInvalid,
    msgspec.ValidationError,
    msgspec.DecodeError,
    UnicodeDecodeError,
    RecursionError,
)


class LineSplitter:
    """Splits a byte stream into numbered, non-blank lines, holding at most one partial line.

    A partial line is bounded by ``limits.max_line_bytes`` and draws on the process's
    line budget (``gateway.line_budget``) while held; ``close()`` gives back what is left
    (``checked`` and ``converted`` call it however they end).
    """

    def __init__(self, *, param: str = "file", what: str = "file") -> None:
        # The unfinished last line, as pieces: joined only once its newline arrives, so a
        # long line spread over many chunks is not copied again with every chunk.
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._next_number = 1
        self._param = param
        self._what = what
        self._limits = current_line_limits()
        self._reserved = 0

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        # The lines handed out last time have been dealt with by now: what is held is
        # the partial line alone.
        self._hold(self._partial_size)
        if b"\n" not in chunk:
            self._partial.append(chunk)
            self._partial_size += len(chunk)
            limit = self._limits.max_line_bytes
            if self._partial_size > limit:
                too_long = f"longer than {limit} bytes (limits.max_line_bytes)"
                raise InvalidLines(
                    [(self._next_number, too_long)], param=self._param, what=self._what
                )
            self._hold(self._partial_size)
            return []
        if self._partial:
            # Only the line that ends here is joined (once), not the whole chunk with it:
            # splitting a joined 60 MiB line would copy it again.
            end = chunk.index(b"\n")
            pieces, self._partial = self._partial, []
            pieces.append(chunk[:end])
            first = b"".join(pieces)
            pieces = [first, *chunk[end + 1 :].split(b"\n")]
            del first
        else:
            pieces = chunk.split(b"\n")
        last = pieces.pop()
        self._partial = [last] if last else []
        self._partial_size = len(last)
        return self._number(pieces)

    def finish(self) -> list[tuple[int, bytes]]:
        last = b"".join(self._partial)
        self._partial, self._partial_size = [], 0
        return self._number([last]) if last else []

    def close(self) -> None:
        """Give back the budget still held (idempotent)."""
        self._limits.budget.give(self._reserved)
        self._reserved = 0

    def _hold(self, partial_size: int) -> None:
        """Hold budget for a partial line of ``partial_size`` bytes: three times that, as
        its pieces, the joined line and what decoding it makes are alive at once.

        Only a line spanning chunks is counted: one inside a chunk is the chunk's.
        """
        wanted = HELD_PER_BYTE * partial_size
        if wanted < self._reserved:
            self._limits.budget.give(self._reserved - wanted)
            self._reserved = wanted
        elif wanted > self._reserved:
            if not self._limits.budget.take(wanted - self._reserved):
                raise budget_spent()
            self._reserved = wanted

    def _number(self, pieces: list[bytes]) -> list[tuple[int, bytes]]:
        start = self._next_number
        self._next_number += len(pieces)
        # Hot path (millions of lines): no copies beyond the split; isspace stops at the
        # first visible byte.
        return [
            (start + offset, piece[:-1] if piece.endswith(b"\r") else piece)
            for offset, piece in enumerate(pieces)
            if piece and not piece.isspace()
        ]


class _Problems:
    def __init__(self, param: str, what: str) -> None:
        self.param = param
        self.what = what
        self.found: list[tuple[int, str]] = []
        self.lines = 0

    def add(self, number: int, exc: Exception) -> None:
        self.found.append((number, describe(exc)))
        if len(self.found) >= MAX_REPORTED_LINES:
            raise self.error()

    def error(self) -> InvalidLines:
        return InvalidLines(self.found, param=self.param, what=self.what)

    def raise_if_any(self) -> None:
        if self.found or not self.lines:
            raise self.error()


async def checked(
    chunks: AsyncIterator[bytes], check: LineCheck, *, param: str, what: str = "file"
) -> AsyncIterator[bytes]:
    """The input bytes, unchanged, while every non-blank line passes ``check``.

    Raises ``InvalidLines`` after the last chunk if any line failed (or the file had no
    lines), or as soon as ``MAX_REPORTED_LINES`` lines have failed.
    """
    splitter = LineSplitter(param=param, what=what)
    problems = _Problems(param, what)

    def check_all(lines: list[tuple[int, bytes]]) -> None:
        problems.lines += len(lines)
        for number, line in lines:
            try:
                check(line)
            except LINE_ERRORS as exc:
                problems.add(number, exc)

    try:
        async for chunk in chunks:
            check_all(splitter.feed(chunk))
            if not problems.found:
                yield chunk
        check_all(splitter.finish())
    finally:
        splitter.close()
    problems.raise_if_any()


async def converted(
    chunks: AsyncIterator[bytes], convert: LineConvert, *, param: str, what: str = "file"
) -> AsyncIterator[bytes]:
    """Each non-blank line converted and newline-terminated, about one batch per chunk.

    Stops yielding at the first bad line but reads on to report up to
    ``MAX_REPORTED_LINES`` of them, then raises ``InvalidLines``.
    """
    splitter = LineSplitter(param=param, what=what)
    problems = _Problems(param, what)

    def convert_all(lines: list[tuple[int, bytes]]) -> bytes:
        problems.lines += len(lines)
        out = []
        for number, line in lines:
            try:
                out.append(convert(line))
            except LINE_ERRORS as exc:
                problems.add(number, exc)
        if problems.found or not out:
            return b""
        out.append(b"")
        return b"\n".join(out)

    try:
        async for chunk in chunks:
            batch = convert_all(splitter.feed(chunk))
            if batch:
                yield batch
        batch = convert_all(splitter.finish())
    finally:
        splitter.close()
    problems.raise_if_any()
    if batch:
        yield batch
