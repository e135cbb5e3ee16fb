"""The S3 store: file bytes as objects under ``s3://bucket/prefix/`` (or an S3-compatible store).

Imported only when such a store is configured (aiobotocore takes about half a second
and 13 MiB to import). aiobotocore ships no type stubs, so its client is ``Any`` here.

A write streams: what fits in one part is a single PutObject; anything larger is a
multipart upload in parts of ``PART_SIZE`` with at most ``PARTS_IN_FLIGHT`` uploading
while the next part fills, so memory stays at a few parts whatever the file size. If the
chunks raise, S3 fails or the write is cancelled, the multipart upload is aborted (S3
would otherwise keep, and bill, the parts) and the exception goes on: no object, no open
upload is left behind.

The credentials are the gateway's own (config or the AWS default chain), never a
caller's, so every S3 failure is the gateway's: a 502 (504 for a timeout) whose message
names S3's error code and never holds a secret. Only a missing key on read is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack
from typing import Any, TypeVar, cast

import aiohttp
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from botocore import exceptions as boto  # type: ignore[import-untyped]

from gateway.errors import GatewayError, InternalError, NotFound, UpstreamError, UpstreamTimeout
from gateway.stores import cleanup_shielded
from gateway.stores import s3 as stores_s3
from gateway.stores.aws import aws_session, one_try_http_session_class
from gateway.streams import rechunk
from gateway.upstream import redact
from gateway_portkey.settings import ManagedSettings
from gateway_portkey.store import READ_CHUNK, bucket_and_prefix, check_key

T = TypeVar("T")

MiB = 1024 * 1024
PART_SIZE = 8 * MiB  # S3 wants at least 5 MiB; x 10,000 parts (its limit) = 78 GiB
PARTS_IN_FLIGHT = 2
_MISSING = ("NoSuchKey", "NotFound", "404")
_REFUSED = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
)


class S3Store:
    """One bucket and prefix; the client is made on first use and closed by ``close``."""

    def __init__(self, settings: ManagedSettings) -> None:
        self.bucket, self.prefix = bucket_and_prefix(settings.store_location())
        # Kept apart, not the settings: nothing here should ever print a secret.
        self._region = settings.store_aws_region
        self._endpoint_url = settings.store_endpoint_url
        self._credentials = {
            "aws_access_key_id": settings.store_aws_access_key_id,
            "aws_secret_access_key": settings.store_aws_secret_access_key,
            "aws_session_token": settings.store_aws_session_token,
        }
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    with self._errors():
                        try:
                            created = await self._stack.enter_async_context(self._create())
                        except ValueError as exc:  # botocore's "Invalid endpoint: ..."
                            raise InternalError(
                                f"The S3 file store is misconfigured: {exc}",
                                code="store_misconfigured",
                            ) from None
                    self._client = created
        return self._client

    def _create(self) -> Any:
        config = AioConfig(
            connect_timeout=10,
            read_timeout=120,
            retries={"mode": "standard", "max_attempts": 3},
            # Every connection held to the gateway's egress policy (gateway.egress).
            http_session_cls=one_try_http_session_class(),
            # S3-compatible endpoints (MinIO, moto) serve buckets by path, not host name.
            s3={"addressing_style": "path" if self._endpoint_url else "auto"},
            # Checksums on every part are not understood by every S3-compatible store;
            # TLS already guards the bytes in transit.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return aws_session().create_client(
            "s3",
            region_name=self._region,
            endpoint_url=self._endpoint_url,
            config=config,
            **self._credentials,
        )

    # ---- the Store protocol ----------------------------------------------------------
    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        name = self._name(key)
        client = await self._s3()
        # An async generator (typed as an iterator): closed here, not when collected.
        pieces = cast(AsyncGenerator[bytes, None], rechunk(chunks, PART_SIZE))
        try:
            first = await anext(pieces, b"")
            if len(first) < PART_SIZE:  # rechunk's only short piece is the last one
                await self._final(client, name, client.put_object(
                    Bucket=self.bucket, Key=name, Body=first
                ))  # fmt: skip
                return len(first)
            return await self._multipart(client, name, first, pieces)
        finally:
            await pieces.aclose()

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:
        name = self._name(key)
        client = await self._s3()
        missing = f"The bytes of file '{key}' are missing from the store"
        with self._errors(missing=missing):
            answer = await client.get_object(Bucket=self.bucket, Key=name)
        async with answer["Body"] as body:  # closes the connection, even if abandoned
            with self._errors():
                async for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk

    async def delete(self, key: str) -> None:
        name = self._name(key)
        client = await self._s3()
        # S3 answers a missing key's delete as a success.
        await self._call(client.delete_object(Bucket=self.bucket, Key=name))

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    # ---- one object ------------------------------------------------------------------
    async def _multipart(
        self, client: Any, name: str, first: bytes, pieces: AsyncIterator[bytes]
    ) -> int:
        async def again() -> AsyncIterator[bytes]:
            yield first
            async for piece in pieces:
                yield piece

        with self._errors():
            return await stores_s3.write_multipart(
                client,
                self.bucket,
                name,
                again(),
                part_size=PART_SIZE,
                parts_in_flight=PARTS_IN_FLIGHT,
            )

    async def _final(self, client: Any, name: str, call: Awaitable[Any]) -> None:
        """The PutObject that makes a small object; if no answer comes (cancelled,
        connection lost, timeout) S3 may have made it all the same, so it is deleted."""
        with self._errors():
            try:
                await call
            except boto.ClientError:
                raise  # S3 answered: it made no object
            except BaseException:
                await cleanup_shielded(
                    "S3 store", client.delete_object(Bucket=self.bucket, Key=name)
                )
                raise

    # ---- errors ----------------------------------------------------------------------
    async def _call(self, call: Awaitable[T]) -> T:
        with self._errors():
            return await call

    @contextlib.contextmanager
    def _errors(self, *, missing: str | None = None) -> Iterator[None]:
        """botocore's failures (and aiohttp's, while a body streams) as the gateway's;
        a missing key is ``NotFound(missing)`` where given, else the store's failure."""
        try:
            yield
        except boto.ClientError as exc:
            if missing is not None and _code(exc) in _MISSING:
                raise NotFound(missing) from None
            raise self._client_error(exc) from None
        except (boto.NoCredentialsError, boto.PartialCredentialsError):
            raise UpstreamError(
                "The gateway has no AWS credentials for its S3 file store "
                "(store_aws_access_key_id in the config, or the AWS environment)",
                code="upstream_auth_failed",
            ) from None
        except (boto.ConnectTimeoutError, boto.ReadTimeoutError, TimeoutError):
            raise UpstreamTimeout(
                "The S3 file store did not answer in time", code="upstream_timeout"
            ) from None
        except boto.EndpointConnectionError:
            raise UpstreamError(
                "Could not connect to the S3 file store", code="upstream_unreachable"
            ) from None
        except (boto.BotoCoreError, aiohttp.ClientError) as exc:
            raise UpstreamError(
                f"The S3 file store failed: {type(exc).__name__}", code="upstream_error"
            ) from None

    def _client_error(self, exc: Exception) -> GatewayError:
        code = _code(exc)
        response: dict[str, Any] = getattr(exc, "response", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "?"
        message = str(response.get("Error", {}).get("Message") or "no message")
        message = redact(message, self._credentials.values())
        if code in _REFUSED or status in (401, 403):
            return UpstreamError(
                f"S3 refused the gateway's credentials for its file store ({code}): {message}",
                code="upstream_auth_failed",
            )
        return UpstreamError(
            f"The S3 file store failed ({status} {code}): {message}", code="upstream_error"
        )


_code = stores_s3.error_code
