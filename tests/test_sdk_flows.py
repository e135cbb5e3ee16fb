"""The whole fine-tuning loop through the gateway with the official OpenAI SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import GATEWAY_KEY, OTHER_GATEWAY_KEY, TRAINING_JSONL, UPSTREAM_KEY, Stack

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 2}}}


def test_sdk_sync_full_loop_through_gateway_key_default(stack: Stack) -> None:
    client = stack.client()

    uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert uploaded.filename == "train.jsonl"
    assert uploaded.bytes == len(TRAINING_JSONL)

    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id,
        model="gpt-4o-mini-2024-07-18",
        suffix="support",
        method=DPO,  # type: ignore[arg-type]
        metadata={"team": "search"},
    )
    assert job.status == "validating_files"
    assert job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == 0.1
    assert job.metadata == {"team": "search"}
    sent = [r for r in stack.upstream.requests if r.path == "/v1/fine_tuning/jobs"]
    assert sent[-1].json["method"] == DPO, "DPO settings must reach the upstream unchanged"
    assert sent[-1].json["metadata"] == {"team": "search"}

    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id

    stack.upstream.set_status(job.id, "running")
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.id == job.id
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "running"
    stack.upstream.add_checkpoint(job.id, 10, {"step": 10.0, "train_loss": 0.5})

    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert "Fine-tuning job paused" in events and "Fine-tuning job resumed" in events
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [10]

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None

    listed = client.files.list()
    assert uploaded.id in [f.id for f in listed]
    assert client.files.retrieve(uploaded.id).bytes == len(TRAINING_JSONL)
    assert client.files.content(uploaded.id).content == TRAINING_JSONL
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)

    # Every upstream call carried the provider key, never the gateway's own key.
    for recorded in stack.upstream.requests:
        assert recorded.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert GATEWAY_KEY not in json.dumps(recorded.headers)


def test_sdk_jobs_list_auto_pages_each_job_once(stack: Stack) -> None:
    client = stack.client()
    training = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)
    created = [
        client.fine_tuning.jobs.create(training_file=training["id"], model="gpt-4o-mini").id
        for _ in range(5)
    ]
    first_page = client.fine_tuning.jobs.list(limit=2)
    assert len(first_page.data) == 2 and first_page.has_more is True

    seen = [job.id for job in client.fine_tuning.jobs.list(limit=2)]
    assert seen == list(reversed(created)), "newest first, each job exactly once"
    list_calls = [
        r for r in stack.upstream.requests if r.path == "/v1/fine_tuning/jobs" and r.method == "GET"
    ]
    assert [c.query.get("limit") for c in list_calls[-3:]] == ["2", "2", "2"]


def test_sdk_jobs_list_metadata_filter_reaches_upstream(stack: Stack) -> None:
    client = stack.client()
    training = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)
    client.fine_tuning.jobs.create(
        training_file=training["id"], model="gpt-4o-mini", metadata={"team": "search"}
    )
    client.fine_tuning.jobs.create(
        training_file=training["id"], model="gpt-4o-mini", metadata={"team": "ads"}
    )
    found = list(client.fine_tuning.jobs.list(metadata={"team": "ads"}))
    assert [j.metadata for j in found] == [{"team": "ads"}]


def test_sdk_files_list_auto_pages(stack: Stack) -> None:
    client = stack.client()
    ids = [
        client.files.create(file=(f"{i}.jsonl", TRAINING_JSONL), purpose="fine-tune").id
        for i in range(3)
    ]
    seen = [f.id for f in client.files.list(limit=1, order="asc", purpose="fine-tune")]
    assert seen == ids


async def test_sdk_async_flow_with_portkey_provider_headers(
    stack: Stack, closing: Callable[[openai.AsyncOpenAI], openai.AsyncOpenAI]
) -> None:
    # No gateway key needed for this flow: the OTHER key has no default virtual key, so
    # the provider and its key come from the Portkey headers.
    client = closing(
        stack.async_client(
            api_key=OTHER_GATEWAY_KEY,
            default_headers={
                "x-portkey-provider": "openai",
                "x-portkey-api-key": OTHER_GATEWAY_KEY,
                "x-portkey-custom-host": stack.upstream_url,
            },
        )
    )
    # The bearer is the gateway key here; the provider key must come another way.
    with pytest.raises(openai.AuthenticationError) as missing:
        await client.fine_tuning.jobs.list()
    assert "OpenAI API key" in missing.value.message

    client = closing(
        stack.async_client(
            api_key=UPSTREAM_KEY,
            default_headers={
                "x-portkey-provider": "openai",
                "x-portkey-api-key": OTHER_GATEWAY_KEY,
                "x-portkey-custom-host": stack.upstream_url,
            },
        )
    )
    uploaded = await client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    job = await client.fine_tuning.jobs.create(
        training_file=uploaded.id,
        model="gpt-4o-mini",
        method=DPO,  # type: ignore[arg-type]
    )
    assert job.method is not None and job.method.type == "dpo"
    assert (await client.fine_tuning.jobs.retrieve(job.id)).id == job.id
    ids = [j.id async for j in client.fine_tuning.jobs.list(limit=1)]
    assert ids == [job.id]
    stack.upstream.set_status(job.id, "running")
    await client.fine_tuning.jobs.pause(job.id)
    assert (await client.fine_tuning.jobs.resume(job.id)).status == "running"
    stack.upstream.add_checkpoint(job.id, 5)
    steps = [c.step_number async for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert steps == [5]
    events = [e.message async for e in client.fine_tuning.jobs.list_events(job.id, limit=1)]
    assert events == [  # auto-paging one event at a time yields each once, newest first
        "Fine-tuning job resumed",
        "Fine-tuning job paused",
        "Job started",
        "Created fine-tuning job",
    ]
    assert [f.id async for f in client.files.list()] == [uploaded.id]
    assert (await client.files.retrieve(uploaded.id)).bytes == len(TRAINING_JSONL)
    assert (await client.files.content(uploaded.id)).content == TRAINING_JSONL
    assert (await client.fine_tuning.jobs.cancel(job.id)).status == "cancelled"
    assert (await client.files.delete(uploaded.id)).deleted


@pytest.mark.parametrize(
    "headers",
    [
        {"x-portkey-virtual-key": "openai-main"},
        {"x-portkey-config": "prod"},
        {"x-portkey-config": json.dumps({"virtual_key": "openai-main"})},
        {
            "x-portkey-config": json.dumps(
                {
                    "provider": "openai",
                    "api_key": UPSTREAM_KEY,
                    "custom_host": "http://127.0.0.1:{port}/v1",
                }
            )
        },
    ],
    ids=["virtual-key", "named-config", "inline-config-virtual-key", "inline-config-provider"],
)
async def test_sdk_async_routes_by_portkey_headers(
    stack: Stack,
    headers: dict[str, str],
    closing: Callable[[openai.AsyncOpenAI], openai.AsyncOpenAI],
) -> None:
    port = stack.upstream_url.rsplit(":", 1)[1].split("/")[0]
    headers = {k: v.replace("{port}", port) for k, v in headers.items()}
    client = closing(stack.async_client(api_key=OTHER_GATEWAY_KEY, default_headers=headers))
    training = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)
    job = await client.fine_tuning.jobs.create(training_file=training["id"], model="gpt-4o-mini")
    assert stack.upstream.jobs[job.id].body["training_file"] == training["id"]


def test_gateway_only_fields_are_not_forwarded_to_openai(stack: Stack) -> None:
    client = stack.client()
    training = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)
    job = client.fine_tuning.jobs.create(
        training_file=training["id"],
        model="gpt-4o-mini",
        extra_body={
            "provider_options": {"job_name": "x"},
            "role_arn": "arn:aws:iam::1:role/x",
            "seed": 7,
            "integrations": [{"type": "wandb", "wandb": {"project": "p"}}],
        },
    )
    sent = stack.upstream.requests[-1].json
    assert "provider_options" not in sent and "role_arn" not in sent
    # Fields the gateway models are still forwarded as they came.
    assert sent["seed"] == 7 and sent["integrations"][0]["wandb"]["project"] == "p"
    assert job.seed == 7


async def _post_multipart(stack: Stack, body: bytes, boundary: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.gateway_url}/files",
            data=body,
            headers={
                "Authorization": f"Bearer {GATEWAY_KEY}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        ) as response,
    ):
        return response.status, await response.json()


async def test_upload_with_file_part_before_purpose_is_spooled_and_forwarded(stack: Stack) -> None:
    boundary = "xyzzy"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + TRAINING_JSONL
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"fine-tune\r\n--{boundary}--\r\n"
        ).encode()
    )
    status, answer = await _post_multipart(stack, body, boundary)
    assert status == 200, answer
    stored = stack.upstream.files[answer["id"]]
    assert stored.content == TRAINING_JSONL and stored.meta["purpose"] == "fine-tune"


async def test_upload_with_field_after_file_is_refused_and_undone(stack: Stack) -> None:
    boundary = "b0undary"
    part = 'Content-Disposition: form-data; name="{}"'
    body = (
        (
            f"--{boundary}\r\n{part.format('purpose')}\r\n\r\nfine-tune\r\n"
            f'--{boundary}\r\n{part.format("file")}; filename="a.jsonl"\r\n\r\n'
        ).encode()
        + TRAINING_JSONL
        + (
            f"\r\n--{boundary}\r\n{part.format('expires_after[anchor]')}\r\n\r\ncreated_at\r\n"
            f"--{boundary}--\r\n"
        ).encode()
    )
    status, answer = await _post_multipart(stack, body, boundary)
    assert status == 400
    assert answer["error"]["param"] == "expires_after[anchor]"
    assert stack.upstream.files == {}, "the upload was deleted upstream, nothing orphaned"


def test_fields_the_gateway_does_not_model_reach_the_upstream(stack: Stack) -> None:
    """A field OpenAI adds later is forwarded as sent: here the fake, like OpenAI today,
    does not know it, and its own 400 naming the field comes back through the gateway."""
    client = stack.client()
    training = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            training_file=training["id"],
            model="gpt-4o-mini",
            extra_body={"shiny_new_option": {"level": 3}},
        )
    assert stack.upstream.requests[-1].json["shiny_new_option"] == {"level": 3}
    assert caught.value.param == "shiny_new_option"
    assert "Unrecognized request argument" in caught.value.message
