"""Clients that stall or trickle are cut off after the configured limits, leave nothing
behind upstream, and do not keep the gateway from serving everyone else.

The gateway runs as ``serve`` runs it (``GatewayRunner``) with timeouts of half a second;
each bound asserted is a multiple of that, so a loaded machine does not fail them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, Stack
from tests.support.raw_http import (
    RawClient,
    file_part_head,
    form_end,
    form_field,
    request_head,
)
from tests.support.serve import start_gateway

TIMEOUT = 0.5
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.fixture
def gateway_url(stack: Stack) -> str:
    return start_gateway(stack, client_header_timeout=TIMEOUT, client_body_timeout=TIMEOUT)


async def _healthy(url: str) -> bool:
    client = await RawClient.connect(url)
    try:
        await client.send(request_head("GET", "/health"))
        return (await client.response(timeout=5)).status == 200
    finally:
        await client.close()


@pytest.mark.parametrize(
    "sent", [b"", b"POST /v1/files HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer gw-"]
)
async def test_connection_without_complete_headers_is_closed_after_the_header_timeout(
    gateway_url: str, sent: bytes
) -> None:
    """Silent after connecting, or stalled mid-headers (slowloris)."""
    client = await RawClient.connect(gateway_url)
    started = time.monotonic()
    await client.send(sent)
    assert await client.closed_by_server(10 * TIMEOUT)
    assert time.monotonic() - started >= TIMEOUT * 0.9
    assert await _healthy(gateway_url)


async def test_headers_trickling_in_are_cut_off_though_bytes_keep_coming(
    gateway_url: str,
) -> None:
    """The header timeout bounds the whole head, not the pause between its bytes."""
    client = await RawClient.connect(gateway_url)
    head = request_head("GET", "/v1/files", {**AUTH, "x-padding": "p" * 200})
    started = time.monotonic()
    closed = False
    for byte in head[:-4]:  # never complete
        try:
            await client.send(bytes([byte]))
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.02)
        if client.reader.at_eof() or time.monotonic() - started > 10 * TIMEOUT:
            break
    closed = closed or await client.closed_by_server(10 * TIMEOUT)
    assert closed and time.monotonic() - started < 10 * TIMEOUT
    assert await _healthy(gateway_url)


async def test_json_body_that_stalls_is_408_in_the_envelope(gateway_url: str, stack: Stack) -> None:
    client = await RawClient.connect(gateway_url)
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": "200"}
    await client.send(request_head("POST", "/v1/fine_tuning/jobs", headers) + b'{"model": "')
    response = await client.response(timeout=10 * TIMEOUT)
    assert response.status == 408
    error = response.error()
    assert error["code"] == "request_timeout" and "limits.client_body_timeout" in error["message"]
    assert await client.closed_by_server(10 * TIMEOUT)
    assert stack.upstream.jobs == {}
    assert await _healthy(gateway_url)


@pytest.mark.parametrize("purpose_first", [True, False], ids=["streamed", "spooled"])
async def test_upload_that_stalls_mid_file_is_408_and_leaves_nothing_upstream(
    gateway_url: str, stack: Stack, purpose_first: bool
) -> None:
    """Streamed straight to the provider (purpose first) or spooled (file first): either
    way the stalled upload is dropped whole."""
    client = await RawClient.connect(gateway_url)
    start = file_part_head() + TRAINING_JSONL
    if purpose_first:
        start = form_field("purpose", "fine-tune") + start
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=bnd"}
    headers["Content-Length"] = "100000"
    await client.send(request_head("POST", "/v1/files", headers) + start)
    await asyncio.sleep(TIMEOUT / 5)
    await client.send(TRAINING_JSONL)  # the gateway has started on the file; then silence
    response = await client.response(timeout=10 * TIMEOUT)
    assert response.status == 408
    assert response.error()["code"] == "request_timeout"
    if purpose_first:
        uploads = [r for r in stack.upstream.requests if r.path == "/v1/files"]
        assert uploads, "the file had started streaming upstream"
    await asyncio.sleep(0.1)  # the upstream sees its connection dropped
    assert stack.upstream.files == {}
    assert await _healthy(gateway_url)


async def test_slow_but_steady_upload_is_not_cut_off(gateway_url: str, stack: Stack) -> None:
    """The body timeout bounds each pause, not the upload: a slow client that keeps
    sending gets its file through, however long it takes in all."""
    body = form_field("purpose", "fine-tune") + file_part_head()
    pieces = [TRAINING_JSONL] * 8
    total = len(body) + sum(map(len, pieces)) + len(form_end())
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=bnd"}
    headers["Content-Length"] = str(total)
    client = await RawClient.connect(gateway_url)
    started = time.monotonic()
    await client.send(request_head("POST", "/v1/files", headers) + body)
    for piece in pieces:
        await asyncio.sleep(TIMEOUT / 2.5)
        await client.send(piece)
    await client.send(form_end())
    response = await client.response(timeout=10 * TIMEOUT)
    assert response.status == 200, response
    assert time.monotonic() - started > 3 * TIMEOUT  # longer in all than one timeout
    assert response.json()["bytes"] == len(TRAINING_JSONL) * 8
    await client.close()
