"""fine_tuning.job.* webhooks for jobs on Bedrock (moto) and Vertex (its fakes), made
directly through their virtual keys and in managed mode: one signed event per job end,
naming the job id its client knows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.webhooks.sealing import ENV
from plugins.bedrock.tests.conftest import moto_job, moto_url, s3  # noqa: F401 - fixtures
from plugins.portkey.tests.managed import (
    GEMINI,
    NOVA,
    Managed,
    managed_config,
    target,
    wait_for,
)
from plugins.portkey.tests.test_managed_flows import upstream_jobs, wait_created
from plugins.vertex.tests.conftest import (  # noqa: F401 - fixtures
    VertexStack,
    fake_gcs,
    registry,
    rsa_key,
    vertex,
)
from tests.conftest import GATEWAY_KEY
from tests.support.webhook_receiver import Receiver

TYPES = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


def test_webhooks_one_event_per_job_end_on_bedrock_vertex_and_managed(
    moto_url: str,  # noqa: F811
    s3: Any,  # noqa: F811
    vertex: VertexStack,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, "w" * 40)
    raw = managed_config(moto_url, vertex, tmp_path / "data")
    raw["webhooks"] = {
        "database": str(tmp_path / "hooks.db"),
        "allow_http": True,
        "tick_seconds": 0.05,
        "poll_seconds": 0.1,
    }
    managed = Managed(vertex, moto_url, s3, raw)
    managed.gateway_url = managed.start_gateway()
    receiver = Receiver()
    try:
        url = managed.servers.serve(receiver.app()) + "/hook"

        def direct(virtual_key: str) -> openai.OpenAI:
            made = openai.OpenAI(
                base_url=managed.gateway_url,
                api_key=GATEWAY_KEY,
                max_retries=0,
                default_headers={"x-portkey-virtual-key": virtual_key},
            )
            managed.clients.append(made)
            return made

        on_bedrock, on_vertex, client = (
            direct("bedrock-main"),
            direct("vertex-main"),
            managed.client(),
        )
        secret = client.webhooks.create(name="all", url=url, event_types=TYPES).signing_secret

        bedrock_job = on_bedrock.fine_tuning.jobs.create(
            model=NOVA, training_file=managed.upload(on_bedrock)
        ).id
        vertex_job = on_vertex.fine_tuning.jobs.create(
            model=GEMINI, training_file=managed.upload(on_vertex)
        ).id
        file_id = managed.upload(client)
        before = {j.id for j in upstream_jobs(managed, "bedrock-main")}
        before_vertex = {j.id for j in upstream_jobs(managed, "vertex-main")}
        managed_bedrock = client.fine_tuning.jobs.create(
            model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
        ).id
        managed_vertex = client.fine_tuning.jobs.create(
            model=GEMINI, training_file=file_id, extra_body=target("vertex-main")
        ).id
        wait_created(client, managed_bedrock)
        wait_created(client, managed_vertex)
        [behind_bedrock] = [
            j.id for j in upstream_jobs(managed, "bedrock-main") if j.id not in before
        ]
        [behind_vertex] = [
            j.id for j in upstream_jobs(managed, "vertex-main") if j.id not in before_vertex
        ]
        assert receiver.received == []

        moto_job(bedrock_job).status = "Completed"
        vertex.google.fail(vertex.native(vertex_job))
        moto_job(behind_bedrock).status = "Stopped"
        vertex.google.set_state(vertex.native(behind_vertex), "JOB_STATE_SUCCEEDED")

        got = receiver.wait_for(lambda got: len(got) >= 4, timeout=20)
        verify = openai.OpenAI(api_key="unused", webhook_secret=secret).webhooks
        events = {}
        for delivery in got:
            event = verify.unwrap(delivery.body, delivery.headers)
            events[event.data.id] = event.type  # type: ignore[union-attr]
        assert events == {
            bedrock_job: "fine_tuning.job.succeeded",
            vertex_job: "fine_tuning.job.failed",
            managed_bedrock: "fine_tuning.job.cancelled",
            managed_vertex: "fine_tuning.job.succeeded",
        }
        wait_for(lambda: len(receiver.received), lambda n: n > 4, timeout=0.5)
        assert len(receiver.received) == 4, "one event per job end"
        assert [json.loads(d.body)["object"] for d in got] == ["event"] * 4
    finally:
        managed.close()
