"""Tuning jobs through the gateway with the OpenAI SDK, against the fake Vertex AI."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from plugins.vertex.tests.conftest import (
    BUCKET,
    CHAT_LINES,
    PREFERENCE_LINES,
    PROJECT,
    REGION,
    VertexStack,
    jsonl,
)

MODEL = "gemini-2.5-flash"


def upload(vertex: VertexStack, lines: list[dict[str, Any]] = CHAT_LINES) -> str:
    client = vertex.client()
    return client.files.create(file=("train.jsonl", jsonl(lines)), purpose="fine-tune").id


def test_job_lifecycle_to_succeeded(vertex: VertexStack) -> None:
    client = vertex.client()
    training, validation = upload(vertex), upload(vertex)

    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        validation_file=validation,
        suffix="support-bot",
        hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 0.5},
        metadata={"team": "search"},
        extra_body={"provider_options": {"adapter_size": 4}},
    )

    (sent,) = vertex.sent("POST", "/tuningJobs")
    spec = sent["supervisedTuningSpec"]
    assert sent["baseModel"] == MODEL and sent["tunedModelDisplayName"] == "support-bot"
    assert sent["labels"] == {"team": "search"}
    assert spec["hyperParameters"] == {
        "epochCount": "3",
        "learningRateMultiplier": 0.5,
        "adapterSize": "ADAPTER_SIZE_FOUR",
    }
    assert spec["trainingDatasetUri"].startswith(f"gs://{BUCKET}/{vertex.prefix}vertex/")
    assert spec["validationDatasetUri"].startswith(f"gs://{BUCKET}/{vertex.prefix}vertex/")
    assert vertex.google.requests[-1].path == (
        f"/v1/projects/{PROJECT}/locations/{REGION}/tuningJobs"
    )
    assert job.status == "validating_files" and job.model == MODEL
    assert job.training_file == training and job.validation_file == validation
    assert job.hyperparameters.n_epochs == 3 and job.metadata == {"team": "search"}
    assert job.fine_tuned_model is None and job.finished_at is None

    native = vertex.native(job.id)
    vertex.google.set_state(native, "JOB_STATE_RUNNING")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"

    vertex.google.succeed(native, checkpoints=3, tokens=1000)
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.finished_at is not None
    assert done.fine_tuned_model == f"projects/{PROJECT}/locations/{REGION}/endpoints/{native[-6:]}"
    assert done.trained_tokens == 3000, "1000 billable tokens per epoch, three epochs"

    events = list(client.fine_tuning.jobs.list_events(job.id))
    messages = [e.message for e in events]
    assert messages[-1] == "Created fine-tuning job" and "Fine-tuning job started" in messages
    assert "The job has successfully completed" in messages
    assert f"New fine-tuned model created: {done.fine_tuned_model}" in messages
    # Vertex's REST API has no per-step losses: its tuningDataStats only, nothing made up.
    stats = [e for e in events if e.message.startswith("Tuning data:")]
    assert [(e.message, e.type, e.data) for e in stats] == [
        (
            "Tuning data: 2 examples, 1000 billable tokens, 15 tuning steps",
            "message",
            {"total_steps": 15},
        )
    ]
    assert not [e for e in events if e.type == "metrics"]
    after_first = client.fine_tuning.jobs.list_events(job.id, after=events[0].id, limit=2)
    assert [e.id for e in after_first.data] == [e.id for e in events[1:3]]

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [15, 10, 5]
    assert all(c.fine_tuning_job_id == job.id for c in checkpoints)
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith("-ckpt3")


def test_job_lifecycle_to_failed_carries_the_error(vertex: VertexStack) -> None:
    client = vertex.client()
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(vertex))

    vertex.google.fail(vertex.native(job.id), code=3, message="Example 7 is too long.")

    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == (
        "invalid_argument",
        "Example 7 is too long.",
    )
    levels = {e.message: e.level for e in client.fine_tuning.jobs.list_events(job.id)}
    assert levels["The job failed: Example 7 is too long."] == "error"


def test_jobs_list_auto_pages_each_job_once(vertex: VertexStack) -> None:
    vertex.google.max_page_size = 2  # Vertex pages by token: make it page
    client = vertex.client()
    training = upload(vertex)
    created = [
        client.fine_tuning.jobs.create(model=MODEL, training_file=training).id for _ in range(5)
    ]

    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == created[::-1][:2] and first.has_more

    seen = [j.id for j in client.fine_tuning.jobs.list(limit=2)]
    assert seen == created[::-1], "newest first, each job exactly once"
    last = client.fine_tuning.jobs.list(limit=2, after=created[1])
    assert [j.id for j in last.data] == [created[0]] and last.has_more is False


def test_jobs_list_metadata_filter_reaches_vertex(vertex: VertexStack) -> None:
    client = vertex.client()
    training = upload(vertex)
    client.fine_tuning.jobs.create(model=MODEL, training_file=training, metadata={"team": "search"})
    ads = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training, metadata={"team": "ads"}
    )

    found = list(client.fine_tuning.jobs.list(metadata={"team": "ads"}))

    assert [j.id for j in found] == [ads.id]
    assert vertex.google.requests[-1].query["filter"] == 'labels.team="ads"'


def test_retried_create_with_idempotency_key_makes_one_job(vertex: VertexStack) -> None:
    client = vertex.client()
    training = upload(vertex)

    def create(key: str | None) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        return client.fine_tuning.jobs.create(
            model=MODEL, training_file=training, metadata={"team": "a"}, extra_headers=headers
        )

    first, again = create("k-1"), create("k-1")
    other, plain, plain_again = create("k-2"), create(None), create(None)
    assert first.id == again.id
    assert len({first.id, other.id, plain.id, plain_again.id}) == 4  # no key: a new job
    assert len(list(client.fine_tuning.jobs.list())) == 4
    # The label that finds a retried create is the gateway's, not the user's metadata.
    assert again.metadata == {"team": "a"}
    assert client.fine_tuning.jobs.retrieve(first.id).metadata == {"team": "a"}


def test_cancel_posts_cancel_then_returns_the_job(vertex: VertexStack) -> None:
    client = vertex.client()
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(vertex))

    cancelled = client.fine_tuning.jobs.cancel(job.id)

    assert cancelled.id == job.id and cancelled.status == "cancelled"
    assert vertex.sent("POST", ":cancel") == [{}]
    assert vertex.google.requests[-1].method == "GET", "the job is fetched after :cancel"
    with pytest.raises(openai.BadRequestError, match="Cannot cancel tuning job"):
        vertex.google.set_state(vertex.native(job.id), "JOB_STATE_CANCELLED")
        client.fine_tuning.jobs.cancel(job.id)


def test_dpo_job_trains_on_the_preference_copy(vertex: VertexStack) -> None:
    client = vertex.client()
    training = upload(vertex, PREFERENCE_LINES)

    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}},
    )

    (sent,) = vertex.sent("POST", "/tuningJobs")
    spec = sent["preferenceOptimizationSpec"]
    assert spec["hyperParameters"] == {"epochCount": "2", "beta": 0.2}
    assert "/vertex/" in spec["trainingDatasetUri"] and "supervisedTuningSpec" not in sent
    assert job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == 0.2
    assert job.training_file == training


@pytest.mark.parametrize(
    ("lines", "method"),
    [(CHAT_LINES, {"type": "dpo"}), (PREFERENCE_LINES, None)],
    ids=["chat-file-for-dpo", "preference-file-for-sft"],
)
def test_file_kind_must_match_the_method(
    vertex: VertexStack, lines: list[dict[str, Any]], method: dict[str, str] | None
) -> None:
    extra = {"method": method} if method else {}
    with pytest.raises(openai.BadRequestError) as refused:
        vertex.client().fine_tuning.jobs.create(
            model=MODEL,
            training_file=upload(vertex, lines),
            **extra,  # type: ignore[arg-type]
        )
    assert refused.value.param == "training_file"
    assert vertex.sent("POST", "/tuningJobs") == []


def test_training_file_may_be_a_gs_uri(vertex: VertexStack) -> None:
    client = vertex.client()
    client.files.create(file=("t.jsonl", jsonl(CHAT_LINES)), purpose="fine-tune")
    staged = next(name for name in vertex.objects() if "/vertex/" in name)
    uri = f"gs://{BUCKET}/{staged}"
    outside = f"gs://{BUCKET}/datasets/train.jsonl"  # under the key's allowed_gcs_uris
    vertex.google.gcs_url = None  # the fake would look for `outside`

    # Anywhere else the config's project could read is refused before any Google call.
    for refused in (f"gs://{BUCKET}/elsewhere.jsonl", f"gs://{BUCKET}/datasets/../x.jsonl"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(model=MODEL, training_file=refused)
        assert caught.value.code == "resource_not_allowed"
        assert caught.value.param == "training_file"
    assert vertex.sent("POST", "/tuningJobs") == []

    job = client.fine_tuning.jobs.create(model=MODEL, training_file=outside)

    assert (
        vertex.sent("POST", "/tuningJobs")[0]["supervisedTuningSpec"]["trainingDatasetUri"]
        == outside
    )
    assert job.training_file == outside
    assert client.fine_tuning.jobs.create(model=MODEL, training_file=uri).training_file.startswith(
        "file-"
    )


def test_unknown_ids_are_404_and_unknown_files_400(vertex: VertexStack) -> None:
    client = vertex.client()
    with pytest.raises(openai.NotFoundError, match="No fine-tuning job found"):
        client.fine_tuning.jobs.retrieve("ftjob-OTk5OTk")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-Li4vLi4v")  # "../../" must not reach a URL
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=MODEL, training_file="file-bm9wZQ")
    assert refused.value.param == "training_file"


@pytest.mark.parametrize(
    ("http", "status", "expected", "code"),
    [
        (429, "RESOURCE_EXHAUSTED", openai.RateLimitError, 429),
        (400, "INVALID_ARGUMENT", openai.BadRequestError, 400),
        (403, "PERMISSION_DENIED", openai.InternalServerError, 502),
        (503, "UNAVAILABLE", openai.InternalServerError, 502),
    ],
)
def test_vertex_errors_reach_the_sdk_as_openai_errors(
    vertex: VertexStack, http: int, status: str, expected: type[openai.APIStatusError], code: int
) -> None:
    vertex.google.fail_next(http, status, f"Vertex says {status.lower()}")
    with pytest.raises(expected) as failed:
        vertex.client().fine_tuning.jobs.list()
    assert failed.value.status_code == code
    assert f"Vertex says {status.lower()}" in failed.value.message


def test_refused_hyperparameters_never_reach_vertex(vertex: VertexStack) -> None:
    client = vertex.client()
    training = upload(vertex)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model=MODEL, training_file=training, hyperparameters={"batch_size": 8}
        )
    assert refused.value.param == "hyperparameters.batch_size"
    assert vertex.sent("POST", "/tuningJobs") == []
