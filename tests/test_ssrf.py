"""Requests that aim the gateway at loopback, refused before anything leaves it.

A recording listener on 127.0.0.1 stands for an internal service: it notes every
connection it accepts. The gateway's allow-list names only a documentation network and
a made-up name, so every loopback spelling a request uses (as ``x-portkey-custom-host``,
an inline config's ``custom_host`` or ``base_url``, managed mode's ``portkey_options``)
must be a 400 while the listener stays untouched. Only spellings that land on loopback
are sent, so even a broken check could reach nothing but the listener; the private
ranges and the metadata address are tested on the checker itself (test_addresses.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from tests.conftest import TRAINING_JSONL

REFUSING = ["203.0.113.0/24", "api.finetune-gateway.test"]
LOOPBACK = ["127.0.0.0/8", "::1", "localhost"]
# Every way of writing "this machine" that reaches the listener if let through.
SPELLINGS = [
    "localhost",
    "LOCALHOST",
    "localhost.",
    "0.0.0.0",
    "0",
    "[::1]",
    "[::]",
    "0x7f000001",
    "2130706433",
    "017700000001",
    "0177.0.0.1",
    "127.1",
    "127.0.0.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
]
LIST_BODY = b'{"object": "list", "data": [], "has_more": false}'


@dataclass
class Listener:
    """A raw HTTP server on 127.0.0.1 that records every connection it accepts."""

    port: int = 0
    connections: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(b"")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            head = b""
        self.connections[-1] = head
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(LIST_BODY), LIST_BODY)
        )
        await writer.drain()
        writer.close()


@dataclass
class Stand:
    listener: Listener
    registry: Registry
    tmp_path: Path
    servers: list[TestServer] = field(default_factory=list)

    async def gateway(self, allowlist: list[str]) -> str:
        """A gateway whose custom-host allow-list is ``allowlist``; its base URL."""
        raw = {
            "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0},
            "routing": {"accept_header_credentials": True, "custom_host_allowlist": allowlist},
            "virtual_keys": {
                # Port 9 (discard) on loopback: nothing listens, nothing is recorded.
                "openai-main": {
                    "provider": "openai",
                    "api_key": "sk-config",
                    "base_url": "http://127.0.0.1:9/v1",
                },
            },
            "providers": {"portkey": {"data_dir": str(self.tmp_path / "managed")}},
        }
        server = TestServer(make_app(parse_config(raw, self.registry, {}), self.registry))
        await server.start_server()
        self.servers.append(server)
        return str(server.make_url("/v1"))

    def url(self, spelling: str) -> str:
        return f"http://{spelling}:{self.listener.port}/v1"


@pytest.fixture
async def stand(registry: Registry, tmp_path: Path) -> AsyncIterator[Stand]:
    listener = Listener()
    server = await asyncio.start_server(listener.handle, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    built = Stand(listener, registry, tmp_path)
    yield built
    for gateway in built.servers:
        await gateway.close()
    server.close()
    await server.wait_closed()


async def get_jobs(gateway: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
        http.get(f"{gateway}/fine_tuning/jobs", headers=headers) as response,
    ):
        return response.status, await response.json()


# With the caller's own credentials: a virtual key's never go to a request-chosen host
# at all (tests/security/test_credentials_bound.py), so the allow-list is what is tested.
def header_custom_host(url: str) -> dict[str, str]:
    return {
        "x-portkey-provider": "openai",
        "authorization": "Bearer sk-caller-key",
        "x-portkey-custom-host": url,
    }


def inline_custom_host(url: str) -> dict[str, str]:
    config = {"provider": "openai", "api_key": "sk-inline-key", "custom_host": url}
    return {"x-portkey-config": json.dumps(config)}


def inline_base_url(url: str) -> dict[str, str]:
    config = {"provider": "openai", "api_key": "sk-inline-key", "base_url": url}
    return {"x-portkey-config": json.dumps(config)}


PLACES: list[tuple[Callable[[str], dict[str, str]], str]] = [
    (header_custom_host, "x-portkey-custom-host"),
    (inline_custom_host, "x-portkey-config.custom_host"),
    (inline_base_url, "x-portkey-config.base_url"),
]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(("place", "param"), PLACES, ids=[p for _, p in PLACES])
async def test_request_naming_loopback_is_refused_and_reaches_nothing(
    stand: Stand, place: Callable[[str], dict[str, str]], param: str, spelling: str
) -> None:
    gateway = await stand.gateway(REFUSING)
    status, body = await get_jobs(gateway, place(stand.url(spelling)))
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert (body["error"]["param"], body["error"]["code"]) == (param, "custom_host_not_allowed")
    assert stand.listener.connections == []


@pytest.mark.parametrize("spelling", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_request_naming_loopback_reaches_it_when_loopback_is_listed(
    stand: Stand, spelling: str
) -> None:
    """The control: the same requests do reach the listener once the list names loopback."""
    gateway = await stand.gateway([*REFUSING, *LOOPBACK])
    status, body = await get_jobs(gateway, header_custom_host(stand.url(spelling)))
    assert (status, body["object"]) == (200, "list")
    assert len(stand.listener.connections) == 1
    assert stand.listener.connections[0].startswith(b"GET /v1/fine_tuning/jobs?")


async def test_listed_name_that_resolves_to_loopback_is_refused(stand: Stand) -> None:
    """Listing the name is not enough: its addresses are held to the list too."""
    gateway = await stand.gateway([*REFUSING, "localhost"])
    for place, param in PLACES:
        status, body = await get_jobs(gateway, place(stand.url("localhost")))
        assert status == 400, body
        assert (body["error"]["param"], body["error"]["code"]) == (param, "custom_host_not_allowed")
        assert "loopback" in body["error"]["message"]
    assert stand.listener.connections == []


def rebinding_dns(real: Callable[..., Any], name: str, first: str, then: str) -> Callable[..., Any]:
    """``getaddrinfo`` where ``name`` answers ``first`` once, then ``then`` (a rebinding)."""
    answers = [first]

    async def getaddrinfo(host: str, port: Any, **kwargs: Any) -> Any:
        if host.rstrip(".").lower() != name:
            return await real(host, port, **kwargs)
        address = answers.pop() if answers else then
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    return getaddrinfo


async def test_name_rebound_to_loopback_after_the_check_is_refused_on_connecting(
    stand: Stand, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer passes the check, the one connected to is loopback.

    The gateway runs on this test's loop, so faking the loop's lookups fakes both its
    check and its HTTP client's. Only the first answer is a documentation address, and
    it is never connected to: every later answer is 127.0.0.1, the listener.
    """
    name = "api.finetune-gateway.test"
    loop = asyncio.get_running_loop()
    fake = rebinding_dns(loop.getaddrinfo, name, "203.0.113.10", "127.0.0.1")
    monkeypatch.setattr(loop, "getaddrinfo", fake)
    gateway = await stand.gateway(REFUSING)
    status, body = await get_jobs(gateway, header_custom_host(stand.url(name)))
    assert status == 502, body  # refused at connection time: the egress policy's 502
    assert body["error"]["code"] == "egress_refused"
    assert "127.0.0.1, a loopback address" in body["error"]["message"]
    assert stand.listener.connections == []


