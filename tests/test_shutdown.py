"""SIGTERM to ``finetune-gateway serve``: no new connections, idle ones closed, requests in
flight (an upload still arriving included) finished within ``server.shutdown_grace``,
then exit 0. What outlasts the grace is cancelled: see
plugins/bedrock/tests/test_bedrock_shutdown.py, where that leaves no upload open on S3."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.testing.live import ServerThread
from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, UPSTREAM_KEY, base_config
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_fake_openai
from tests.support.raw_http import RawClient, file_part_head, form_end, form_field, request_head
from tests.support.serve import ROOT, ServeProcess, serving

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.fixture
def upstream(servers: ServerThread) -> tuple[FakeOpenAIState, str]:
    state = FakeOpenAIState(api_keys={UPSTREAM_KEY})
    return state, servers.serve(make_fake_openai(state)) + "/v1"


@pytest.fixture
def gateway(upstream: tuple[FakeOpenAIState, str], tmp_path: Path) -> Iterator[ServeProcess]:
    config = base_config(upstream[1])
    config["server"] = {"shutdown_grace": 20}
    with serving(config, tmp_path) as process:
        yield process


async def _refused(url: str, within: float) -> bool:
    """Whether new connections are refused, polled for ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            try:
                client = await RawClient.connect(url)
            except ConnectionRefusedError:
                return True
            await client.close()
            await asyncio.sleep(0.02)


async def test_sigterm_lets_an_upload_in_flight_finish_and_takes_no_new_connection(
    gateway: ServeProcess, upstream: tuple[FakeOpenAIState, str]
) -> None:
    state, _ = upstream
    # A keep-alive connection, idle when the signal comes.
    idle = await RawClient.connect(gateway.url)
    await idle.send(request_head("GET", "/health"))
    assert (await idle.response()).status == 200

    pieces = [TRAINING_JSONL * 50] * 10
    head = form_field("purpose", "fine-tune") + file_part_head()
    length = len(head) + sum(map(len, pieces)) + len(form_end())
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=bnd"}
    headers["Content-Length"] = str(length)
    upload = await RawClient.connect(gateway.url)
    to_send = list(pieces)
    await upload.send(request_head("POST", "/v1/files", headers) + head + to_send.pop(0))
    async with asyncio.timeout(10):
        while not any(r.path == "/v1/files" for r in state.requests):
            await asyncio.sleep(0.05)
            await upload.send(to_send.pop(0))  # aiohttp hands bytes on once more have come

    gateway.process.send_signal(signal.SIGTERM)
    assert await _refused(gateway.url, within=5), "a new connection was taken after SIGTERM"
    assert await idle.closed_by_server(5), "an idle connection was kept open"
    # The upload still arriving is received to its end.
    assert len(to_send) > 5
    for piece in to_send:
        await asyncio.sleep(0.1)
        await upload.send(piece)
    await upload.send(form_end())
    response = await upload.response(timeout=10)
    assert response.status == 200, response
    assert response.headers.get("connection") == "close"
    uploaded = response.json()
    assert state.files[uploaded["id"]].content == b"".join([TRAINING_JSONL * 50] * 10)

    code, stderr = await asyncio.to_thread(gateway.wait, 15)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "1 request(s) in flight" in stderr and "cancelling" not in stderr


def test_serve_on_a_port_in_use_says_so_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: " in done.stderr
    assert "address already in use" in done.stderr.lower()
    assert "Traceback" not in done.stderr
