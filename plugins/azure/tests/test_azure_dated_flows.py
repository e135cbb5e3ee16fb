"""The official OpenAI SDK, through the gateway, against Azure's dated API (2024-10-21)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from plugins.azure.tests.conftest import AD_TOKEN, AZURE_KEY, DATED, AzureStack
from tests.conftest import TRAINING_JSONL
from tests.support.openai_shape import REQUIRED_FILE_FIELDS, REQUIRED_JOB_FIELDS


def _job_posts(azure: AzureStack) -> list[Any]:
    return [
        r
        for r in azure.dated.requests
        if r.method == "POST" and r.path == "/openai/fine_tuning/jobs"
    ]


def test_dated_full_loop_answers_in_openai_shapes(azure: AzureStack) -> None:
    client = azure.client("azure-dated")

    uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert uploaded.bytes == len(TRAINING_JSONL)
    assert uploaded.status == "uploaded", "Azure's 'pending' import is OpenAI's 'uploaded'"
    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id,
        model="gpt-4o-mini-2024-07-18",
        suffix="support",
        seed=7,
        hyperparameters={"n_epochs": 2, "batch_size": "auto"},
    )
    assert _job_posts(azure)[-1].json == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": uploaded.id,
        "suffix": "support",
        "seed": 7,
        "hyperparameters": {"n_epochs": 2},  # "auto" is Azure's default: left out
    }
    assert job.status == "validating_files"  # Azure's "created"
    assert job.organization_id == "org-contoso"  # Azure spells it organisation_id
    assert job.hyperparameters.n_epochs == 2
    assert job.hyperparameters.batch_size == "auto"  # Azure's -1
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()
    assert raw.keys() >= REQUIRED_JOB_FIELDS
    assert raw["finished_at"] is None and raw["error"] is None and raw["seed"] == 7

    azure.dated.set_status(job.id, "pending")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    azure.dated.set_status(job.id, "running")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    azure.dated.add_event(job.id, "Loss is rising", level="warning")
    azure.dated.add_event(job.id, "step 5", type_="metrics", data={"step": 5, "train_loss": 0.3})
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=2))
    assert [(e.level, e.type) for e in events[:2]] == [("info", "metrics"), ("warn", "message")]
    assert events[0].data == {"step": 5, "train_loss": 0.3}
    assert len(events) == len({e.id for e in events}) == 5
    azure.dated.add_checkpoint(job.id, 10, {"step": 10.0, "train_loss": 0.5})
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [(c.step_number, c.metrics.train_loss) for c in checkpoints] == [(10, 0.5)]
    assert checkpoints[0].fine_tuning_job_id == job.id

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None

    assert client.files.retrieve(uploaded.id).status == "processed"
    raw_file = client.files.with_raw_response.retrieve(uploaded.id).http_response.json()
    assert raw_file.keys() >= REQUIRED_FILE_FIELDS | {"status"}
    raw_list = client.files.with_raw_response.list().http_response.json()
    assert raw_list["first_id"] == raw_list["last_id"] == uploaded.id
    assert raw_list["has_more"] is False
    assert client.files.content(uploaded.id).content == TRAINING_JSONL
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve(uploaded.id)
    assert missing.value.code == "notFound" and uploaded.id in missing.value.message

    for recorded in azure.dated.requests:
        assert recorded.query["api-version"] == DATED
        assert recorded.headers["api-key"] == AZURE_KEY
        assert not recorded.path.startswith("/openai/v1")


def test_dated_finished_jobs_carry_model_results_and_error(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    good = client.fine_tuning.jobs.create(training_file=training["id"], model="gpt-4o-mini")
    bad = client.fine_tuning.jobs.create(training_file=training["id"], model="gpt-4o-mini")
    azure.dated.set_status(good.id, "succeeded")
    azure.dated.set_status(bad.id, "failed", {"code": "jsonlValidationFailed", "message": "x"})

    done = client.fine_tuning.jobs.retrieve(good.id)
    assert done.status == "succeeded" and done.fine_tuned_model is not None
    assert done.trained_tokens == 1234 and len(done.result_files) == 1
    assert client.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"
    failed = client.fine_tuning.jobs.retrieve(bad.id)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.code == "jsonlValidationFailed"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}}, "method"),
        ({"method": {"type": "reinforcement"}}, "method"),
        ({"metadata": {"team": "search"}}, "metadata"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
        ({"shiny_new_option": 3}, "shiny_new_option"),
    ],
    ids=["dpo", "reinforcement", "metadata", "integrations", "unknown"],
)
def test_dated_create_refuses_what_2024_10_21_lacks(
    azure: AzureStack, extra: dict[str, Any], param: str
) -> None:
    client = azure.client("azure-dated")
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            training_file=training["id"], model="gpt-4o-mini", extra_body=extra
        )
    assert caught.value.param == param
    assert DATED in caught.value.message and "'v1'" in caught.value.message
    assert _job_posts(azure) == [], "nothing reached Azure, which would ignore the field"
    assert azure.dated.jobs == {}


def test_dated_supervised_method_becomes_the_dated_hyperparameters(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    job = client.fine_tuning.jobs.create(
        training_file=training["id"],
        model="gpt-4o-mini",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4}}},
    )
    assert _job_posts(azure)[-1].json == {
        "model": "gpt-4o-mini",
        "training_file": training["id"],
        "hyperparameters": {"n_epochs": 4},
    }
    assert job.hyperparameters.n_epochs == 4


def test_dated_suffix_over_40_characters_is_refused_before_azure(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            training_file=training["id"], model="gpt-4o-mini", suffix="s" * 41
        )
    assert caught.value.param == "suffix"
    assert _job_posts(azure) == []


def test_dated_gateway_only_fields_are_dropped_not_refused(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    client.fine_tuning.jobs.create(
        training_file=training["id"],
        model="gpt-4o-mini",
        extra_body={"provider_options": {"job_name": "x"}, "metadata": None},
    )
    assert _job_posts(azure)[-1].json == {"model": "gpt-4o-mini", "training_file": training["id"]}


def test_dated_files_list_is_paged_by_the_gateway(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    ids = [
        client.files.create(file=(f"{i}.jsonl", TRAINING_JSONL), purpose="fine-tune").id
        for i in range(5)
    ]
    azure.dated.add_file("results.csv", b"a,b\n", purpose="fine-tune-results")

    first = client.files.list(limit=2, purpose="fine-tune")
    assert len(first.data) == 2 and first.has_more is True
    assert [f.id for f in client.files.list(limit=2, purpose="fine-tune", order="asc")] == ids
    newest_first = [f.id for f in client.files.list(limit=2, purpose="fine-tune")]
    assert newest_first == ids[::-1], "each file once, and auto-paging stops"
    last = client.files.list(limit=2, purpose="fine-tune", after=ids[1])
    assert [f.id for f in last.data] == [ids[0]] and last.has_more is False

    lists = [r for r in azure.dated.requests if r.method == "GET" and r.path == "/openai/files"]
    # Azure's list takes no paging parameters: only the filter and the version reach it.
    assert {tuple(sorted(r.query)) for r in lists} == {("api-version", "purpose")}


def test_dated_jobs_and_events_page_with_true_has_more(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    created = [
        client.fine_tuning.jobs.create(training_file=training["id"], model="gpt-4o-mini").id
        for _ in range(3)
    ]
    assert client.fine_tuning.jobs.list(limit=3).has_more is False
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == created[::-1]
    listed = [r for r in azure.dated.requests if r.path == "/openai/fine_tuning/jobs"]
    assert listed[-1].query == {"api-version": DATED, "limit": "2", "after": created[1]}

    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.list(metadata={"team": "search"})
    assert caught.value.param == "metadata"


def test_dated_upload_options_the_api_lacks_are_refused(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(
            file=("t.jsonl", TRAINING_JSONL),
            purpose="fine-tune",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )
    assert caught.value.param is not None and caught.value.param.startswith("expires_after")
    assert azure.dated.files == {}


def test_dated_entra_token_is_sent_as_bearer_instead_of_key(azure: AzureStack) -> None:
    client = azure.client("azure-dated-entra")
    assert list(client.fine_tuning.jobs.list()) == []
    sent = azure.dated.requests[-1].headers
    assert sent["authorization"] == f"Bearer {AD_TOKEN}" and "api-key" not in sent


def test_dated_by_portkey_headers_with_api_key_header(azure: AzureStack) -> None:
    headers = {
        "x-portkey-provider": "azure",
        "x-portkey-azure-resource-name": "contoso",
        "x-portkey-azure-deployment-id": "gpt-4o-mini-ft",
        "x-portkey-azure-api-version": DATED,
        "x-portkey-custom-host": azure.dated_url,
        "api-key": AZURE_KEY,
    }
    client = azure.client(headers=headers)  # Authorization carries the gateway key
    uploaded = client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert [f.id for f in client.files.list()] == [uploaded.id]
    assert azure.dated.requests[-1].headers["api-key"] == AZURE_KEY
