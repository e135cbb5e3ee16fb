"""An upload to Bedrock cut short, by a client that stalls or by a SIGTERM whose grace it
outlasts, leaves no multipart upload open on S3 (moto) and no object behind."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.server import GatewayRunner
from gateway.testing.live import ServerThread
from tests.conftest import GATEWAY_KEY, TRAINING_JSONL
from tests.support.raw_http import RawClient, file_part_head, form_field, request_head
from tests.support.serve import serving

from .conftest import BUCKET, bedrock_config

UPLOAD_HEADERS = {
    "Authorization": f"Bearer {GATEWAY_KEY}",
    "Content-Type": "multipart/form-data; boundary=bnd",
    "Content-Length": "100000000",  # more than will ever come
}
PIECE = TRAINING_JSONL * 20


def _open_uploads(s3: Any) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def _keys(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


async def _start_upload(url: str, s3: Any) -> RawClient:
    """An upload whose multipart upload is open on S3 by the time this returns."""
    client = await RawClient.connect(url)
    head = form_field("purpose", "fine-tune") + file_part_head()
    await client.send(request_head("POST", "/v1/files", UPLOAD_HEADERS) + head + PIECE)
    async with asyncio.timeout(10):
        while not await asyncio.to_thread(_open_uploads, s3):
            await asyncio.sleep(0.05)
            await client.send(PIECE)  # aiohttp hands a part's bytes on once more have come
    return client


async def _no_upload_left(s3: Any) -> None:
    async with asyncio.timeout(10):  # the abort is one S3 call, made as the request ends
        while await asyncio.to_thread(_open_uploads, s3):
            await asyncio.sleep(0.05)
    assert await asyncio.to_thread(_keys, s3) == []


@pytest.fixture
def stalling_gateway(moto_url: str, s3: Any, registry: Registry) -> Iterator[str]:
    raw = bedrock_config(moto_url)
    raw["limits"] = {"client_body_timeout": 0.5}
    servers = ServerThread()
    yield servers.serve(make_app(parse_config(raw, registry, {}), registry), GatewayRunner)
    servers.close()


async def test_upload_stalling_mid_file_is_408_and_its_multipart_upload_aborted(
    stalling_gateway: str, s3: Any
) -> None:
    client = await _start_upload(stalling_gateway, s3)
    response = await client.response(timeout=10)  # the client sends nothing more
    assert response.status == 408
    assert response.error()["code"] == "request_timeout"
    await client.close()
    await _no_upload_left(s3)


@pytest.mark.parametrize(
    ("grace", "signals"), [(1, 1), (60, 2)], ids=["grace-runs-out", "second-signal"]
)
async def test_sigterm_cancels_an_upload_outlasting_the_grace_and_aborts_it_on_s3(
    moto_url: str, s3: Any, tmp_path: Path, grace: float, signals: int
) -> None:
    """The upload keeps coming, slowly, past the grace (or a second signal ends the grace
    early): it is cut without an answer, its S3 upload aborted, and serve exits 0."""
    config = bedrock_config(moto_url)
    config["server"] = {"shutdown_grace": grace}
    with serving(config, tmp_path) as gateway:
        client = await _start_upload(gateway.url, s3)
        for _ in range(signals):
            gateway.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
        started = time.monotonic()
        cut = False
        while not cut and time.monotonic() - started < 15:
            try:
                await client.send(PIECE)
            except ConnectionError:
                cut = True
            await asyncio.sleep(0.2)
            cut = cut or client.reader.at_eof()
        assert cut, "the upload was not cut"
        code, stderr = await asyncio.to_thread(gateway.wait, 20)
    assert code == 0, stderr
    assert "cancelling 1 request(s)" in stderr
    assert "Traceback" not in stderr
    await _no_upload_left(s3)
