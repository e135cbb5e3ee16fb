"""Every failure answers in OpenAI's envelope, with the status the SDK maps to its class."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.conftest import (
    GATEWAY_KEY,
    OTHER_GATEWAY_KEY,
    TRAINING_JSONL,
    UPSTREAM_KEY,
    Stack,
    base_config,
)


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def _health(stack: Stack) -> int:
    return stack.client().with_raw_response.files.list().status_code


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"training_file": "file-x"}, "model"),
        ({"model": "m", "training_file": 5}, "training_file"),
        ({"model": "m", "training_file": "f", "suffix": "x" * 65}, "suffix"),
        ({"model": "m", "training_file": "f", "seed": -1}, "seed"),
        (
            {
                "model": "m",
                "training_file": "f",
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": "x"}},
                },
            },
            "method.supervised.hyperparameters.n_epochs",
        ),
        (
            {
                "model": "m",
                "training_file": "f",
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}},
            },
            "method.dpo.hyperparameters.beta",
        ),
        ({"model": "m", "training_file": "f", "method": {"type": "magic"}}, "method.type"),
        (
            {"model": "m", "training_file": "f", "metadata": {f"k{i}": "v" for i in range(17)}},
            "metadata",
        ),
    ],
)
def test_create_job_invalid_body_names_param(
    stack: Stack, body: dict[str, Any], param: str
) -> None:
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/fine_tuning/jobs", body=body, cast_to=object)
    error = _error(caught.value)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert not [r for r in stack.upstream.requests if r.method == "POST"], "nothing sent upstream"


async def test_malformed_json_is_400(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        for body in (b'{"model": ', b"[1, 2]"):
            async with http.post(
                f"{stack.gateway_url}/fine_tuning/jobs",
                data=body,
                headers={
                    "Authorization": f"Bearer {GATEWAY_KEY}",
                    "Content-Type": "application/json",
                },
            ) as response:
                assert response.status == 400
                assert (await response.json())["error"]["code"] == "invalid_json"
                assert response.headers["x-request-id"]


def test_routing_errors(stack: Stack) -> None:
    cases: list[tuple[dict[str, str], type[openai.APIStatusError], str | None]] = [
        ({"x-portkey-provider": "nope"}, openai.BadRequestError, "x-portkey-provider"),
        ({"x-portkey-virtual-key": "missing"}, openai.BadRequestError, "x-portkey-virtual-key"),
        ({"x-portkey-config": "{not json"}, openai.BadRequestError, "x-portkey-config"),
        (
            {"x-portkey-config": '{"strategy": {"mode": "fallback"}}'},
            openai.BadRequestError,
            "x-portkey-config.strategy",
        ),
        # The bearer is the gateway key, so no OpenAI key is left for the provider.
        ({"x-portkey-provider": "openai"}, openai.AuthenticationError, None),
        (
            {
                "x-portkey-virtual-key": "openai-main",
                "x-portkey-custom-host": "http://169.254.169.254/latest",
            },
            openai.BadRequestError,
            "x-portkey-custom-host",
        ),
        (
            {
                "x-portkey-virtual-key": "openai-main",
                "x-portkey-custom-host": "http://10.0.0.7:8080/v1",
            },
            openai.BadRequestError,
            "x-portkey-custom-host",
        ),
        (
            {
                "x-portkey-virtual-key": "openai-main",
                "x-portkey-custom-host": "http://user@127.0.0.1/v1",
            },
            openai.BadRequestError,
            "x-portkey-custom-host",
        ),
    ]
    for headers, error_class, param in cases:
        client = stack.client(api_key=OTHER_GATEWAY_KEY, default_headers=headers)
        with pytest.raises(error_class) as caught:
            client.fine_tuning.jobs.list()
        assert _error(caught.value)["param"] == param, headers
    # A gateway key without a default virtual key, and no routing headers.
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client(api_key=OTHER_GATEWAY_KEY).fine_tuning.jobs.list()
    assert _error(caught.value)["code"] == "missing_provider"
    assert stack.upstream.requests == [], "no refused request reached the upstream"
    assert _health(stack) == 200


def test_gateway_key_missing_or_wrong_is_401(stack: Stack) -> None:
    for key in ("wrong-key-0123456789", UPSTREAM_KEY):
        with pytest.raises(openai.AuthenticationError) as caught:
            stack.client(api_key=key).fine_tuning.jobs.list()
        assert _error(caught.value)["code"] == "invalid_api_key"
        assert key not in caught.value.response.text
    assert stack.upstream.requests == []


def test_header_credentials_refused_where_config_forbids(stack: Stack) -> None:
    config = base_config(stack.upstream_url)
    config["routing"]["accept_header_credentials"] = False
    url = stack.start_gateway(config)
    client = stack.client(
        UPSTREAM_KEY,
        base_url=url,
        default_headers={"x-portkey-provider": "openai", "x-portkey-api-key": GATEWAY_KEY},
    )
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.fine_tuning.jobs.list()
    assert _error(caught.value)["code"] == "header_credentials_not_allowed"
    inline = stack.client(
        GATEWAY_KEY,
        base_url=url,
        default_headers={"x-portkey-config": '{"provider": "openai", "api_key": "sk-x"}'},
    )
    with pytest.raises(openai.PermissionDeniedError):
        inline.fine_tuning.jobs.list()
    assert stack.upstream.requests == []


def test_upstream_client_errors_keep_status_message_and_param(stack: Stack) -> None:
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(training_file="file-doesnotexist", model="gpt-4o-mini")
    assert _error(bad.value)["param"] == "training_file"
    assert "file-doesnotexist" in _error(bad.value)["message"]

    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    assert "ftjob-nope" in _error(missing.value)["message"]

    for status, error_class in [
        (409, openai.ConflictError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
    ]:
        stack.upstream.fail_next(
            status,
            {
                "error": {
                    "message": f"upstream says {status}",
                    "type": "x",
                    "param": None,
                    "code": "c",
                }
            },
            headers={"Retry-After": "7"},
        )
        with pytest.raises(error_class) as caught:
            client.fine_tuning.jobs.list()
        assert _error(caught.value)["message"] == f"upstream says {status}"
        if status == 429:
            assert caught.value.response.headers["retry-after"] == "7"
    assert _health(stack) == 200


def test_upstream_rejecting_configured_key_is_502_without_the_key(stack: Stack) -> None:
    client = stack.client(default_headers={"x-portkey-virtual-key": "openai-revoked"})
    with pytest.raises(openai.InternalServerError) as caught:
        client.fine_tuning.jobs.list()
    assert caught.value.status_code == 502
    error = _error(caught.value)
    assert error["code"] == "upstream_auth_failed"
    assert "sk-revoked-key-abcdef" not in caught.value.response.text


def test_upstream_rejecting_caller_key_is_401(stack: Stack) -> None:
    client = stack.client(
        api_key="sk-callers-own-bad-key",
        default_headers={
            "x-portkey-provider": "openai",
            "x-portkey-api-key": OTHER_GATEWAY_KEY,
            "x-portkey-custom-host": stack.upstream_url,
        },
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        client.fine_tuning.jobs.list()
    assert "sk-callers-own-bad-key" not in caught.value.response.text


def test_upstream_server_error_and_bad_answer_are_502(stack: Stack) -> None:
    client = stack.client()
    stack.upstream.fail_next(
        500,
        {
            "error": {
                "message": "The server had an error",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.fine_tuning.jobs.list()
    assert caught.value.status_code == 502
    assert "The server had an error" in _error(caught.value)["message"]

    stack.upstream.fail_next(200, b"<html>not json</html>")
    with pytest.raises(openai.InternalServerError) as garbled:
        client.fine_tuning.jobs.list()
    assert _error(garbled.value)["code"] == "upstream_bad_response"
    assert _health(stack) == 200


def test_upstream_unreachable_is_502(stack: Stack) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The caller's own key to a host of its choosing (a virtual key's never goes to one).
    client = stack.client(
        api_key=UPSTREAM_KEY,
        default_headers={
            "x-portkey-provider": "openai",
            "x-portkey-api-key": GATEWAY_KEY,
            "x-portkey-custom-host": f"http://127.0.0.1:{port}/v1",
        },
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.fine_tuning.jobs.list()
    assert caught.value.status_code == 502
    assert _error(caught.value)["code"] == "upstream_unreachable"
    assert _health(stack) == 200


def test_upstream_stall_is_504(stack: Stack) -> None:
    config = base_config(stack.upstream_url)
    config["upstream"]["read_timeout"] = 0.3
    url = stack.start_gateway(config)
    stack.upstream.stall_next(3)
    client = stack.client(
        GATEWAY_KEY,
        base_url=url,
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.fine_tuning.jobs.list()
    assert caught.value.status_code == 504
    assert _error(caught.value)["code"] == "upstream_timeout"
    assert client.with_raw_response.files.list().status_code == 200


def test_bodies_over_the_limits_are_413_and_nothing_is_kept(stack: Stack) -> None:
    config = base_config(stack.upstream_url)
    config["limits"] = {"max_json_body_bytes": 200, "max_upload_bytes": 1000}
    url = stack.start_gateway(config)
    client = stack.client(
        GATEWAY_KEY,
        base_url=url,
    )
    with pytest.raises(openai.APIStatusError) as big_json:
        client.fine_tuning.jobs.create(training_file="f" * 300, model="gpt-4o-mini")
    assert big_json.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as big_file:
        client.files.create(file=("big.jsonl", TRAINING_JSONL * 20), purpose="fine-tune")
    assert big_file.value.status_code == 413
    assert _error(big_file.value)["param"] == "file"
    assert stack.upstream.files == {}
    assert client.with_raw_response.files.list().status_code == 200


async def test_streamed_upload_over_limit_is_413_and_nothing_is_kept(stack: Stack) -> None:
    """Without a Content-Length the limit is enforced while streaming."""
    config = base_config(stack.upstream_url)
    config["limits"] = {"max_upload_bytes": 100_000}
    url = stack.start_gateway(config)

    async def body() -> Any:
        yield b'--bnd\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
        for _ in range(50):
            yield TRAINING_JSONL * 40
        yield b"\r\n--bnd--\r\n"

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/files",
            data=body(),
            headers={
                "Authorization": f"Bearer {GATEWAY_KEY}",
                "Content-Type": "multipart/form-data; boundary=bnd",
            },
        ) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "file_too_large"
    assert stack.upstream.files == {}


def test_invalid_ids_and_unknown_paths(stack: Stack) -> None:
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.retrieve("..%2F..%2Ffiles")
    assert _error(caught.value)["param"] == "fine_tuning_job_id"
    with pytest.raises(openai.NotFoundError):
        client.get("/models", cast_to=object)
    assert [r.path for r in stack.upstream.requests] == []


async def test_upload_cut_off_mid_stream_leaves_nothing_upstream(stack: Stack) -> None:
    host, port = stack.gateway_url.removeprefix("http://").removesuffix("/v1").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {GATEWAY_KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=bnd\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    part = (
        b'--bnd\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
        + TRAINING_JSONL
        * 1000
    )
    writer.write(head.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)  # the gateway has started streaming upstream
    writer.close()  # the client goes away mid-file
    await writer.wait_closed()
    del reader
    for _ in range(50):
        await asyncio.sleep(0.05)
        if any(r.path == "/v1/files" for r in stack.upstream.requests):
            break
    await asyncio.sleep(0.2)
    assert any(r.path == "/v1/files" for r in stack.upstream.requests), "streaming had begun"
    assert stack.upstream.files == {}, "a cut-off upload leaves no file upstream"
    assert await asyncio.to_thread(_health, stack) == 200


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"garbage"),
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data; boundary=x", b"--x"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--x\r\n'
            b'Content-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        ),
        ("application/json", b"{}"),
        ("multipart/form-data; boundary=x", b"--x--\r\n"),
    ],
    ids=[
        "no-boundary",
        "no-start",
        "truncated-head",
        "unterminated-file",
        "not-multipart",
        "no-parts",
    ],
)
async def test_malformed_upload_is_400_and_nothing_is_kept(
    stack: Stack, content_type: str, body: bytes
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.gateway_url}/files",
            data=body,
            headers={"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": content_type},
        ) as response,
    ):
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["param"] == "file"
    assert stack.upstream.files == {}
    assert await asyncio.to_thread(_health, stack) == 200


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
async def test_download_cut_mid_stream_upstream_is_an_incomplete_body_for_the_client(
    stack: Stack, with_length: bool
) -> None:
    """Headers are sent before the upstream fails: the client must see a short body."""

    async def breaking_content(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if with_length:
            response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"x" * 100_000)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return response

    broken = web.Application()
    broken.router.add_get("/v1/files/{file_id}/content", breaking_content)
    broken_url = await asyncio.to_thread(stack.servers.serve, broken)
    # Bounded: a gateway that kept the connection open would leave the client waiting.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(
                f"{stack.gateway_url}/files/file-abc/content",
                headers={
                    "Authorization": f"Bearer {UPSTREAM_KEY}",
                    "x-portkey-api-key": GATEWAY_KEY,
                    "x-portkey-provider": "openai",
                    "x-portkey-custom-host": broken_url + "/v1",
                },
            ) as response:
                assert response.status == 200
                await response.read()
    assert await asyncio.to_thread(_health, stack) == 200
