"""Per-step metrics from the CSV files a Bedrock job writes under its output location."""

from __future__ import annotations

from typing import Any

from gateway_bedrock.metrics import job_folder
from gateway_bedrock.transform import decode_job

from .conftest import BUCKET, Gateway, moto_job
from .test_bedrock_jobs import NOVA, ONE_TURN, upload

TRAINING_CSV = (
    "step_number,epoch_number,training_loss,perplexity\n0,0,2.5,12.1\n1,0,1.5,4.4\n2,1,0.75,2.1\n"
)
VALIDATION_CSV = "step_number,epoch_number,validation_loss,perplexity\n2,1,0.875,2.4\n"


def _folder(backend: Any) -> str:
    uri = backend.output_data_config["s3Uri"].removeprefix(f"s3://{BUCKET}/").rstrip("/")
    return f"{uri}/model-customization-job-{backend.job_arn.rsplit('/', 1)[-1]}/"


def _finished_job(gateway: Gateway, *, validation_folder: str | None) -> Any:
    client = gateway.client()
    job = client.fine_tuning.jobs.create(model=NOVA, training_file=upload(gateway, *ONE_TURN))
    backend = moto_job(job.id)
    folder = _folder(backend)
    gateway.s3.put_object(
        Bucket=BUCKET,
        Key=folder + "training_artifacts/step_wise_training_metrics.csv",
        Body=TRAINING_CSV.encode(),
    )
    if validation_folder is not None:
        key = f"{folder}validation_artifacts/{validation_folder}validation_metrics.csv"
        gateway.s3.put_object(Bucket=BUCKET, Key=key, Body=VALIDATION_CSV.encode())
    backend.status = "Completed"
    return client, job


def test_job_folder_follows_bedrocks_layout() -> None:
    job = decode_job(
        {
            "jobArn": "arn:aws:bedrock:us-east-1:1:model-customization-job/m:0/abc123",
            "jobName": "j",
            "baseModelArn": "m",
            "creationTime": "2026-01-01T00:00:00Z",
            "outputDataConfig": {"s3Uri": "s3://out/results/"},
        }
    )
    assert job_folder(job) == ("out", "results/model-customization-job-abc123/")


def test_ended_job_lists_its_step_metrics_oldest_steps_last(gateway: Gateway) -> None:
    client, job = _finished_job(gateway, validation_folder="post_fine_tuning_validation/")
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=2))
    steps = [e.data for e in events if e.type == "metrics" and "step" in e.data]
    # Newest first, as OpenAI lists events: validation (after training), then the steps.
    assert steps == [
        {"step": 2, "valid_loss": 0.875},
        {"step": 2, "train_loss": 0.75},
        {"step": 1, "train_loss": 1.5},
        {"step": 0, "train_loss": 2.5},
    ]
    assert len({e.id for e in events}) == len(events)
    again = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert [e.id for e in again] == [e.id for e in events]


def test_metrics_are_read_once_for_an_ended_job(gateway: Gateway) -> None:
    client, job = _finished_job(
        gateway, validation_folder="post_fine_tuning_validation/validation/"
    )
    first = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert {"step": 2, "valid_loss": 0.875} in [e.data for e in first]
    gateway.s3.delete_object(
        Bucket=BUCKET,
        Key=_folder(moto_job(job.id)) + "training_artifacts/step_wise_training_metrics.csv",
    )
    kept = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert [e.id for e in kept] == [e.id for e in first]


def test_running_job_and_job_without_files_have_no_step_metrics(gateway: Gateway) -> None:
    client = gateway.client()
    job = client.fine_tuning.jobs.create(model=NOVA, training_file=upload(gateway, *ONE_TURN))

    def steps() -> list[Any]:
        return [e for e in client.fine_tuning.jobs.list_events(job.id) if "step" in e.data]

    assert steps() == []
    moto_job(job.id).status = "Completed"
    assert steps() == []  # only Bedrock's final losses, from GetModelCustomizationJob
