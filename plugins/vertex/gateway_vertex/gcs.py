"""Cloud Storage for the provider: object metadata calls, streamed downloads, chunked uploads.

The small JSON calls (get, list, patch, delete) go through gcloud-aio-storage, which also
decides the API root: ``STORAGE_EMULATOR_HOST`` when set (then, as the library does, no
token is sent), else https://storage.googleapis.com; a virtual key's
``storage_endpoint_url`` replaces both and is sent the token. The bytes move through
``gateway.stores.gcs``: its resumable upload, in chunks of ``CHUNK_BYTES``, and its
streamed download (gcloud-aio-storage's "resumable" upload sends the whole stream in
one PUT, and its download has a 10 s total timeout that would cut any large file short).
Every failure is mapped by Google's error envelope (``gateway_vertex.errors``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import aiohttp
from gcloud.aio.storage import Storage
from gcloud.aio.storage.storage import init_api_root

from gateway.answers import convert_answer
from gateway.errors import GatewayError, NotFound
from gateway.metrics import note_staged
from gateway.provider import Download
from gateway.retry import Failure, retry_after_seconds, with_retries
from gateway.stores import gcs as stores_gcs
from gateway.stores.gcs import ResumableUpload
from gateway.upstream import connection_failure, mapped_errors
from gateway_vertex import wire
from gateway_vertex.auth import Credentials
from gateway_vertex.errors import google_error

SERVICE = "Cloud Storage"
GRANULE = stores_gcs.GRANULE
CHUNK_BYTES = stores_gcs.CHUNK_BYTES
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
        self._bytes = stores_gcs.Bucket(
            http, bucket, root=self.root, headers=self.headers, error=self.error, service=SERVICE
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

    # ---- bytes (gateway.stores.gcs) ------------------------------------------------
    async def download(self, name: str, chunk_size: int = GRANULE) -> Download:
        response = await self._bytes.open_read(name)

        async def release() -> None:
            response.release()

        return Download(
            chunks=self._bytes.chunks(response, chunk_size),
            size=None if "Content-Encoding" in response.headers else response.content_length,
            content_type="application/jsonl",
            release=release,
        )

    def resumable(
        self, name: str, metadata: dict[str, str], content_type: str = "application/jsonl"
    ) -> ResumableUpload:
        """An upload in chunks of ``CHUNK_BYTES``, counted in the request's staged bytes."""
        return self._bytes.resumable(
            name, metadata=metadata, content_type=content_type, chunk_bytes=CHUNK_BYTES,
            on_chunk=note_staged,
        )  # fmt: skip


def _storage_failure(exc: BaseException) -> Failure | None:
    if isinstance(exc, aiohttp.ClientResponseError):  # an answer (gcloud-aio-storage raises)
        return Failure(exc.status, retry_after_seconds(exc.headers or {}))
    return connection_failure(exc)
