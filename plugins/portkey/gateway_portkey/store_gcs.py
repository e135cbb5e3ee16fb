"""The GCS store: file bytes as objects under ``gs://bucket/prefix/``, over GCS's JSON API.

Plain aiohttp rather than gcloud-aio-storage: its "resumable" upload sends the whole
stream in one PUT and its download has a 10 s total timeout, so neither streams. Where
``STORAGE_EMULATOR_HOST`` is set the API root is that emulator and no token is sent (as
gcloud-aio does); otherwise it is Google's, with tokens for the configured service
account key or, without one, the default application credentials (``store_gcs_auth``).

A write uses GCS's resumable protocol: a POST opens a session, then PUTs of
``CHUNK_BYTES`` (GCS wants multiples of 256 KiB for all but the last), one in flight
while the next fills, so memory stays at about two chunks; the object appears only when
the last PUT (with the total) is sent. If the chunks raise, GCS fails or the write is
cancelled, the session is cancelled (DELETE): nothing is left behind.

The credentials are the gateway's own, so every GCS failure is a 502 (504 for a
timeout) with GCS's message, secrets masked; only a missing object on read is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast
from urllib.parse import quote

import aiohttp
import msgspec

from gateway import egress
from gateway.errors import NotFound, UpstreamError
from gateway.stores import cleanup_shielded
from gateway.streams import rechunk
from gateway.upstream import mapped_errors, redact, request, send
from gateway_portkey.settings import ManagedSettings
from gateway_portkey.store import READ_CHUNK, bucket_and_prefix, check_key
from gateway_portkey.store_gcs_auth import GcsAuth

SERVICE = "the GCS file store"
GOOGLE_ROOT = "https://storage.googleapis.com"
GRANULE = 256 * 1024
CHUNK_BYTES = 32 * GRANULE  # 8 MiB: Google's suggested minimum for throughput
# No total: a large download may take minutes; a stalled socket may not.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
_ERROR_BODY_LIMIT = 64 * 1024


class _ErrorBody(msgspec.Struct):
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody | str | None = None


class GcsStore:
    """One bucket and prefix. ``http`` may be core's shared session (then not closed here)."""

    def __init__(
        self, settings: ManagedSettings, *, http: aiohttp.ClientSession | None = None
    ) -> None:
        self.bucket, self.prefix = bucket_and_prefix(settings.store_location())
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            self.root = emulator if "://" in emulator else f"http://{emulator}"
        else:
            self.root = GOOGLE_ROOT
        # An emulator takes no token (as with gcloud-aio), so a test needs no key.
        self._auth = None if emulator else GcsAuth(settings.store_service_account_json)
        self._http = http
        self._owns_http = http is None

    def __repr__(self) -> str:
        return f"GcsStore(gs://{self.bucket}/{self.prefix})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _object_url(self, name: str) -> str:
        return f"{self.root}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # made here, inside the running loop
            # Held to the gateway's egress policy, as core's shared session is.
            self._http = aiohttp.ClientSession(timeout=TIMEOUT, connector=egress.connector())
        return self._http

    # ---- the Store protocol ----------------------------------------------------------
    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        name = self._name(key)
        # An async generator (typed as an iterator): closed here, not when collected.
        pieces = cast(AsyncGenerator[bytes, None], rechunk(chunks, CHUNK_BYTES))
        try:
            return await self._upload(name, pieces)
        finally:
            await pieces.aclose()

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:
        response = await send(
            self._session(), "GET", self._object_url(self._name(key)), provider=SERVICE,
            params={"alt": "media"}, headers=await self._headers(), timeout=TIMEOUT,
        )  # fmt: skip
        try:
            if response.status == 404:
                raise NotFound(f"The bytes of file '{key}' are missing from the store")
            await self._check(response, 200)
            with mapped_errors(SERVICE):
                async for chunk in response.content.iter_chunked(READ_CHUNK):
                    yield chunk
        finally:
            response.release()  # closes the connection if the body was left unread

    async def delete(self, key: str) -> None:
        await self._delete(self._name(key))

    async def close(self) -> None:
        if self._auth is not None:
            await self._auth.close()
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    # ---- uploads ---------------------------------------------------------------------
    async def _upload(self, name: str, pieces: AsyncIterator[bytes]) -> int:
        piece = await anext(pieces, b"")  # first: a source failing at once costs no call
        session = await self._open_session(name)
        in_flight: asyncio.Task[None] | None = None
        sent = 0  # bytes handed to GCS so far, the PUT in flight included
        finishing = False
        try:
            # Full chunks go as they come; rechunk's only short piece is the last one.
            while len(piece) == CHUNK_BYTES:
                if in_flight is not None:
                    await in_flight  # re-raises the chunk's failure
                in_flight = asyncio.ensure_future(self._put_chunk(session, piece, sent))
                sent += len(piece)
                piece = await anext(pieces, b"")  # fills while the chunk uploads
            if in_flight is not None:
                await in_flight
                in_flight = None
            finishing = True
            await self._put_last(session, piece, sent)
        except BaseException:
            if in_flight is not None:
                in_flight.cancel()
                await asyncio.gather(in_flight, return_exceptions=True)
            # The object too when the last PUT failed: without an answer, it may exist.
            await cleanup_shielded("GCS store", self._cancel(session, name if finishing else None))
            raise
        return sent + len(piece)

    async def _open_session(self, name: str) -> str:
        url = f"{self.root}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        headers = await self._headers()
        headers["X-Upload-Content-Type"] = "application/octet-stream"
        async with request(
            self._session(), "POST", url, provider=SERVICE, params={"uploadType": "resumable"},
            json={"name": name}, headers=headers, timeout=TIMEOUT,
        ) as response:  # fmt: skip
            await self._check(response, 200, 201)
            location = response.headers.get("Location")
        if not location:
            raise UpstreamError(
                "GCS opened no resumable upload session (no Location)",
                code="upstream_bad_response",
            )
        return location

    async def _put_chunk(self, session: str, piece: bytes, start: int) -> None:
        """One chunk before the last; GCS answers 308 with the range it has persisted,
        which may be less than it was sent: the rest is sent again."""
        end = start + len(piece)
        offset = 0
        for _ in range(3):
            span = f"bytes {start + offset}-{end - 1}/*"
            async with self._put(session, piece[offset:], span) as response:
                await self._check(response, 308)
                persisted = _persisted(response.headers.get("Range"))
            if persisted >= end:
                return
            if persisted < start:  # earlier chunks lost: nothing left to resend them from
                break
            offset = persisted - start
        raise UpstreamError(
            f"GCS kept only {persisted} of the {end} bytes sent", code="upstream_incomplete_upload"
        )

    async def _put_last(self, session: str, piece: bytes, start: int) -> None:
        total = start + len(piece)
        span = f"{start}-{total - 1}" if piece else "*"
        async with self._put(session, piece, f"bytes {span}/{total}") as response:
            await self._check(response, 200, 201)

    def _put(
        self, session: str, data: bytes, content_range: str
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        # No token: the session URI itself authorizes the upload. Not retried blindly
        # (idempotent=False): after a lost answer GCS may hold part of the chunk.
        return request(
            self._session(), "PUT", session, provider=SERVICE, data=data,
            headers={"Content-Range": content_range}, allow_redirects=False, timeout=TIMEOUT,
            idempotent=False,
        )  # fmt: skip

    async def _cancel(self, session: str, name: str | None) -> None:
        # GCS answers 499 to a cancelled session; whatever it answers, an unfinished
        # session never becomes an object (it expires after a week).
        async with request(self._session(), "DELETE", session, provider=SERVICE, timeout=TIMEOUT):
            pass
        if name is not None:
            await self._delete(name)

    async def _delete(self, name: str) -> None:
        async with request(
            self._session(), "DELETE", self._object_url(name), provider=SERVICE,
            headers=await self._headers(), timeout=TIMEOUT,
        ) as response:  # fmt: skip
            if response.status != 404:  # a missing object is not an error
                await self._check(response, 200, 204)

    # ---- auth and errors -------------------------------------------------------------
    async def _headers(self) -> dict[str, str]:
        return {} if self._auth is None else await self._auth.headers(self._session())

    async def _check(self, response: aiohttp.ClientResponse, *ok: int) -> None:
        if response.status in ok:
            return
        raw = await response.content.read(_ERROR_BODY_LIMIT)
        try:
            error = msgspec.json.decode(raw, type=_ErrorEnvelope).error
            message = error.message if isinstance(error, _ErrorBody) else error or ""
        except msgspec.DecodeError:
            message = raw.decode("utf-8", "replace").strip()[:500]
        secrets = self._auth.secrets if self._auth is not None else []
        message = redact(message or response.reason or "no message", secrets)
        status = response.status
        if status in (401, 403) and self._auth is not None:
            raise self._auth.refused(f"{status} {message}")
        raise UpstreamError(
            f"The GCS file store failed ({status}): {message}", code="upstream_error"
        )


def _persisted(range_header: str | None) -> int:
    """``Range: bytes=0-N`` -> N + 1; no header means nothing persisted yet."""
    if not range_header or "-" not in range_header:
        return 0
    return int(range_header.rsplit("-", 1)[1]) + 1
