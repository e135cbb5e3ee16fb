"""Checks that the fake upstream keeps OpenAI's contract, since gateway tests trust it blindly."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.fakes.openai_upstream import FakeOpenAIState, make_app
from tests.support.openai_shape import REQUIRED_JOB_FIELDS

AUTH = {"Authorization": "Bearer sk-test-upstream"}
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def state() -> FakeOpenAIState:
    return FakeOpenAIState()


@pytest.fixture
async def client(aiohttp_client: MakeClient, state: FakeOpenAIState) -> Client:
    return await aiohttp_client(make_app(state))


async def _create_job(client: Client, **body: Any) -> aiohttp.ClientResponse:
    return await client.post("/v1/fine_tuning/jobs", json=body, headers=AUTH)


async def test_create_file_accepts_chunked_body_with_file_part_before_purpose(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    content = b'{"messages": []}\n' * 5000
    boundary = "fakeboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="train.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
    ).encode()
    tail = (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        f"fine-tune\r\n--{boundary}--\r\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:  # a generator body goes out chunked
        yield head
        for start in range(0, len(content), 7000):
            yield content[start : start + 7000]
        yield tail

    resp = await client.post(
        "/v1/files",
        data=body(),
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 200, await resp.text()
    meta = await resp.json()
    assert meta["id"].startswith("file-")
    assert {
        k: meta[k]
        for k in (
            "object",
            "bytes",
            "filename",
            "purpose",
            "status",
        )
    } == {
        "object": "file",
        "bytes": len(content),
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "status": "processed",
    }
    assert "expires_at" not in meta and "status_details" not in meta  # not nullable
    assert state.files[meta["id"]].sha256 == hashlib.sha256(content).hexdigest()
    upload = state.requests[-1]
    assert upload.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in upload.headers
    assert upload.body_bytes_received == len(content)
    download = await client.get(f"/v1/files/{meta['id']}/content", headers=AUTH)
    assert await download.read() == content
    assert download.headers["Content-Length"] == str(len(content))


async def test_create_file_rejects_purpose_outside_enum(client: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune-results")
    form.add_field("file", b"{}\n", filename="x.jsonl")
    resp = await client.post("/v1/files", data=form, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "purpose"


async def test_create_job_requires_existing_fine_tune_file(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    batch_file = state.add_file("batch.jsonl", b"{}\n", purpose="batch")
    for training_file in ("file-missing", batch_file["id"]):
        resp = await _create_job(client, model="gpt-4o-mini", training_file=training_file)
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "training_file")
    assert state.jobs == {}


async def test_create_job_rejects_unrecognized_top_level_argument(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    train = state.add_file("train.jsonl", b"{}\n")
    resp = await _create_job(
        client, model="gpt-4o-mini", training_file=train["id"], gateway_provider="openai"
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == {
        "message": "Unrecognized request argument supplied: gateway_provider",
        "type": "invalid_request_error",
        "param": "gateway_provider",
        "code": None,
    }


async def test_create_job_returns_every_required_field_and_echoes_dpo_method(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    train = state.add_file("train.jsonl", b"{}\n")
    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 2}}}
    resp = await _create_job(
        client,
        model="gpt-4o-mini",
        training_file=train["id"],
        method=method,
        metadata={"team": "a"},
    )
    assert resp.status == 200, await resp.text()
    job = await resp.json()
    assert job.keys() >= REQUIRED_JOB_FIELDS
    assert (job["object"], job["status"], job["method"]) == (
        "fine_tuning.job",
        "validating_files",
        method,
    )
    assert job["hyperparameters"]["n_epochs"] == 2
    assert 0 <= job["seed"] <= 2147483647
    assert state.requests[-1].json["method"] == method
    events = await (
        await client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=AUTH)
    ).json()
    assert [e["message"] for e in events["data"]] == ["Created fine-tuning job"]
    bad = await _create_job(
        client,
        model="gpt-4o-mini",
        training_file=train["id"],
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}},
    )
    assert (await bad.json())["error"]["param"] == "method.dpo.hyperparameters.beta"


async def test_list_jobs_pages_each_job_once_newest_first(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    train = state.add_file("train.jsonl", b"{}\n")
    created = [
        (
            await (
                await _create_job(
                    client, model="m", training_file=train["id"], metadata={"n": str(i % 2)}
                )
            ).json()
        )["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    after: dict[str, str] = {}
    while True:
        page = await (
            await client.get("/v1/fine_tuning/jobs", headers=AUTH, params={"limit": "2", **after})
        ).json()
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            break
        after = {"after": seen[-1]}
    assert seen == created[::-1]
    filtered = await (await client.get("/v1/fine_tuning/jobs?metadata[n]=1", headers=AUTH)).json()
    assert [job["id"] for job in filtered["data"]] == [created[3], created[1]]


async def test_job_lifecycle_pause_resume_and_cancel_after_completion(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    train = state.add_file("train.jsonl", b"{}\n")
    job_id = (await (await _create_job(client, model="m", training_file=train["id"])).json())["id"]
    base = f"/v1/fine_tuning/jobs/{job_id}"
    assert (await client.post(f"{base}/pause", headers=AUTH)).status == 400  # not running yet
    state.set_status(job_id, "running")
    assert (await (await client.post(f"{base}/pause", headers=AUTH)).json())["status"] == "running"
    assert state.jobs[job_id].paused
    assert (await client.post(f"{base}/resume", headers=AUTH)).status == 200
    state.add_checkpoint(job_id, 10, {"step": 10.0, "train_loss": 0.5})
    done = state.set_status(job_id, "succeeded", trained_tokens=1234)
    assert done["finished_at"] is not None and done["fine_tuned_model"].startswith("ft:m:")
    cancel = await client.post(f"{base}/cancel", headers=AUTH)
    assert cancel.status == 400
    assert "already completed" in (await cancel.json())["error"]["message"]
    events = await (await client.get(f"{base}/events", headers=AUTH)).json()
    assert [e["message"] for e in events["data"]] == [
        "The job has successfully completed",
        "Fine-tuning job resumed",
        "Fine-tuning job paused",
        "Job started",
        "Created fine-tuning job",
    ]
    checkpoints = await (await client.get(f"{base}/checkpoints", headers=AUTH)).json()
    assert checkpoints["first_id"] == checkpoints["last_id"] == checkpoints["data"][0]["id"]
    missing = await client.get("/v1/fine_tuning/jobs/ftjob-nope", headers=AUTH)
    assert missing.status == 404
    assert (await missing.json())["error"]["message"] == "Could not find fine-tune: ftjob-nope"


async def test_auth_rejects_wrong_key_without_echoing_it(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    resp = await client.get("/v1/files", headers={"Authorization": "Bearer sk-gateway-secret"})
    assert resp.status == 401
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert "sk-gateway-secret" not in error["message"]
    assert (await client.get("/v1/files")).status == 401
    assert len(state.requests) == 2


async def test_fail_next_answers_injected_errors_then_recovers(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    state.fail_next(503, times=2, headers={"Retry-After": "0"})
    for _ in range(2):
        resp = await client.get("/v1/files", headers=AUTH)
        assert (resp.status, resp.headers["Retry-After"]) == (503, "0")
        assert (await resp.json())["error"]["type"] == "server_error"
    assert (await client.get("/v1/files", headers=AUTH)).status == 200


async def test_stall_next_lets_the_client_time_out(
    client: Client,
    state: FakeOpenAIState,
) -> None:
    state.stall_next(1.0)
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/v1/files", headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.1))
    assert (await client.get("/v1/files", headers=AUTH)).status == 200
