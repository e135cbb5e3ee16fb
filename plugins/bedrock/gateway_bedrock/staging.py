"""An upload written once as it came and once in Bedrock's conversation format, in one pass.

Every line is checked at upload anyway; converting it in the same pass costs an encode,
where converting at job create costs reading the whole file back from S3 and decoding
every line again (a third of an upload's CPU, measured: docs/benchmarks.md). So while
the original streams into S3, its lines in the ``bedrock-conversation-2024`` format (Nova
and the other conversational models) stream into the staged object that job create
would otherwise write, under the same key, and job create finds it there.

Only that format is made at upload: each further copy costs another multipart writer's
memory and another encode, for models (Claude 3 Haiku, the single-turn ones) that
convert at job create as before. A file that cannot be trained in the conversation
format (a line in another Bedrock format) drops its copy, and job create says why with
the model's name, as it did. A failed copy never fails the upload: the original is what
the user asked for, and the copy can still be made later. A failed upload leaves
neither object behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from gateway.jsonl import LINE_ERRORS
from gateway.stores import cleanup_shielded
from gateway_bedrock import s3
from gateway_bedrock.formats import LineFormat, check_line, convert_line

log = logging.getLogger(__name__)

STAGED_AT_UPLOAD = LineFormat.CONVERSATION


class ConversationCopy:
    """The upload's line check (``gateway.jsonl.checked``), keeping each line's conversion
    while every line so far has one."""

    def __init__(self) -> None:
        self.converting = True
        self._lines: list[bytes] = []

    def __call__(self, raw: bytes) -> None:
        if self.converting:
            try:
                self._lines.append(convert_line(raw, STAGED_AT_UPLOAD, model=""))
                return
            except LINE_ERRORS:
                self.converting = False
                self._lines = []
        check_line(raw)  # the upload's own verdict (and its message) for every line

    def take(self) -> bytes:
        """The conversions since the last call, newline-terminated ("" for none)."""
        if not self._lines:
            return b""
        self._lines.append(b"")
        out = b"\n".join(self._lines)
        self._lines = []
        return out


# Told apart from every conversion by identity: a chunk of the copy is never empty.
DROPPED = bytes(1)


class _Dropped(Exception):
    """The copy is given up (the file is not all convertible): its upload is aborted."""


async def write_both(
    client: Any,
    bucket: str,
    key: str,
    staged_key: str,
    checked: AsyncIterator[bytes],
    copy: ConversationCopy,
    metadata: dict[str, str],
) -> int:
    """Stream ``checked`` into ``key`` and ``copy``'s conversions into ``staged_key``;
    the original's size. One part of each in flight: as many as one writer had."""
    # Conversions for the copy, then None at the end or DROPPED to give it up.
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)

    async def converted() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            if chunk is DROPPED:
                raise _Dropped
            yield chunk

    staged = asyncio.ensure_future(
        s3.write_multipart(client, bucket, staged_key, converted(), parts_in_flight=1)
    )

    async def hand_on(chunk: bytes | None) -> None:
        """Give the copy ``chunk`` unless it has stopped (given up, or failed)."""
        if staged.done():
            return
        put = asyncio.ensure_future(queue.put(chunk))
        await asyncio.wait({put, staged}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()

    async def original() -> AsyncIterator[bytes]:
        async for chunk in checked:
            yield chunk
            if not copy.converting:
                await hand_on(DROPPED)
            elif out := copy.take():
                await hand_on(out)
        # checked() has passed every line by now (it raises after the last chunk).
        if copy.converting and (out := copy.take()):
            await hand_on(out)
        await hand_on(None if copy.converting else DROPPED)
        # The copy completes before the original's last part is sent: a process killed
        # between the two leaves at most a copy no file names, never a whole file that
        # no answer and no record speak of (managed mode could not clean that up).
        await asyncio.wait({staged})

    try:
        size = await s3.write_multipart(
            client, bucket, key, original(), metadata=metadata, parts_in_flight=1
        )
    except BaseException:
        staged.cancel()
        await asyncio.gather(staged, return_exceptions=True)
        if staged.done() and not staged.cancelled() and staged.exception() is None:
            # The copy was complete before the original failed: it goes too.
            await cleanup_shielded("S3", s3.delete_keys(client, bucket, [staged_key]))
        raise
    await _settle(staged, staged_key)
    return size


async def _settle(staged: asyncio.Future[int], staged_key: str) -> None:
    try:
        await staged
    except _Dropped:
        pass  # not convertible as a whole: job create converts, or says why
    except Exception as exc:  # the upload stands; job create makes the copy
        log.warning("Bedrock: the conversation copy %s was not written: %r", staged_key, exc)
