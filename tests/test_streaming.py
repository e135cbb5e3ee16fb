"""Files stream through the gateway: its memory does not grow with the file's size.

The gateway runs as its own process (``finetune-gateway serve``), as a user runs it,
so its peak RSS can be read from /proc without the test's own memory mixed in.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.testing.live import ServerThread
from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_fake_openai
from tests.support.serve import free_port

MiB = 1024 * 1024
FILE_SIZE = 256 * MiB
LINE = b'{"messages": [{"role": "user", "content": "' + b"x" * 200 + b'"}]}\n'


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


class GatewayProcess:
    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url


@pytest.fixture
def gateway_process(
    servers: ServerThread, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, FakeOpenAIState]]:
    upstream = FakeOpenAIState(api_keys={UPSTREAM_KEY})
    upstream_url = servers.serve(make_fake_openai(upstream)) + "/v1"
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[server]
port = {port}
access_log = false
[virtual_keys.main]
provider = "openai"
api_key = "{UPSTREAM_KEY}"
base_url = "{upstream_url}"
[gateway_keys.me]
key = "gw-streaming-test-key-000"
default_virtual_key = "main"
"""
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"gateway did not start: {stderr}") from None
            time.sleep(0.05)
    try:
        yield GatewayProcess(process, url), upstream
    finally:
        process.terminate()
        process.communicate(timeout=10)  # reaps it and closes its stderr pipe


async def _multipart(size: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    yield b'--bnd\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    yield b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    block = LINE * (MiB // len(LINE))
    sent = 0
    while sent < size:
        chunk = block[: size - sent]
        digest.update(chunk)
        sent += len(chunk)
        yield chunk
    yield b"\r\n--bnd--\r\n"


async def test_upload_and_download_memory_does_not_grow_with_file_size(
    gateway_process: tuple[GatewayProcess, FakeOpenAIState],
) -> None:
    gateway, upstream = gateway_process
    headers = {"Authorization": "Bearer gw-streaming-test-key-000"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{gateway.url}/v1/files") as response:
            assert response.status == 200
        baseline = _peak_rss_mib(gateway.process.pid)

        sent = hashlib.sha256()
        async with http.post(
            f"{gateway.url}/v1/files",
            data=_multipart(FILE_SIZE, sent),
            headers={"Content-Type": "multipart/form-data; boundary=bnd"},
        ) as response:
            assert response.status == 200, await response.text()
            uploaded = await response.json()
        assert uploaded["bytes"] == FILE_SIZE
        assert upstream.files[uploaded["id"]].sha256 == sent.hexdigest()
        after_upload = _peak_rss_mib(gateway.process.pid)

        received = hashlib.sha256()
        total = 0
        async with http.get(f"{gateway.url}/v1/files/{uploaded['id']}/content") as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(MiB):
                received.update(chunk)
                total += len(chunk)
        assert (total, received.hexdigest()) == (FILE_SIZE, sent.hexdigest())
        after_download = _peak_rss_mib(gateway.process.pid)

    print(
        f"peak RSS MiB: baseline {baseline:.1f}, "
        f"upload {after_upload:.1f}, download {after_download:.1f}"
    )
    # A 256 MiB file through and back: the peak grows by buffers, not by the file.
    assert after_upload - baseline < 40, (baseline, after_upload)
    assert after_download - baseline < 40, (baseline, after_download)
