"""Cloud Storage for the provider: object metadata calls, streamed downloads, chunked uploads.

The small JSON calls (get, list, patch, delete) go through gcloud-aio-storage, which also
decides the API root: ``STORAGE_EMULATOR_HOST`` when set (then, as the library does, no
token is sent), else https://storage.googleapis.com; a virtual key's
``storage_endpoint_url`` replaces both and is sent the token. Two things it cannot do
are done here: its "resumable" upload sends the whole stream in one PUT, and its
download has a 10 s total timeout that would cut any large file short.

``ResumableUpload`` speaks GCS's resumable protocol: one POST opens a session, then PUTs
of ``CHUNK_BYTES`` (a multiple of 256 KiB, as GCS requires of every chunk but the last)
with ``Content-Range: bytes a-b/*``, the last with the total. One PUT is in flight while
the next chunk fills, so memory stays at about two chunks whatever the file size. On
failure the session is cancelled (DELETE) and an object already finalized is deleted:
no partial object is left behind.

Retries follow the request's policy (``gateway.retry``): the JSON calls, downloads and
the POST opening a session (a second session that is never finished never becomes an
object). A chunk's PUT is not repeated blindly: after a lost answer GCS may hold part of
it, which only a status query would tell; the upload fails and is cleaned up instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
from gcloud.aio.storage import Storage
from gcloud.aio.storage.storage import init_api_root

from gateway.answers import convert_answer, decode_answer
from gateway.errors import GatewayError, NotFound, UpstreamError
from gateway.metrics import note_staged
from gateway.provider import Download
from gateway.retry import Failure, retry_after_seconds, with_retries
from gateway.upstream import connection_failure, mapped_errors, request, send
from gateway_vertex import wire
from gateway_vertex.auth import Credentials
from gateway_vertex.errors import google_error

SERVICE = "Cloud Storage"
GRANULE = 256 * 1024
CHUNK_BYTES = 32 * GRANULE  # 8 MiB: Google's suggested minimum for throughput
_ERROR_BODY_LIMIT = 64 * 1024
_SEND_SLICE = 256 * 1024
_object_decoder = msgspec.json.Decoder(wire.GcsObject)
T = TypeVar("T")


class Gcs:
    """One bucket, with the provider's credentials."""

    def __init__(
        self, http: aiohttp.ClientSession, credentials: Credentials, *, bucket: str,
        endpoint_url: str | None,
    ) -> None:  # fmt: skip
        self.http = http
        self.bucket = bucket
        self.credentials = credentials
        self._dev, self.root = init_api_root(endpoint_url, False if endpoint_url else None)
        self._storage = Storage(
            session=http,  # type: ignore[arg-type]  # aiohttp's at run time (see auth)
            token=credentials.token,
            api_root=self.root,
            api_is_dev=self._dev,
        )

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"

    async def headers(self) -> dict[str, str]:
        return {} if self._dev else await self.credentials.headers()

    async def _ready(self) -> None:
        """Fetch the token first, so a refused key is reported as such, not as a GCS error."""
        await self.headers()

    # ---- JSON calls (gcloud-aio-storage) ---------------------------------------------
    async def get(self, name: str) -> wire.GcsObject | None:
        await self._ready()
        try:
            found = await self._json(lambda: self._storage.download_metadata(self.bucket, name))
        except NotFound:
            return None
        return convert_answer(found, wire.GcsObject, provider=SERVICE, what="object")

    async def list(self, prefix: str, page_token: str | None, page_size: int) -> wire.GcsObjectList:
        await self._ready()
        params = {"prefix": prefix, "maxResults": str(page_size)}
        if page_token:
            params["pageToken"] = page_token
        found = await self._json(lambda: self._storage.list_objects(self.bucket, params=params))
        return convert_answer(found, wire.GcsObjectList, provider=SERVICE, what="object list")

    async def patch_metadata(self, name: str, metadata: dict[str, str]) -> wire.GcsObject:
        await self._ready()
        found = await self._json(
            lambda: self._storage.patch_metadata(self.bucket, name, {"metadata": metadata})
        )
        return convert_answer(found, wire.GcsObject, provider=SERVICE, what="object")

    async def delete(self, name: str, *, missing_ok: bool = False) -> bool:
        """True if deleted; False (with ``missing_ok``) if there was nothing to delete."""
        await self._ready()
        try:
            await self._json(lambda: self._storage.delete(self.bucket, name))
        except NotFound:
            if missing_ok:
                return False
            raise
        return True

    async def _json(self, call: Callable[[], Awaitable[T]]) -> T:
        """One gcloud-aio-storage call (each may be repeated), retried, failures mapped."""
        with self._mapped():
            return await with_retries(call, idempotent=True, failure_of=_storage_failure)

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        with mapped_errors(SERVICE):  # connection failures and timeouts
            try:
                yield
            except aiohttp.ClientResponseError as exc:
                # An answer, not a failure to get one: gcloud-aio-storage raises with
                # "<reason>: <body>" as the message.
                body = exc.message.partition(": ")[2]
                raise self.error(exc.status, body.encode()) from None

    def error(self, status: int, body: bytes) -> GatewayError:
        return google_error(
            status,
            body,
            service=SERVICE,
            caller_credentials=self.credentials.caller_credentials,
            secrets=self.credentials.secrets,
        )

    async def raise_for_status(self, response: aiohttp.ClientResponse, *ok: int) -> None:
        if response.status in ok:
            return
        if response.status < 400:  # a 308 where the upload should be complete, say
            raise UpstreamError(
                f"Cloud Storage answered {response.status} where {ok[0]} was expected",
                code="upstream_bad_response",
            )
        raise self.error(response.status, await response.content.read(_ERROR_BODY_LIMIT))

    # ---- streamed download -----------------------------------------------------------
    async def download(self, name: str, chunk_size: int = GRANULE) -> Download:
        url = f"{self.root}/storage/v1/b/{self.bucket}/o/{quote(name, safe='')}"
        response = await send(
            self.http, "GET", url, provider=SERVICE, params={"alt": "media"},
            headers=await self.headers(),
        )  # fmt: skip
        try:
            await self.raise_for_status(response, 200)
        except BaseException:
            response.release()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            with mapped_errors(SERVICE):
                async for chunk in response.content.iter_chunked(chunk_size):
                    yield chunk

        async def release() -> None:
            response.release()

        return Download(
            chunks=chunks(),
            size=None if "Content-Encoding" in response.headers else response.content_length,
            content_type="application/jsonl",
            release=release,
        )

    def resumable(
        self, name: str, metadata: dict[str, str], content_type: str = "application/jsonl"
    ) -> ResumableUpload:
        return ResumableUpload(self, name, metadata, content_type)


