"""The promises every store kind keeps, each checked once per kind (``kind``: a local
directory, S3 on moto, GCS on fake-gcs-server).

An object is visible only once complete. A source failing mid-stream, a client gone
mid-upload, a cancelled write, and a shutdown whose grace the upload outlasts each
leave nothing behind: no object, no partial file, no open multipart upload, no open
resumable session. Reads stream, and memory does not grow with the object's size.

Writes of 20 MB run past S3's first parts (5 MiB) and GCS's first chunks (8 MiB), so an
upload or session is open on the store when things go wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from gateway import keys
from gateway.config import parse_config
from gateway.errors import NotFound
from gateway.registry import Registry
from gateway.server import GatewayRunner, drain
from tests.stores.conftest import Gone, Kind
from tests.support.raw_http import RawClient, request_head

MB = 1_000_000
MiB = 1024 * 1024
CHUNK = 1_000_003  # odd, so chunks straddle every part and chunk boundary
BEFORE = 20 * MB  # what comes before things go wrong


def data_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def until(done: Callable[[], bool], timeout: float = 15) -> None:
    """Wait for ``done`` (which looks at a stand-in, so off the loop) to hold."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(done):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def nothing_left(kind: Kind) -> None:
    await until(lambda: kind.leftovers() == [])


async def test_store_object_is_visible_only_once_complete(kind: Kind) -> None:
    data = data_of(BEFORE + 3 * MB)
    rest = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data[:BEFORE]):
            yield chunk
        await rest.wait()
        yield data[BEFORE:]

    write = asyncio.ensure_future(kind.write("file-a", source()))
    await until(kind.started)
    await asyncio.sleep(0.2)  # what has come is on its way to the store

    assert kind.objects() == []
    with pytest.raises(NotFound):
        await kind.open("file-a")
    rest.set()
    assert await write == len(data)
    assert kind.leftovers() == ["file-a"]
    assert await kind.read_all("file-a") == data


async def test_store_source_failing_mid_stream_leaves_nothing(kind: Kind) -> None:
    async def failing() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data_of(BEFORE)):
            yield chunk
        raise Gone

    with pytest.raises(Gone):
        await kind.write("file-a", failing())

    assert kind.leftovers() == []


async def test_store_cancelled_write_leaves_nothing(kind: Kind) -> None:
    async def stalling() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data_of(BEFORE)):
            yield chunk
        await asyncio.Event().wait()
        yield b""  # never

    write = asyncio.ensure_future(kind.write("file-a", stalling()))
    await until(kind.started)
    await asyncio.sleep(0.2)

    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert kind.leftovers() == []  # cleaned up before the cancellation ended the write


# ---- behind a server: a client gone, a shutdown ------------------------------------------
def _piping_app(kind: Kind, registry: Registry) -> web.Application:
    """A server writing each PUT's body to the store as it arrives, as an upload does."""

    async def put(request: web.Request) -> web.Response:
        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(256 * 1024):
                yield chunk

        await kind.write(request.match_info["key"], body())
        return web.json_response({})

    async def close_store(app: web.Application) -> None:
        await kind.close()  # as the providers are closed at cleanup

    app = web.Application()
    app[keys.CONFIG] = parse_config({}, registry, {})
    app.router.add_put("/{key}", put)
    app.on_cleanup.append(close_store)
    return app


async def _upload_under_way(kind: Kind, runner: GatewayRunner) -> RawClient:
    """A client that sent 20 MB of a 100 MB PUT, once the store's upload has begun."""
    host, port = runner.addresses[0][:2]
    client = await RawClient.connect(f"http://{host}:{port}")
    head = {"Content-Length": str(100 * MB), "Content-Type": "application/octet-stream"}
    await client.send(request_head("PUT", "/file-a", head))
    async for chunk in chunks_of(data_of(BEFORE)):
        await client.send(chunk)
    await until(kind.started)
    return client


async def _serve(kind: Kind, registry: Registry) -> GatewayRunner:
    runner = GatewayRunner(_piping_app(kind, registry))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_store_client_gone_mid_upload_leaves_nothing(kind: Kind, registry: Registry) -> None:
    runner = await _serve(kind, registry)
    try:
        client = await _upload_under_way(kind, runner)
        await client.close()  # gone, 80 MB short

        await nothing_left(kind)
    finally:
        await runner.cleanup()


async def test_store_shutdown_past_the_grace_leaves_nothing(
    kind: Kind, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    runner = await _serve(kind, registry)
    try:
        client = await _upload_under_way(kind, runner)  # and then nothing more comes
        with caplog.at_level(logging.WARNING, "finetune_gateway"):
            await drain(runner, 0.3, asyncio.Event())
    finally:
        await runner.cleanup()  # the store's clients closed, as providers are
    await client.close()

    assert "cancelling 1 request(s)" in caplog.text
    assert kind.leftovers() == []


# ---- reads -------------------------------------------------------------------------------
async def test_store_read_streams_and_may_be_abandoned(kind: Kind) -> None:
    data = data_of(BEFORE)
    await kind.write("file-a", chunks_of(data))

    chunks = await kind.open("file-a")
    first = await anext(chunks)
    await chunks.aclose()  # abandoned after one chunk: the connection or file let go

    assert 0 < len(first) <= 2 * MiB and data.startswith(first)
    assert await kind.read_all("file-a") == data  # and the store still reads


async def test_store_memory_does_not_grow_with_the_size(kind: Kind) -> None:
    """200 MB written from a generator and read back, under tracemalloc: what the
    process holds at its peak is a few parts or chunks, not the object."""
    size = 200 * MiB
    sent, got = hashlib.sha256(), hashlib.sha256()

    async def source() -> AsyncIterator[bytes]:
        rng = random.Random(11)
        for _ in range(size // MiB):
            piece = rng.randbytes(MiB)
            sent.update(piece)
            yield piece

    tracemalloc.start()
    try:
        written = await kind.write("file-big", source())
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        read = 0
        async for chunk in await kind.open("file-big"):
            got.update(chunk)
            read += len(chunk)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    print(f"{kind.name}: peak {write_peak / MiB:.1f} MiB writing, {read_peak / MiB:.1f} reading")
    assert written == read == size and sent.digest() == got.digest()
    # S3: two 5 MiB parts in flight and one filling; GCS: one 8 MiB chunk in flight and
    # one filling; local: a 1 MiB batch. A buffered object would be 200 MiB.
    assert write_peak < 48 * MiB
    assert read_peak < 16 * MiB
