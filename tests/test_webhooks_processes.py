"""Webhook deliveries shared by ``finetune-gateway serve`` processes on one database: each
event delivered once, and a process killed mid-delivery leaves its event to the next."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.webhooks.sealing import ENV
from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, Stack
from tests.support.serve import serving
from tests.support.webhook_receiver import Receiver
from tests.test_webhooks import FT_TYPES, hooks_config

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a schema of its own on the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    schema = f"ftgw_hooks_{uuid.uuid4().hex[:12]}"
    asyncio.run(_sql(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES}?search_path={schema}"
    asyncio.run(_sql(f"DROP SCHEMA {schema} CASCADE"))


async def _sql(statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _config(stack: Stack, database: str, **webhooks: Any) -> dict[str, Any]:
    raw = hooks_config(stack.upstream_url, Path(database), **webhooks)
    raw["webhooks"]["database"] = database
    raw.pop("configs")  # toml_of writes tables of scalars; the named config is not needed
    return raw


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def _job(client: openai.OpenAI) -> str:
    uploaded = client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    return client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini").id


def test_webhook_two_processes_deliver_each_event_once(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    monkeypatch.setenv(ENV, "p" * 40)
    receiver = Receiver()
    url = stack.servers.serve(receiver.app()) + "/hook"
    raw = _config(stack, database)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serving(raw, tmp_path / "a") as first, serving(raw, tmp_path / "b") as second:
        one, two = _client(first.url), _client(second.url)
        one.webhooks.create(name="both", url=url, event_types=FT_TYPES)
        jobs = [_job(one) for _ in range(3)] + [_job(two) for _ in range(3)]
        for job_id in jobs:
            stack.upstream.set_status(job_id, "succeeded")
        got = receiver.wait_for(lambda got: len(got) >= len(jobs), timeout=15)
        time.sleep(0.5)  # time for a second copy, were one coming
        assert sorted(json.loads(d.body)["data"]["id"] for d in receiver.received) == sorted(jobs)
        assert len({d.headers["webhook-id"] for d in got}) == len(jobs)


def test_webhook_process_killed_mid_delivery_is_delivered_after_restart_same_id(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    monkeypatch.setenv(ENV, "p" * 40)
    receiver = Receiver(script=[-30])  # the first delivery is held until the kill
    url = stack.servers.serve(receiver.app()) + "/hook"
    raw = _config(stack, database, delivery_timeout=2.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serving(raw, tmp_path / "a") as first:
        client = _client(first.url)
        secret = client.webhooks.create(name="k", url=url, event_types=FT_TYPES).signing_secret
        job_id = _job(client)
        stack.upstream.set_status(job_id, "cancelled")
        receiver.wait_for(lambda got: len(got) >= 1)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(5)
    with serving(raw, tmp_path / "b"):
        got = receiver.wait_for(lambda got: len(got) >= 2, timeout=10)
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    event = openai.OpenAI(api_key="x", webhook_secret=secret).webhooks.unwrap(
        got[1].body, got[1].headers
    )
    assert event.type == "fine_tuning.job.cancelled" and event.data.id == job_id  # type: ignore[union-attr]
