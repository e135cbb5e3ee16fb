"""The pure mappings (``transform``, ``errors``), table-tested apart from any I/O."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.errors import BadRequest, UpstreamError
from gateway.models import FileObject, JobCreate
from gateway_azure import transform as tf
from gateway_azure.errors import parse_error

MINIMAL_JOB = {
    "id": "ftjob-1",
    "created_at": 100,
    "status": "created",
    "model": "gpt-4o-mini",
    "training_file": "file-1",
}


def _job(**fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = msgspec.to_builtins(
        tf.job_from_azure(msgspec.convert(fields, tf.AzureJob))
    )
    return job


@pytest.mark.parametrize(
    ("azure", "openai"),
    [
        ("created", "validating_files"),
        ("pending", "queued"),
        ("running", "running"),
        ("succeeded", "succeeded"),
        ("cancelled", "cancelled"),
        ("failed", "failed"),
    ],
)
def test_job_from_azure_maps_every_dated_state(azure: str, openai: str) -> None:
    assert _job(**{**MINIMAL_JOB, "status": azure})["status"] == openai


def test_job_from_azure_unknown_state_is_a_502_naming_it() -> None:
    with pytest.raises(UpstreamError, match="'paused'"):
        _job(**{**MINIMAL_JOB, "status": "paused"})


def test_job_from_azure_fills_every_field_openai_requires() -> None:
    job = _job(**MINIMAL_JOB)
    assert job == {
        **MINIMAL_JOB,
        "status": "validating_files",
        "object": "fine_tuning.job",
        "validation_file": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "error": None,
        # Azure said nothing: "auto", as OpenAI answers, never null; no method at all.
        "hyperparameters": {
            "batch_size": "auto",
            "learning_rate_multiplier": "auto",
            "n_epochs": "auto",
        },
        "organization_id": "",
        "result_files": [],
        "trained_tokens": None,
        "seed": 0,
        "estimated_finish": None,
        "integrations": None,
        "metadata": None,
    }


@pytest.mark.parametrize(
    ("azure", "openai"),
    [
        ({"n_epochs": -1, "batch_size": -1, "learning_rate_multiplier": -1}, ["auto"] * 3),
        ({"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 0.5}, [3, 8, 0.5]),
        # What Azure did not say is "auto" too, never null.
        ({"n_epochs": 0}, ["auto", "auto", "auto"]),
    ],
)
def test_job_from_azure_hyperparameters_chosen_by_azure_are_auto(
    azure: dict[str, Any], openai: list[Any]
) -> None:
    hyper = _job(**MINIMAL_JOB, hyperparameters=azure)["hyperparameters"]
    assert [hyper["n_epochs"], hyper["batch_size"], hyper["learning_rate_multiplier"]] == openai


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"organisation_id": "org-x"}, {"organization_id": "org-x"}),
        (
            {"error": {"code": "c", "message": "m"}},
            {"error": {"code": "c", "message": "m", "param": None}},
        ),
        ({"error": {}}, {"error": None}),  # an empty error object is no error
        ({"result_files": ["file-r"], "seed": 9}, {"result_files": ["file-r"], "seed": 9}),
    ],
)
def test_job_from_azure_renames_and_fills(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    job = _job(**MINIMAL_JOB, **fields)
    assert {k: job[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("level", "expected"), [("info", "info"), ("warning", "warn"), ("error", "error")]
)
def test_event_from_azure_maps_level(level: str, expected: str) -> None:
    event = tf.AzureEvent(id="ftevent-1", created_at=1, level=level, message="m")
    mapped = tf.event_from_azure(event)
    assert (mapped.level, mapped.type, mapped.data) == (expected, "message", {})


@pytest.mark.parametrize(
    ("status", "expected", "details"),
    [
        (None, "processed", None),
        ("uploaded", "uploaded", None),
        ("pending", "uploaded", None),
        ("running", "uploaded", None),
        ("processed", "processed", None),
        ("error", "error", None),
        ("deleting", "error", "The file is deleting on Azure OpenAI"),
        ("deleted", "error", "The file is deleted on Azure OpenAI"),
    ],
)
def test_file_from_azure_maps_state(status: str | None, expected: str, details: str | None) -> None:
    azure = tf.AzureFile(
        id="file-1", created_at=1, bytes=2, filename="a.jsonl", purpose="fine-tune", status=status
    )
    mapped = msgspec.to_builtins(tf.file_from_azure(azure))
    assert (mapped["status"], mapped.get("status_details")) == (expected, details)
    if details is None:
        assert "status_details" not in mapped  # not nullable in OpenAI's schema: left out


def _body(**body: Any) -> dict[str, Any]:
    full = {"model": "m", "training_file": "file-1", **body}
    sent: dict[str, Any] = tf.dated_job_body(msgspec.convert(full, JobCreate), full, "2024-10-21")
    return sent


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({}, {}),
        (
            {"validation_file": "file-2", "suffix": "s", "seed": 0},
            {"validation_file": "file-2", "suffix": "s", "seed": 0},
        ),
        (
            {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}},
            {"hyperparameters": {"n_epochs": 2}},
        ),
        ({"hyperparameters": {"n_epochs": "auto"}}, {}),
        ({"provider_options": {"job_name": "j"}, "role_arn": "arn"}, {}),
        ({"metadata": None, "method": None}, {}),
    ],
)
def test_dated_job_body_keeps_what_the_dated_api_takes(
    given: dict[str, Any], sent: dict[str, Any]
) -> None:
    assert _body(**given) == {"model": "m", "training_file": "file-1", **sent}


@pytest.mark.parametrize(
    "field",
    [
        {"method": {"type": "dpo"}},
        {"metadata": {"a": "b"}},
        {"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]},
        {"some_future_field": 1},
    ],
)
def test_dated_job_body_refuses_what_the_dated_api_lacks(field: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as caught:
        _body(**field)
    assert caught.value.param == next(iter(field))
    assert caught.value.code == "unsupported_parameter"


def test_dated_job_body_refuses_a_hyperparameter_the_dated_api_lacks() -> None:
    with pytest.raises(BadRequest) as caught:
        _body(hyperparameters={"n_epochs": 2, "beta": 0.1})
    assert caught.value.param == "hyperparameters.beta"
    assert caught.value.code == "unsupported_parameter"


def _files(*created: int) -> list[FileObject]:
    return [
        FileObject(id=f"file-{i}", bytes=1, created_at=c, filename="f", purpose="fine-tune")
        for i, c in enumerate(created)
    ]


@pytest.mark.parametrize(
    ("created", "limit", "after", "order", "ids", "has_more"),
    [
        ((1, 2, 3), 2, None, None, ["file-2", "file-1"], True),  # newest first by default
        ((1, 2, 3), 2, "file-1", None, ["file-0"], False),
        ((1, 2, 3), 3, None, "desc", ["file-2", "file-1", "file-0"], False),
        ((3, 1, 2), 2, None, "asc", ["file-1", "file-2"], True),
        ((3, 1, 2), 2, "file-2", "asc", ["file-0"], False),
        ((5, 5, 5), 1, "file-0", "asc", ["file-1"], True),  # ties keep Azure's order
        ((5, 5, 5), 2, "file-2", "desc", ["file-1", "file-0"], False),
        ((), 10, None, None, [], False),
    ],
)
def test_page_files_pages_the_whole_list_by_after(
    created: tuple[int, ...],
    limit: int,
    after: str | None,
    order: str | None,
    ids: list[str],
    has_more: bool,
) -> None:
    page, more = tf.page_files(_files(*created), limit=limit, after=after, order=order)
    assert ([f.id for f in page], more) == (ids, has_more)


def test_page_files_unknown_after_ends_the_walk() -> None:
    """A file deleted while a client pages: the walk ends rather than failing."""
    assert tf.page_files(_files(1), limit=1, after="file-gone", order=None) == ([], False)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"code": "notFound", "message": "No job.", "target": "job"}},
            ("No job.", "job", "notFound"),
        ),
        (
            {"error": {"message": "Bad.", "type": "invalid_request_error", "param": "model"}},
            ("Bad.", "model", None),
        ),
        ({"error": {"code": 429, "message": "Slow down."}}, ("Slow down.", None, "429")),
        (
            {"error": {"message": "Invalid.", "innererror": {"code": "invalidPayload"}}},
            ("Invalid.", None, "invalidPayload"),
        ),
        (
            {"error": {"code": "x", "message": "M.", "details": [{"message": "d", "target": "t"}]}},
            ("M. (d)", "t", "x"),
        ),
        ({"error": "plain words"}, ("plain words", None, None)),
        ({}, ("Reason", None, None)),
        (b"<html>oops</html>", ("<html>oops</html>", None, None)),
    ],
)
def test_parse_error_reads_either_envelope(
    body: dict[str, Any] | bytes, expected: tuple[str, str | None, str | None]
) -> None:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    assert parse_error(raw, "Reason") == expected


def test_decode_names_what_did_not_fit() -> None:
    with pytest.raises(UpstreamError) as caught:
        tf.decode(b'{"id": "f", "created_at": "soon"}', tf.AzureFile, "file")
    assert caught.value.code == "upstream_bad_response" and "file" in caught.value.message


def test_dated_job_body_refuses_a_suffix_longer_than_azure_takes() -> None:
    assert _body(suffix="s" * 40)["suffix"] == "s" * 40
    with pytest.raises(BadRequest) as caught:
        _body(suffix="s" * 41)  # OpenAI takes 64; Azure's dated API names models with <= 40
    assert caught.value.param == "suffix" and "40" in caught.value.message


@pytest.mark.parametrize(
    ("method", "sent"),
    [
        ({"type": "supervised"}, {}),
        ({"type": "supervised", "supervised": {}}, {}),
        (
            {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": "auto"}},
            },
            {"hyperparameters": {"n_epochs": 3}},
        ),
    ],
)
def test_dated_job_body_supervised_method_is_the_dated_apis_training(
    method: dict[str, Any], sent: dict[str, Any]
) -> None:
    """What the dated API trains is supervised: OpenAI's way of asking for it is not refused."""
    assert _body(method=method) == {"model": "m", "training_file": "file-1", **sent}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": 2}},
                },
                "hyperparameters": {"n_epochs": 3},
            },
            "hyperparameters",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}},
            "method.supervised.hyperparameters.beta",
        ),
        ({"method": {"type": "dpo", "dpo": {}}}, "method"),
        ({"method": {"type": "reinforcement"}}, "method"),
    ],
)
def test_dated_job_body_refuses_other_methods_and_conflicts(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        _body(**body)
    assert caught.value.param == param
