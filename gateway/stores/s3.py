"""One streaming S3 writer and reader, for every plugin that keeps bytes in S3.

``write_multipart`` keeps the store promise: the object is visible only once every chunk
has been written; if the chunks raise (a bad line, a client gone), S3 fails or the write
is cancelled, the multipart upload is aborted (S3 would otherwise keep, and bill, the
parts) and the exception goes on. When the completing call itself gets no answer
(cancelled, connection lost), S3 may have made the object all the same, so it is deleted
too: no object and no open upload is left behind.

With ``checksum`` (``"CRC32"``, say) every part carries S3's checksum of its bytes and S3
refuses a part whose bytes do not match it, then checks the parts again on completion.
That is the integrity check for a client that does not sign payloads with SHA-256, which
costs about twice as much CPU per byte.

The client is an aiobotocore S3 client (``Any``: aiobotocore ships no stubs); botocore
is imported only when a failure needs telling apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

from gateway.stores import cleanup_shielded
from gateway.streams import rechunk

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (but the last)


async def write_multipart(
    client: Any,
    bucket: str,
    key: str,
    chunks: AsyncIterator[bytes],
    *,
    part_size: int = MIN_PART_SIZE,
    parts_in_flight: int = 2,
    on_part: Callable[[int], None] | None = None,
    checksum: str | None = None,
    **create: Any,
) -> int:
    """Stream ``chunks`` into one new object; the bytes written, or nothing on failure.

    ``create`` goes to CreateMultipartUpload (``Metadata``, ``ContentType``). ``on_part``
    is told each part's size once S3 has it. ``checksum`` names S3's checksum algorithm
    for every part (None: none asked for). ``chunks`` is consumed and closed here.
    """
    if checksum is not None:
        create["ChecksumAlgorithm"] = checksum
    pieces: AsyncGenerator[bytes, None] | None = None
    try:
        created = await client.create_multipart_upload(Bucket=bucket, Key=key, **create)
        upload_id: str = created["UploadId"]
        parts = _Parts(client, bucket, key, upload_id, parts_in_flight, on_part, checksum)
        # An async generator (typed as an iterator): closed here, not when collected. A
        # part is cut only once there is room for it in flight, so the parts held are
        # those in flight and the one filling, not one more waiting.
        pieces = cast(
            AsyncGenerator[bytes, None], rechunk(chunks, part_size, before_piece=parts.make_room)
        )
        try:
            size = await parts.send(pieces)
        except BaseException:
            await cleanup_shielded("S3", _abort(client, bucket, key, upload_id, delete=False))
            raise
        await _complete(client, bucket, key, upload_id, parts.done)
        return size
    finally:
        if pieces is not None:
            await pieces.aclose()
        await aclose(chunks)


class _Parts:
    """The parts of one multipart upload: sent a few at a time, collected in order."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        upload_id: str,
        parts_in_flight: int,
        on_part: Callable[[int], None] | None,
        checksum: str | None,
    ) -> None:
        self._client = client
        self._where = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
        if checksum is not None:
            self._where["ChecksumAlgorithm"] = checksum
        self._checksum = checksum
        self._limit = parts_in_flight
        self._on_part = on_part
        self._in_flight: list[asyncio.Task[dict[str, Any]]] = []  # oldest first
        self.done: list[dict[str, Any]] = []

    async def make_room(self) -> None:
        if len(self._in_flight) >= self._limit:
            self.done.append(await self._in_flight.pop(0))  # a failed part fails it all now

    async def send(self, pieces: AsyncIterator[bytes]) -> int:
        """Every piece as a part; the bytes sent. Parts still in flight on failure are
        cancelled (and awaited) before the failure goes on."""
        size = number = 0
        try:
            async for piece in pieces:
                await self.make_room()
                number += 1
                size += len(piece)
                self._in_flight.append(asyncio.ensure_future(self._put(number, piece)))
                del piece  # held by its task alone
            if number == 0:  # S3 completes no upload without a part
                self._in_flight.append(asyncio.ensure_future(self._put(1, b"")))
            self.done.extend(await asyncio.gather(*self._in_flight))
            self._in_flight.clear()
        except BaseException:
            for task in self._in_flight:
                task.cancel()
            # Every outcome collected, so none is reported as never retrieved.
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            raise
        return size

    async def _put(self, number: int, body: bytes) -> dict[str, Any]:
        answer = await self._client.upload_part(PartNumber=number, Body=body, **self._where)
        if self._on_part is not None:
            self._on_part(len(body))
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if self._checksum is not None:
            # Completion names each part's checksum, so S3 checks the whole again.
            field = f"Checksum{self._checksum}"
            part[field] = answer[field]
        return part


async def _complete(
    client: Any, bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]]
) -> None:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    try:
        await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except ClientError:
        # S3 answered: it made no object, but the upload stays open.
        await cleanup_shielded("S3", _abort(client, bucket, key, upload_id, delete=False))
        raise
    except BaseException:
        # No answer (cancelled, connection lost, timeout): S3 may have made the object.
        await cleanup_shielded("S3", _abort(client, bucket, key, upload_id, delete=True))
        raise


async def _abort(client: Any, bucket: str, key: str, upload_id: str, *, delete: bool) -> None:
    from botocore.exceptions import ClientError

    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if error_code(exc) != "NoSuchUpload":  # completed after all: deleted below
            raise
    if delete:
        await client.delete_object(Bucket=bucket, Key=key)


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code") or "")


async def aclose(iterator: AsyncIterator[bytes]) -> None:
    """Close an async generator left part-read (a failed write), so its source is released."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def read_chunks(body: Any, chunk_size: int = MiB) -> AsyncIterator[bytes]:
    """An S3 object's body as chunks; closes the connection when done or abandoned."""
    try:
        async for chunk in body.iter_chunks(chunk_size):
            yield chunk
    finally:
        body.close()
