"""Bedrock answers that break its service model: mapped, or a 502 naming the field, never a 500.

botocore has parsed Bedrock's JSON by the time the plugin sees it (timestamps are
datetimes), so each field of a full GetModelCustomizationJob answer, as botocore gives
it, is removed or given a value of the wrong type or format in turn: the job and events
the gateway builds must meet OpenAI's schema, or be an ``UpstreamBadResponse``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from gateway.answers import UpstreamBadResponse, mapping
from gateway.testing.openai_schema import FINE_TUNING_JOB, FINE_TUNING_JOB_EVENT, violations
from gateway_bedrock import transform
from gateway_bedrock.events import job_events
from tests.support.malformed import malformed

ARN = "arn:aws:bedrock:us-east-1:111122223333:model-customization-job/run-1"
WHEN = datetime(2026, 1, 1, 10, tzinfo=UTC)
STEP = {"status": "Completed", "creationTime": WHEN, "lastModifiedTime": WHEN}
JOB: dict[str, Any] = {
    "jobArn": ARN,
    "jobName": "run-1",
    "baseModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0:128k",
    "creationTime": WHEN,
    "lastModifiedTime": WHEN,
    "endTime": WHEN,
    "status": "Completed",
    "statusDetails": {
        "validationDetails": STEP,
        "dataProcessingDetails": STEP,
        "trainingDetails": STEP,
    },
    "outputModelArn": "arn:aws:bedrock:us-east-1:111122223333:custom-model/run-1",
    "clientRequestToken": "token-1",
    "hyperParameters": {"epochCount": "2", "batchSize": "1", "learningRate": "0.00001"},
    "trainingDataConfig": {"s3Uri": "s3://b/x.jsonl"},
    "validationDataConfig": {"validators": [{"s3Uri": "s3://b/y.jsonl"}]},
    "trainingMetrics": {"trainingLoss": 0.5},
    "validationMetrics": [{"validationLoss": 0.6}],
}
FAILED = {**JOB, "status": "Failed", "failureMessage": "bad data"}


def read(answer: dict[str, Any]) -> tuple[Any, Any]:
    """What the provider builds from one job answer (see ``BedrockProvider._openai_job``)."""
    job = transform.decode_job(answer)
    with mapping(transform.SERVICE, "customization job"):
        built = transform.to_openai_job(job, tags={"team": "a"}, source_of=lambda uri: None)
        return built, job_events(job)


def problems_of(built: tuple[Any, Any]) -> list[str]:
    job, events = msgspec.to_builtins(built)
    found = violations(job, FINE_TUNING_JOB)
    for event in events:
        found += violations(event, FINE_TUNING_JOB_EVENT)
    return found


def test_the_full_answers_map_to_openai_objects() -> None:
    assert problems_of(read(JOB)) == [] and problems_of(read(FAILED)) == []


@pytest.mark.parametrize("answer", [JOB, FAILED], ids=["completed", "failed"])
def test_every_broken_field_is_mapped_or_a_502_naming_it(answer: dict[str, Any]) -> None:
    outcomes = {"mapped": 0, "502": 0}
    for broken, changed in malformed(answer):
        try:
            built = read(changed)
        except UpstreamBadResponse as exc:
            assert exc.status == 502 and exc.code == "upstream_bad_response", broken
            assert str(exc).startswith("Bedrock answered a customization job"), broken
            assert exc.field is not None, f"{broken}: {exc} names no field"
            outcomes["502"] += 1
            continue
        assert problems_of(built) == [], broken
        outcomes["mapped"] += 1
    assert outcomes["mapped"] > 20 and outcomes["502"] > 20, outcomes


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("creationTime", "yesterday", "$.creationTime"),
        ("status", "Exploded", "$.status"),
        ("jobName", None, "$.jobName"),
        ("hyperParameters", {"epochCount": 2}, "$.hyperParameters[...]"),  # msgspec's way
    ],
)
def test_the_502_names_the_field(field: str, value: Any, named: str) -> None:
    with pytest.raises(UpstreamBadResponse) as raised:
        read({**JOB, field: value})
    assert raised.value.field == named


def test_a_listing_or_tags_that_break_the_model_are_a_502() -> None:
    summaries = {"modelCustomizationJobSummaries": [{"jobArn": ARN, "jobName": "x"}]}
    with pytest.raises(UpstreamBadResponse) as raised:
        transform.decode_summaries(summaries)
    assert raised.value.field == "$[0].creationTime"
    with pytest.raises(UpstreamBadResponse) as raised:
        transform.decode_tags({"tags": [{"key": "team"}]})
    assert raised.value.field == "$.tags[0].value"
