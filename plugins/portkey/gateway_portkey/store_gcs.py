"""The GCS store: file bytes as objects under ``gs://bucket/prefix/``, over GCS's JSON API.

The bytes move through ``gateway.stores.gcs`` (a resumable upload, one chunk in flight
while the next fills, the session cancelled on any failure; streamed reads) and tokens
come from ``gateway.stores.google_auth``: the configured service account key or, without
one, the default application credentials. Where ``STORAGE_EMULATOR_HOST`` is set the API
root is that emulator and no token is sent (as gcloud-aio does), so a test needs no key.

The credentials are the gateway's own, so every GCS failure is a 502 (504 for a
timeout) with GCS's message, secrets masked; only a missing object on read is a 404.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import aiohttp
import msgspec

from gateway import egress
from gateway.errors import GatewayError, InternalError, NotFound, UpstreamError
from gateway.stores import gcs
from gateway.stores.google_auth import STORAGE_READ_WRITE, GoogleToken, KeyUnusable, TokenRefused
from gateway.upstream import redact, refusing_redirects
from gateway_portkey.settings import ManagedSettings
from gateway_portkey.store import READ_CHUNK, bucket_and_prefix, check_key

SERVICE = "the GCS file store"
GRANULE = gcs.GRANULE
CHUNK_BYTES = gcs.CHUNK_BYTES
# No total: a large download may take minutes; a stalled socket may not.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)


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
            self.root = gcs.GOOGLE_ROOT
        # An emulator takes no token (as with gcloud-aio), so a test needs no key.
        self._authorized = not emulator
        self._key = settings.store_service_account_json
        self._token: GoogleToken | None = None
        self._http = http
        self._owns_http = http is None
        self._store: gcs.Bucket | None = None

    def __repr__(self) -> str:
        return f"GcsStore(gs://{self.bucket}/{self.prefix})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _gcs(self) -> gcs.Bucket:
        if self._store is None:  # made here, inside the running loop
            if self._http is None:
                # Held to the gateway's egress policy, as core's shared session is.
                self._http = aiohttp.ClientSession(
                    timeout=TIMEOUT,
                    connector=egress.connector(),
                    trace_configs=[refusing_redirects()],
                )
            self._store = gcs.Bucket(
                self._http, self.bucket, root=self.root, headers=self._headers,
                error=self._error, service=SERVICE, timeout=TIMEOUT,
            )  # fmt: skip
        return self._store

    # ---- the Store protocol ----------------------------------------------------------
    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        name = self._name(key)
        return await self._gcs().write(
            name, chunks, content_type="application/octet-stream", chunk_bytes=CHUNK_BYTES
        )

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:
        store = self._gcs()
        missing = NotFound(f"The bytes of file '{key}' are missing from the store")
        response = await store.open_read(self._name(key), missing=missing)
        async with aclosing(store.chunks(response, READ_CHUNK)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def delete(self, key: str) -> None:
        await self._gcs().delete(self._name(key))  # a missing object is not an error

    async def close(self) -> None:
        if self._token is not None:
            await self._token.close()  # given the store's session: this leaves it open
            self._token = None
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None
        self._store = None

    # ---- auth and errors -------------------------------------------------------------
    async def _headers(self) -> dict[str, str]:
        if not self._authorized:
            return {}
        if self._token is None:
            try:
                self._token = GoogleToken(self._gcs().http, self._key, scopes=[STORAGE_READ_WRITE])
            except KeyUnusable as exc:
                raise InternalError(
                    f"The GCS file store's service account key {exc.reason}",
                    code="store_misconfigured",
                ) from None
        try:
            return await self._token.headers()
        except TokenRefused as exc:
            raise self._refused(f"{exc.status} {exc.detail}") from None

    def _secrets(self) -> list[str]:
        return self._token.secrets if self._token is not None else []

    def _refused(self, detail: str) -> UpstreamError:
        return UpstreamError(
            f"Google refused the GCS file store's credentials: {redact(detail, self._secrets())}",
            code="upstream_auth_failed",
        )

    def _error(self, status: int, raw: bytes) -> GatewayError:
        try:
            error = msgspec.json.decode(raw, type=_ErrorEnvelope).error
            message = error.message if isinstance(error, _ErrorBody) else error or ""
        except msgspec.DecodeError:
            message = raw.decode("utf-8", "replace").strip()[:500]
        message = redact(message or "no message", self._secrets())
        if status in (401, 403) and self._authorized:
            return self._refused(f"{status} {message}")
        return UpstreamError(
            f"The GCS file store failed ({status}): {message}", code="upstream_error"
        )
