"""One streaming S3 writer and reader, for every plugin that keeps bytes in S3.

``write_multipart`` keeps the store promise: the object is visible only once every chunk
has been written; if the chunks raise (a bad line, a client gone), S3 fails or the write
is cancelled, the multipart upload is aborted (S3 would otherwise keep, and bill, the
parts) and the exception goes on. When the completing call itself gets no answer
(cancelled, connection lost), S3 may have made the object all the same, so it is deleted
too: no object and no open upload is left behind.

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
    **create: Any,
) -> int:
    """Stream ``chunks`` into one new object; the bytes written, or nothing on failure.

    ``create`` goes to CreateMultipartUpload (``Metadata``, ``ContentType``). ``on_part``
    is told each part's size once S3 has it. ``chunks`` is consumed and closed here.
    """
    # An async generator (typed as an iterator): closed here, not when collected.
    pieces = cast(AsyncGenerator[bytes, None], rechunk(chunks, part_size))
    try:
        created = await client.create_multipart_upload(Bucket=bucket, Key=key, **create)
        upload_id: str = created["UploadId"]
        try:
            parts, size = await _parts(
                client, bucket, key, upload_id, pieces, parts_in_flight, on_part
            )
        except BaseException:
            await cleanup_shielded("S3", _abort(client, bucket, key, upload_id, delete=False))
            raise
        await _complete(client, bucket, key, upload_id, parts)
        return size
    finally:
        await pieces.aclose()
        await aclose(chunks)


async def _parts(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    pieces: AsyncIterator[bytes],
    parts_in_flight: int,
    on_part: Callable[[int], None] | None,
) -> tuple[list[dict[str, Any]], int]:
    async def put(number: int, body: bytes) -> dict[str, Any]:
        answer = await client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        if on_part is not None:
            on_part(len(body))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    in_flight: list[asyncio.Task[dict[str, Any]]] = []  # oldest first
    parts: list[dict[str, Any]] = []
    size = number = 0
    try:
        async for piece in pieces:
            if len(in_flight) >= parts_in_flight:
                parts.append(await in_flight.pop(0))  # a failed part fails the upload now
            number += 1
            size += len(piece)
            in_flight.append(asyncio.ensure_future(put(number, piece)))
        if number == 0:  # S3 completes no upload without a part
            in_flight.append(asyncio.ensure_future(put(1, b"")))
        parts.extend(await asyncio.gather(*in_flight))
        in_flight.clear()
    except BaseException:
        for task in in_flight:
            task.cancel()
        # Every outcome collected, so none is reported as never retrieved.
        await asyncio.gather(*in_flight, return_exceptions=True)
        raise
    return parts, size


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
