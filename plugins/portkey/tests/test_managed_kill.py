"""A ``finetune-gateway serve`` process SIGKILLed while it stages a managed job, then a new
process started on the same data_dir: the job ends failed with ``staging_interrupted``
(never stuck in validating_files), and what was staged on the target before the kill is
deleted.

The Bedrock target is moto behind a small proxy that passes everything through but
holds the first part of the second file's upload: the kill comes exactly when one file
is staged and the next is on its way, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from gateway.testing.live import ServerThread
from plugins.bedrock.tests.conftest import BUCKET, PREFIX, moto_url, s3  # noqa: F401 - fixtures
from plugins.portkey.tests.managed import CHAT, MANAGED, NOVA, jsonl, target, wait_for
from plugins.portkey.tests.test_managed_serve import KEY, bedrock_target_toml
from tests.support.serve import serving

LEASE_SECONDS = 2.0
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class HoldingProxy:
    """Forwards to moto; the first upload part after the first file's two uploads (the file
    and its copy in Nova's format) have completed is held until its client goes away
    (the gateway, killed)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.completed_uploads = 0
        self.holding = threading.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if (
            request.method == "PUT"
            and "partNumber" in request.query
            and self.completed_uploads >= 2
            and not self.holding.is_set()
        ):
            self.holding.set()
            transport = request.transport
            deadline = time.monotonic() + 60
            while transport is not None and not transport.is_closing():
                assert time.monotonic() < deadline, "the gateway was not killed"
                await asyncio.sleep(0.05)
            return web.Response(status=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            content = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        if request.method == "POST" and "uploadId" in request.query and answer.status == 200:
            self.completed_uploads += 1
        return web.Response(status=answer.status, body=content, headers=out)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[tuple[HoldingProxy, str]]:  # noqa: F811
    holding = HoldingProxy(moto_url)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", holding.handle)
    servers = ServerThread()
    try:
        yield holding, servers.serve(app)
    finally:
        servers.close()


def _config(endpoint: str, data_dir: Path) -> str:
    return (
        bedrock_target_toml(endpoint)
        + f"""
[providers.portkey]
data_dir = "{data_dir}"
staging_lease_seconds = {LEASE_SECONDS}
"""
    )


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, default_headers=MANAGED)


def _staged_objects(s3: Any) -> list[str]:  # noqa: F811
    answer = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
    return sorted(item["Key"] for item in answer.get("Contents", []))


def test_managed_sigkill_while_staging_then_restart_fails_the_job_and_cleans_up(
    proxy: tuple[HoldingProxy, str],
    s3: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    holding, endpoint = proxy
    config = _config(endpoint, tmp_path / "data")
    with serving(config, tmp_path) as first:
        with _client(first.url) as client:
            train = client.files.create(file=("t.jsonl", jsonl(CHAT)), purpose="fine-tune").id
            valid = client.files.create(file=("v.jsonl", jsonl(CHAT)), purpose="fine-tune").id
            job = client.fine_tuning.jobs.create(
                model=NOVA,
                training_file=train,
                validation_file=valid,
                extra_body=target("bedrock-main"),
            )
            assert holding.holding.wait(30), "staging never reached the second file"
            # One file staged (its copy on the target), the next one mid-upload.
            staging = client.fine_tuning.jobs.retrieve(job.id)
            assert staging.status == "validating_files"
            events = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
            assert any(m.startswith(f"Staged file {train} on bedrock") for m in events), events
            staged_before = _staged_objects(s3)
            # The first file on the target and its copy in Nova's format, made as it
            # uploaded. The second file's original waits for its copy, which is held.
            assert any(key.endswith("/t.jsonl") for key in staged_before), staged_before
            assert any(key.endswith(".conversation.jsonl") for key in staged_before)
            assert len(staged_before) == 2, staged_before
        first.process.kill()  # SIGKILL: no shutdown, no cleanup, no last heartbeat
        assert first.process.wait(10) == -9

    with serving(config, tmp_path) as second, _client(second.url) as client:
        ended = wait_for(
            lambda: client.fine_tuning.jobs.retrieve(job.id),
            lambda j: j.status != "validating_files",
            timeout=10 * LEASE_SECONDS,
        )
        assert ended.status == "failed", ended
        assert ended.error is not None and ended.error.code == "staging_interrupted"
        assert ended.finished_at is not None
        # The copy staged before the kill is deleted: nothing left that no job uses.
        assert _staged_objects(s3) == []
        # The second file's upload was cut mid-way: S3 keeps it as an incomplete
        # multipart upload, which no record names (see the plugin's README: a lifecycle
        # rule on the bucket clears those).
        left = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get("Uploads", [])
        print(f"incomplete multipart uploads left on the target: {len(left)}")
        # The restarted process works: the same files stage and make a job this time.
        again = client.fine_tuning.jobs.create(
            model=NOVA,
            training_file=train,
            validation_file=valid,
            extra_body=target("bedrock-main"),
        )
        done = wait_for(
            lambda: client.fine_tuning.jobs.retrieve(again.id),
            lambda j: j.status != "validating_files",
        )
        assert done.status != "failed", done
        events = [e.message for e in client.fine_tuning.jobs.list_events(again.id).data]
        assert any(m.startswith("Created bedrock job") for m in events), events
