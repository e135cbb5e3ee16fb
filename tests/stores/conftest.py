"""The three store kinds behind one face, for the promises every store keeps.

Each kind writes and reads through the core's byte movers (``gateway.stores.local``,
``.s3``, ``.gcs``), which every plugin's staging or store calls, and is looked at
directly, not through the code under test, to tell what was left behind:

- a local directory: files, partial ones in ``.incoming/`` included;
- S3 on moto: objects under the test's prefix and open multipart uploads
  (``list_multipart_uploads``). moto runs in a process of its own, not on a thread of
  this one as the plugins' tests run it, so this process's memory is the writer's
  alone when a test measures it;
- GCS on fake-gcs-server (the Vertex tests' server, one per session): objects under the
  test's prefix and resumable sessions still open. fake-gcs-server lists no sessions,
  and answers a cancel with GCS's 499 but keeps taking bytes (a status query after it
  finalizes the object), so the sessions are judged by what the writer's HTTP session
  saw: each one opened must have been finalized (200/201) or cancelled (499).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import yarl

from gateway import egress
from gateway.errors import GatewayError, NotFound, UpstreamError
from gateway.stores import gcs, local
from gateway.stores import s3 as stores_s3
from plugins.vertex.tests.conftest import BUCKET as GCS_BUCKET
from plugins.vertex.tests.conftest import fake_gcs  # noqa: F401 - a fixture, shared

S3_BUCKET = "ftgw-stores"
AWS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "AKIASTORESTEST000001",
    "aws_secret_access_key": "stores-test-secret-0123456789",
}
_MOTO = (
    "import sys\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
    "server.start()\n"
    "print(server.get_host_and_port()[1], flush=True)\n"
    "sys.stdin.read()  # until the test session closes it\n"
)


@pytest.fixture(autouse=True)
def loopback_stores_allowed() -> Iterator[None]:
    """The stores are used without an app, so without a config's egress policy: the one
    a config naming these loopback stand-ins would install (fails closed otherwise)."""
    before = egress.install(egress.policy(allow_networks=["127.0.0.0/8"]))
    yield
    egress.install(before)


@pytest.fixture(scope="session")
def moto_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _MOTO],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    port = int(process.stdout.readline())
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, **AWS).create_bucket(Bucket=S3_BUCKET)
    yield url
    process.stdin.close()
    process.terminate()
    process.wait(timeout=10)


class Gone(Exception):
    """What a chunk source raises halfway (a bad line found, a client gone)."""


@dataclass
class Kind:
    """One store kind, under a prefix of the test's own."""

    name: str
    write: Callable[[str, AsyncIterator[bytes]], Awaitable[int]]
    open: Callable[[str], Awaitable[AsyncGenerator[bytes, None]]]  # NotFound if missing
    objects: Callable[[], list[str]]  # complete objects, by key
    started: Callable[[], bool]  # an upload (or partial file) is under way
    leftovers: Callable[[], list[str]]  # objects, open uploads, open sessions, partials
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        """Close the kind's clients (again is fine), as a provider's close would."""
        while self.closers:
            await self.closers.pop()()

    async def read_all(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in await self.open(key)])


@pytest.fixture(params=["local", "s3", "gcs"])
async def kind(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kind]:
    makers = {"local": _local, "s3": _s3, "gcs": _gcs}
    made = await makers[request.param](request, tmp_path)
    yield made
    await made.close()


# ---- a local directory -----------------------------------------------------------------
async def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Kind:
    root = tmp_path / "store"
    incoming = root / ".incoming"
    incoming.mkdir(parents=True)

    async def write(key: str, chunks: AsyncIterator[bytes]) -> int:
        return await local.write_file(root / key, incoming, chunks)

    async def open_(key: str) -> AsyncGenerator[bytes, None]:
        try:
            return local.chunks(await local.open_read(root / key))
        except FileNotFoundError:
            raise NotFound(key) from None

    def files(under: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in under.rglob("*") if p.is_file())

    def objects() -> list[str]:
        return [name for name in files(root) if not name.startswith(".incoming")]

    return Kind("local", write, open_, objects, lambda: bool(files(incoming)), lambda: files(root))