async def test_listed_name_that_does_not_resolve_is_a_clear_400(
    stand: Stand, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unknown(host: str, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", unknown)
    gateway = await stand.gateway(REFUSING)
    url = stand.url("api.finetune-gateway.test")
    status, body = await get_jobs(gateway, inline_base_url(url))
    assert status == 400, body
    assert body["error"]["param"] == "x-portkey-config.base_url"
    assert body["error"]["code"] == "custom_host_unresolvable"
    assert "api.finetune-gateway.test" in body["error"]["message"]


@pytest.mark.parametrize(
    ("option", "spelling"),
    [
        ("x-portkey-custom-host", "0x7f000001"),
        ("x-portkey-custom-host", "localhost"),
        ("x-portkey-base-url", "[::1]"),
        ("x-portkey-base-url", "2130706433"),
    ],
)
async def test_managed_job_options_naming_loopback_are_refused(
    stand: Stand, option: str, spelling: str
) -> None:
    """Managed mode lays a create body's portkey_options over the target's settings: only
    the bucket options are taken, so a URL among them is refused outright."""
    gateway = await stand.gateway(REFUSING)
    managed = {"x-portkey-provider": "portkey"}
    async with aiohttp.ClientSession(headers=managed) as http:
        form = aiohttp.FormData()
        form.add_field("purpose", "fine-tune")
        form.add_field("file", TRAINING_JSONL, filename="train.jsonl")
        async with http.post(f"{gateway}/files", data=form) as uploaded:
            assert uploaded.status == 200, await uploaded.text()
            file_id = (await uploaded.json())["id"]
        options = {"x-portkey-virtual-key": "openai-main", option: stand.url(spelling)}
        job = {"model": "gpt-4o-mini", "training_file": file_id, "portkey_options": options}
        async with http.post(f"{gateway}/fine_tuning/jobs", json=job) as created:
            body = await created.json()
            assert created.status == 400, body
        async with http.get(f"{gateway}/fine_tuning/jobs") as listed:
            assert (await listed.json())["data"] == [], "no job was kept"
    assert body["error"]["param"] == f"portkey_options.{option}"
    assert body["error"]["code"] == "unsupported_option"
    await asyncio.sleep(0.2)  # staging runs in the background: give a wrong one its chance
    assert stand.listener.connections == []
