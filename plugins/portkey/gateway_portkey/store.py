"""Where managed mode keeps file bytes: a local directory by default, S3 or GCS if set.

Every store keeps the same promise: ``write`` makes an object visible under its key
only once every chunk has been written; if the chunks raise (a bad line found by the
validator, a client gone), nothing is left behind. Reads stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Protocol

from gateway.errors import InternalError, NotFound
from gateway.stores import local
from gateway_portkey.settings import ManagedSettings

log = logging.getLogger("finetune_gateway.portkey")

READ_CHUNK = 256 * 1024


class Store(Protocol):
    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the chunks under ``key``, all or nothing; the number of bytes written."""
        ...

    def read(self, key: str) -> AsyncGenerator[bytes, None]:
        """The object's bytes; ``NotFound`` (before the first chunk) if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """Every store takes the same keys, the gateway's own ids: no paths, nothing hidden."""
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"not a store key: {key!r}")
    return key


def bucket_and_prefix(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` (or ``gs://``) as ``("bucket", "some/prefix/")``."""
    scheme, _, rest = location.partition("://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise InternalError(
            f"The managed store {location!r} names no bucket (want {scheme}://bucket/prefix/)",
            code="store_misconfigured",
        )
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class LocalStore:
    """Files in one directory; a write goes to ``.incoming/`` and is renamed when done
    (``gateway.stores.local``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming = root / ".incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        return await local.write_file(self._path(key), self._incoming, chunks)

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:
        try:
            handle = await local.open_read(self._path(key))
        except FileNotFoundError:
            raise NotFound(f"The bytes of file '{key}' are missing from the store") from None
        async with aclosing(local.chunks(handle, READ_CHUNK)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def close(self) -> None:
        pass


def open_store(settings: ManagedSettings) -> Store:
    """The store ``settings.store`` names: ``s3://``, ``gs://``, or else a directory.

    The cloud stores are imported only when configured: each needs its extra installed,
    and aiobotocore alone takes half a second to import.
    """
    location = settings.store_location()
    if location.startswith("s3://"):
        try:
            from gateway_portkey.store_s3 import S3Store
        except ImportError as exc:
            raise _missing_extra(location, "s3", exc) from None
        return S3Store(settings)
    if location.startswith("gs://"):
        try:
            from gateway_portkey.store_gcs import GcsStore
        except ImportError as exc:
            raise _missing_extra(location, "gcs", exc) from None
        return GcsStore(settings)
    return LocalStore(Path(location))


def _missing_extra(location: str, extra: str, exc: ImportError) -> InternalError:
    return InternalError(
        f"The managed store {location!r} needs the '{extra}' extra: "
        f"pip install 'finetune-gateway-portkey[{extra}]' (missing module: {exc.name})",
        code="store_misconfigured",
    )
