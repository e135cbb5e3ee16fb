"""Core's share of "an unexpected upstream answer is a 502": the reading helpers and the wire
policy that keeps null out of fields OpenAI's schema does not let be null."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
import pytest

from gateway.answers import UpstreamBadResponse, convert_answer, decode_answer, mapping
from gateway.models import (
    FileObject,
    FineTuningJob,
    Hyperparameters,
    Method,
    SupervisedMethod,
)
from gateway.testing.openai_schema import (
    FINE_TUNING_JOB,
    OPENAI_FILE,
    answer_violations,
    violations,
)


class Inner(msgspec.Struct):
    when: datetime
    count: Annotated[str, msgspec.Meta(pattern=r"^[0-9]+$")] = "0"


class Outer(msgspec.Struct):
    name: str
    items: list[Inner] = []


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        (b'{"name": 1}', "$.name", "Expected `str`, got `int`"),
        (b'{"name": "a", "items": [{"when": "soon"}]}', "$.items[0].when", "Invalid RFC3339"),
        (b'{"name": "a", "items": [{"when": "2026-01-01T00:00:00Z", "count": "1.5"}]}',
         "$.items[0].count", "Expected `str` matching regex"),
        (b'{"items": []}', "$.name", "a required field is missing"),
        (b'{"name": "a", "items": [{}]}', "$.items[0].when", "a required field is missing"),
    ],
)  # fmt: skip
def test_decode_answer_names_the_field_that_did_not_fit(
    raw: bytes, field: str, problem: str
) -> None:
    with pytest.raises(UpstreamBadResponse) as raised:
        decode_answer(raw, msgspec.json.Decoder(Outer), provider="Acme", what="widget")
    error = raised.value
    assert (error.status, error.code, error.field) == (502, "upstream_bad_response", field)
    assert str(error).startswith(f"Acme answered a widget the gateway cannot map at `{field}`: ")
    assert problem in str(error)


def test_not_json_at_all_is_a_502_too() -> None:
    with pytest.raises(UpstreamBadResponse, match="Acme answered a widget"):
        decode_answer(b"<html>", Outer, provider="Acme", what="widget")


def test_convert_answer_and_mapping_are_502s() -> None:
    with pytest.raises(UpstreamBadResponse) as raised:
        convert_answer({"name": "a", "items": [{"when": 5}]}, Outer, provider="Acme", what="w")
    assert raised.value.field == "$.items[0].when"
    with pytest.raises(UpstreamBadResponse, match="invalid literal for int"), mapping("Acme", "w"):
        int("3.5")
    with pytest.raises(AttributeError), mapping("Acme", "w"):  # the gateway's own bug stays one
        _ = object().missing  # type: ignore[attr-defined]


def encoded(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def test_a_job_with_nothing_said_has_no_null_where_openai_allows_none() -> None:
    job = encoded(
        FineTuningJob(
            id="ftjob-1",
            model="m",
            created_at=1,
            status="queued",
            training_file="file-1",
            method=None,
        )
    )
    assert "method" not in job
    assert job["hyperparameters"] == {
        "batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"
    }  # fmt: skip
    # The nullable fields are still there, as null: OpenAI requires them.
    assert job["error"] is None and job["finished_at"] is None and job["fine_tuned_model"] is None
    assert violations(job, FINE_TUNING_JOB) == []


def test_a_supervised_method_leaves_out_the_other_methods() -> None:
    given = Hyperparameters(n_epochs=3)
    job = encoded(
        FineTuningJob(
            id="ftjob-1",
            model="m",
            created_at=1,
            status="queued",
            training_file="file-1",
            hyperparameters=given,
            method=Method(type="supervised", supervised=SupervisedMethod(hyperparameters=given)),
        )
    )
    assert job["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3}},
    }
    assert job["hyperparameters"]["n_epochs"] == 3
    assert given.learning_rate_multiplier is None  # filling "auto" copies, never mutates
    assert violations(job, FINE_TUNING_JOB) == []


def test_a_file_without_expiry_or_details_leaves_them_out_even_if_given_none() -> None:
    file = encoded(
        FileObject(
            id="file-1",
            bytes=1,
            created_at=1,
            filename="a",
            purpose="fine-tune",
            expires_at=None,
            status_details=None,
        )
    )
    assert "expires_at" not in file and "status_details" not in file
    assert file["status"] == "processed"
    assert violations(file, OPENAI_FILE) == []
    # Decoded (a stored record, say) with nulls: the same.
    decoded = msgspec.json.decode(
        b'{"id":"f","bytes":1,"created_at":1,"filename":"a",'
        b'"purpose":"fine-tune","expires_at":null}',
        type=FileObject,
    )
    assert "expires_at" not in encoded(decoded)


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({"method": {"type": "supervised", "dpo": None}}, "$.method.dpo: null where"),
        ({"method": None}, "$.method: null where"),
        ({"hyperparameters": {"n_epochs": None}}, "$.hyperparameters.n_epochs: null where"),
        ({"seed": None}, "$.seed: null where"),
        ({"status": "paused"}, "$.status: 'paused' is not one of"),
        ({"error": None}, None),  # nullable
        ({"hyperparameters": {"batch_size": None}}, None),  # nullable, in this schema only
    ],
)
def test_the_schema_check_flags_null_only_where_openai_has_none(
    body: dict[str, Any], found: str | None
) -> None:
    base = encoded(
        FineTuningJob(id="ftjob-1", model="m", created_at=1, status="queued", training_file="f")
    )
    problems = answer_violations("GET", "/v1/fine_tuning/jobs/ftjob-1", 200, {**base, **body})
    assert (problems == []) if found is None else any(p.startswith(found) for p in problems)


def test_the_schema_check_wants_required_fields_and_knows_list_routes() -> None:
    problems = answer_violations("GET", "/v1/files", 200, {"object": "list", "data": [{}]})
    assert "$.has_more: required, missing" in problems
    assert "$.data[0].id: required, missing" in problems
    empty = {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}
    assert answer_violations("GET", "/v1/files", 200, empty) == []  # see EMPTY_PAGE_IDS
    assert answer_violations("GET", "/v1/files/file-1/content", 200, {"anything": None}) == []
    error = {"error": {"message": "m", "type": "t", "param": None, "code": None}}
    assert answer_violations("POST", "/v1/fine_tuning/jobs", 400, error) == []
    assert answer_violations("POST", "/v1/fine_tuning/jobs", 400, {"error": {"message": "m"}})
