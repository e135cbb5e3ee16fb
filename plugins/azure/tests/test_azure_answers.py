"""Azure answers that are valid JSON but break its dated schema: mapped, or a 502, never a 500.

Each field of a full job, event, checkpoint and file answer is removed or given a value
of the wrong type or format in turn: what the gateway builds must meet OpenAI's schema,
or be an ``UpstreamBadResponse`` naming the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import openai
import pytest

from gateway.answers import UpstreamBadResponse
from gateway.testing.openai_schema import (
    FINE_TUNING_JOB,
    FINE_TUNING_JOB_CHECKPOINT,
    FINE_TUNING_JOB_EVENT,
    OPENAI_FILE,
    Schema,
    violations,
)
from gateway_azure import transform as tf
from plugins.azure.tests.conftest import AzureStack
from tests.support.malformed import malformed

JOB = {
    "id": "ftjob-1",
    "object": "fine_tuning.job",
    "created_at": 1700000000,
    "finished_at": 1700003600,
    "status": "succeeded",
    "model": "gpt-4o-mini",
    "fine_tuned_model": "gpt-4o-mini.ft-1",
    "training_file": "file-1",
    "validation_file": "file-2",
    "result_files": ["file-3"],
    "organisation_id": "org-1",
    "trained_tokens": 1234,
    "estimated_finish": 1700003600,
    "seed": 7,
    "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 0.5},
    "error": {"code": "c", "message": "m", "param": "training_file"},
}
EVENT = {
    "id": "ftevent-1",
    "object": "fine_tuning.job.event",
    "created_at": 1700000000,
    "level": "warning",
    "message": "Step 5/10: training loss=0.5",
    "type": "metrics",
    "data": {"step": 5, "train_loss": 0.5},
}
CHECKPOINT = {
    "id": "ftchkpt-1",
    "object": "fine_tuning.job.checkpoint",
    "created_at": 1700000000,
    "fine_tuned_model_checkpoint": "gpt-4o-mini.ft-1:ckpt-step-5",
    "fine_tuning_job_id": "ftjob-1",
    "step_number": 5,
    "metrics": {"step": 5, "train_loss": 0.5},
}
FILE = {
    "id": "file-1",
    "object": "file",
    "created_at": 1700000000,
    "bytes": 1024,
    "filename": "train.jsonl",
    "purpose": "fine-tune",
    "status": "processed",
    "status_details": "fine",
}

Mapper = Callable[[bytes], Any]
CASES: dict[str, tuple[dict[str, Any], Mapper, Schema, str]] = {
    "job": (
        JOB,
        lambda raw: tf.job_from_azure(tf.decode(raw, tf.AzureJob, "fine-tuning job")),
        FINE_TUNING_JOB,
        "fine-tuning job",
    ),
    "event": (
        EVENT,
        lambda raw: tf.event_from_azure(tf.decode(raw, tf.AzureEvent, "fine-tuning event")),
        FINE_TUNING_JOB_EVENT,
        "fine-tuning event",
    ),
    "checkpoint": (
        CHECKPOINT,
        lambda raw: tf.checkpoint_from_azure(tf.decode(raw, tf.AzureCheckpoint, "checkpoint")),
        FINE_TUNING_JOB_CHECKPOINT,
        "checkpoint",
    ),
    "file": (
        FILE,
        lambda raw: tf.file_from_azure(tf.decode(raw, tf.AzureFile, "file")),
        OPENAI_FILE,
        "file",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_full_answer_maps_to_openai_objects(case: str) -> None:
    answer, mapper, schema, _ = CASES[case]
    assert violations(msgspec.to_builtins(mapper(json.dumps(answer).encode())), schema) == []


@pytest.mark.parametrize("case", CASES)
def test_every_broken_field_is_mapped_or_a_502_naming_it(case: str) -> None:
    answer, mapper, schema, what = CASES[case]
    outcomes = {"mapped": 0, "502": 0}
    for broken, changed in malformed(answer):
        try:
            mapped = mapper(json.dumps(changed).encode())
        except UpstreamBadResponse as exc:
            assert exc.status == 502 and exc.code == "upstream_bad_response", broken
            assert str(exc).startswith(f"Azure OpenAI answered a {what}"), broken
            assert exc.field is not None, f"{broken}: {exc} names no field"
            outcomes["502"] += 1
            continue
        assert violations(msgspec.to_builtins(mapped), schema) == [], broken
        outcomes["mapped"] += 1
    assert outcomes["mapped"] > 5 and outcomes["502"] > 10, outcomes


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("created_at", "2026-01-01T00:00:00Z", "$.created_at"),
        ("status", "paused", "$.status"),
        ("hyperparameters", {"n_epochs": "3"}, "$.hyperparameters.n_epochs"),
        ("id", None, "$.id"),
    ],
)
def test_the_502_names_the_job_field(field: str, value: Any, named: str) -> None:
    with pytest.raises(UpstreamBadResponse) as raised:
        tf.job_from_azure(tf.decode(json.dumps({**JOB, field: value}).encode(), tf.AzureJob, "job"))
    assert raised.value.field == named
    assert f"`{named}`" in str(raised.value)


def test_through_the_gateway_a_bad_answer_is_a_502_logged_with_azures_request_id(
    azure: AzureStack, caplog: pytest.LogCaptureFixture
) -> None:
    client = azure.client("azure-dated")
    azure.dated.fail_next(
        200, {**JOB, "created_at": "2026-01-01T00:00:00Z"}, {"apim-request-id": "apim-42"}
    )
    with (
        caplog.at_level(logging.WARNING, logger="finetune_gateway.error"),
        pytest.raises(openai.APIStatusError) as raised,
    ):
        client.fine_tuning.jobs.retrieve("ftjob-1")
    assert raised.value.status_code == 502
    assert raised.value.response.headers["x-upstream-request-id"] == "apim-42"
    error = raised.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_bad_response"
    assert error["message"].startswith("Azure OpenAI answered a fine-tuning job")
    assert "`$.created_at`" in error["message"]
    (line,) = [r.getMessage() for r in caplog.records if "$.created_at" in r.getMessage()]
    assert "upstream request id apim-42" in line
