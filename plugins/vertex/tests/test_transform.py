"""OpenAI jobs <-> Vertex tuningJobs, and Google's errors: table tests of the pure mapping."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    NotSupported,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.models import JobCreate
from gateway_vertex import transform, wire
from gateway_vertex.errors import google_error
from tests.support.openai_shape import REQUIRED_JOB_FIELDS

NAME = "projects/p/locations/us-central1/tuningJobs/4242"
URI = "gs://b/pre/vertex/x.jsonl"


def spec(**fields: Any) -> tuple[JobCreate, dict[str, Any]]:
    body = {"model": "gemini-2.5-flash", "training_file": "file-x", **fields}
    return msgspec.convert(body, JobCreate), body


def sent(**fields: Any) -> dict[str, Any]:
    job, body = spec(**fields)
    created = transform.create_body(job, body, URI, None)
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(created))
    return decoded


def test_create_body_maps_openai_fields() -> None:
    assert sent(
        suffix="support-bot",
        metadata={"team": "search"},
        hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 0.5, "batch_size": "auto"},
        provider_options={"adapter_size": 4},
    ) == {
        "baseModel": "gemini-2.5-flash",
        "tunedModelDisplayName": "support-bot",
        "labels": {"team": "search"},
        "supervisedTuningSpec": {
            "trainingDatasetUri": URI,
            "hyperParameters": {
                "epochCount": "3",
                "learningRateMultiplier": 0.5,
                "adapterSize": "ADAPTER_SIZE_FOUR",
            },
        },
    }


def test_create_body_auto_leaves_hyperparameters_out() -> None:
    assert sent(hyperparameters={"n_epochs": "auto"}) == {
        "baseModel": "gemini-2.5-flash",
        "supervisedTuningSpec": {"trainingDatasetUri": URI},
    }


def test_create_body_dpo_goes_to_preference_spec_with_beta() -> None:
    body = sent(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}})
    assert body["preferenceOptimizationSpec"] == {
        "trainingDatasetUri": URI,
        "hyperParameters": {"epochCount": "2", "beta": 0.2},
    }
    assert "supervisedTuningSpec" not in body


@pytest.mark.parametrize(
    ("fields", "param", "error"),
    [
        ({"hyperparameters": {"batch_size": 8}}, "hyperparameters.batch_size", BadRequest),
        (
            {
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"batch_size": 4}},
                }
            },
            "method.supervised.hyperparameters.batch_size",
            BadRequest,
        ),
        ({"seed": 7}, "seed", BadRequest),
        ({"metadata": {"Team": "x"}}, "metadata.Team", BadRequest),
        ({"metadata": {"team": "Search Team"}}, "metadata.team", BadRequest),
        ({"provider_options": {"adapter_size": 3}}, "provider_options.adapter_size", BadRequest),
        ({"method": {"type": "reinforcement"}}, None, NotSupported),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, None, NotSupported),
    ],
)
def test_create_body_refuses_what_vertex_cannot_take(
    fields: dict[str, Any], param: str | None, error: type[GatewayError]
) -> None:
    with pytest.raises(error) as raised:
        sent(**fields)
    assert raised.value.status == 400
    assert raised.value.param == param


def job(**fields: Any) -> wire.TuningJob:
    base = {
        "name": NAME,
        "baseModel": "gemini-2.5-flash",
        "state": "JOB_STATE_PENDING",
        "createTime": "2026-01-02T03:04:05.123456789Z",
        "supervisedTuningSpec": {"trainingDatasetUri": URI},
    }
    return msgspec.convert({**base, **fields}, wire.TuningJob)


def openai(j: wire.TuningJob) -> dict[str, Any]:
    mapped = transform.to_openai(j, file_id_of=lambda uri: f"id:{uri}", organization="p")
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(mapped))
    return decoded


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("JOB_STATE_PENDING", "validating_files"),
        ("JOB_STATE_QUEUED", "queued"),
        ("JOB_STATE_UNSPECIFIED", "queued"),
        ("JOB_STATE_RUNNING", "running"),
        ("JOB_STATE_UPDATING", "running"),
        ("JOB_STATE_SUCCEEDED", "succeeded"),
        ("JOB_STATE_PARTIALLY_SUCCEEDED", "succeeded"),
        ("JOB_STATE_FAILED", "failed"),
        ("JOB_STATE_EXPIRED", "failed"),
        ("JOB_STATE_CANCELLING", "cancelled"),
        ("JOB_STATE_CANCELLED", "cancelled"),
    ],
)
def test_to_openai_status_table(state: str, status: str) -> None:
    assert openai(job(state=state))["status"] == status


def test_to_openai_state_vertex_does_not_document_is_a_502_naming_it() -> None:
    with pytest.raises(
        UpstreamError, match=r"`\$\.state`: unknown state 'JOB_STATE_SOMETHING_NEW'"
    ):
        openai(job(state="JOB_STATE_SOMETHING_NEW"))


def test_to_openai_pending_job_has_every_required_field() -> None:
    mapped = openai(job())
    assert mapped.keys() >= REQUIRED_JOB_FIELDS
    assert mapped["id"].startswith("ftjob-") and transform.native_job_id(mapped["id"]) == "4242"
    assert mapped["created_at"] == 1767323045
    assert mapped["training_file"] == f"id:{URI}"
    assert mapped["finished_at"] is None and mapped["error"] is None
    assert mapped["hyperparameters"] == {
        "batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto",
    }  # fmt: skip


def test_to_openai_succeeded_job_names_model_and_tokens() -> None:
    mapped = openai(
        job(
            state="JOB_STATE_SUCCEEDED",
            endTime="2026-01-02T04:00:00Z",
            supervisedTuningSpec={
                "trainingDatasetUri": URI,
                "hyperParameters": {"epochCount": "3"},
            },
            tunedModel={"model": "projects/p/models/9@1", "endpoint": "projects/p/endpoints/9"},
            tuningDataStats={"supervisedTuningDataStats": {"totalBillableTokenCount": "1000"}},
            labels={"team": "search"},
        )
    )
    assert mapped["fine_tuned_model"] == "projects/p/endpoints/9"
    assert mapped["finished_at"] == 1767326400
    assert mapped["trained_tokens"] == 3000
    assert mapped["hyperparameters"]["n_epochs"] == 3
    assert mapped["metadata"] == {"team": "search"}


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"error": {"code": 3, "message": "Bad dataset."}}, "invalid_argument", "Bad dataset."),
        ({}, "job_failed", "The tuning job failed"),
        ({"state": "JOB_STATE_EXPIRED"}, "expired", "The Vertex AI tuning job expired"),
    ],
)
def test_to_openai_failed_job_carries_the_error(
    fields: dict[str, Any], code: str, message: str
) -> None:
    mapped = openai(job(**{"state": "JOB_STATE_FAILED", **fields}))
    assert mapped["status"] == "failed"
    assert mapped["error"] == {"code": code, "message": message, "param": None}


def test_to_openai_cancelled_job_has_no_error() -> None:
    cancelled = job(state="JOB_STATE_CANCELLED", error={"code": 1, "message": "CANCELLED"})
    assert openai(cancelled)["error"] is None


def test_to_openai_dpo_job_reports_method_and_beta() -> None:
    spec_ = {"trainingDatasetUri": URI, "hyperParameters": {"beta": 0.3}}
    mapped = openai(job(supervisedTuningSpec=None, preferenceOptimizationSpec=spec_))
    assert mapped["method"]["type"] == "dpo"
    assert mapped["method"]["dpo"]["hyperparameters"]["beta"] == 0.3


def test_events_newest_first_with_stable_ids() -> None:
    failed = job(
        state="JOB_STATE_FAILED",
        startTime="2026-01-02T03:05:00Z",
        endTime="2026-01-02T03:09:00Z",
        error={"code": 9, "message": "Quota."},
    )
    events = transform.events(failed)
    assert [e.message for e in events] == [
        "The job failed: Quota.",
        "Fine-tuning job started",
        "Created fine-tuning job",
    ]
    assert events[0].level == "error"
    assert [e.id for e in transform.events(failed)] == [e.id for e in events]
    assert len({e.id for e in events}) == 3


def test_events_cancel_keeps_its_id_from_cancelling_to_cancelled() -> None:
    cancelling = transform.events(job(state="JOB_STATE_CANCELLING"))
    cancelled = transform.events(job(state="JOB_STATE_CANCELLED"))
    assert cancelling[0].message == "Cancelling fine-tuning job"
    assert cancelled[0].message == "Cancelled fine-tuning job"
    assert cancelling[0].id == cancelled[0].id
    assert cancelled[0].data == {"state": "JOB_STATE_CANCELLED"}


def test_checkpoints_from_tuned_model_newest_first() -> None:
    tuned = {
        "model": "m",
        "checkpoints": [
            {"checkpointId": "1", "epoch": "1", "step": "5", "endpoint": "e1"},
            {"checkpointId": "2", "epoch": "2", "step": "10", "endpoint": "e2"},
        ],
    }
    found = transform.checkpoints(job(state="JOB_STATE_SUCCEEDED", tunedModel=tuned))
    assert [(c.step_number, c.fine_tuned_model_checkpoint) for c in found] == [
        (10, "e2"),
        (5, "e1"),
    ]
    assert found[0].metrics == {"step": 10.0, "epoch": 2.0}
    assert found[0].fine_tuning_job_id == transform.public_job_id(NAME)


def google(status: int, name: str | None, message: str = "boom") -> bytes:
    error: dict[str, Any] = {"code": status, "message": message}
    if name:
        error["status"] = name
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    ("http", "name", "caller", "expected", "status"),
    [
        (404, "NOT_FOUND", False, NotFound, 404),
        (400, "INVALID_ARGUMENT", False, BadRequest, 400),
        (400, "FAILED_PRECONDITION", False, BadRequest, 400),
        (403, "PERMISSION_DENIED", False, UpstreamError, 502),
        (401, "UNAUTHENTICATED", False, UpstreamError, 502),
        (403, "PERMISSION_DENIED", True, Forbidden, 403),
        (401, "UNAUTHENTICATED", True, Unauthorized, 401),
        (429, "RESOURCE_EXHAUSTED", False, RateLimited, 429),
        (503, "UNAVAILABLE", False, UpstreamError, 502),
        (500, "INTERNAL", False, UpstreamError, 502),
        (504, "DEADLINE_EXCEEDED", False, UpstreamTimeout, 504),
        (404, None, False, NotFound, 404),  # Cloud Storage leaves "status" out
    ],
)
def test_google_error_maps_envelope_to_openai(
    http: int, name: str | None, caller: bool, expected: type[GatewayError], status: int
) -> None:
    error = google_error(
        http, google(http, name), service="Vertex AI", caller_credentials=caller, secrets=[]
    )
    assert type(error) is expected
    assert error.status == status
    assert "boom" in error.message


def test_google_error_masks_secrets_and_keeps_retry_after() -> None:
    token = "ya29.secret-token-value-123456"
    error = google_error(
        429,
        google(429, "RESOURCE_EXHAUSTED", f"quota for {token}"),
        service="Vertex AI",
        caller_credentials=False,
        secrets=[token],
        retry_after="30",
    )
    assert token not in error.message
    assert error.headers == {"Retry-After": "30"}


def test_google_error_not_json_is_still_an_answer() -> None:
    error = google_error(
        502, b"<html>bad gateway</html>", service="Vertex AI", caller_credentials=False, secrets=[]
    )
    assert error.status == 502 and "bad gateway" in error.message


def test_create_body_top_level_hyperparameters_are_not_dropped_beside_the_method() -> None:
    body = sent(
        hyperparameters={"n_epochs": 4},
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
    )
    assert body["preferenceOptimizationSpec"]["hyperParameters"] == {
        "epochCount": "4",
        "beta": 0.2,
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {
                "hyperparameters": {"batch_size": 8},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
            },
            "hyperparameters.batch_size",
        ),
        (
            {
                "hyperparameters": {"n_epochs": 2},
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": 3}},
                },
            },
            "hyperparameters.n_epochs",
        ),
    ],
)
def test_create_body_refuses_top_level_hyperparameters_the_method_would_hide(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        sent(**fields)
    assert raised.value.param == param


def test_events_success_is_newest_after_the_model_event() -> None:
    done = job(
        state="JOB_STATE_SUCCEEDED",
        startTime="2026-01-02T03:05:00Z",
        endTime="2026-01-02T03:09:00Z",
        tunedModel={"model": "projects/p/models/9@1", "endpoint": "projects/p/endpoints/9"},
    )
    assert [e.message for e in transform.events(done)][:2] == [
        "The job has successfully completed",
        "New fine-tuned model created: projects/p/endpoints/9",
    ]


@pytest.mark.parametrize(
    ("http", "expected", "status", "code"),
    [
        (504, UpstreamTimeout, 504, "upstream_timeout"),
        (502, UpstreamError, 502, "unknown"),
        (500, UpstreamError, 502, "internal"),
    ],
)
def test_google_error_without_a_status_name_maps_by_http_status(
    http: int, expected: type[GatewayError], status: int, code: str
) -> None:
    error = google_error(
        http, b"<html>oops</html>", service="Cloud Storage", caller_credentials=False, secrets=[]
    )
    assert type(error) is expected and error.status == status
    assert error.code == code
