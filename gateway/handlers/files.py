"""``/v1/files``: uploads and downloads stream; memory does not grow with file size.

An upload is read part by part. When ``purpose`` comes before the file (as every SDK
sends it), the file part streams straight to the provider. When the file comes first
(``curl -F file=@x -F purpose=...``), it is spooled to a temporary file on disk until
the fields after it are known, so the order a client picks costs disk, not memory.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import AsyncIterator
from typing import IO

import msgspec
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway import keys
from gateway.errors import (
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gateway.handlers.common import (
    answer,
    body_read,
    call_provider,
    page_query,
    path_id,
    provider_for,
    timed,
)
from gateway.handlers.upload_limits import RateFloor, UploadSlots, caller_of
from gateway.provider import FileUpload, Provider

FILE_ID = "file_id"
_CHUNK = 256 * 1024
_MAX_FIELD_BYTES = 64 * 1024
# OpenAI's upload takes purpose and expires_after[anchor|seconds]: a form with many more
# fields is not an upload, and each one costs memory until the file part comes.
_MAX_FIELDS = 16
# Uploads being received now, shared fairly between callers (see upload_limits).
_UPLOAD_SLOTS = web.AppKey("upload_slots", UploadSlots)


class _UploadBody:
    """The multipart body of an upload, with the byte limit enforced while streaming."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.limit = request.app[keys.CONFIG].limits.max_upload_bytes
        self.received = 0
        self.seen = 0  # every byte of the body so far, form fields included: for the rate
        self.floor = RateFloor(request.app[keys.CONFIG].limits)
        self._metrics = request.app[keys.METRICS]
        self._provider = request.get(keys.PROVIDER, "")
        # Set when the limit is passed, so the handler reports it whatever the provider
        # made of the interrupted stream.
        self.failure: GatewayError | None = None

    def count(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self._metrics.add_uploaded(self._provider, len(chunk))
        if self.received > self.limit:
            self.failure = PayloadTooLarge(
                f"File is larger than this gateway's limit of {self.limit} bytes "
                "(limits.max_upload_bytes)",
                param="file",
                code="file_too_large",
            )
            raise self.failure

    async def stream(self, part: BodyPartReader) -> AsyncIterator[bytes]:
        try:
            async for chunk in _part_chunks(self.request, part, _CHUNK, self):
                self.count(chunk)
                yield chunk
        except GatewayError as exc:  # broken, or stalled (limits.client_body_timeout)
            self.failure = exc
            raise


async def _part_chunks(
    request: web.Request, part: BodyPartReader, size: int, body: _UploadBody
) -> AsyncIterator[bytes]:
    """A part's bytes; a broken or unterminated part is a 400, never a short success.

    Each read must come in time to keep the upload's minimum rate (``RateFloor``).
    """
    while True:
        try:
            chunk = await body_read(
                request,
                part.read_chunk(size),
                within=body.floor.wait_allowed(body.seen),
                too_slow=lambda: body.floor.too_slow(body.seen),
            )
        except ValueError as exc:  # aiohttp's word for a broken multipart body
            raise _malformed(exc) from None
        if not chunk:
            if not part.at_eof():
                # The body ended before the part's closing boundary: a truncated upload
                # must not reach the provider as if it were whole.
                raise _malformed(ValueError(f"part '{part.name}' is not terminated"))
            return
        body.seen += len(chunk)
        yield chunk


def _check_encoding(encoding: str | None, request: web.Request | None, param: str) -> None:
    """Refuse a compressed upload: a few hundred KiB of gzip can inflate to gigabytes.

    aiohttp decodes a request's Content-Encoding as it reads, so where the config accepts
    compressed uploads (``limits.accept_compressed_uploads``) every size limit counts the
    decoded bytes. A compressed part inside the form is never accepted.
    """
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return
    if request is not None and request.app[keys.CONFIG].limits.accept_compressed_uploads:
        return
    raise UnsupportedMediaType(
        f"Compressed uploads (Content-Encoding: {encoding.strip()[:32]}) are not accepted: "
        "send the file as it is",
        param=param,
        code="unsupported_content_encoding",
    )


def _malformed(exc: ValueError) -> BadRequest:
    return BadRequest(f"Malformed multipart body: {exc}", param="file", code="invalid_multipart")


async def _next_part(
    request: web.Request, reader: MultipartReader
) -> BodyPartReader | MultipartReader | None:
    try:
        return await body_read(request, reader.next())
    except ValueError as exc:
        raise _malformed(exc) from None
    except HttpProcessingError:  # a part's headers do not parse (control characters, ...)
        raise _malformed(ValueError("a part's headers are not valid")) from None


async def upload_file(request: web.Request) -> web.Response:
    limit = request.app[keys.CONFIG].limits.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + _MAX_FIELD_BYTES:
        raise PayloadTooLarge(
            f"Upload is larger than this gateway's limit of {limit} bytes "
            "(limits.max_upload_bytes)",
            param="file",
            code="file_too_large",
        )
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest(
            "Uploads must be multipart/form-data with a 'file' part and a 'purpose' field",
            param="file",
            code="invalid_content_type",
        )
    _check_encoding(request.headers.get("Content-Encoding"), request, "Content-Encoding")
    with request.app[_UPLOAD_SLOTS].taken(caller_of(request)):
        async with provider_for(request) as provider:
            return await _upload(request, provider, _UploadBody(request))


async def _upload(request: web.Request, provider: Provider, body: _UploadBody) -> web.Response:
    try:
        reader = await request.multipart()
    except ValueError as exc:
        raise _malformed(exc) from None
    fields: list[tuple[str, str]] = []
    spool: IO[bytes] | None = None
    try:
        while (part := await _next_part(request, reader)) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("Nested multipart bodies are not accepted", param="file")
            if part.name != "file":
                if len(fields) == _MAX_FIELDS:
                    raise BadRequest(
                        f"Too many form fields: an upload takes a 'file' part and at most "
                        f"{_MAX_FIELDS} fields such as 'purpose'",
                        param="file",
                        code="too_many_parts",
                    )
                fields.append((_field_name(part), await _field_text(request, part, body)))
                continue
            if spool is not None:
                raise BadRequest("Send exactly one 'file' part", param="file", code="invalid_file")
            # aiohttp hands a part's bytes on as sent: a compressed part would be
            # stored compressed, unchecked. Refused whatever the config says.
            _check_encoding(part.headers.get("Content-Encoding"), None, "file")
            filename = part.filename or "upload.jsonl"
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            purpose = _purpose(fields)
            if purpose is not None:
                # The common order: stream the file straight through.
                upload = _file_upload(filename, content_type, purpose, fields, body.stream(part))
                return await _send(request, provider, upload, body, reader)
            spool = await _spool(part, body)
            spooled_name, spooled_type = filename, content_type
        if spool is None:
            raise BadRequest(
                "Missing required parameter: 'file'", param="file", code="missing_file"
            )
        purpose = _purpose(fields)
        if purpose is None:
            raise BadRequest("Missing required parameter: 'purpose'", param="purpose")
        upload = _file_upload(spooled_name, spooled_type, purpose, fields, _read_spool(spool))
        return await _send(request, provider, upload, body, None)
    finally:
        if spool is not None:
            spool.close()


async def _send(
    request: web.Request,
    provider: Provider,
    upload: FileUpload,
    body: _UploadBody,
    reader: MultipartReader | None,
) -> web.Response:
    try:
        result = await timed(request, provider.upload_file(upload))
    except Exception:
        if body.failure is not None:
            raise body.failure from None
        raise
    if reader is not None:
        # Fields after the file arrived too late to go with it: undo the upload rather
        # than drop them silently.
        trailing = await _trailing_fields(request, reader, body)
        if trailing:
            uploaded_id = _id_of(result)
            if uploaded_id is not None:
                await timed(request, provider.delete_file(uploaded_id))
            raise BadRequest(
                f"Form field '{trailing[0]}' came after the file: send form fields before "
                "the 'file' part",
                param=trailing[0],
                code="field_after_file",
            )
    return answer(result)


async def _trailing_fields(
    request: web.Request, reader: MultipartReader, body: _UploadBody
) -> list[str]:
    names: list[str] = []
    while (part := await _next_part(request, reader)) is not None:
        if isinstance(part, BodyPartReader):
            names.append(part.name or "(unnamed)")
            async for _ in _part_chunks(request, part, _CHUNK, body):
                pass  # read and dropped, each read bounded by the body timeout
        else:
            names.append("(nested)")
            await body_read(request, part.release())
    return names


def _id_of(result: object) -> str | None:
    if isinstance(result, msgspec.Raw):
        decoded = msgspec.json.decode(result)
        value = decoded.get("id") if isinstance(decoded, dict) else None
    else:
        value = getattr(result, "id", None)
    return value if isinstance(value, str) else None


def _file_upload(
    filename: str,
    content_type: str,
    purpose: str,
    fields: list[tuple[str, str]],
    chunks: AsyncIterator[bytes],
) -> FileUpload:
    extra = [(name, value) for name, value in fields if name != "purpose"]
    return FileUpload(filename, purpose, chunks, content_type, extra)


def _purpose(fields: list[tuple[str, str]]) -> str | None:
    for name, value in fields:
        if name == "purpose":
            if not value:
                raise BadRequest("'purpose' must not be empty", param="purpose")
            return value
    return None


# Field names are forwarded in the provider's multipart headers, which carry only these
# as they are (OpenAI's are purpose and expires_after[anchor|seconds]).
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]{1,128}")


