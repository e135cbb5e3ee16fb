"""The core resumable upload against a strict GCS stand-in: what fake-gcs-server does not check."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import GatewayError, UpstreamError
from gateway.stores import gcs

GRANULE = gcs.GRANULE


class StrictGcs:
    """Persists only the first 256 KiB of the first chunk, as GCS may; refuses gaps."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ranges: list[str] = []
        self.short_once = True
        self.cancelled = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/upload/storage/v1/b/{bucket}/o", self.open)
        app.router.add_put("/upload/storage/v1/b/{bucket}/o", self.put)
        app.router.add_delete("/upload/storage/v1/b/{bucket}/o", self.cancel)
        return app

    async def open(self, request: web.Request) -> web.Response:
        assert request.query["uploadType"] == "resumable"
        meta: dict[str, Any] = await request.json()
        self.name = meta["name"]
        location = str(request.url.with_query(uploadType="resumable", upload_id="s1"))
        return web.json_response({}, headers={"Location": location})

    async def put(self, request: web.Request) -> web.Response:
        span = request.headers["Content-Range"]
        self.ranges.append(span)
        body = await request.read()
        first, _, total = span.removeprefix("bytes ").partition("/")
        start = len(self.data) if first == "*" else int(first.split("-")[0])
        if start != len(self.data):
            return web.json_response({"error": {"code": 400, "message": "gap"}}, status=400)
        if total == "*":
            if len(body) % GRANULE:
                return web.json_response({"error": {"code": 400, "message": "size"}}, status=400)
            if self.short_once:
                self.short_once, body = False, body[:GRANULE]
            self.data += body
            return web.Response(status=308, headers={"Range": f"bytes=0-{len(self.data) - 1}"})
        self.data += body
        assert int(total) == len(self.data)
        return web.json_response({"name": self.name, "size": str(len(self.data))})

    async def cancel(self, request: web.Request) -> web.Response:
        self.cancelled = True
        return web.Response(status=499)


def _error(status: int, body: bytes) -> GatewayError:
    return UpstreamError(f"GCS answered {status}", code="upstream_error")


@pytest.fixture
async def strict() -> Any:
    fake = StrictGcs()
    server = TestServer(fake.app())
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield fake, gcs.Bucket(http, "bkt", root=str(server.make_url("")), error=_error)
    await server.close()


async def test_resumable_upload_resends_what_gcs_did_not_keep(strict: Any) -> None:
    fake, store = strict
    upload = store.resumable("a/b.jsonl", metadata={"k": "v"}, chunk_bytes=2 * GRANULE)
    data = bytes(range(256)) * (5 * GRANULE // 256 + 7)  # five chunks' worth and a bit

    for offset in range(0, len(data), 100_000):
        await upload.write(data[offset : offset + 100_000])
    done = await upload.finish()

    assert bytes(fake.data) == data and json.loads(done)["size"] == str(len(data))
    assert fake.ranges[:2] == [
        f"bytes 0-{2 * GRANULE - 1}/*",
        f"bytes {GRANULE}-{2 * GRANULE - 1}/*",
    ]
    assert fake.ranges[-1].endswith(f"/{len(data)}")


async def test_resumable_upload_abort_cancels_the_session(strict: Any) -> None:
    fake, store = strict
    upload = store.resumable("a/c.jsonl", chunk_bytes=2 * GRANULE)
    await upload.write(b"x" * (3 * GRANULE))

    await upload.abort()

    assert fake.cancelled
