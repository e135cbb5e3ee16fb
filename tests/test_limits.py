"""Limits on what a client may send: header size, body size, uploads at once, and the
shape of an upload's multipart body. Every refusal is in OpenAI's envelope and names the
setting or the parameter at fault; nothing of a refused upload reaches the provider."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, Stack, base_config
from tests.support.raw_http import (
    LAST_CHUNK,
    RawClient,
    chunk,
    file_part_head,
    form_end,
    form_field,
    request_head,
)
from tests.support.serve import start_gateway

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
MULTIPART = {**AUTH, "Content-Type": "multipart/form-data; boundary=bnd"}
SECRET = "sk-live-must-never-be-logged-0123456789"


async def _get(url: str, path: str, headers: dict[str, str] | None = None) -> int:
    client = await RawClient.connect(url)
    try:
        await client.send(request_head("GET", path, headers))
        return (await client.response()).status
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("head", "setting"),
    [
        (
            request_head("GET", "/v1/files", {**AUTH, "x-portkey-api-key": SECRET + "x" * 2000}),
            "limits.max_header_bytes",
        ),
        (request_head("GET", "/v1/files?after=" + SECRET + "x" * 2000, AUTH), "max_header_bytes"),
        (
            request_head("GET", "/v1/files", {**AUTH, **{f"x-h{i}": SECRET for i in range(20)}}),
            "limits.max_header_count",
        ),
    ],
    ids=["long-header-field", "long-request-line", "too-many-fields"],
)
async def test_headers_over_the_limits_are_431_in_the_envelope_and_never_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture, head: bytes, setting: str
) -> None:
    url = await asyncio.to_thread(start_gateway, stack, max_header_bytes=1024, max_header_count=16)
    caplog.set_level(logging.DEBUG)
    client = await RawClient.connect(url)
    await client.send(head)
    response = await client.response()
    assert response.status == 431
    error = response.error()
    assert error["code"] == "request_header_too_large" and setting in error["message"]
    assert await client.closed_by_server(5)
    assert SECRET not in caplog.text, "the refused line was logged"
    assert "Traceback" not in caplog.text
    # Headers within the limits still pass.
    assert await _get(url, "/v1/files", AUTH) == 200


@pytest.mark.parametrize(
    "head",
    [
        request_head("GET", "/v1/files", {**AUTH, "x-portkey-api-key": SECRET + "\x00"}),
        b"GET /v1/files HTTP/1.1\r\nHost: g\r\nx-portkey-api-key " + SECRET.encode() + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00" + SECRET.encode() + b"\r\n\r\n",  # TLS to an HTTP port
    ],
    ids=["nul-in-value", "no-colon", "not-http"],
)
async def test_unparseable_requests_are_400_in_the_envelope_and_never_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture, head: bytes
) -> None:
    url = await asyncio.to_thread(start_gateway, stack)
    caplog.set_level(logging.DEBUG)
    client = await RawClient.connect(url)
    await client.send(head)
    response = await client.response()
    assert response.status == 400
    assert response.error()["code"] == "malformed_request"
    assert await client.closed_by_server(5)
    assert SECRET not in caplog.text
    assert "Traceback" not in caplog.text
    assert await _get(url, "/health") == 200


async def _wait_for_upstream_uploads(stack: Stack, count: int) -> None:
    async with asyncio.timeout(10):
        while sum(r.path == "/v1/files" for r in stack.upstream.requests) < count:
            await asyncio.sleep(0.02)


async def test_uploads_over_max_concurrent_uploads_are_429_before_the_body_is_read(
    stack: Stack,
) -> None:
    url = await asyncio.to_thread(start_gateway, stack, max_concurrent_uploads=2)
    chunked = {**MULTIPART, "Transfer-Encoding": "chunked"}
    started = form_field("purpose", "fine-tune") + file_part_head() + TRAINING_JSONL
    uploads = [await RawClient.connect(url) for _ in range(2)]
    for upload in uploads:
        await upload.send(request_head("POST", "/v1/files", chunked) + chunk(started))
    await asyncio.sleep(0.1)  # aiohttp hands a part's bytes on once more have come
    for upload in uploads:
        await upload.send(chunk(TRAINING_JSONL))
    await _wait_for_upstream_uploads(stack, 2)  # both are streaming: both slots taken

    # The third sends its headers only: the answer cannot have waited for its body.
    third = await RawClient.connect(url)
    await third.send(request_head("POST", "/v1/files", {**MULTIPART, "Content-Length": "9999"}))
    refused = await third.response(timeout=5)
    assert refused.status == 429
    assert refused.headers["retry-after"] == "5"
    error = refused.error()
    assert error["type"] == "rate_limit_error" and error["code"] == "too_many_uploads"
    assert "limits.max_concurrent_uploads" in error["message"]
    await third.close()

    # A slot freed is a slot taken again.
    first = uploads[0]
    await first.send(chunk(TRAINING_JSONL + form_end()) + LAST_CHUNK)
    assert (await first.response()).status == 200
    fourth = await RawClient.connect(url)
    body = form_field("purpose", "fine-tune") + file_part_head() + TRAINING_JSONL + form_end()
    await fourth.send(
        request_head("POST", "/v1/files", {**MULTIPART, "Content-Length": str(len(body))}) + body
    )
    assert (await fourth.response()).status == 200
    for client in [*uploads, fourth]:
        await client.close()
    assert len(stack.upstream.files) == 2


@pytest.mark.parametrize(
    ("path", "body", "limit_name"),
    [
        ("/v1/fine_tuning/jobs", b'{"model": "' + b"m" * 4000, "max_json_body_bytes"),
        (
            "/v1/files",
            form_field("purpose", "fine-tune") + file_part_head() + TRAINING_JSONL * 40,
            "max_upload_bytes",
        ),
    ],
    ids=["json", "upload"],
)
async def test_body_over_the_limit_is_413_before_the_client_has_sent_it_all(
    stack: Stack, path: str, body: bytes, limit_name: str
) -> None:
    """Without a Content-Length the limit is found while reading: the 413 comes as soon as
    it is passed, while the client is still sending, and nothing reaches the provider."""
    url = await asyncio.to_thread(
        start_gateway, stack, max_json_body_bytes=1000, max_upload_bytes=1000
    )
    client = await RawClient.connect(url)
    upload = path == "/v1/files"
    headers = {**AUTH, "Transfer-Encoding": "chunked"}
    headers["Content-Type"] = MULTIPART["Content-Type"] if upload else "application/json"
    await client.send(request_head("POST", path, headers) + chunk(body))
    for _ in range(3):  # a multipart part's bytes are handed on once more have come
        await asyncio.sleep(0.05)
        await client.send(chunk(body[-100:]))
    # ... and the body does not end: the answer comes all the same.
    response = await client.response(timeout=5)
    assert response.status == 413
    assert limit_name in response.error()["message"]
    await client.close()
    assert stack.upstream.files == {} and stack.upstream.jobs == {}


def _form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--bnd--\r\n"


_FILE = file_part_head() + TRAINING_JSONL + b"\r\n"
_PURPOSE = form_field("purpose", "fine-tune")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (_form(*(form_field(f"f{i}", "v") for i in range(17)), _FILE), "file", "too_many_parts"),
        (_form(form_field("purpose", "x" * 70_000), _FILE), "purpose", None),
        (_form(_PURPOSE), "file", "missing_file"),
        (_form(_FILE), "purpose", None),
        (_form(form_field("purpose", ""), _FILE), "purpose", None),
        (_form(_PURPOSE, _FILE, _FILE), "file", None),
        (
            _form(
                _PURPOSE,
                b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="'
                + b"a" * 10_000
                + b'"\r\n\r\nx\r\n',
            ),
            "file",
            "invalid_multipart",
        ),
        (
            _form(_PURPOSE, b"--bnd\r\n" + b"X-A: b\r\n" * 200 + b"\r\nx\r\n"),
            "file",
            "invalid_multipart",
        ),
        (
            _form(
                _PURPOSE,
                b'--bnd\r\nContent-Disposition: form-data; name="file"\r\n'
                b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n\r\nx\r\n--in--\r\n",
            ),
            "file",
            None,
        ),
    ],
    ids=[
        "too-many-fields",
        "field-too-long",
        "no-file-part",
        "no-purpose",
        "empty-purpose",
        "two-files",
        "part-header-too-long",
        "too-many-part-headers",
        "nested-multipart",
    ],
)
async def test_malformed_or_oversize_multipart_is_400_naming_the_param(
    stack: Stack, body: bytes, param: str, code: str | None
) -> None:
    client = await RawClient.connect(stack.gateway_url)
    headers = {**MULTIPART, "Content-Length": str(len(body))}
    await client.send(request_head("POST", "/v1/files", headers) + body)
    response = await client.response()
    await client.close()
    assert response.status == 400, response
    error = response.error()
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert stack.upstream.files == {}


def test_limit_and_grace_settings_must_be_positive(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["limits"] = {"client_body_timeout": 0}
    raw["server"] = {"shutdown_grace": -1}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, stack.registry, {})
    assert sorted(caught.value.problems) == [
        "limits.client_body_timeout: Expected `float` > 0.0",
        "server.shutdown_grace: Expected `float` > 0.0",
    ]
    raw = base_config(stack.upstream_url)
    raw["limits"] = {"max_concurrent_uploads": 0}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, stack.registry, {})
    assert caught.value.problems == ["limits.max_concurrent_uploads: Expected `int` >= 1"]
