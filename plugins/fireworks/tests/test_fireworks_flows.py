"""The official OpenAI SDK, through the gateway, against a fake Fireworks account."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import openai
import pytest

from plugins.fireworks.tests.conftest import ACCOUNT, FW_KEY, FireworksStack
from tests.conftest import TRAINING_JSONL
from tests.support.openai_shape import REQUIRED_FILE_FIELDS, REQUIRED_JOB_FIELDS

CONTENT_PARTS = (
    b'{"messages": [{"role": "developer", "content": "Be brief"}, {"role": "user", "content":'
    b' [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},'
    b' {"role": "assistant", "content": "Hello"}]}\n'
)


def _posts(stack: FireworksStack, suffix: str) -> list[Any]:
    return [r for r in stack.fake.requests if r.method == "POST" and r.path.endswith(suffix)]


def _upload(stack: FireworksStack, content: bytes = TRAINING_JSONL) -> str:
    dataset = stack.client().files.create(file=("train.jsonl", content), purpose="fine-tune")
    return dataset.id


def test_upload_makes_fills_and_validates_a_dataset(fireworks: FireworksStack) -> None:
    client = fireworks.client()
    uploaded = client.files.create(file=("train.jsonl", CONTENT_PARTS), purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.filename == "train.jsonl"
    stored = fireworks.fake.blobs[uploaded.id]
    assert json.loads(stored) == {
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello"},
        ]
    }
    assert uploaded.bytes == len(stored)
    steps = [r.path.rsplit("/", 1)[-1] for r in fireworks.fake.requests if r.method != "GET"]
    assert steps == [
        "datasets",
        f"{uploaded.id}:getUploadEndpoint",
        "train.jsonl".replace("train", uploaded.id),
        f"{uploaded.id}:validateUpload",
    ]
    size_ask = _posts(fireworks, ":getUploadEndpoint")[0].json
    assert size_ask == {"filenameToSize": {f"{uploaded.id}.jsonl": str(len(stored))}}
    put = next(r for r in fireworks.fake.requests if r.method == "PUT")
    assert "authorization" not in put.headers, "the API key never goes to the signed URL"
    raw = client.files.with_raw_response.retrieve(uploaded.id).http_response.json()
    assert raw.keys() >= REQUIRED_FILE_FIELDS
    listed = client.files.list()
    assert [f.id for f in listed] == [uploaded.id]
    assert client.files.delete(uploaded.id).deleted is True
    assert uploaded.id not in fireworks.fake.datasets


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url":'
         b' {"url": "https://x/y.png"}}]}]}', "image"),
        (b'{"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]}', "tool"),
        (b'{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output":'
         b' [{"role": "assistant", "content": "a"}], "non_preferred_output":'
         b' [{"role": "assistant", "content": "b"}]}', "preference"),
        (b"not json", "not valid JSON"),
    ],
    ids=["image", "tool-call", "dpo", "not-json"],
)  # fmt: skip
def test_upload_refuses_a_line_fireworks_cannot_hold_naming_it(
    fireworks: FireworksStack, line: bytes, says: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _upload(fireworks, TRAINING_JSONL + line + b"\n")
    assert caught.value.param == "file" and caught.value.code == "invalid_training_file"
    assert "line 3" in caught.value.message and says in caught.value.message
    assert fireworks.fake.requests == [], "nothing was made at Fireworks"


def test_failed_storage_put_deletes_the_dataset(fireworks: FireworksStack) -> None:
    fireworks.fake.fail_put = 503
    with pytest.raises(openai.InternalServerError) as caught:
        _upload(fireworks)
    assert caught.value.status_code == 502
    assert fireworks.fake.datasets == {}, "no half-made dataset is left behind"


def test_job_create_sends_fireworks_names_and_answers_openai_shape(
    fireworks: FireworksStack,
) -> None:
    training, validation = _upload(fireworks), _upload(fireworks)
    client = fireworks.client()
    job = client.fine_tuning.jobs.create(
        model="llama-v3p1-8b-instruct",
        training_file=training,
        validation_file=validation,
        suffix="support-bot",
        hyperparameters={"n_epochs": 3, "batch_size": 8},
        extra_body={"provider_options": {"lora_rank": 16, "learning_rate": 0.0001}},
    )
    assert _posts(fireworks, "/supervisedFineTuningJobs")[-1].json == {
        "dataset": f"accounts/{ACCOUNT}/datasets/{training}",
        "evaluationDataset": f"accounts/{ACCOUNT}/datasets/{validation}",
        "baseModel": "accounts/fireworks/models/llama-v3p1-8b-instruct",
        "displayName": "support-bot",
        "epochs": 3,
        "batchSizeSamples": 8,
        "learningRate": 0.0001,
        "loraRank": 16,
    }
    assert job.status == "validating_files"
    assert job.training_file == training and job.validation_file == validation
    assert job.model == "llama-v3p1-8b-instruct"
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 8
    created = fireworks.fake.jobs[job.id]["createTime"]  # RFC 3339 at Fireworks
    assert job.created_at == int(datetime.fromisoformat(created).timestamp()), "unix seconds"
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()
    assert raw.keys() >= REQUIRED_JOB_FIELDS
    assert raw["finished_at"] is None and raw["fine_tuned_model"] is None


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("JOB_STATE_PENDING", "queued"),
        ("JOB_STATE_RUNNING", "running"),
        ("JOB_STATE_WRITING_RESULTS", "running"),
        ("JOB_STATE_COMPLETED", "succeeded"),
        ("JOB_STATE_EARLY_STOPPED", "succeeded"),
        ("JOB_STATE_EXPIRED", "failed"),
        ("JOB_STATE_CANCELLED", "cancelled"),
    ],
)
def test_job_states_map_to_openai_status(
    fireworks: FireworksStack, state: str, status: str
) -> None:
    fireworks.fake.add_dataset("ds-1")
    client = fireworks.client()
    job = client.fine_tuning.jobs.create(model="m", training_file="ds-1")
    fireworks.fake.set_state(job.id, state, {"code": "INTERNAL", "message": "OOM"})
    seen = client.fine_tuning.jobs.retrieve(job.id)
    assert seen.status == status
    assert (seen.finished_at is not None) == (status in ("succeeded", "failed", "cancelled"))
    if status == "succeeded":
        assert seen.fine_tuned_model == f"accounts/{ACCOUNT}/models/{job.id}"
    if status == "failed":
        assert seen.error is not None and seen.error.code == "INTERNAL"
        assert seen.error.message == "OOM"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"hyperparameters": {"learning_rate_multiplier": 2.0}},
         "hyperparameters.learning_rate_multiplier"),
        ({"seed": 3}, "seed"),
        ({"metadata": {"team": "a"}}, "metadata"),
        ({"method": {"type": "dpo", "dpo": {}}}, "method"),
        ({"provider_options": {"lora_rank": "big"}}, "provider_options.lora_rank"),
    ],
    ids=["multiplier", "seed", "metadata", "dpo", "bad-lora-rank"],
)  # fmt: skip
def test_job_create_refuses_what_fireworks_lacks_before_calling_it(
    fireworks: FireworksStack, extra: dict[str, Any], param: str
) -> None:
    fireworks.fake.add_dataset("ds-1")
    with pytest.raises(openai.BadRequestError) as caught:
        fireworks.client().fine_tuning.jobs.create(
            model="m", training_file="ds-1", extra_body=extra
        )
    assert caught.value.param == param
    assert fireworks.fake.jobs == {}


def test_cancel_is_400_saying_why_and_never_a_delete(fireworks: FireworksStack) -> None:
    fireworks.fake.add_dataset("ds-1")
    client = fireworks.client()
    job = client.fine_tuning.jobs.create(model="m", training_file="ds-1")
    before = len(fireworks.fake.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.cancel(job.id)
    # Portkey sends a DELETE, which removes the job and its record at Fireworks.
    assert "DELETE" in caught.value.message
    assert len(fireworks.fake.requests) == before, "no call reached Fireworks"
    assert job.id in fireworks.fake.jobs


def test_resume_is_fireworks_resume(fireworks: FireworksStack) -> None:
    fireworks.fake.add_dataset("ds-1")
    client = fireworks.client()
    job = client.fine_tuning.jobs.create(model="m", training_file="ds-1")
    fireworks.fake.set_state(job.id, "JOB_STATE_PAUSED")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    assert client.fine_tuning.jobs.resume(job.id).status == "running"
    assert _posts(fireworks, f"{job.id}:resume")[0].json == {}


def test_jobs_list_pages_over_fireworks_tokens_each_job_once(fireworks: FireworksStack) -> None:
    fireworks.fake.add_dataset("ds-1")
    client = fireworks.client()
    made = [client.fine_tuning.jobs.create(model="m", training_file="ds-1").id for _ in range(5)]
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == made[::-1][:2] and first.has_more is True
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == made[::-1]
    last = client.fine_tuning.jobs.list(limit=2, after=made[1])
    assert [j.id for j in last.data] == [made[0]] and last.has_more is False
    lists = [r for r in fireworks.fake.requests if r.method == "GET" and r.path.endswith("Jobs")]
    assert all(r.query["orderBy"] == "createTime desc" for r in lists)


def test_jobs_list_follows_next_page_tokens(fireworks: FireworksStack) -> None:
    fireworks.fake.add_dataset("ds-1")
    client = fireworks.client()
    for _ in range(205):  # more than Fireworks' largest page of 200
        fireworks.fake.jobs[f"j{len(fireworks.fake.jobs):03d}"] = {
            "name": f"accounts/{ACCOUNT}/supervisedFineTuningJobs/j{len(fireworks.fake.jobs):03d}",
            "dataset": f"accounts/{ACCOUNT}/datasets/ds-1",
            "baseModel": "accounts/fireworks/models/m",
            "state": "JOB_STATE_RUNNING",
            "createTime": fireworks.fake.now(),
        }
    seen = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    assert len(seen) == len(set(seen)) == 205
    tokens = [r.query.get("pageToken") for r in fireworks.fake.requests if r.method == "GET"]
    assert tokens[0] is None and any(t and t.startswith("pt") for t in tokens)


def test_bad_upstream_answer_is_502_naming_the_field(fireworks: FireworksStack) -> None:
    fireworks.fake.add_dataset("ds-1")
    client = fireworks.client()
    job = client.fine_tuning.jobs.create(model="m", training_file="ds-1")
    fireworks.fake.jobs[job.id]["state"] = "JOB_STATE_TELEPORTED"
    with pytest.raises(openai.InternalServerError) as caught:
        client.fine_tuning.jobs.retrieve(job.id)
    assert caught.value.status_code == 502 and "state" in caught.value.message


def test_unknown_job_is_404_and_odd_ids_never_reach_fireworks(fireworks: FireworksStack) -> None:
    client = fireworks.client()
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.jobs.retrieve("nope")
    assert "nope" in caught.value.message
    before = len(fireworks.fake.requests)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("Job:resume")
    assert len(fireworks.fake.requests) == before


def test_headers_route_to_fireworks_like_portkey(fireworks: FireworksStack) -> None:
    fireworks.fake.add_dataset("ds-1")
    client = fireworks.client(
        headers={
            "x-portkey-api-key": "gw-search-team-0123456789",
            "x-portkey-provider": "fireworks",
            "x-portkey-fireworks-account-id": ACCOUNT,
            "x-portkey-custom-host": fireworks.fake_url,
        },
        api_key=FW_KEY,
    )
    job = client.fine_tuning.jobs.create(model="m", training_file="ds-1")
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    wrong = fireworks.client(
        headers={
            "x-portkey-api-key": "gw-search-team-0123456789",
            "x-portkey-provider": "fireworks",
            "x-portkey-fireworks-account-id": ACCOUNT,
            "x-portkey-custom-host": fireworks.fake_url,
        },
        api_key="fw-wrong-key-000000000000000000",
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.fine_tuning.jobs.list()
    assert "fw-wrong-key-000000000000000000" not in str(caught.value)
