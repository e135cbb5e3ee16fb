"""Drop-in for Portkey's gateway: the Portkey SDK, pointed at this gateway, just works."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portkey_ai import AsyncPortkey, Portkey

from tests.conftest import OTHER_GATEWAY_KEY, TRAINING_JSONL, UPSTREAM_KEY, Stack

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}


def test_portkey_sdk_with_virtual_key_runs_the_loop(stack: Stack) -> None:
    client = Portkey(
        base_url=stack.gateway_url, api_key=OTHER_GATEWAY_KEY, virtual_key="openai-main"
    )
    stack.clients.append(client)  # type: ignore[arg-type]  # closed like the OpenAI ones
    uploaded = client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id, model="gpt-4o-mini", suffix="pk", method=DPO
    )
    assert stack.upstream.requests[-1].json["method"] == DPO
    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [job.id] and listed.has_more is False
    assert client.fine_tuning.jobs.retrieve(job.id).status == "validating_files"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert client.files.content(uploaded.id).content == TRAINING_JSONL
    # The gateway key authenticated the caller; the virtual key's key went upstream.
    assert {r.headers["authorization"] for r in stack.upstream.requests} == {
        f"Bearer {UPSTREAM_KEY}"
    }


async def test_async_portkey_sdk_with_provider_and_custom_host(
    stack: Stack, closing: Callable[[Any], Any]
) -> None:
    client = closing(
        AsyncPortkey(
            base_url=stack.gateway_url,
            api_key=OTHER_GATEWAY_KEY,
            provider="openai",
            Authorization=f"Bearer {UPSTREAM_KEY}",
            custom_host=stack.upstream_url,
        )
    )
    closing(client.openai_client)  # AsyncPortkey.close() leaves its inner client open
    training = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)
    job = await client.fine_tuning.jobs.create(training_file=training["id"], model="gpt-4o-mini")
    assert (await client.fine_tuning.jobs.retrieve(job.id)).id == job.id
    events = await client.fine_tuning.jobs.list_events(job.id)
    assert [e.message for e in events.data] == ["Created fine-tuning job"]
