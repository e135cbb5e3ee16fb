"""Pure mappings between OpenAI's objects and Fireworks' SFT jobs and datasets; no I/O.

OpenAI -> Fireworks (create): ``model`` -> ``baseModel`` (a bare name is one of
Fireworks' own, ``accounts/fireworks/models/<name>``); ``training_file`` -> ``dataset``
and ``validation_file`` -> ``evaluationDataset`` (``accounts/{acct}/datasets/<id>``);
``suffix`` -> ``displayName``; ``n_epochs`` -> ``epochs``; ``batch_size`` ->
``batchSizeSamples`` (examples per batch; Fireworks' ``batchSize`` is a deprecated token
budget); ``provider_options.learning_rate`` -> ``learningRate`` and
``provider_options.lora_rank`` -> ``loraRank``. Fireworks takes an absolute learning rate
and has no seed, metadata, integrations or DPO for SFT jobs: those are a 400 naming the
field, never dropped.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from gateway.answers import decode_answer, mapping
from gateway.errors import BadRequest, NotFound
from gateway.models import (
    FileObject,
    FineTuningJob,
    Hyperparameters,
    JobCreate,
    JobError,
    JobStatus,
)
from gateway_fireworks import wire

SERVICE = "fireworks-ai"
T = TypeVar("T")

# Fireworks resource ids (jobs, datasets): what may go into a URL path segment.
RESOURCE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

STATES: dict[str, JobStatus] = {
    "JOB_STATE_UNSPECIFIED": "queued",
    "JOB_STATE_PENDING": "queued",
    "JOB_STATE_CREATING": "queued",
    "JOB_STATE_RE_QUEUEING": "queued",
    "JOB_STATE_IDLE": "queued",
    # OpenAI's status has no "paused"; a paused job waits to be resumed.
    "JOB_STATE_PAUSED": "queued",
    "JOB_STATE_VALIDATING": "validating_files",
    "JOB_STATE_CREATING_INPUT_DATASET": "validating_files",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_WRITING_RESULTS": "running",
    "JOB_STATE_COMPLETED": "succeeded",
    "JOB_STATE_EARLY_STOPPED": "succeeded",
    "JOB_STATE_ARCHIVED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_CANCELLING": "cancelled",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_DELETING": "cancelled",
    "JOB_STATE_DELETING_CLEANING_UP": "cancelled",
    "JOB_STATE_DELETED": "cancelled",
}
TERMINAL: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})


def decode(raw: bytes, type_: type[T], what: str) -> T:
    """A Fireworks answer as ``type_``, or a 502 that names the field that did not fit."""
    return decode_answer(raw, type_, provider=SERVICE, what=what)


def resource_id(public_id: str, what: str) -> str:
    """A job or dataset id from the caller, checked before it goes into a URL path."""
    if not RESOURCE_ID.fullmatch(public_id):
        raise NotFound(f"No {what} found with id '{public_id}'")
    return public_id


def last_segment(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def dataset_name(account: str, file_id: str, param: str) -> str:
    if file_id.startswith("accounts/"):
        return file_id  # already a Fireworks resource name
    if not RESOURCE_ID.fullmatch(file_id):
        raise BadRequest(
            f"'{file_id}' is not a Fireworks dataset id (lower-case letters, digits and '-')",
            param=param,
            code="invalid_value",
        )
    return f"accounts/{account}/datasets/{file_id}"


def base_model(model: str) -> str:
    return model if "/" in model else f"accounts/fireworks/models/{model}"


# ---- OpenAI -> Fireworks ------------------------------------------------------------


def job_body(spec: JobCreate, body: dict[str, Any], account: str) -> wire.JobCreateBody:
    """The create body for ``spec``; a 400 naming the field for what Fireworks lacks."""
    _refuse_unmapped(spec, body)
    hyper = spec.hyperparameters or Hyperparameters()
    if (
        spec.method is not None
        and spec.method.supervised
        and spec.method.supervised.hyperparameters
    ):
        hyper = spec.method.supervised.hyperparameters
    if hyper.learning_rate_multiplier not in (None, "auto"):
        raise BadRequest(
            "Fireworks takes an absolute learning rate, not a multiplier: send "
            "provider_options.learning_rate (for example 0.0001) instead",
            param="hyperparameters.learning_rate_multiplier",
            code="unsupported_parameter",
        )
    options = body.get("provider_options")
    options = options if isinstance(options, dict) else {}
    return wire.JobCreateBody(
        dataset=dataset_name(account, spec.training_file, "training_file"),
        base_model=base_model(spec.model),
        display_name=spec.suffix,
        evaluation_dataset=(
            dataset_name(account, spec.validation_file, "validation_file")
            if spec.validation_file
            else None
        ),
        epochs=None if hyper.n_epochs in (None, "auto") else int(hyper.n_epochs),
        batch_size_samples=(None if hyper.batch_size in (None, "auto") else int(hyper.batch_size)),
        learning_rate=_option(options, "learning_rate", float, lambda v: 0 < v <= 1),
        lora_rank=_option(options, "lora_rank", int, lambda v: 1 <= v <= 256),
        max_context_length=_option(options, "max_context_length", int, lambda v: v >= 1),
    )


def _refuse_unmapped(spec: JobCreate, body: dict[str, Any]) -> None:
    if spec.method is not None and spec.method.type != "supervised":
        raise BadRequest(
            f"Fireworks supervised fine-tuning jobs do not take method '{spec.method.type}'",
            param="method",
            code="unsupported_parameter",
        )
    for name in ("seed", "metadata", "integrations"):
        if body.get(name) is not None:
            raise BadRequest(
                f"Fireworks supervised fine-tuning jobs have no '{name}'",
                param=name,
                code="unsupported_parameter",
            )


def _option(options: dict[str, Any], name: str, kind: type[Any], ok: Any) -> Any:
    value = options.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
        or not ok(value)
    ):
        raise BadRequest(
            f"provider_options.{name} has an invalid value: {value!r}",
            param=f"provider_options.{name}",
            code="invalid_value",
        )
    return kind(value)


# ---- Fireworks -> OpenAI ------------------------------------------------------------


def _seconds(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def job_from_fireworks(job: wire.Job) -> FineTuningJob:
    with mapping(SERVICE, "fine-tuning job"):
        status = STATES[job.state]
        error = None
        if status == "failed":
            fw = job.status or wire.Status(code="UNKNOWN")
            error = JobError(code=fw.code, message=fw.message or f"Fireworks job {job.state}")
        created = _seconds(job.create_time)
        if created is None:
            raise ValueError("createTime is missing - at `$.createTime`")
        finished = _seconds(job.completed_time or job.update_time) if status in TERMINAL else None
        return FineTuningJob(
            id=last_segment(job.name),
            model=last_segment(job.base_model or job.warm_start_from or ""),
            created_at=created,
            status=status,
            training_file=last_segment(job.dataset),
            validation_file=last_segment(job.evaluation_dataset)
            if job.evaluation_dataset
            else None,
            fine_tuned_model=job.output_model if status == "succeeded" else None,
            finished_at=finished,
            error=error,
            hyperparameters=Hyperparameters(n_epochs=job.epochs, batch_size=job.batch_size_samples),
            method=None,
        )


DATASET_STATUS: dict[str, Any] = {
    "READY": "processed",
    "UPLOADING": "uploaded",
    "STATE_UNSPECIFIED": "uploaded",
}


def file_from_dataset(dataset: wire.Dataset, size: int = 0) -> FileObject:
    """A dataset as an OpenAI file; Fireworks keeps no byte size, so ``bytes`` is the size
    the gateway uploaded when it knows it, else 0."""
    with mapping(SERVICE, "dataset"):
        failed = dataset.status is not None and dataset.status.code not in ("OK", "")
        return FileObject(
            id=last_segment(dataset.name),
            bytes=size,
            created_at=_seconds(dataset.create_time) or 0,
            filename=dataset.display_name or last_segment(dataset.name),
            purpose="fine-tune",
            status="error" if failed else DATASET_STATUS[dataset.state],
            status_details=dataset.status.message if failed and dataset.status else None,
        )


# ---- errors -------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    error: wire.Error | str | None = None
    message: str | None = None


def parse_error(raw: bytes, reason: str) -> tuple[str, str | None, str | None]:
    """``(message, param, code)`` from ``{"error": {...}}``, ``{"code", "message"}`` or text."""
    try:
        envelope = msgspec.json.decode(raw, type=_Envelope)
    except msgspec.DecodeError:
        text = raw.decode("utf-8", "replace").strip()[:500]
        return (text or reason or "no message"), None, None
    error = envelope.error
    if isinstance(error, wire.Error):
        code = None if error.code is None else str(error.code)
        return (error.message or envelope.message or reason or "no message"), None, code
    return (error or envelope.message or reason or "no message"), None, None
