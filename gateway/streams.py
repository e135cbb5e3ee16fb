"""Byte-stream helpers shared by providers that stage files in object stores."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable


async def rechunk(
    chunks: AsyncIterator[bytes],
    size: int,
    before_piece: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The same bytes in pieces of exactly ``size``, the last one shorter (never empty).

    Object stores want fixed pieces (S3 multipart parts of at least 5 MiB, GCS resumable
    chunks in multiples of 256 KiB) while a client's upload arrives in whatever sizes the
    network gives. Memory is bounded by ``size`` plus one incoming chunk. ``before_piece``
    is awaited once the bytes of a piece are in and before it is made: a writer waits
    there for room, so the copy is made only once it can be sent.
    """
    if size <= 0:
        raise ValueError("size must be positive")
    pending: list[bytes] = []
    held = 0  # below ``size`` between chunks
    async for chunk in chunks:
        if not chunk:
            continue
        pending.append(chunk)
        held += len(chunk)
        while held >= size:
            # Each byte is copied once, into its piece: only the chunk that crosses the
            # boundary is cut, and the pieces are let go before the next one is made, so
            # what is held peaks at one piece plus what fills it.
            if before_piece is not None:
                await before_piece()
            last = pending.pop()
            cut = len(last) - (held - size)
            pending.append(last[:cut])
            piece = b"".join(pending)
            rest = last[cut:]
            pending, held = ([rest], len(rest)) if rest else ([], 0)
            del last
            yield piece
            del piece
    if held:
        if before_piece is not None:
            await before_piece()
        yield b"".join(pending)
