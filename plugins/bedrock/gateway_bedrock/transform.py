"""OpenAI fine-tuning jobs <-> Bedrock model customization jobs: pure mapping, no I/O.

- ``family_of``: what a base model takes (line format, hyperparameter names, defaults).
- ``create_request``: a CreateModelCustomizationJob request from an OpenAI create body.
- ``BedrockJob`` / ``JobSummary``: Bedrock's answers, decoded into Structs.
- ``to_openai_job`` / ``job_events``: the FineTuningJob and events a client sees.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from gateway.answers import UpstreamBadResponse, convert_answer
from gateway.errors import BadRequest, NotSupported
from gateway.ids import decode_id, encode_id
from gateway.models import (
    FineTuningJob,
    Hyperparameters,
    JobCreate,
    JobError,
    JobStatus,
    Method,
    SupervisedMethod,
)
from gateway_bedrock.formats import LineFormat

SLUG = "bedrock"
JOB_ID_PREFIX = "ftjob-"
# Bedrock's ``[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*`` matches the same names, but as written it
# backtracks exponentially on a run of dashes (an id in a URL could stall the event loop).
JOB_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9+.-]{0,62}")
_NAME_PART = re.compile(r"[^a-zA-Z0-9]+")


# ---- base models ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    line_format: LineFormat
    takes_batch_size: bool = True
    # Claude 3 Haiku takes OpenAI's multiplier as it is; the others an absolute rate.
    takes_multiplier: bool = False
    # The family's default absolute rate: a multiplier scales it (None: no mapping known).
    default_learning_rate: float | None = None


# First match wins; ids as in Bedrock's console and ListFoundationModels.
_FAMILIES: tuple[tuple[str, Family], ...] = (
    ("amazon.nova-", Family("Amazon Nova", LineFormat.CONVERSATION, False, False, 1e-5)),
    ("anthropic.claude-3-haiku", Family("Claude 3 Haiku", LineFormat.CLAUDE, True, True)),
    (
        "amazon.titan-text-premier",
        Family("Titan Text Premier", LineFormat.PROMPT_COMPLETION, True, False, 1e-6),
    ),
    ("amazon.titan-text", Family("Titan Text", LineFormat.PROMPT_COMPLETION, True, False, 1e-5)),
    ("cohere.command", Family("Cohere Command", LineFormat.PROMPT_COMPLETION, True, False, 1e-5)),
    ("meta.llama3-1", Family("Llama 3.1", LineFormat.PROMPT_COMPLETION, True, False, 1e-4)),
    ("meta.llama2", Family("Llama 2", LineFormat.PROMPT_COMPLETION, True, False, 1e-4)),
)
_CONVERSATIONAL = Family("conversational model", LineFormat.CONVERSATION)


def model_id(model: str) -> str:
    """A foundation model's id, from an id or its ARN (``...:foundation-model/<id>``)."""
    return model.rsplit("foundation-model/", 1)[-1]


def family_of(model: str) -> Family:
    base = model_id(model)
    for prefix, family in _FAMILIES:
        if base.startswith(prefix):
            return family
    return _CONVERSATIONAL


# ---- create -----------------------------------------------------------------------------


def check_method(spec: JobCreate) -> None:
    if spec.method is not None and spec.method.type != "supervised":
        raise NotSupported(
            SLUG,
            f"{spec.method.type} fine-tuning (method.type '{spec.method.type}')",
            "Bedrock fine-tunes with supervised examples only",
        )


def hyper_parameters(
    spec: JobCreate, family: Family, extra: Mapping[str, object] | None = None
) -> dict[str, str]:
    """Bedrock's hyperParameters (all strings) for the OpenAI ones the body gives.

    ``extra`` (``provider_options.hyper_parameters``) is Bedrock's own names, for those
    OpenAI has no word for (``learningRateWarmupSteps``, ``earlyStoppingPatience``).
    """
    hp, param = spec.hyperparameters, "hyperparameters"
    supervised = spec.method.supervised if spec.method is not None else None
    if supervised is not None and supervised.hyperparameters is not None:
        hp, param = supervised.hyperparameters, "method.supervised.hyperparameters"
    out: dict[str, str] = {}
    if hp is not None:
        if isinstance(hp.n_epochs, int):
            out["epochCount"] = str(hp.n_epochs)
        if isinstance(hp.batch_size, int):
            if not family.takes_batch_size:
                raise BadRequest(
                    f"Bedrock's {family.name} models take no batch size",
                    param=f"{param}.batch_size",
                    code="unsupported_hyperparameter",
                )
            out["batchSize"] = str(hp.batch_size)
        multiplier = hp.learning_rate_multiplier
        if isinstance(multiplier, int | float):
            if family.takes_multiplier:
                out["learningRateMultiplier"] = _number(multiplier)
            elif family.default_learning_rate is not None:
                out["learningRate"] = _number(family.default_learning_rate * multiplier)
            else:
                raise BadRequest(
                    f"Bedrock's {family.name}s take an absolute learning rate: give it as "
                    "provider_options.hyper_parameters.learningRate",
                    param=f"{param}.learning_rate_multiplier",
                    code="unsupported_hyperparameter",
                )
    for key, value in (extra or {}).items():
        out[str(key)] = _number(value) if isinstance(value, float) else str(value)
    return out


