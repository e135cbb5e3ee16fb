"""fine_tuning.job.* webhooks for Azure jobs, on the v1 and the dated API."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from gateway.webhooks.sealing import ENV
from plugins.azure.tests.conftest import AzureStack, azure_config
from tests.conftest import TRAINING_JSONL
from tests.support.webhook_receiver import Receiver


def test_webhooks_one_event_per_azure_job_end(
    azure: AzureStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "a" * 40)
    raw = azure_config(azure.v1_url, azure.dated_url)
    raw["webhooks"] = {
        "database": str(tmp_path / "hooks.db"),
        "allow_http": True,
        "tick_seconds": 0.05,
        "poll_seconds": 0.1,
    }
    base_url = azure.start_gateway(raw)
    receiver = Receiver()
    url = azure.servers.serve(receiver.app()) + "/hook"
    v1, dated = azure.client(base_url=base_url), azure.client("azure-dated", base_url=base_url)
    made = v1.webhooks.create(
        name="azure", url=url, event_types=["fine_tuning.job.succeeded", "fine_tuning.job.failed"]
    )

    on_v1 = v1.fine_tuning.jobs.create(
        training_file=v1.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune").id,
        model="gpt-4o-mini",
    ).id
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    on_dated = dated.fine_tuning.jobs.create(training_file=training["id"], model="gpt-4o-mini").id
    azure.v1.service.set_status(on_v1, "succeeded")
    azure.dated.set_status(on_dated, "failed", {"code": "jsonlValidationFailed", "message": "x"})

    got = receiver.wait_for(lambda got: len(got) >= 2)
    verify = openai.OpenAI(api_key="unused", webhook_secret=made.signing_secret).webhooks
    events = {}
    for delivery in got:
        event = verify.unwrap(delivery.body, delivery.headers)
        events[event.data.id] = event.type  # type: ignore[union-attr]
    assert events == {on_v1: "fine_tuning.job.succeeded", on_dated: "fine_tuning.job.failed"}
