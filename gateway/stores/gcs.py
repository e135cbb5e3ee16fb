"""One streaming Cloud Storage writer and reader, for every plugin that keeps bytes in GCS.

Plain aiohttp over GCS's JSON API, no SDK: gcloud-aio-storage's "resumable" upload sends
the whole stream in one PUT and its download has a 10 s total timeout, so neither streams.

``ResumableUpload`` speaks GCS's resumable protocol: one POST opens a session, then PUTs
of ``chunk_bytes`` (a multiple of 256 KiB, as GCS requires of every chunk but the last)
with ``Content-Range: bytes a-b/*``, the last with the total. One PUT is in flight while
the next chunk fills, so memory stays at about two chunks whatever the object's size.
The object exists only once the last PUT is answered. On any failure (the source raises,
GCS fails, the write is cancelled) ``abort`` cancels the session (DELETE) and, when the
last PUT was sent but not answered, deletes the object GCS may have made: nothing is
left behind. ``Bucket.write`` does all of this for a stream of chunks.

Retries follow the request's policy (``gateway.retry``): the POST opening a session (a
second session that is never finished never becomes an object), reads and deletes. A
chunk's PUT is not repeated blindly: after a lost answer GCS may hold part of it, which
only a status query would tell; the upload fails and is cleaned up instead.

What the plugins keep: object names, metadata, formats, and how GCS's error answers map
(``error``, given the status and body); an unexpected success status is a 502
``upstream_bad_response`` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.errors import GatewayError, UpstreamError
from gateway.stores import cleanup_shielded
from gateway.upstream import mapped_errors, request, send

GOOGLE_ROOT = "https://storage.googleapis.com"
GRANULE = 256 * 1024
CHUNK_BYTES = 32 * GRANULE  # 8 MiB: Google's suggested minimum for throughput
READ_CHUNK = GRANULE
_ERROR_BODY_LIMIT = 64 * 1024
_SEND_SLICE = 256 * 1024

Headers = Callable[[], Awaitable[dict[str, str]]]
ErrorOf = Callable[[int, bytes], GatewayError]


async def _no_headers() -> dict[str, str]:
    return {}


class Bucket:
    """One bucket at one API root, as one plugin sees it.

    ``headers`` gives each call's authorization (none for an emulator), ``error`` maps
    GCS's error answers, ``service`` names the store in messages. ``timeout`` None: the
    request's policy (``gateway.retry``) decides.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        bucket: str,
        *,
        root: str = GOOGLE_ROOT,
        headers: Headers = _no_headers,
        error: ErrorOf,
        service: str = "Cloud Storage",
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        self.http = http
        self.bucket = bucket
        self.root = root.rstrip("/")
        self.headers = headers
        self.error = error
        self.service = service
        self.request_options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}

    def object_url(self, name: str) -> str:
        return f"{self.root}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"

    async def check(self, response: aiohttp.ClientResponse, *ok: int) -> None:
        """Nothing if ``response`` has one of the ``ok`` statuses; else its error."""
        if response.status in ok:
            return
        if response.status < 400:  # a 308 where the upload should be complete, say
            raise UpstreamError(
                f"{self.service} answered {response.status} where {ok[0]} was expected",
                code="upstream_bad_response",
            )
        raise self.error(response.status, await response.content.read(_ERROR_BODY_LIMIT))

    # ---- reads -----------------------------------------------------------------------
    async def open_read(
        self, name: str, *, missing: GatewayError | None = None
    ) -> aiohttp.ClientResponse:
        """The object's answer, its body unread (the caller releases it); ``missing`` is
        raised for a 404 where given, else the 404 is mapped as any error is."""
        response = await send(
            self.http, "GET", self.object_url(name), provider=self.service,
            params={"alt": "media"}, headers=await self.headers(), **self.request_options,
        )  # fmt: skip
        try:
            if response.status == 404 and missing is not None:
                raise missing
            await self.check(response, 200)
        except BaseException:
            response.release()
            raise
        return response

    async def chunks(
        self, response: aiohttp.ClientResponse, chunk_size: int = READ_CHUNK
    ) -> AsyncGenerator[bytes, None]:
        """An open read's body, as it arrives; the connection is let go when done or
        abandoned."""
        try:
            with mapped_errors(self.service):
                async for chunk in response.content.iter_chunked(chunk_size):
                    yield chunk
        finally:
            response.release()

    # ---- writes and deletes ----------------------------------------------------------
    def resumable(
        self,
        name: str,
        *,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/jsonl",
        chunk_bytes: int = CHUNK_BYTES,
        on_chunk: Callable[[int], None] | None = None,
    ) -> ResumableUpload:
        return ResumableUpload(self, name, metadata or {}, content_type, chunk_bytes, on_chunk)

    async def write(self, name: str, chunks: AsyncIterator[bytes], **options: Any) -> int:
        """Stream ``chunks`` into one new object (even an empty one); the bytes written,
        or nothing on failure. ``options`` are ``resumable``'s; ``chunks`` is closed here."""
        upload = self.resumable(name, **options)
        try:
            async for chunk in chunks:
                await upload.write(chunk)
            await upload.finish()
        except BaseException:
            await cleanup_shielded(self.service, upload.abort())
            raise
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        return upload.size

    async def delete(self, name: str) -> bool:
        """True if deleted, False if there was nothing to delete."""
        async with request(
            self.http, "DELETE", self.object_url(name), provider=self.service,
            headers=await self.headers(), **self.request_options,
        ) as response:  # fmt: skip
            if response.status == 404:
                return False
            await self.check(response, 200, 204)
        return True