def _number(value: float) -> str:
    return format(value, ".6g")


def request_token(idempotency_key: str | None) -> str:
    """Bedrock's clientRequestToken: the same create, retried, makes one job.

    From the client's Idempotency-Key when it sends one, so its retries make one job;
    otherwise fresh for this request (and reused by any retry the gateway makes of it).
    Without a key, two creates are two jobs, as on OpenAI: deriving the token from the
    body instead would hand a user re-running a failed job the old, failed job.
    """
    if idempotency_key:
        return hashlib.sha256(b"key:" + idempotency_key.encode()).hexdigest()
    return secrets.token_hex(32)


def derived_name(spec: JobCreate, token: str) -> str:
    """A job or custom model name: the suffix (or model) and the token's start.

    It satisfies both Bedrock patterns: jobName and ``([0-9a-zA-Z][_-]?){1,63}``.
    """
    base = spec.suffix or model_id(spec.model).split(".", 1)[-1]
    cleaned = _NAME_PART.sub("-", base).strip("-")[:50].strip("-") or "ft"
    return f"{cleaned}-{token[:12]}"


def check_job_name(name: str, param: str) -> str:
    if not JOB_NAME.fullmatch(name):
        raise BadRequest(
            f"'{name}' is not a Bedrock job name: 1-63 letters, digits, '+', '-' and '.', "
            "starting with a letter or digit",
            param=param,
            code="invalid_value",
        )
    return name


def create_request(
    *,
    spec: JobCreate,
    job_name: str,
    role_arn: str,
    training_uri: str,
    validation_uri: str | None,
    output_uri: str,
    hyper_parameters: dict[str, str],
    token: str,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "jobName": job_name,
        "customModelName": derived_name(spec, token),
        "roleArn": role_arn,
        "clientRequestToken": token,
        "baseModelIdentifier": spec.model,
        "customizationType": "FINE_TUNING",
        "trainingDataConfig": {"s3Uri": training_uri},
        "outputDataConfig": {"s3Uri": output_uri},
        "hyperParameters": hyper_parameters,
    }
    if validation_uri is not None:
        request["validationDataConfig"] = {"validators": [{"s3Uri": validation_uri}]}
    if spec.metadata:
        request["jobTags"] = [{"key": k, "value": v} for k, v in spec.metadata.items()]
    return request


# ---- Bedrock's answers ------------------------------------------------------------------

SERVICE = "Bedrock"


class Step(msgspec.Struct):
    status: str | None = None
    creationTime: datetime | None = None
    lastModifiedTime: datetime | None = None


class StatusDetails(msgspec.Struct):
    validationDetails: Step | None = None
    dataProcessingDetails: Step | None = None
    trainingDetails: Step | None = None


class S3Location(msgspec.Struct):
    s3Uri: str | None = None


class Validators(msgspec.Struct):
    validators: list[S3Location] = []


class TrainingMetrics(msgspec.Struct):
    trainingLoss: float | None = None


class ValidationMetric(msgspec.Struct):
    validationLoss: float | None = None


class JobSummary(msgspec.Struct):
    jobArn: str
    jobName: str
    creationTime: datetime


class BedrockJob(msgspec.Struct):
    jobArn: str
    jobName: str
    baseModelArn: str
    creationTime: datetime
    status: str = "InProgress"
    statusDetails: StatusDetails | None = None
    lastModifiedTime: datetime | None = None
    endTime: datetime | None = None
    outputModelArn: str | None = None
    clientRequestToken: str | None = None
    failureMessage: str | None = None
    hyperParameters: dict[str, str] = {}
    trainingDataConfig: S3Location = msgspec.field(default_factory=S3Location)
    outputDataConfig: S3Location = msgspec.field(default_factory=S3Location)
    validationDataConfig: Validators | None = None
    trainingMetrics: TrainingMetrics | None = None
    validationMetrics: list[ValidationMetric] = []


class Tag(msgspec.Struct):
    key: str
    value: str


class Tags(msgspec.Struct):
    tags: list[Tag] = []


def decode_job(answer: Mapping[str, Any]) -> BedrockJob:
    return convert_answer(answer, BedrockJob, provider=SERVICE, what="customization job")


