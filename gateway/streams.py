"""Byte-stream helpers shared by providers that stage files in object stores."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def rechunk(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The same bytes in pieces of exactly ``size``, the last one shorter (never empty).

    Object stores want fixed pieces (S3 multipart parts of at least 5 MiB, GCS resumable
    chunks in multiples of 256 KiB) while a client's upload arrives in whatever sizes the
    network gives. Memory is bounded by ``size`` plus one incoming chunk.
    """
    if size <= 0:
        raise ValueError("size must be positive")
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        if not chunk:
            continue
        pending.append(chunk)
        held += len(chunk)
        if held < size:
            continue
        data = b"".join(pending)
        start = 0
        while len(data) - start >= size:
            yield data[start : start + size]
            start += size
        rest = data[start:]
        pending, held = ([rest], len(rest)) if rest else ([], 0)
    if held:
        yield b"".join(pending)
