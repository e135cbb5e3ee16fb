"""The stand the security suite attacks: a gateway, an internal service, a listener.

- ``internal``: a service on 127.0.0.2, standing for what sits behind the gateway
  (a metadata endpoint, an admin API). All of 127.0.0.0/8 is loopback on Linux, so no
  setup is needed. No test config allows it: every hit it records is a finding.
- ``listener``: an HTTP server on 127.0.0.1 that the config's allow-list does name,
  standing for a host the caller controls. It records every request's headers, so a
  credential that reaches it is seen.
- ``upstream``: the fake OpenAI the virtual keys are configured with.
Every server is on this test's loop and closed when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_fake_openai

KEY_A = "gw-team-a-0123456789abcdef"
KEY_B = "gw-team-b-0123456789abcdef"
SECRET_A = "sk-config-secret-of-team-a"
SECRET_B = "sk-config-secret-of-team-b"
AZURE_SECRET = "azure-config-secret-0123456789"
EMPTY_LIST = {"object": "list", "data": [], "has_more": False}


@dataclass
class Recorder:
    """A server that answers every request with an empty list and remembers it."""

    url: str = ""
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append((request.path_qs, dict(request.headers)))
        return web.json_response(EMPTY_LIST)

    def saw(self, text: str) -> bool:
        return any(text in path or text in str(headers) for path, headers in self.hits)


async def _recorder(host: str) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(app, host=host)
    await server.start_server()
    recorder.url = str(server.make_url("")).rstrip("/")
    yield recorder
    await server.close()


@pytest.fixture
async def internal() -> AsyncIterator[Recorder]:
    async for recorder in _recorder("127.0.0.2"):
        yield recorder


@pytest.fixture
async def listener() -> AsyncIterator[Recorder]:
    async for recorder in _recorder("127.0.0.1"):
        yield recorder


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[FakeOpenAIState, str]]:
    state = FakeOpenAIState(api_keys={SECRET_A, SECRET_B})
    server = TestServer(make_fake_openai(state), host="127.0.0.1")
    await server.start_server()
    yield state, str(server.make_url("/v1"))
    await server.close()


Gateway = Callable[..., Awaitable[str]]


@pytest.fixture
async def gateway(
    registry: Registry,
    tmp_path: Path,
    listener: Recorder,
    upstream: tuple[FakeOpenAIState, str],
) -> AsyncIterator[Gateway]:
    """``await gateway(**changes)``: a gateway for two teams, its /v1 URL.

    Team A's key may use ``vk-a`` only, team B's ``vk-b`` only. Header credentials are
    refused and the allow-list names the listener's address only (not 127.0.0.2).
    ``changes`` replace top-level tables of the config.
    """
    servers: list[TestServer] = []
    _, upstream_url = upstream

    async def start(**changes: Any) -> str:
        raw: dict[str, Any] = {
            "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0},
            "routing": {"accept_header_credentials": False, "custom_host_allowlist": ["127.0.0.1"]},
            "gateway_keys": {
                "team-a": {"key": KEY_A, "virtual_keys": ["vk-a"], "default_virtual_key": "vk-a"},
                "team-b": {"key": KEY_B, "virtual_keys": ["vk-b"]},
            },
            "virtual_keys": {
                "vk-a": {"provider": "openai", "api_key": SECRET_A, "base_url": upstream_url},
                "vk-b": {"provider": "openai", "api_key": SECRET_B, "base_url": upstream_url},
                "azure-a": {
                    "provider": "azure-openai",
                    "resource_name": "contoso",
                    "api_key": AZURE_SECRET,
                },
            },
            "configs": {"cfg-b": {"virtual_key": "vk-b"}},
            "providers": {"portkey": {"data_dir": str(tmp_path / "managed")}},
        }
        raw.update(changes)
        server = TestServer(make_app(parse_config(raw, registry, {}), registry))
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1"))

    yield start
    for server in servers:
        await server.close()


async def call(
    url: str, method: str = "GET", *, json: Any = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    """One request with ``headers`` (underscores become dashes); status and JSON body."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
        http.request(method, url, json=json, headers=sent) as response,
    ):
        return response.status, await response.json(content_type=None)