# ---- S3 on moto --------------------------------------------------------------------------
async def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Kind:
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
    from aiobotocore.httpsession import AIOHTTPSession  # type: ignore[import-untyped]
    from aiobotocore.session import get_session  # type: ignore[import-untyped]

    moto_url: str = request.getfixturevalue("moto_process")
    prefix = f"t-{uuid.uuid4().hex[:12]}/"
    look = boto3.client("s3", endpoint_url=moto_url, **AWS)
    config = AioConfig(
        http_session_cls=egress.aiobotocore_session_class(AIOHTTPSession),
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(
        get_session().create_client("s3", endpoint_url=moto_url, config=config, **AWS)
    )

    async def write(key: str, chunks: AsyncIterator[bytes]) -> int:
        return await stores_s3.write_multipart(client, S3_BUCKET, prefix + key, chunks)

    async def open_(key: str) -> AsyncGenerator[bytes, None]:
        try:
            answer = await client.get_object(Bucket=S3_BUCKET, Key=prefix + key)
        except client.exceptions.NoSuchKey:
            raise NotFound(key) from None
        return stores_s3.read_chunks(answer["Body"])  # type: ignore[return-value]

    def objects() -> list[str]:
        found = look.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix).get("Contents", [])
        return sorted(item["Key"].removeprefix(prefix) for item in found)

    def uploads() -> list[str]:
        found = look.list_multipart_uploads(Bucket=S3_BUCKET, Prefix=prefix).get("Uploads", [])
        return [f"upload {item['Key']}" for item in found]

    kind = Kind("s3", write, open_, objects, lambda: bool(uploads()), lambda: objects() + uploads())
    kind.closers.append(stack.aclose)
    return kind


# ---- GCS on fake-gcs-server --------------------------------------------------------------
def _gcs_error(status: int, body: bytes) -> GatewayError:
    return UpstreamError(f"GCS answered {status}: {body[:200]!r}", code="upstream_error")


async def _gcs(request: pytest.FixtureRequest, tmp_path: Path) -> Kind:
    url: str = request.getfixturevalue("fake_gcs")
    prefix = f"t-{uuid.uuid4().hex[:12]}/"
    opened: list[str] = []
    closed: set[str] = set()  # finalized or cancelled

    async def record(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        location = params.response.headers.get("Location")
        if params.method == "POST" and "uploadType=resumable" in str(params.url) and location:
            opened.append(str(yarl.URL(location)))  # spelled as params.url is
        finished = params.method == "PUT" and params.response.status in (200, 201)
        if finished or (params.method == "DELETE" and params.response.status == 499):
            closed.add(str(params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(record)
    http = aiohttp.ClientSession(connector=egress.connector(), trace_configs=[trace])
    bucket = gcs.Bucket(http, GCS_BUCKET, root=url, error=_gcs_error, service="GCS")

    async def write(key: str, chunks: AsyncIterator[bytes]) -> int:
        return await bucket.write(prefix + key, chunks)

    async def open_(key: str) -> AsyncGenerator[bytes, None]:
        return bucket.chunks(await bucket.open_read(prefix + key, missing=NotFound(key)))

    def objects() -> list[str]:
        query = urllib.parse.urlencode({"prefix": prefix})
        with urllib.request.urlopen(f"{url}/storage/v1/b/{GCS_BUCKET}/o?{query}", timeout=10) as r:
            items = json.load(r).get("items", [])
        return sorted(item["name"].removeprefix(prefix) for item in items)

    def open_sessions() -> list[str]:
        return [f"session {session}" for session in opened if session not in closed]

    kind = Kind(
        "gcs", write, open_, objects, lambda: bool(opened), lambda: objects() + open_sessions()
    )
    kind.closers.append(http.close)
    return kind
