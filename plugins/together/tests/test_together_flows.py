"""The official OpenAI SDK, through the gateway, against a fake Together AI."""

from __future__ import annotations

import json

import openai
import pytest

from plugins.together.tests.conftest import LLAMA, TOGETHER_KEY, TogetherStack
from tests.conftest import TRAINING_JSONL


def _upload(together: TogetherStack, data: bytes = TRAINING_JSONL) -> str:
    client = together.client()
    return client.files.create(file=("train.jsonl", data), purpose="fine-tune").id


def test_full_loop_answers_in_openai_shapes(together: TogetherStack) -> None:
    client = together.client()
    uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.filename == "train.jsonl"
    # Sent Together's SDK way: POST /files, PUT to the signed URL (no key), preprocess.
    seen = [(r.method, r.path) for r in together.fake.requests]
    assert seen[:3] == [
        ("POST", "/v1/files"),
        ("PUT", f"/signed/{uploaded.id}"),
        ("POST", f"/v1/files/{uploaded.id}/preprocess"),
    ]
    put = together.fake.requests[1]
    assert "Authorization" not in put.headers
    assert TOGETHER_KEY not in json.dumps(put.headers)
    assert together.fake.content[uploaded.id].splitlines()[0] == (
        b'{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]}'
    )

    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id,
        model=LLAMA,
        suffix="support",
        seed=7,
        hyperparameters={"n_epochs": 3, "batch_size": 16, "learning_rate_multiplier": 2.0},
    )
    sent = [r for r in together.fake.requests if r.path == "/v1/fine-tunes"][-1].json
    assert sent["n_epochs"] == 3 and sent["batch_size"] == 16 and sent["random_seed"] == 7
    assert sent["learning_rate"] == pytest.approx(2e-5)
    assert sent["training_type"] == {"type": "Lora", "lora_r": 64, "lora_alpha": 128}
    assert sent["training_method"] == {"method": "sft", "train_on_inputs": "auto"}
    assert job.status == "validating_files"
    assert job.hyperparameters.n_epochs == 3
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(2.0)

    together.fake.set_status(job.id, "queued")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    together.fake.set_status(job.id, "compressing")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    together.fake.add_event(job.id, "Training started")
    together.fake.metrics[job.id] += [
        {"train/loss": 1.5, "train/global_step": 1, "train/learning_rate": 1e-5},
        {"train/loss": 0.9, "eval/loss": 1.1, "train/global_step": 2},
    ]
    together.fake.add_checkpoint(job.id, 10)
    together.fake.set_status(job.id, "completed")
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model and done.finished_at

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=1))
    assert [e.message for e in events if e.type == "message"] == [
        "Training started",
        "Fine tune request created",
    ]
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics == [
        {"step": 2, "train_loss": 0.9, "valid_loss": 1.1},
        {"step": 1, "train_loss": 1.5},
    ]
    assert len({e.id for e in events}) == 4
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [(c.step_number, c.fine_tuned_model_checkpoint) for c in checkpoints] == [
        (10, f"ckpt/{job.id}/10")
    ]


def test_list_jobs_pages_newest_first_though_together_lists_unordered(
    together: TogetherStack,
) -> None:
    client = together.client()
    file_id = _upload(together)
    made = [client.fine_tuning.jobs.create(training_file=file_id, model=LLAMA).id for _ in range(5)]
    first = client.fine_tuning.jobs.list(limit=2)
    assert first.has_more and [j.id for j in first.data] == made[::-1][:2]
    seen = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # auto-pagination
    assert seen == made[::-1]


def test_dpo_and_full_training_are_mapped(together: TogetherStack) -> None:
    client = together.client()
    file_id = _upload(together)
    job = client.fine_tuning.jobs.create(
        training_file=file_id,
        model=LLAMA,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}},
        extra_body={"lora": False},
    )
    sent = [r for r in together.fake.requests if r.path == "/v1/fine-tunes"][-1].json
    assert sent["training_method"] == {"method": "dpo", "dpo_beta": 0.2}
    assert sent["training_type"] == {"type": "Full"} and sent["n_epochs"] == 2
    assert job.method is not None and job.method.type == "dpo"


def test_metadata_is_400_naming_the_param(together: TogetherStack) -> None:
    client = together.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            training_file=_upload(together), model=LLAMA, metadata={"team": "search"}
        )
    assert caught.value.param == "metadata"


def test_upload_with_a_tool_message_is_400_naming_the_line_and_leaves_no_file(
    together: TogetherStack,
) -> None:
    bad = TRAINING_JSONL + b'{"messages": [{"role": "tool", "content": "42"}]}\n'
    client = together.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("train.jsonl", bad), purpose="fine-tune")
    assert "line 3" in caught.value.message and caught.value.param == "file"
    assert together.fake.files == {}


def test_bad_upstream_answer_is_502_naming_the_field(together: TogetherStack) -> None:
    client = together.client()
    job = client.fine_tuning.jobs.create(training_file=_upload(together), model=LLAMA)
    together.fake.override["GET /v1/fine-tunes/{id}"] = (
        200,
        {"id": job.id, "status": "exploded", "created_at": "x", "updated_at": "x"},
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.fine_tuning.jobs.retrieve(job.id)
    assert caught.value.status_code == 502
