"""One access-log line per request, every response names its request, no secret is logged."""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway import middleware
from gateway.middleware import AccessLogWriter, install_access_log
from tests.conftest import GATEWAY_KEY, OTHER_GATEWAY_KEY, TRAINING_JSONL, UPSTREAM_KEY, Stack
from tests.support.serve import free_port

ACCESS = re.compile(
    r"request_id=(?P<id>\S+) method=(?P<method>[A-Z]+) path=(?P<path>\S+) "
    r"provider=(?P<provider>\S+) status=(?P<status>\d{3}) upstream_ms=(?P<upstream>\S+) "
    r"total_ms=(?P<total>[\d.]+) upstream_request_id=(?P<upstream_id>\S+)"
)
ROOT = Path(__file__).resolve().parent.parent


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


# ---- The access log as serve writes it (gateway.middleware.AccessLogWriter) ---------

SERVED_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO finetune_gateway\.access request_id=\S+ "
)


@pytest.fixture
def writer() -> Iterator[tuple[AccessLogWriter, io.StringIO]]:
    stream = io.StringIO()
    logger = middleware.access_log
    before = (logger.propagate, logger.level, middleware._writer)
    installed = install_access_log(stream)
    logger.setLevel(logging.INFO)  # as serve's logging.basicConfig(level=INFO) makes it
    try:
        yield installed, stream
    finally:
        logger.removeHandler(installed)
        logger.propagate, middleware._writer = before[0], before[2]
        logger.setLevel(before[1])


async def test_served_access_lines_are_batched_then_all_written(
    writer: tuple[AccessLogWriter, io.StringIO],
) -> None:
    installed, stream = writer
    for index in range(3):
        installed.write(f"request_id=r{index} status=200")
    assert stream.getvalue() == ""  # not one write per line
    await asyncio.sleep(AccessLogWriter.FLUSH_SECONDS * 3)
    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 4)[2:4] for line in lines] == [["INFO", "finetune_gateway.access"]] * 3
    assert all(SERVED_LINE.match(line) for line in lines), lines
    assert [line.rsplit("request_id=", 1)[1] for line in lines] == [
        "r0 status=200",
        "r1 status=200",
        "r2 status=200",
    ]
    # A full batch goes at once; whatever waits goes on close (logging.shutdown).
    for index in range(AccessLogWriter.MAX_PENDING):
        installed.write(f"request_id=b{index}")
    assert len(stream.getvalue().splitlines()) == 3 + AccessLogWriter.MAX_PENDING
    installed.write("request_id=last")
    installed.close()
    assert stream.getvalue().splitlines()[-1].endswith("request_id=last")


def test_served_access_lines_outside_an_event_loop_are_written_at_once(
    writer: tuple[AccessLogWriter, io.StringIO],
) -> None:
    installed, stream = writer
    installed.write("request_id=now")
    assert stream.getvalue().endswith("request_id=now\n")


def test_served_access_lines_keep_one_line_per_request(
    stack: Stack, writer: tuple[AccessLogWriter, io.StringIO]
) -> None:
    installed, stream = writer
    client = stack.client()
    client.files.list()
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("x", extra_headers={"x-request-id": "caller-id"})
    installed.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(SERVED_LINE.match(line) for line in lines), lines
    found = [ACCESS.search(line) for line in lines]
    assert found[0] is not None and found[1] is not None
    assert (found[0]["path"], found[0]["status"]) == ("/v1/files", "200")
    assert (found[1]["id"], found[1]["status"]) == ("caller-id", "404")


def test_serve_writes_every_access_line_before_it_exits(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "stderr").open("w+")
    command = [sys.executable, "-m", "gateway", "serve", "--config", "config.example.toml"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=ROOT,
        stderr=log,  # a file, as a deployment's log: a pipe left unread would fill
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(500):
            connection.request("GET", "/health")
            assert connection.getresponse().read() == b'{"status": "ok"}'
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)  # at once: lines may still wait to be written
        process.wait(timeout=20)
        log.seek(0)
        stderr = log.read()
        log.close()
    assert process.returncode == 0, stderr
    assert stderr.count(" INFO finetune_gateway.access request_id=") == 500
