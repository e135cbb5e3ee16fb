"""One local-directory writer and reader: the store promise on a file system.

A write goes to a partial file in an ``incoming`` directory (on the same file system) and
is renamed into place once every chunk is written and synced, so the file appears whole
or not at all; if the chunks raise or the write is cancelled, the partial file is
removed. Writes are gathered into batches before a thread writes them (fewer hops off
the event loop), so memory stays at one batch whatever the file's size.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import BinaryIO

WRITE_BATCH = 1024 * 1024
READ_CHUNK = 256 * 1024


async def write_file(final: Path, incoming: Path, chunks: AsyncIterator[bytes]) -> int:
    """Stream ``chunks`` into ``final``, all or nothing; the bytes written."""
    partial = incoming / f"{final.name}.{uuid.uuid4().hex}"
    handle = await asyncio.to_thread(partial.open, "wb")
    written = 0
    try:
        batch = bytearray()
        async for chunk in chunks:
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                written += await asyncio.to_thread(handle.write, bytes(batch))
                batch.clear()
        if batch:
            written += await asyncio.to_thread(handle.write, bytes(batch))
        await asyncio.to_thread(_flush_and_close, handle)
        await asyncio.to_thread(os.replace, partial, final)
    except BaseException:
        handle.close()
        partial.unlink(missing_ok=True)
        raise
    return written


async def open_read(path: Path) -> BinaryIO:
    """The file, open for ``chunks``; ``FileNotFoundError`` if there is none."""
    return await asyncio.to_thread(path.open, "rb")


async def chunks(handle: BinaryIO, chunk_size: int = READ_CHUNK) -> AsyncGenerator[bytes, None]:
    """An open file's bytes, a chunk at a time; closed when done or abandoned."""
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_size):
            yield chunk
    finally:
        handle.close()


def _flush_and_close(handle: BinaryIO) -> None:
    # Durable before anything that points at it (a record, an answer) is written.
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
