"""One access-log line per request, every response names its request, no secret is logged."""

from __future__ import annotations

import logging
import re

import openai
import pytest

from tests.conftest import GATEWAY_KEY, OTHER_GATEWAY_KEY, TRAINING_JSONL, UPSTREAM_KEY, Stack

ACCESS = re.compile(
    r"request_id=(?P<id>\S+) method=(?P<method>[A-Z]+) path=(?P<path>\S+) "
    r"provider=(?P<provider>\S+) status=(?P<status>\d{3}) upstream_ms=(?P<upstream>\S+) "
    r"total_ms=(?P<total>[\d.]+) upstream_request_id=(?P<upstream_id>\S+)"
)


def test_access_log_one_line_per_request_with_ids(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="finetune_gateway")
    client = stack.client()
    uploaded = client.files.with_raw_response.create(
        file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune"
    )
    content = client.files.with_raw_response.content(uploaded.parse().id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.list(
            extra_headers={"x-portkey-provider": "nope", "x-request-id": "my-trace-1"}
        )

    lines = [ACCESS.search(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    assert all(lines) and len(lines) == 3, [r.getMessage() for r in caplog.records]
    upload_line, content_line, refused_line = lines
    assert upload_line is not None and content_line is not None and refused_line is not None
    assert upload_line["id"] == uploaded.headers["x-request-id"]
    assert (upload_line["method"], upload_line["path"]) == ("POST", "/v1/files")
    assert upload_line["provider"] == "openai" and upload_line["status"] == "200"
    assert float(upload_line["upstream"]) <= float(upload_line["total"])
    # A streamed download names its request too.
    assert content_line["id"] == content.headers["x-request-id"]
    assert content_line["path"].endswith("/content")
    # A sane caller-supplied request id is kept, for tracing across systems.
    assert refused.value.response.headers["x-request-id"] == "my-trace-1"
    assert refused_line["id"] == "my-trace-1" and refused_line["status"] == "400"
    assert refused_line["upstream"] == "-"
    # The provider's own request id comes back too, on streamed answers as well, and is
    # logged: it is what the provider's support asks for.
    assert uploaded.headers["x-upstream-request-id"] == "req_upstream_1"
    assert content.headers["x-upstream-request-id"] == "req_upstream_2"
    assert (upload_line["upstream_id"], content_line["upstream_id"]) == (
        "req_upstream_1",
        "req_upstream_2",
    )
    assert refused_line["upstream_id"] == "-"
    assert "x-upstream-request-id" not in refused.value.response.headers


def test_upstream_request_id_comes_back_on_upstream_errors(stack: Stack) -> None:
    stack.upstream.fail_next(429, {"error": {"message": "slow down", "type": "requests"}})
    with pytest.raises(openai.RateLimitError) as limited:
        stack.client().fine_tuning.jobs.list()
    assert limited.value.response.headers["x-upstream-request-id"] == "req_upstream_1"


def test_no_secret_in_any_log_line(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = stack.client()
    client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    with pytest.raises(openai.InternalServerError):
        stack.client(default_headers={"x-portkey-virtual-key": "openai-revoked"}).files.list()
    with pytest.raises(openai.AuthenticationError):
        stack.client(
            api_key="sk-caller-secret-999",
            default_headers={
                "x-portkey-provider": "openai",
                "x-portkey-api-key": OTHER_GATEWAY_KEY,
                "x-portkey-custom-host": stack.upstream_url,
            },
        ).files.list()
    stack.upstream.fail_next(500, b"boom")
    with pytest.raises(openai.InternalServerError):
        client.files.list()

    secrets = [
        GATEWAY_KEY,
        OTHER_GATEWAY_KEY,
        UPSTREAM_KEY,
        "sk-revoked-key-abcdef",
        "sk-caller-secret-999",
    ]
    # What the gateway's side logs (its own loggers and aiohttp's), not the SDK's.
    server_side = [r for r in caplog.records if r.name.startswith(("finetune_gateway", "aiohttp"))]
    assert len([r for r in server_side if r.name == "finetune_gateway.access"]) == 4
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in server_side)
    for secret in secrets:
        assert secret not in text
