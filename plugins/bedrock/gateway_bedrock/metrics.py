"""A Bedrock job's per-step metrics, from the files it writes under its output location.

Per "Analyze the results of a model customization job" (Bedrock user guide,
model-customization-analyze), a finished job leaves under ``outputDataConfig.s3Uri``::

    model-customization-job-<job id>/training_artifacts/step_wise_training_metrics.csv
    model-customization-job-<job id>/validation_artifacts/post_fine_tuning_validation/
        validation_metrics.csv

with columns ``step_number`` (from 0), ``epoch_number``, ``training_loss`` (or
``validation_loss``) and ``perplexity``. Only the losses have an OpenAI key
(``train_loss``, ``valid_loss``); epoch and perplexity are left out. Some jobs write the
validation file one folder deeper (``.../post_fine_tuning_validation/validation/``), as
AWS's own sample notebooks read it; both places are tried. The files have no time per
step: every event carries the file's LastModified time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from gateway.errors import NotFound
from gateway.step_metrics import MetricsBlock, read_csv
from gateway_bedrock import s3
from gateway_bedrock.transform import BedrockJob

log = logging.getLogger(__name__)

TRAINING = ("training_artifacts/step_wise_training_metrics.csv", {"training_loss": "train_loss"})
VALIDATION = {"validation_loss": "valid_loss"}
VALIDATION_FILES = (
    "validation_artifacts/post_fine_tuning_validation/validation_metrics.csv",
    "validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv",
)
STEP = "step_number"


def job_folder(job: BedrockJob) -> tuple[str, str] | None:
    """The bucket and key prefix the job writes its artifacts under, if it says."""
    uri = job.outputDataConfig.s3Uri or ""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        return None
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    job_short_id = job.jobArn.rsplit("/", 1)[-1]
    return bucket, f"{prefix}model-customization-job-{job_short_id}/"


async def read_metrics(
    job: BedrockJob,
    client: Callable[[], Awaitable[Any]],
    errors: Callable[[], AbstractContextManager[None]],
) -> list[MetricsBlock]:
    """The job's metrics files as event blocks, newest (validation) first; none found is
    an empty list."""
    folder = job_folder(job)
    if folder is None:
        return []
    bucket, prefix = folder
    blocks: list[MetricsBlock] = []
    for name in VALIDATION_FILES:
        block = await _read_one(job, await client(), errors, bucket, prefix + name, VALIDATION)
        if block is not None:
            blocks.append(block)
            break
    name, columns = TRAINING
    block = await _read_one(job, await client(), errors, bucket, prefix + name, columns)
    if block is not None:
        blocks.append(block)
    return blocks


async def _read_one(
    job: BedrockJob,
    client: Any,
    errors: Callable[[], AbstractContextManager[None]],
    bucket: str,
    key: str,
    columns: dict[str, str],
) -> MetricsBlock | None:
    try:
        with errors():
            answer = await client.get_object(Bucket=bucket, Key=key)
    except NotFound:
        return None
    chunks = s3.read_chunks(answer["Body"])
    try:
        with errors():
            metrics = await read_csv(
                chunks, step_column=STEP, columns=columns, what=f"s3://{bucket}/{key}"
            )
    finally:
        await s3.aclose(chunks)
        answer["Body"].close()
    if metrics is None or not len(metrics):
        return None
    created_at = int(answer["LastModified"].timestamp())
    return MetricsBlock.of(metrics, created_at, job.jobArn, key)
