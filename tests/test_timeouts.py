"""Timeouts of upstream calls: read and connect per virtual key, a total per request.

A stalled upstream is a 504 within the configured time, and its connection is given up
(the gateway's connection pool holds nothing afterwards). Bounds on elapsed time are
generous: they tell "cut off at the timeout" from "waited for the upstream".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from gateway import keys
from gateway.app import make_app
from gateway.config import parse_config
from gateway.retry import CallPolicy, Failure, RetryPolicy, policy_applied, with_retries
from tests.conftest import GATEWAY_KEY, Stack, base_config

ATTEMPTS = "x-upstream-attempts"
STALL = 2.0  # seconds an upstream stalls: longer than any timeout configured here


def started(stack: Stack, raw: dict[str, Any]) -> tuple[openai.OpenAI, web.Application]:
    """A gateway with this config, and its app, whose upstream connections tests inspect."""
    app = make_app(parse_config(raw, stack.registry, {}), stack.registry)
    url = stack.servers.serve(app) + "/v1"
    return stack.client(GATEWAY_KEY, base_url=url), app


def connections_in_use(stack: Stack, app: web.Application) -> int:
    async def count() -> int:
        # aiohttp has no public count of the connections handed out and not released.
        return len(app[keys.HTTP].connector._acquired)  # type: ignore[union-attr]

    return stack.servers.run(count())


def timed_failure(call: Any) -> tuple[openai.APIStatusError, float]:
    begun = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        call()
    return failed.value, time.monotonic() - begun


@pytest.fixture
def body_staller(stack: Stack) -> Iterator[str]:
    """An upstream that answers 200 with its headers, then stalls in the middle of the body."""
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"object": "list", "da')
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), STALL)
        return response

    app = web.Application()
    app.router.add_get("/v1/files", stall)
    yield stack.servers.serve(app) + "/v1"
    stack.servers.loop.call_soon_threadsafe(release.set)


def test_upstream_stalling_before_answering_is_504_within_read_timeout(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["upstream"].update(read_timeout=0.5, retry={"attempts": 3, "backoff": 0.01})
    client, app = started(stack, raw)
    stack.upstream.stall_next(STALL)

    error, took = timed_failure(client.fine_tuning.jobs.list)

    assert error.status_code == 504
    assert error.response.json()["error"]["code"] == "upstream_timeout"
    assert error.response.headers[ATTEMPTS] == "1"  # a timeout is not retried
    assert took < STALL
    assert connections_in_use(stack, app) == 0


def test_upstream_stalling_mid_body_is_504_and_its_connection_is_freed(
    stack: Stack, body_staller: str
) -> None:
    raw = base_config(stack.upstream_url)
    raw["upstream"]["read_timeout"] = 0.5
    raw["virtual_keys"]["openai-main"]["base_url"] = body_staller
    client, app = started(stack, raw)

    error, took = timed_failure(client.files.list)

    assert error.status_code == 504
    assert took < STALL
    assert connections_in_use(stack, app) == 0


@pytest.fixture
def hanging_connect() -> Iterator[str]:
    """A loopback port whose connects hang: its accept queue is full and nothing accepts."""
    with contextlib.ExitStack() as sockets:
        listener = sockets.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):  # more than the queue holds: later SYNs are dropped
            filler = sockets.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield f"http://127.0.0.1:{port}/v1"


def test_virtual_key_connect_timeout_cuts_a_hanging_connect(
    stack: Stack, hanging_connect: str
) -> None:
    raw = base_config(stack.upstream_url)
    raw["upstream"].update(connect_timeout=30.0, retry={"attempts": 3, "backoff": 0.01})
    raw["virtual_keys"]["openai-main"].update(base_url=hanging_connect, connect_timeout=0.3)
    client, app = started(stack, raw)

    error, took = timed_failure(client.files.list)

    assert error.status_code == 504
    assert error.response.headers[ATTEMPTS] == "1"
    assert took < 10.0  # the virtual key's 0.3 s, not the default 30 s
    assert connections_in_use(stack, app) == 0


def test_virtual_key_read_timeout_overrides_the_default(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["virtual_keys"]["openai-main"]["read_timeout"] = 0.4  # the default is 5 s
    client, _ = started(stack, raw)
    stack.upstream.stall_next(STALL)

    error, took = timed_failure(client.files.list)

    assert error.status_code == 504
    assert took < STALL


def test_request_timeout_bounds_the_whole_request(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["upstream"]["request_timeout"] = 0.6  # the read timeout (5 s) would wait longer
    client, app = started(stack, raw)
    stack.upstream.stall_next(STALL)

    error, took = timed_failure(client.files.list)

    assert error.status_code == 504
    assert error.response.json()["error"]["code"] == "request_timeout_exceeded"
    assert took < STALL
    assert connections_in_use(stack, app) == 0


def test_retries_stay_within_the_request_timeout(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["upstream"].update(request_timeout=1.5, retry={"attempts": 5, "max_backoff": 2.0})
    client, _ = started(stack, raw)
    # Each answer asks for a 1 s wait: a second wait would end past the 1.5 s total.
    stack.upstream.fail_next(503, headers={"Retry-After": "1"}, times=5)

    error, took = timed_failure(client.files.list)

    assert error.status_code == 502  # the upstream's last answer, not a timeout
    assert error.response.headers[ATTEMPTS] == "2"
    assert 1.0 <= took < 5.0


def test_inline_request_timeout_is_milliseconds_and_only_shortens(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["upstream"]["request_timeout"] = 0.8
    client, _ = started(stack, raw)

    for asked, applied in [(300, "0.3 s"), (60_000, "0.8 s")]:
        stack.upstream.stall_next(STALL)
        inline = json.dumps({"virtual_key": "openai-main", "request_timeout": asked})
        error, _ = timed_failure(
            lambda header=inline: client.files.list(extra_headers={"x-portkey-config": header})
        )
        assert error.status_code == 504
        assert error.message.endswith(f"request_timeout of {applied}")


async def test_work_outliving_its_request_keeps_retrying_without_the_request_clock() -> None:
    # Managed mode stages in the background: the target it opens keeps its retries after
    # the request that started it has hit its request_timeout.
    request = CallPolicy(request_timeout=0.05)
    target = CallPolicy(retry=RetryPolicy(attempts=3, backoff=0.01))
    tries = 0

    async def flaky() -> str:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise ConnectionResetError
        return "staged"

    async def background() -> str:
        await asyncio.sleep(0.1)  # the request's clock has run out by now
        async with policy_applied(target, enforce_total=False):
            return await with_retries(flaky, idempotent=True, failure_of=lambda _: Failure(None))

    async with policy_applied(request):
        staging = asyncio.create_task(background())
    assert await staging == "staged"
    assert tries == 3