class ResumableUpload:
    """One object written with GCS's resumable protocol, in ``CHUNK_BYTES`` chunks."""

    def __init__(self, gcs: Gcs, name: str, metadata: dict[str, str], content_type: str) -> None:
        self.gcs = gcs
        self.name = name
        self.metadata = metadata
        self.content_type = content_type
        self.chunk_bytes = CHUNK_BYTES
        self.result: wire.GcsObject | None = None
        # What came since the last chunk, kept as the pieces it came in: a chunk is sent
        # as its pieces, never joined into one block (a copy of every byte, and blocks of
        # several MiB that the allocator keeps after they are freed).
        self._pending: list[memoryview] = []
        self._pending_size = 0
        self._sent = 0  # bytes handed to GCS so far (in flight included)
        self._session: str | None = None
        self._in_flight: asyncio.Task[None] | None = None

    async def write(self, data: bytes) -> None:
        self._pending.append(memoryview(data))
        self._pending_size += len(data)
        while self._pending_size >= self.chunk_bytes:
            chunk, self._pending = _split(self._pending, self.chunk_bytes)
            self._pending_size -= self.chunk_bytes
            await self._send_chunk(chunk)

    async def _send_chunk(self, chunk: list[memoryview]) -> None:
        """Start sending one full chunk, once the one before it has been sent."""
        await self._wait()
        if self._session is None:
            self._session = await self._open()
        start, self._sent = self._sent, self._sent + self.chunk_bytes
        self._in_flight = asyncio.create_task(self._put_chunk(chunk, start))

    async def finish(self) -> wire.GcsObject | None:
        """Send the rest and finalize; None if nothing was ever written (no object made)."""
        await self._wait()
        if self._session is None and not self._pending_size:
            return None
        if self._session is None:
            self._session = await self._open()
        last, size = self._pending, self._pending_size
        self._pending, self._pending_size = [], 0
        total = self._sent + size
        span = f"{self._sent}-{total - 1}" if size else "*"
        async with self._put(last, f"bytes {span}/{total}") as response:
            await self.gcs.raise_for_status(response, 200, 201)
            self.result = decode_answer(
                await response.read(), _object_decoder, provider=SERVICE, what="object"
            )
        note_staged(size)
        self._sent = total
        return self.result

    async def abort(self) -> None:
        """Leave nothing behind: stop the PUT, cancel the session, delete a finished object."""
        if self._in_flight is not None:
            self._in_flight.cancel()
            await asyncio.gather(self._in_flight, return_exceptions=True)
            self._in_flight = None
        self._pending, self._pending_size = [], 0
        if self.result is not None:
            await self.gcs.delete(self.name, missing_ok=True)
        elif self._session is not None:
            # GCS answers 499 to a cancelled session; any answer means it is gone or
            # will expire unfinished (an unfinished upload never becomes an object).
            with mapped_errors(SERVICE):
                async with self.gcs.http.delete(self._session, headers=await self.gcs.headers()):
                    pass
        self._session = None

    async def _wait(self) -> None:
        if self._in_flight is not None:
            task, self._in_flight = self._in_flight, None
            await task  # re-raises the chunk's failure

    async def _open(self) -> str:
        url = f"{self.gcs.root}/upload/storage/v1/b/{self.gcs.bucket}/o"
        body = {"name": self.name, "metadata": self.metadata, "contentType": self.content_type}
        headers = await self.gcs.headers()
        headers["X-Upload-Content-Type"] = self.content_type
        async with request(
            self.gcs.http, "POST", url, provider=SERVICE, params={"uploadType": "resumable"},
            json=body, headers=headers, idempotent=True,
        ) as response:  # fmt: skip
            await self.gcs.raise_for_status(response, 200, 201)
            location = response.headers.get("Location")
        if not location:
            raise UpstreamError(
                "Cloud Storage opened no resumable upload session (no Location)",
                code="upstream_bad_response",
            )
        return location

    async def _put_chunk(self, chunk: list[memoryview], start: int) -> None:
        """One non-final chunk; GCS answers 308 with the range it has persisted."""
        size = sum(len(piece) for piece in chunk)
        offset = 0
        for _ in range(3):  # GCS may keep less than it was sent: send the rest again
            span = f"bytes {start + offset}-{start + size - 1}/*"
            async with self._put(_split(chunk, offset)[1], span) as response:
                await self.gcs.raise_for_status(response, 308)
                persisted = _persisted(response.headers.get("Range"))
            if persisted >= start + size:
                note_staged(size)
                return
            if persisted < start:  # earlier chunks lost: nothing to resend them from
                break
            offset = persisted - start
        raise UpstreamError(
            f"Cloud Storage kept only {persisted} bytes of '{self.name}'",
            code="upstream_incomplete_upload",
        )

    @asynccontextmanager
    async def _put(
        self, pieces: list[memoryview], content_range: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        headers = await self.gcs.headers()
        headers["Content-Range"] = content_range
        headers["Content-Length"] = str(sum(len(piece) for piece in pieces))
        assert self._session is not None  # opened before any PUT
        async with request(
            self.gcs.http, "PUT", self._session, provider=SERVICE, data=_slices(pieces),
            headers=headers, allow_redirects=False, idempotent=False,
        ) as response:  # fmt: skip
            yield response


async def _slices(pieces: list[memoryview]) -> AsyncIterator[memoryview]:
    """A chunk's pieces, each sent before the next: handed over whole, the connection
    would copy what the socket cannot take at once, up to a chunk per upload."""
    for piece in pieces:
        for start in range(0, len(piece), _SEND_SLICE):
            yield piece[start : start + _SEND_SLICE]


def _split(pieces: list[memoryview], at: int) -> tuple[list[memoryview], list[memoryview]]:
    """The first ``at`` bytes of ``pieces`` and the rest, as views: nothing is copied."""
    head: list[memoryview] = []
    for index, piece in enumerate(pieces):
        if at <= 0:
            return head, pieces[index:]
        if len(piece) > at:
            head.append(piece[:at])
            return head, [piece[at:], *pieces[index + 1 :]]
        head.append(piece)
        at -= len(piece)
    return head, []


def _persisted(range_header: str | None) -> int:
    """``Range: bytes=0-N`` -> N + 1; no header means nothing persisted yet."""
    if not range_header or "-" not in range_header:
        return 0
    return int(range_header.rsplit("-", 1)[1]) + 1


def _storage_failure(exc: BaseException) -> Failure | None:
    if isinstance(exc, aiohttp.ClientResponseError):  # an answer (gcloud-aio-storage raises)
        return Failure(exc.status, retry_after_seconds(exc.headers or {}))
    return connection_failure(exc)
