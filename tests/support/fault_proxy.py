"""A forwarding proxy on 127.0.0.1 that misbehaves on request, to test upstream faults.

It sits between the gateway and a stand-in (moto, fake-gcs-server, a fake OpenAI) and
passes every request through unchanged (its ``Host`` too, so signatures still hold),
except the ones a fault matches:

- ``answer``: answer a status without forwarding (the upstream never saw it);
- ``answer_after``: forward, then answer a status in place of the upstream's answer (the
  upstream acted: a job was made, and the answer was lost);
- ``reset``: read ``after_bytes`` of the body, then reset the connection (RST);
- ``disconnect``: close the connection without an answer (the server went away).

Each fault applies to the next ``times`` matching requests. Every request is recorded.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

Action = Literal["answer", "answer_after", "reset", "disconnect"]
# Hop-by-hop and framing headers: aiohttp sets its own for the bytes it sends.
_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    fault: Action | None = None


@dataclass
class Fault:
    match: Callable[[Seen], bool]
    action: Action
    times: int
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    after_bytes: int = 0


@dataclass
class FaultProxy:
    target: str  # the stand-in's base URL
    url: str = ""  # this proxy's base URL, set once served
    seen: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def add(
        self,
        match: Callable[[Seen], bool],
        action: Action,
        times: int = 1,
        *,
        status: int = 500,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        after_bytes: int = 0,
    ) -> None:
        self.faults.append(Fault(match, action, times, status, body, headers or {}, after_bytes))

    def requests(self, method: str, path_part: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == method and path_part in s.path]

    def _fault_for(self, seen: Seen) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.match(seen):
                fault.times -= 1
                return fault
        return None


STATE = web.AppKey("fault_proxy", FaultProxy)
HTTP = web.AppKey("fault_proxy_http", aiohttp.ClientSession)


async def _handle(request: web.Request) -> web.StreamResponse:
    proxy = request.app[STATE]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    seen = Seen(request.method, request.path, dict(request.query), headers, b"")
    proxy.seen.append(seen)
    fault = proxy._fault_for(seen)
    if fault is not None:
        seen.fault = fault.action
    if fault is not None and fault.action == "reset":
        seen.body = await request.content.read(fault.after_bytes)
        _reset(request)
        return web.Response()  # never sent: the connection is gone
    seen.body = await request.read()
    if fault is not None and fault.action == "disconnect":
        assert request.transport is not None
        request.transport.close()
        return web.Response()
    if fault is not None and fault.action == "answer":
        return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
    async with request.app[HTTP].request(
        request.method,
        proxy.target + request.path_qs,
        data=seen.body,
        headers=headers,
        allow_redirects=False,
    ) as upstream:
        answer = await upstream.read()
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED}
    if "Location" in out:
        out["Location"] = out["Location"].replace(proxy.target, proxy.url)
    if fault is not None:  # answer_after: the upstream acted, its answer is lost
        return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
    return web.Response(status=upstream.status, body=answer, headers=out)


def _reset(request: web.Request) -> None:
    """Close with a TCP reset (linger 0), as a crashed or cut-off server does."""
    transport = request.transport
    assert transport is not None
    sock: socket.socket = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _client(app: web.Application) -> AsyncIterator[None]:
    # No decompression: bytes pass through as the stand-in sent them.
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        app[HTTP] = http
        yield


def make_app(proxy: FaultProxy) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = proxy
    app.cleanup_ctx.append(_client)
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app
