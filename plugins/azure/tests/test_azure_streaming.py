"""Uploads and downloads stream: Azure sees the first bytes before the last exist.

Each test makes the rest of the file wait until the other side has seen the start, so a
provider that gathered the whole file before passing it on would never finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import msgspec
import pytest
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer

from gateway.provider import FileUpload
from gateway_azure import AzureOpenAIProvider, AzureSettings

FIRST, REST = b'{"messages": []}\n' * 4096, b'{"messages": ["last"]}\n'
MakeServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture(params=["v1", "2024-10-21"])
def api_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_upload_streams_to_azure(aiohttp_server: MakeServer, api_version: str) -> None:
    started = asyncio.Event()
    received = bytearray()

    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            while chunk := await part.read_chunk(4096):
                if part.name == "file":
                    received.extend(chunk)
                    # Not all of FIRST: the reader holds back a boundary's length of it.
                    if len(received) >= len(FIRST) // 2:
                        started.set()
        file = {"id": "file-1", "object": "file", "bytes": len(received), "created_at": 1}
        file |= {"filename": "t.jsonl", "purpose": "fine-tune", "status": "processed"}
        return web.json_response(file, status=201)

    async def chunks() -> AsyncIterator[bytes]:
        yield FIRST
        await asyncio.wait_for(started.wait(), 5)  # Azure has the start: only now the rest
        yield REST

    app = web.Application()
    app.router.add_post("/openai/v1/files" if api_version == "v1" else "/openai/files", upload)
    server = await aiohttp_server(app)
    settings = AzureSettings(
        api_key="k", api_version=api_version, custom_host=str(server.make_url(""))
    )
    async with aiohttp.ClientSession() as http:
        provider = AzureOpenAIProvider(settings, http)
        result = await provider.upload_file(FileUpload("t.jsonl", "fine-tune", chunks()))
    size = msgspec.json.decode(result)["bytes"] if isinstance(result, msgspec.Raw) else result.bytes
    assert size == len(FIRST + REST) and bytes(received) == FIRST + REST


async def test_download_streams_from_azure(aiohttp_server: MakeServer, api_version: str) -> None:
    consumed = asyncio.Event()

    async def content(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        await response.write(FIRST)
        await asyncio.wait_for(consumed.wait(), 5)  # the client has the start: now the rest
        await response.write(REST)
        await response.write_eof()
        return response

    app = web.Application()
    prefix = "/openai/v1" if api_version == "v1" else "/openai"
    app.router.add_get(prefix + "/files/{file_id}/content", content)
    server = await aiohttp_server(app)
    settings = AzureSettings(
        api_key="k", api_version=api_version, custom_host=str(server.make_url(""))
    )
    got = bytearray()
    async with aiohttp.ClientSession() as http:
        download = await AzureOpenAIProvider(settings, http).file_content("file-1")
        async for chunk in download.chunks:
            got.extend(chunk)
            if len(got) >= len(FIRST):
                consumed.set()
        assert download.release is not None
        await download.release()
    assert bytes(got) == FIRST + REST