def _field_name(part: BodyPartReader) -> str:
    name = part.name or ""
    if not _FIELD_NAME.fullmatch(name):
        raise BadRequest(
            f"Form field name {name[:64]!r} is not one an upload takes: use ASCII letters, "
            "digits and _ . [ ] -",
            param="file",
            code="invalid_field_name",
        )
    return name


async def _field_text(request: web.Request, part: BodyPartReader, body: _UploadBody) -> str:
    data = bytearray()
    async for chunk in _part_chunks(request, part, 8192, body):
        data += chunk
        if len(data) > _MAX_FIELD_BYTES:
            raise BadRequest(f"Form field '{part.name}' is too long", param=part.name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"Form field '{part.name}' is not UTF-8 text", param=part.name) from None


async def _spool(part: BodyPartReader, body: _UploadBody) -> IO[bytes]:
    spool = tempfile.TemporaryFile(prefix="ftg-upload-")  # noqa: SIM115 - closed by caller
    try:
        async for chunk in body.stream(part):
            await asyncio.to_thread(spool.write, chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


async def _read_spool(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(spool.read, _CHUNK):
        yield chunk


async def list_files(request: web.Request) -> web.Response:
    query = page_query(request, default_limit=10_000, with_order=True)
    return await call_provider(request, lambda p: p.list_files(query))


async def retrieve_file(request: web.Request) -> web.Response:
    file_id = path_id(request, FILE_ID)
    return await call_provider(request, lambda p: p.retrieve_file(file_id))


async def delete_file(request: web.Request) -> web.Response:
    file_id = path_id(request, FILE_ID)
    return await call_provider(request, lambda p: p.delete_file(file_id))


async def file_content(request: web.Request) -> web.StreamResponse:
    file_id = path_id(request, FILE_ID)
    async with provider_for(request) as provider:
        download = await timed(request, provider.file_content(file_id))
        try:
            response = web.StreamResponse(headers={"Content-Type": download.content_type})
            if download.size is not None:
                response.content_length = download.size
            await response.prepare(request)
            request[keys.STREAM_STARTED] = True
            async for chunk in download.chunks:
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            if download.release is not None:
                await download.release()


def add_routes(app: web.Application) -> None:
    app[_UPLOAD_SLOTS] = UploadSlots(app[keys.CONFIG].limits)
    item = "/v1/files/{" + FILE_ID + "}"
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get(item, retrieve_file)
    app.router.add_delete(item, delete_file)
    app.router.add_get(item + "/content", file_content)
