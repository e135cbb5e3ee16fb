"""A job's life on Bedrock, driven on moto's backend, as the OpenAI SDK sees it."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Gateway, moto_job
from .test_bedrock_jobs import NOVA, ONE_TURN, upload


def step(status: str, created: str, modified: str | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "creationTime": f"2026-01-01T{created}Z",
        "lastModifiedTime": f"2026-01-01T{modified or created}Z",
    }


@pytest.mark.usefixtures("status_details")
def test_lifecycle_statuses_and_events(gateway: Gateway) -> None:
    client = gateway.client()
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=upload(gateway, *ONE_TURN), hyperparameters={"n_epochs": 2}
    )
    backend = moto_job(job.id)
    backend.creation_time = "2026-01-01 10:00:00"

    def now() -> Any:
        return client.fine_tuning.jobs.retrieve(job.id)

    backend.status_details = {"validationDetails": step("InProgress", "10:00:01")}
    assert now().status == "validating_files"
    backend.status_details = {
        "validationDetails": step("Completed", "10:00:01", "10:01:00"),
        "dataProcessingDetails": step("InProgress", "10:01:00"),
        "trainingDetails": {"status": "NotStarted"},
    }
    assert now().status == "queued"
    backend.status_details["dataProcessingDetails"] = step("Completed", "10:01:00", "10:02:00")
    backend.status_details["trainingDetails"] = step("InProgress", "10:02:00")
    assert now().status == "running"
    backend.status_details["trainingDetails"] = step("Completed", "10:02:00", "10:30:00")
    backend.status = "Completed"
    backend.end_time = "2026-01-01 10:30:00"
    backend.training_metrics = {"trainingLoss": 0.25}
    backend.validation_metrics = [{"validationLoss": 0.5}]
    done = now()
    assert done.status == "succeeded"
    assert done.fine_tuned_model == backend.output_model_arn
    assert done.finished_at == done.created_at + 30 * 60
    assert done.hyperparameters.n_epochs == 2

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=3))
    messages = [e.message for e in events]
    assert messages == [
        "The job has successfully completed",
        "Final losses: train_loss 0.2500, valid_loss 0.5000",
        "Training completed",
        "Training started",
        "Processing of the training data completed",
        "Processing of the training data started",
        "Validation of the training data completed",
        "Validation of the training data started",
        f"Created fine-tuning job: {job.id}",
    ]
    assert len({e.id for e in events}) == len(events)
    metrics = events[1]
    # Final values, of no step: a message with the losses, not a per-step metrics event.
    assert metrics.type == "message" and metrics.data == {"train_loss": 0.25, "valid_loss": 0.5}
    # Ids are stable: the same events, asked again, page on from any of them.
    after = client.fine_tuning.jobs.list_events(job.id, after=events[3].id, limit=2)
    assert [e.id for e in after.data] == [events[4].id, events[5].id] and after.has_more

    assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []


def test_failed_job_reports_bedrocks_message(gateway: Gateway) -> None:
    client = gateway.client()
    job = client.fine_tuning.jobs.create(model=NOVA, training_file=upload(gateway, *ONE_TURN))
    backend = moto_job(job.id)
    backend.status = "Failed"
    backend.failure_message = "Training data has 3 invalid records"
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error is not None and "3 invalid records" in failed.error.message
    assert failed.fine_tuned_model is None
    [latest, *_] = client.fine_tuning.jobs.list_events(job.id)
    assert latest.level == "error" and "3 invalid records" in latest.message


def test_jobs_list_auto_pages_each_job_once_newest_first(gateway: Gateway) -> None:
    client = gateway.client()
    file_id = upload(gateway, *ONE_TURN)
    created = []
    for i in range(5):
        job = client.fine_tuning.jobs.create(
            model=NOVA, training_file=file_id, suffix=f"run{i}", metadata={"run": str(i % 2)}
        )
        moto_job(job.id).creation_time = f"2026-01-01 10:00:0{i}"
        created.append(job.id)
    first = client.fine_tuning.jobs.list(limit=2)
    assert len(first.data) == 2 and first.has_more is True
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == list(reversed(created))
    last = client.fine_tuning.jobs.list(limit=2, after=created[1])
    assert [j.id for j in last.data] == [created[0]] and last.has_more is False

    odd = [j.id for j in client.fine_tuning.jobs.list(limit=1, metadata={"run": "1"})]
    assert odd == [created[3], created[1]]
    assert client.fine_tuning.jobs.list(metadata={"run": "1"}).data[0].metadata == {"run": "1"}


def test_ended_jobs_are_not_fetched_again_when_listing(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bedrock's rate limits are low: a job that has ended is read once, not on every list."""
    from moto.bedrock.models import BedrockBackend

    client = gateway.client()
    file_id = upload(gateway, *ONE_TURN)
    ended = client.fine_tuning.jobs.create(model=NOVA, training_file=file_id, suffix="ended")
    running = client.fine_tuning.jobs.create(model=NOVA, training_file=file_id, suffix="running")
    moto_job(ended.id).status = "Completed"
    fetched: list[str] = []
    original = BedrockBackend.get_model_customization_job

    def counting(self: BedrockBackend, job_identifier: str) -> Any:
        fetched.append(job_identifier)
        return original(self, job_identifier)

    monkeypatch.setattr(BedrockBackend, "get_model_customization_job", counting)
    first = {job.id: job.status for job in client.fine_tuning.jobs.list()}
    assert first == {ended.id: "succeeded", running.id: "running"}
    fetched.clear()
    second = {job.id: job.status for job in client.fine_tuning.jobs.list()}
    assert second == first
    assert fetched == [moto_job(running.id).job_name]  # the running job is still refreshed