class ResumableUpload:
    """One object written with GCS's resumable protocol: ``write`` as bytes come, then
    ``finish``; ``abort`` on any failure."""

    def __init__(
        self,
        bucket: Bucket,
        name: str,
        metadata: dict[str, str],
        content_type: str,
        chunk_bytes: int,
        on_chunk: Callable[[int], None] | None,
    ) -> None:
        if chunk_bytes <= 0 or chunk_bytes % GRANULE:
            raise ValueError(f"GCS chunks are multiples of {GRANULE} bytes, not {chunk_bytes}")
        self.bucket = bucket
        self.name = name
        self.metadata = metadata
        self.content_type = content_type
        self.chunk_bytes = chunk_bytes
        self._on_chunk = on_chunk
        self.answer: bytes | None = None  # the object resource GCS answered the last PUT with
        # What came since the last chunk, kept as the pieces it came in: a chunk is sent
        # as its pieces, never joined into one block (a copy of every byte, and blocks of
        # several MiB that the allocator keeps after they are freed).
        self._pending: list[memoryview] = []
        self._pending_size = 0
        self._sent = 0  # bytes handed to GCS so far (in flight included)
        self._session: str | None = None
        self._in_flight: asyncio.Task[None] | None = None
        self._finishing = False  # the last PUT was sent: the object may exist

    @property
    def size(self) -> int:
        """Every byte written so far."""
        return self._sent + self._pending_size

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

    async def finish(self) -> bytes:
        """Send the rest and make the object; GCS's answer (the object resource)."""
        await self._wait()
        if self._session is None:
            self._session = await self._open()
        last, size = self._pending, self._pending_size
        self._pending, self._pending_size = [], 0
        total = self._sent + size
        span = f"{self._sent}-{total - 1}" if size else "*"
        self._finishing = True
        async with self._put(last, f"bytes {span}/{total}") as response:
            await self.bucket.check(response, 200, 201)
            self.answer = await response.read()
        self._sent = total
        if self._on_chunk is not None:
            self._on_chunk(size)
        return self.answer

    async def abort(self) -> None:
        """Leave nothing behind: stop the PUT, cancel the session, delete an object made."""
        if self._in_flight is not None:
            self._in_flight.cancel()
            await asyncio.gather(self._in_flight, return_exceptions=True)
            self._in_flight = None
        self._pending, self._pending_size = [], 0
        session, self._session = self._session, None
        if session is not None and self.answer is None:
            # GCS answers 499 to a cancelled session; any answer means it is gone or will
            # expire unfinished (an unfinished upload never becomes an object).
            async with request(
                self.bucket.http, "DELETE", session, provider=self.bucket.service,
                headers=await self.bucket.headers(), **self.bucket.request_options,
            ):  # fmt: skip
                pass
        if self._finishing:  # the last PUT went out: GCS may have made the object
            await self.bucket.delete(self.name)

    async def _wait(self) -> None:
        if self._in_flight is not None:
            task, self._in_flight = self._in_flight, None
            await task  # re-raises the chunk's failure

    async def _open(self) -> str:
        url = f"{self.bucket.root}/upload/storage/v1/b/{quote(self.bucket.bucket, safe='')}/o"
        body = {"name": self.name, "metadata": self.metadata, "contentType": self.content_type}
        headers = await self.bucket.headers()
        headers["X-Upload-Content-Type"] = self.content_type
        async with request(
            self.bucket.http, "POST", url, provider=self.bucket.service,
            params={"uploadType": "resumable"}, json=body, headers=headers, idempotent=True,
            **self.bucket.request_options,
        ) as response:  # fmt: skip
            await self.bucket.check(response, 200, 201)
            location = response.headers.get("Location")
        if not location:
            raise UpstreamError(
                f"{self.bucket.service} opened no resumable upload session (no Location)",
                code="upstream_bad_response",
            )
        return location

    async def _put_chunk(self, chunk: list[memoryview], start: int) -> None:
        """One non-final chunk; GCS answers 308 with the range it has persisted, which
        may be less than it was sent: the rest is sent again."""
        size = sum(len(piece) for piece in chunk)
        offset = persisted = 0
        for _ in range(3):
            span = f"bytes {start + offset}-{start + size - 1}/*"
            async with self._put(_split(chunk, offset)[1], span) as response:
                await self.bucket.check(response, 308)
                persisted = _persisted(response.headers.get("Range"))
            if persisted >= start + size:
                if self._on_chunk is not None:
                    self._on_chunk(size)
                return
            if persisted < start:  # earlier chunks lost: nothing to resend them from
                break
            offset = persisted - start
        raise UpstreamError(
            f"{self.bucket.service} kept only {persisted} bytes of '{self.name}'",
            code="upstream_incomplete_upload",
        )

    @asynccontextmanager
    async def _put(
        self, pieces: list[memoryview], content_range: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        headers = await self.bucket.headers()
        headers["Content-Range"] = content_range
        headers["Content-Length"] = str(sum(len(piece) for piece in pieces))
        assert self._session is not None  # opened before any PUT
        async with request(
            self.bucket.http, "PUT", self._session, provider=self.bucket.service,
            data=_slices(pieces), headers=headers, allow_redirects=False, idempotent=False,
            **self.bucket.request_options,
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
