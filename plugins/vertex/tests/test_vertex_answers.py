"""Vertex answers that are valid JSON but break Vertex's formats: mapped, or a 502, never a 500.

Each field of a full TuningJob (every output a succeeded job carries) is removed or
given a value of the wrong type or format in turn; the gateway's reading of it (the
decode and the job, events and checkpoints built from it) must give objects that meet
OpenAI's schema or an ``UpstreamBadResponse`` naming the field. Then the same through
the gateway and the SDK: a 502 in OpenAI's envelope, logged with the field.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import openai
import pytest

from gateway.answers import UpstreamBadResponse, mapping
from gateway.models import Checkpoint, FineTuningJob, JobEvent
from gateway.testing.openai_schema import (
    FINE_TUNING_JOB,
    FINE_TUNING_JOB_CHECKPOINT,
    FINE_TUNING_JOB_EVENT,
    violations,
)
from gateway_vertex import transform
from gateway_vertex.provider import SERVICE, decode_job, decode_list
from plugins.vertex.tests.conftest import VertexStack
from plugins.vertex.tests.test_vertex_jobs import MODEL, upload
from tests.support.malformed import malformed

BASE = "projects/p/locations/us-central1"
SUCCEEDED_JOB: dict[str, Any] = {
    "name": f"{BASE}/tuningJobs/4242",
    "baseModel": "gemini-2.5-flash",
    "tunedModelDisplayName": "support-bot",
    "state": "JOB_STATE_SUCCEEDED",
    "createTime": "2026-01-01T10:00:00.123456Z",
    "startTime": "2026-01-01T10:01:00Z",
    "endTime": "2026-01-01T11:00:00Z",
    "updateTime": "2026-01-01T11:00:00Z",
    "labels": {"team": "search"},
    "supervisedTuningSpec": {
        "trainingDatasetUri": "gs://b/pre/vertex/x.jsonl",
        "validationDatasetUri": "gs://b/pre/vertex/y.jsonl",
        "hyperParameters": {
            "epochCount": "3",
            "learningRateMultiplier": 0.5,
            "adapterSize": "ADAPTER_SIZE_FOUR",
        },
    },
    "tunedModel": {
        "model": f"{BASE}/models/42@1",
        "endpoint": f"{BASE}/endpoints/42",
        "checkpoints": [{"checkpointId": "1", "epoch": "1", "step": "5", "endpoint": "e"}],
    },
    "tuningDataStats": {
        "supervisedTuningDataStats": {
            "totalBillableTokenCount": "1234",
            "tuningDatasetExampleCount": "2",
            "tuningStepCount": "5",
        }
    },
}
FAILED_JOB = {**SUCCEEDED_JOB, "state": "JOB_STATE_FAILED", "error": {"code": 3, "message": "x"}}


def read(answer: Any) -> tuple[FineTuningJob, list[JobEvent], list[Checkpoint]]:
    """What the provider builds from one job answer (see ``VertexProvider``)."""
    job = decode_job(json.dumps(answer).encode())
    with mapping(SERVICE, "tuning job"):
        return (
            transform.to_openai(job, file_id_of=lambda uri: uri, organization="p"),
            transform.events(job),
            transform.checkpoints(job),
        )


def problems_of(mapped: tuple[FineTuningJob, list[JobEvent], list[Checkpoint]]) -> list[str]:
    job, events, checkpoints = msgspec.to_builtins(mapped)
    found = violations(job, FINE_TUNING_JOB)
    for event in events:
        found += violations(event, FINE_TUNING_JOB_EVENT)
    for checkpoint in checkpoints:
        found += violations(checkpoint, FINE_TUNING_JOB_CHECKPOINT)
    return found


def test_the_full_answers_map_to_openai_objects() -> None:
    for answer in (SUCCEEDED_JOB, FAILED_JOB):
        assert problems_of(read(answer)) == []


@pytest.mark.parametrize("answer", [SUCCEEDED_JOB, FAILED_JOB], ids=["succeeded", "failed"])
def test_every_broken_field_is_mapped_or_a_502_naming_it(answer: dict[str, Any]) -> None:
    outcomes = {"mapped": 0, "502": 0}
    for broken, changed in malformed(answer):
        try:
            mapped = read(changed)
        except UpstreamBadResponse as exc:
            assert exc.status == 502 and exc.code == "upstream_bad_response", broken
            assert str(exc).startswith("Vertex AI answered a tuning job"), broken
            assert exc.field is not None, f"{broken}: {exc} names no field"
            outcomes["502"] += 1
            continue
        assert problems_of(mapped) == [], broken
        outcomes["mapped"] += 1
    # Both happen: optional fields may go, formats may not break.
    assert outcomes["mapped"] > 20 and outcomes["502"] > 50, outcomes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("createTime", "yesterday"),
        ("endTime", "2026-13-45T99:99:99Z"),
        ("state", "JOB_STATE_EXPLODED"),
        ("name", 42),
    ],
)
def test_the_502_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(UpstreamBadResponse) as raised:
        read({**SUCCEEDED_JOB, field: value})
    assert raised.value.field == f"$.{field}"


def test_an_epoch_count_that_is_no_decimal_string_is_a_502() -> None:
    spec = SUCCEEDED_JOB["supervisedTuningSpec"]
    broken = {**spec, "hyperParameters": {**spec["hyperParameters"], "epochCount": "3.5"}}
    with pytest.raises(UpstreamBadResponse) as raised:
        read({**SUCCEEDED_JOB, "supervisedTuningSpec": broken})
    assert raised.value.field == "$.supervisedTuningSpec.hyperParameters.epochCount"


def test_a_list_with_one_broken_job_is_a_502_naming_its_index() -> None:
    answer = {"tuningJobs": [SUCCEEDED_JOB, {**SUCCEEDED_JOB, "createTime": "soon"}]}
    with pytest.raises(UpstreamBadResponse) as raised:
        decode_list(json.dumps(answer).encode())
    assert raised.value.field == "$.tuningJobs[1].createTime"


def test_through_the_gateway_every_job_call_is_a_502_never_a_500(
    vertex: VertexStack, caplog: pytest.LogCaptureFixture
) -> None:
    client = vertex.client()
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(vertex))
    vertex.google.jobs[vertex.native(job.id)]["createTime"] = "not a timestamp"

    calls = {
        "retrieve": lambda: client.fine_tuning.jobs.retrieve(job.id),
        "list": lambda: client.fine_tuning.jobs.list(),
        "events": lambda: client.fine_tuning.jobs.list_events(job.id),
        "checkpoints": lambda: client.fine_tuning.jobs.checkpoints.list(job.id),
        "cancel": lambda: client.fine_tuning.jobs.cancel(job.id),
    }
    with caplog.at_level(logging.WARNING, logger="finetune_gateway.error"):
        for name, call in calls.items():
            with pytest.raises(openai.APIStatusError) as raised:
                call()
            assert raised.value.status_code == 502, name
            error = raised.value.body
            assert isinstance(error, dict), name
            assert error["code"] == "upstream_bad_response", name
            assert "Vertex AI" in error["message"] and "createTime`" in error["message"], name
    logged = [r.getMessage() for r in caplog.records if "upstream_bad" not in r.getMessage()]
    assert any("$.createTime" in line and "upstream request id" in line for line in logged)
