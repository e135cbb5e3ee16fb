"""Job mapping, Bedrock events and AWS error mapping: pure functions, table-tested."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError

from gateway.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    NotSupported,
    RateLimited,
    Unauthorized,
    UpstreamError,
)
from gateway.models import JobCreate
from gateway_bedrock import transform
from gateway_bedrock.aws import BedrockSettings, map_client_error
from gateway_bedrock.events import job_events
from gateway_bedrock.formats import LineFormat
from gateway_bedrock.provider import BedrockProvider
from gateway_bedrock.s3 import Layout, file_id, new_stem

ARN = "arn:aws:bedrock:us-east-1:111122223333:model-customization-job/run-1"


def bedrock_job(**fields: Any) -> transform.BedrockJob:
    base: dict[str, Any] = {
        "jobArn": ARN,
        "jobName": "run-1",
        "baseModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0:128k",
        "creationTime": datetime(2026, 1, 1, 10, tzinfo=UTC),
        "trainingDataConfig": {"s3Uri": "s3://b/x.jsonl"},
    }
    return transform.decode_job(base | fields)


def spec(**fields: Any) -> JobCreate:
    return msgspec.convert({"model": "m", "training_file": "f"} | fields, JobCreate)


@pytest.mark.parametrize(
    ("model", "family", "line_format"),
    [
        ("amazon.nova-micro-v1:0:128k", "Amazon Nova", LineFormat.CONVERSATION),
        (
            "arn:aws:bedrock:us-west-2::foundation-model/amazon.nova-pro-v1:0:300k",
            "Amazon Nova",
            LineFormat.CONVERSATION,
        ),
        ("anthropic.claude-3-haiku-20240307-v1:0:200k", "Claude 3 Haiku", LineFormat.CLAUDE),
        ("amazon.titan-text-express-v1:0:8k", "Titan Text", LineFormat.PROMPT_COMPLETION),
        ("amazon.titan-text-premier-v1:0:32k", "Titan Text Premier", LineFormat.PROMPT_COMPLETION),
        ("cohere.command-light-text-v14:7:4k", "Cohere Command", LineFormat.PROMPT_COMPLETION),
        ("meta.llama3-1-70b-instruct-v1:0:128k", "Llama 3.1", LineFormat.PROMPT_COMPLETION),
        ("meta.llama3-2-11b-instruct-v1:0:128k", "conversational model", LineFormat.CONVERSATION),
    ],
)
def test_family_of_picks_line_format(model: str, family: str, line_format: LineFormat) -> None:
    found = transform.family_of(model)
    assert (found.name, found.line_format) == (family, line_format)


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        (
            "amazon.nova-lite-v1:0:300k",
            {"hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.5}},
            {"epochCount": "3", "learningRate": "5e-06"},
        ),
        (
            "anthropic.claude-3-haiku-20240307-v1:0:200k",
            {"hyperparameters": {"batch_size": 16, "learning_rate_multiplier": 1.5}},
            {"batchSize": "16", "learningRateMultiplier": "1.5"},
        ),
        (
            "meta.llama3-1-8b-instruct-v1:0:128k",
            {"hyperparameters": {"learning_rate_multiplier": 2}},
            {"learningRate": "0.0002"},
        ),
        (
            "amazon.titan-text-express-v1:0:8k",
            {"hyperparameters": {"n_epochs": "auto", "batch_size": "auto"}},
            {},
        ),
        # method.supervised wins over the deprecated top-level hyperparameters.
        (
            "amazon.titan-text-express-v1:0:8k",
            {
                "hyperparameters": {"n_epochs": 9},
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": 4}},
                },
            },
            {"epochCount": "4"},
        ),
    ],
)
def test_hyper_parameters_use_the_familys_names(
    model: str, body: dict[str, Any], expected: dict[str, str]
) -> None:
    job = spec(model=model, **body)
    assert transform.hyper_parameters(job, transform.family_of(model)) == expected


@pytest.mark.parametrize(
    ("model", "hyperparameters", "param"),
    [
        ("amazon.nova-micro-v1:0:128k", {"batch_size": 2}, "hyperparameters.batch_size"),
        (
            "meta.llama3-2-1b-instruct-v1:0:128k",
            {"learning_rate_multiplier": 2},
            "hyperparameters.learning_rate_multiplier",
        ),
    ],
)
def test_hyper_parameters_refuse_what_the_family_cannot_take(
    model: str, hyperparameters: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        transform.hyper_parameters(
            spec(model=model, hyperparameters=hyperparameters), transform.family_of(model)
        )
    assert caught.value.param == param


def test_hyper_parameters_extra_are_bedrocks_own_names_as_strings() -> None:
    family = transform.family_of("amazon.nova-micro-v1:0:128k")
    extra = {"learningRateWarmupSteps": 5, "learningRate": 1.5e-5}
    assert transform.hyper_parameters(spec(), family, extra) == {
        "learningRateWarmupSteps": "5",
        "learningRate": "1.5e-05",
    }


@pytest.mark.parametrize("method", ["dpo", "reinforcement"])
def test_check_method_refuses_non_supervised_naming_bedrock(method: str) -> None:
    with pytest.raises(NotSupported, match="'bedrock'"):
        transform.check_method(spec(method={"type": method}))


def test_request_token_follows_the_idempotency_key_else_is_fresh() -> None:
    token = transform.request_token("k")
    assert token == transform.request_token("k") != transform.request_token("other")
    assert transform.request_token(None) != transform.request_token(None)
    assert len(token) == 64 and token.isalnum()
    assert len(transform.request_token(None)) == 64


@pytest.mark.parametrize(
    ("fields", "start"),
    [
        ({"suffix": "customer support!"}, "customer-support-"),
        ({"model": "amazon.nova-micro-v1:0:128k"}, "nova-micro-v1-0-128k-"),
        ({"suffix": "x" * 64}, "x" * 50 + "-"),
        ({"suffix": "__"}, "ft-"),
    ],
)
def test_derived_name_fits_job_and_model_name_patterns(fields: dict[str, Any], start: str) -> None:
    name = transform.derived_name(spec(**fields), "a" * 64)
    assert name.startswith(start) and len(name) <= 63
    assert transform.JOB_NAME.fullmatch(name)

    assert all(c.isalnum() or c == "-" for c in name) and "--" not in name


@pytest.mark.parametrize(
    ("status", "details", "expected"),
    [
        ("InProgress", None, "running"),
        ("InProgress", {"validationDetails": {"status": "InProgress"}}, "validating_files"),
        (
            "InProgress",
            {
                "validationDetails": {"status": "NotStarted"},
                "trainingDetails": {"status": "NotStarted"},
            },
            "validating_files",
        ),
        (
            "InProgress",
            {
                "validationDetails": {"status": "Completed"},
                "dataProcessingDetails": {"status": "InProgress"},
                "trainingDetails": {"status": "NotStarted"},
            },
            "queued",
        ),
        (
            "InProgress",
            {
                "validationDetails": {"status": "Completed"},
                "trainingDetails": {"status": "InProgress"},
            },
            "running",
        ),
        ("Completed", None, "succeeded"),
        ("Failed", {"validationDetails": {"status": "Failed"}}, "failed"),
        ("Stopping", None, "cancelled"),
        ("Stopped", None, "cancelled"),
    ],
)
def test_openai_status_from_status_and_steps(
    status: str, details: dict[str, Any] | None, expected: str
) -> None:
    fields: dict[str, Any] = {"status": status}
    if details is not None:
        fields["statusDetails"] = details
    assert transform.openai_status(bedrock_job(**fields)) == expected


def test_to_openai_job_maps_back_file_ids_and_hyperparameters() -> None:
    layout = Layout("b", "gw/")
    stem = new_stem()
    job = bedrock_job(
        status="Completed",
        endTime=datetime(2026, 1, 1, 11, tzinfo=UTC),
        outputModelArn="arn:aws:bedrock:us-east-1:111122223333:custom-model/x",
        trainingDataConfig={"s3Uri": f"s3://b/gw/staged/{stem}.conversation.jsonl"},
        validationDataConfig={"validators": [{"s3Uri": "s3://elsewhere/v.jsonl"}]},
        hyperParameters={"epochCount": "2", "learningRate": "2e-05"},
    )
    out = transform.to_openai_job(job, tags={"team": "a"}, source_of=layout.source_of)
    assert out.id == transform.job_id("run-1") and transform.job_name_of(out.id) == "run-1"
    assert out.model == "amazon.nova-micro-v1:0:128k" and out.status == "succeeded"
    assert out.training_file == file_id(stem) and out.validation_file == "s3://elsewhere/v.jsonl"
    assert out.finished_at == out.created_at + 3600 and out.organization_id == "111122223333"
    assert (out.hyperparameters.n_epochs, out.hyperparameters.learning_rate_multiplier) == (2, 2.0)
    assert out.hyperparameters.batch_size == "auto" and out.metadata == {"team": "a"}
    assert out.fine_tuned_model == job.outputModelArn


def test_to_openai_job_hides_end_time_and_failure_until_they_mean_something() -> None:
    # moto (like a careless upstream) fills endTime and failureMessage from the start.
    job = bedrock_job(
        endTime=datetime(2026, 1, 1, 10, tzinfo=UTC), failureMessage="Failure Message"
    )
    out = transform.to_openai_job(job, tags={}, source_of=lambda uri: None)
    assert (out.finished_at, out.error, out.fine_tuned_model, out.metadata) == (
        None,
        None,
        None,
        None,
    )


def test_job_events_are_stable_and_newest_first() -> None:
    at = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
    job = bedrock_job(
        status="Stopped",
        lastModifiedTime=at,
        statusDetails={
            "validationDetails": {"status": "Stopped", "creationTime": at, "lastModifiedTime": at}
        },
    )
    events = job_events(job)
    assert [e.message for e in events] == [
        "The job was cancelled",
        "Validation of the training data stopped",
        "Validation of the training data started",
        f"Created fine-tuning job: {transform.job_id('run-1')}",
    ]
    assert [e.id for e in events] == [e.id for e in job_events(job)]
    assert len({e.id for e in events}) == 4


def client_error(code: str, status: int, message: str = "nope") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "Op",
    )


@pytest.mark.parametrize(
    ("code", "status", "caller", "expected"),
    [
        ("ValidationException", 400, False, BadRequest),
        ("ResourceNotFoundException", 400, False, NotFound),  # moto's status: mapped by code
        ("ConflictException", 400, False, Conflict),
        ("ResourceInUseException", 400, False, Conflict),
        ("ThrottlingException", 429, False, RateLimited),
        ("ServiceQuotaExceededException", 400, False, RateLimited),
        ("TooManyTagsException", 400, False, BadRequest),
        ("InternalServerException", 500, True, UpstreamError),
        ("AccessDeniedException", 403, False, UpstreamError),
        ("AccessDeniedException", 403, True, Forbidden),
        ("UnrecognizedClientException", 403, True, Unauthorized),
        ("InvalidAccessKeyId", 403, False, UpstreamError),
        ("NoSuchKey", 404, False, NotFound),
        ("SomethingNew", 418, False, BadRequest),
        ("SomethingNew", 503, False, UpstreamError),
    ],
)
def test_map_client_error_by_code_not_status(
    code: str, status: int, caller: bool, expected: type[GatewayError]
) -> None:
    mapped = map_client_error(
        client_error(code, status), service="Bedrock", caller_credentials=caller, secrets=()
    )
    assert type(mapped) is expected


def test_map_client_error_never_shows_secrets() -> None:
    settings = BedrockSettings(
        aws_access_key_id="AKIAEXAMPLE123", aws_secret_access_key="s3cr3t-value-xyz"
    )
    error = client_error("ValidationException", 400, "bad signature for s3cr3t-value-xyz")
    mapped = map_client_error(
        error, service="S3", caller_credentials=True, secrets=settings.secrets
    )
    assert "s3cr3t-value-xyz" not in mapped.message
    assert "s3cr3t" not in repr(settings) and "AKIAEXAMPLE123" not in repr(settings)


def test_settings_from_headers_reads_portkeys_aws_headers() -> None:
    headers = {
        "x-portkey-aws-access-key-id": "AKIA1",
        "x-portkey-aws-secret-access-key": "secret",
        "x-portkey-aws-session-token": "token",
        "x-portkey-aws-region": "eu-west-1",
        "x-portkey-aws-role-arn": "arn:aws:iam::111122223333:role/r",
        "x-portkey-aws-s3-bucket": "b",
        "x-portkey-aws-s3-prefix": "team-a/",
    }
    assert BedrockProvider.settings_from_headers(headers) == BedrockSettings(
        aws_access_key_id="AKIA1",
        aws_secret_access_key="secret",
        aws_session_token="token",
        aws_region="eu-west-1",
        aws_role_arn="arn:aws:iam::111122223333:role/r",
        aws_s3_bucket="b",
        aws_s3_prefix="team-a/",
    )
    with pytest.raises(Unauthorized):
        BedrockProvider.settings_from_headers({"x-portkey-aws-access-key-id": "AKIA1"})
    with pytest.raises(BadRequest) as caught:
        BedrockProvider.settings_from_headers(headers | {"x-portkey-aws-s3-prefix": "a b/"})
    assert caught.value.param == "x-portkey-aws-s3-prefix"
