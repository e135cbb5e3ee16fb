"""Finding 3: redirects are never followed, by any kind of upstream call.

The virtual key's upstream answers every request with a redirect to the internal
service on 127.0.0.2. Before, file downloads and multipart uploads followed it and
streamed the internal service's answer back to the caller. Now each is a 502
``upstream_redirect`` and the internal service is never called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import keys
from gateway.app import make_app
from gateway.config import parse_config
from gateway.errors import GatewayError
from gateway.registry import Registry
from tests.conftest import TRAINING_JSONL
from tests.security.conftest import KEY_A, SECRET_A, SECRET_B, Gateway, Recorder, call

REDIRECTS = [301, 302, 303, 307, 308]


@pytest.fixture
async def redirecting(internal: Recorder) -> AsyncIterator[list[int]]:
    """An upstream on 127.0.0.1 answering each request with the status at the list's
    head, pointing at the internal service."""
    status = [302]

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        location = f"{internal.url}{request.path_qs}"
        return web.Response(status=status[0], headers={"Location": location})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    status.append(server.port or 0)
    yield status
    await server.close()


async def _upload(url: str) -> tuple[int, dict[str, object]]:
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", TRAINING_JSONL, filename="train.jsonl")
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY_A}"}) as http,
        http.post(f"{url}/files", data=form) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("code", REDIRECTS)
async def test_an_upstream_redirect_is_a_502_and_its_target_is_never_called(
    gateway: Gateway, internal: Recorder, redirecting: list[int], code: int
) -> None:
    redirecting[0] = code
    base_url = f"http://127.0.0.1:{redirecting[1]}/v1"
    keys = {
        "vk-a": {"provider": "openai", "api_key": SECRET_A, "base_url": base_url},
        "vk-b": {"provider": "openai", "api_key": SECRET_B, "base_url": base_url},
    }
    url = await gateway(virtual_keys=keys, configs={})
    auth = {"authorization": f"Bearer {KEY_A}"}
    answers = [
        await call(f"{url}/fine_tuning/jobs", **auth),  # JSON, by the lean client
        await call(f"{url}/files/file-abc/content", **auth),  # a streamed download
        await call(f"{url}/files/file-abc", "DELETE", **auth),
        await _upload(url),  # a streamed multipart upload
    ]
    for status, body in answers:
        assert status == 502, body
        error = body["error"]
        assert isinstance(error, dict) and error["code"] == "upstream_redirect", error
        assert "127.0.0.2" not in str(error["message"])
    assert internal.hits == [], "a redirect was followed to the internal service"


async def test_a_library_call_that_would_follow_a_redirect_is_refused_by_the_session(
    registry: Registry, internal: Recorder, redirecting: list[int]
) -> None:
    """Libraries that call through the gateway's shared session (gcloud-aio's token and
    Cloud Storage metadata calls) leave aiohttp's ``allow_redirects=True``: the session
    itself refuses to follow, so no caller has to remember."""
    # Both the redirecting host and the internal one allowed: only the redirect refusal
    # stands between them, and the egress check cannot hide its absence.
    config = parse_config({"egress": {"allow_networks": ["127.0.0.0/8"]}}, registry, {})
    server = TestServer(make_app(config, registry))
    await server.start_server()
    try:
        http: aiohttp.ClientSession = server.app[keys.HTTP]
        with pytest.raises(GatewayError) as refused:
            await http.post(f"http://127.0.0.1:{redirecting[1]}/token", data=b"assertion")
        assert refused.value.code == "upstream_redirect"
    finally:
        await server.close()
    assert internal.hits == [], "a redirect was followed to the internal service"
