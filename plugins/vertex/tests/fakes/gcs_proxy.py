"""A recording proxy in front of fake-gcs-server, to see and disturb the gateway's GCS traffic.

fake-gcs-server stores objects faithfully but is lenient where GCS is strict (it takes
chunks of any size, and a cancelled resumable session still accepts data), so tests
assert the protocol on what passed through here: every call with its Content-Range,
body size, Authorization and answer. ``fail_put`` makes the n-th PUT fail the way GCS
fails, to test that a broken upload leaves nothing behind. Session URIs in ``Location``
are rewritten to point back through the proxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_FORWARDED = ("Authorization", "Content-Type", "Content-Range", "X-Upload-Content-Type")


@dataclass
class GcsCall:
    method: str
    path: str
    query: dict[str, str]
    content_range: str | None
    body_bytes: int
    authorization: str | None
    status: int = 0


@dataclass
class GcsProxyState:
    target: str  # fake-gcs-server's base URL
    url: str = ""  # this proxy's base URL, set once it is served
    calls: list[GcsCall] = field(default_factory=list)
    put_faults: dict[int, int] = field(default_factory=dict)  # n-th PUT (from 1) -> status

    def fail_put(self, nth: int, status: int = 503) -> None:
        self.put_faults[nth] = status

    def puts(self) -> list[GcsCall]:
        return [c for c in self.calls if c.method == "PUT"]


STATE = web.AppKey("gcs_proxy_state", GcsProxyState)
HTTP = web.AppKey("gcs_proxy_http", aiohttp.ClientSession)


async def _forward(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.read()
    call = GcsCall(
        request.method,
        request.path,
        dict(request.query),
        request.headers.get("Content-Range"),
        len(body),
        request.headers.get("Authorization"),
    )
    state.calls.append(call)
    if request.method == "PUT":
        fault = state.put_faults.pop(len(state.puts()), None)
        if fault is not None:
            call.status = fault
            error = {"code": fault, "message": "Backend Error", "errors": []}
            return web.json_response({"error": error}, status=fault)
    headers = {h: request.headers[h] for h in _FORWARDED if h in request.headers}
    async with request.app[HTTP].request(
        request.method,
        state.target + request.path_qs,
        data=body,
        headers=headers,
        allow_redirects=False,
    ) as upstream:
        answer = await upstream.read()
        call.status = upstream.status
        out = {h: upstream.headers[h] for h in ("Content-Type", "Range") if h in upstream.headers}
        if "Location" in upstream.headers:
            out["Location"] = upstream.headers["Location"].replace(state.target, state.url)
    return web.Response(status=upstream.status, body=answer, headers=out)


async def _client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        app[HTTP] = http
        yield


def make_app(state: GcsProxyState) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.cleanup_ctx.append(_client)
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app