def decode_summaries(answer: Mapping[str, Any]) -> list[JobSummary]:
    summaries = answer.get("modelCustomizationJobSummaries") or []
    what = "list of customization jobs"
    return convert_answer(summaries, list[JobSummary], provider=SERVICE, what=what)


def decode_tags(answer: Mapping[str, Any]) -> dict[str, str]:
    tags = convert_answer(answer, Tags, provider=SERVICE, what="list of tags")
    return {tag.key: tag.value for tag in tags.tags}


def job_id(job_name: str) -> str:
    return encode_id(JOB_ID_PREFIX, job_name)


def job_name_of(public_id: str) -> str:
    """The Bedrock job name behind a job id; a 404 for any id this gateway did not issue."""
    return decode_id(JOB_ID_PREFIX, public_id, what="fine-tuning job", shape=JOB_NAME)


# ---- to OpenAI --------------------------------------------------------------------------

_TERMINAL = {"Completed": "succeeded", "Failed": "failed", "Stopped": "cancelled"}
# ModelCustomizationJobStatus in Bedrock's service model; anything else cannot be mapped.
_STATUSES = frozenset({"InProgress", "Stopping", *_TERMINAL})


def openai_status(job: BedrockJob) -> JobStatus:
    """Bedrock's status, refined by its steps: only InProgress needs ``statusDetails``."""
    if job.status not in _STATUSES:
        raise UpstreamBadResponse(
            SERVICE, "customization job", "$.status", f"unknown status {job.status!r}"
        )
    if job.status in _TERMINAL:
        return _TERMINAL[job.status]  # type: ignore[return-value]
    if job.status == "Stopping":
        return "cancelled"
    details = job.statusDetails
    if details is None:
        return "running"
    training = details.trainingDetails.status if details.trainingDetails else None
    validation = details.validationDetails.status if details.validationDetails else None
    if training in ("InProgress", "Completed", "Stopping"):
        return "running"
    if validation in ("NotStarted", "InProgress"):
        return "validating_files"
    return "queued"


def epoch_seconds(moment: datetime) -> int:
    # botocore gives aware times; a naive one (moto) is UTC.
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def openai_hyperparameters(job: BedrockJob, family: Family) -> Hyperparameters:
    """OpenAI's view of the job's hyperParameters; a value that is no number is ``auto``.

    Every job in the account is listed, including ones made elsewhere (the console,
    Titan Multimodal's ``epochCount: Auto``): one odd value must not fail the listing.
    """
    hp = job.hyperParameters
    multiplier: float | Literal["auto"] = "auto"
    given_multiplier = _float(hp.get("learningRateMultiplier"))
    rate = _float(hp.get("learningRate"))
    if given_multiplier is not None:
        multiplier = given_multiplier
    elif rate is not None and family.default_learning_rate:
        multiplier = float(_number(rate / family.default_learning_rate))
    return Hyperparameters(
        n_epochs=_int(hp.get("epochCount")) or "auto",
        batch_size=_int(hp.get("batchSize")) or "auto",
        learning_rate_multiplier=multiplier,
    )


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    # A rate is positive: anything else says nothing OpenAI's schema could carry.
    return number if number is not None and math.isfinite(number) and number > 0 else None


def _int(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value) or None


def to_openai_job(
    job: BedrockJob,
    *,
    tags: dict[str, str] | None,
    source_of: Callable[[str], str | None],
) -> FineTuningJob:
    status = openai_status(job)
    model = model_id(job.baseModelArn)
    hyperparameters = openai_hyperparameters(job, family_of(model))
    finished = job.endTime or job.lastModifiedTime
    validators = job.validationDataConfig.validators if job.validationDataConfig else []
    return FineTuningJob(
        id=job_id(job.jobName),
        model=model,
        created_at=epoch_seconds(job.creationTime),
        status=status,
        training_file=_file_ref(job.trainingDataConfig.s3Uri, source_of) or "",
        validation_file=_file_ref(validators[0].s3Uri, source_of) if validators else None,
        fine_tuned_model=job.outputModelArn if status == "succeeded" else None,
        finished_at=epoch_seconds(finished) if finished and job.status in _TERMINAL else None,
        error=JobError(
            code="bedrock_job_failed",
            message=job.failureMessage or "The Bedrock job failed without a message",
        )
        if status == "failed"
        else None,
        hyperparameters=hyperparameters,
        organization_id=_account_of(job.jobArn),
        method=Method(
            type="supervised", supervised=SupervisedMethod(hyperparameters=hyperparameters)
        ),
        metadata=tags or None,
    )


def _file_ref(uri: str | None, source_of: Callable[[str], str | None]) -> str | None:
    if uri is None:
        return None
    return source_of(uri) or uri


def _account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""
