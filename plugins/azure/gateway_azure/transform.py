"""Pure mapping between OpenAI's objects and Azure's dated API (2024-10-21); no I/O.

Azure's dated schema differs from OpenAI's in ways a client notices: statuses
``created/pending/running/succeeded/cancelled/failed``, ``organisation_id``, event level
``warning``, ``-1`` for a hyperparameter Azure chooses, optional fields left out instead
of sent as ``null``, no DPO ``method``, ``metadata`` or ``integrations`` on create. Answers are
decoded into the Structs below (unknown fields ignored, so additions do not break us) and
rebuilt as ``gateway.models`` objects, which carry every field OpenAI marks required.

A create request is checked against the dated schema first: a field it lacks is a 400
naming that field, never dropped (Azure would ignore it and train something else).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

import msgspec

from gateway.answers import UpstreamBadResponse, decode_answer
from gateway.errors import BadRequest
from gateway.models import (
    GATEWAY_ONLY_JOB_FIELDS,
    Checkpoint,
    FileDeleted,
    FileObject,
    FilePurpose,
    FineTuningJob,
    Hyperparameters,
    JobCreate,
    JobError,
    JobEvent,
    JobStatus,
)
from gateway.paging import page_of
from gateway.provider import PageQuery

T = TypeVar("T")

# OpenAI <- Azure. Azure's six dated states, plus OpenAI's own names taken as they are,
# so a backend that already answers in OpenAI's words is not refused.
JOB_STATUS: dict[str, JobStatus] = {
    "created": "validating_files",
    "pending": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "cancelled": "cancelled",
    "failed": "failed",
    "validating_files": "validating_files",
    "queued": "queued",
}
EventLevel = Literal["info", "warn", "error"]
FileStatus = Literal["uploaded", "processed", "error"]
EVENT_LEVEL: dict[str, EventLevel] = {
    "info": "info",
    "warning": "warn",
    "warn": "warn",
    "error": "error",
}
# OpenAI's (deprecated) file status has three values. Azure's in-between states are
# "uploaded" (not usable yet); a file being deleted can no longer be used: "error".
FILE_STATUS: dict[str, FileStatus] = {
    "uploaded": "uploaded",
    "pending": "uploaded",
    "running": "uploaded",
    "processed": "processed",
    "error": "error",
    "deleting": "error",
    "deleted": "error",
}
# OpenAI's file purposes; Azure's files carry the same names.
FILE_PURPOSES = frozenset(get_args(FilePurpose))
# FineTuningJobCreation in the 2024-10-21 spec: everything else has no place there.
DATED_JOB_FIELDS = frozenset(
    {"model", "training_file", "validation_file", "hyperparameters", "suffix", "seed"}
)
DATED_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
# Azure's documented limit for the dated API's suffix (OpenAI's own is 64).
DATED_SUFFIX_MAX = 40


# ---- Azure's dated wire format ------------------------------------------------------


class _Azure(msgspec.Struct, kw_only=True):
    """Decoding only; unknown fields are ignored, absent optional ones are None."""


# "format": "int32" in Azure's spec: anything wider is no answer Azure sends.
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), lt=2**31)]


class AzureHyperparameters(_Azure, kw_only=True):
    n_epochs: Int32 | None = None
    batch_size: Int32 | None = None
    learning_rate_multiplier: float | None = None


class AzureJobError(_Azure, kw_only=True):
    code: str | None = None
    message: str | None = None
    param: str | None = None


class AzureJob(_Azure, kw_only=True):
    # Optional in Azure's spec, required by OpenAI's: a job without them is refused.
    id: str
    created_at: int
    status: str
    model: str
    training_file: str
    validation_file: str | None = None
    fine_tuned_model: str | None = None
    result_files: list[str] | None = None
    finished_at: int | None = None
    organisation_id: str | None = None
    trained_tokens: int | None = None
    error: AzureJobError | None = None
    estimated_finish: int | None = None
    hyperparameters: AzureHyperparameters | None = None
    seed: int | None = None


class AzureEvent(_Azure, kw_only=True):
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: Any = None


class AzureCheckpoint(_Azure, kw_only=True):
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float] | None = None


class AzureFile(_Azure, kw_only=True):
    id: str
    created_at: int
    bytes: int
    filename: str
    purpose: str
    status: str | None = None
    status_details: str | None = None


class AzureFileDelete(_Azure, kw_only=True):
    id: str
    deleted: bool


class AzureList(_Azure, Generic[T], kw_only=True):
    data: list[T] = msgspec.field(default_factory=list)
    # Absent on the files list, which does not page.
    has_more: bool = False


SERVICE = "Azure OpenAI"


def decode(raw: bytes, type_: type[T], what: str) -> T:
    """An Azure answer as ``type_``, or a 502 that names the field that did not fit."""
    return decode_answer(raw, type_, provider=SERVICE, what=what)


# ---- Azure -> OpenAI ----------------------------------------------------------------


def _mapped(table: dict[str, T], value: str, what: str, field: str) -> T:
    if value not in table:
        raise UpstreamBadResponse(SERVICE, what, field, f"unknown value {value!r}")
    return table[value]


def _chosen(value: float | None) -> float | Literal["auto"] | None:
    """Azure writes -1 (or 0) for a value it picks itself: OpenAI says "auto"."""
    if value is None:
        return None
    return "auto" if value <= 0 else value


def _chosen_int(value: int | None) -> int | Literal["auto"] | None:
    chosen = _chosen(value)
    return chosen if chosen is None or chosen == "auto" else int(chosen)


def job_from_azure(job: AzureJob) -> FineTuningJob:
    hyper = job.hyperparameters or AzureHyperparameters()
    error = None
    if job.error is not None and (job.error.code or job.error.message):
        error = JobError(
            code=job.error.code or "",
            message=job.error.message or "",
            param=job.error.param,
        )
    return FineTuningJob(
        id=job.id,
        model=job.model,
        created_at=job.created_at,
        status=_mapped(JOB_STATUS, job.status, "fine-tuning job", "$.status"),
        training_file=job.training_file,
        validation_file=job.validation_file,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=job.finished_at,
        error=error,
        hyperparameters=Hyperparameters(
            batch_size=_chosen_int(hyper.batch_size),
            learning_rate_multiplier=_chosen(hyper.learning_rate_multiplier),
            n_epochs=_chosen_int(hyper.n_epochs),
        ),
        organization_id=job.organisation_id or "",
        result_files=job.result_files or [],
        trained_tokens=job.trained_tokens,
        seed=job.seed or 0,
        estimated_finish=job.estimated_finish,
    )


def event_from_azure(event: AzureEvent) -> JobEvent:
    return JobEvent(
        id=event.id,
        created_at=event.created_at,
        level=_mapped(EVENT_LEVEL, event.level, "fine-tuning event", "$.level"),
        message=event.message,
        type="metrics" if event.type == "metrics" else "message",
        data=event.data if isinstance(event.data, dict) else {},
    )


def checkpoint_from_azure(checkpoint: AzureCheckpoint) -> Checkpoint:
    return Checkpoint(
        id=checkpoint.id,
        created_at=checkpoint.created_at,
        fine_tuning_job_id=checkpoint.fine_tuning_job_id,
        fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
        step_number=checkpoint.step_number,
        metrics=checkpoint.metrics or {},
    )


def file_from_azure(file: AzureFile) -> FileObject:
    status: FileStatus = "processed"
    if file.status is not None:
        status = _mapped(FILE_STATUS, file.status, "file", "$.status")
    details = file.status_details
    if details is None and file.status in ("deleting", "deleted"):
        details = f"The file is {file.status} on Azure OpenAI"
    if file.purpose not in FILE_PURPOSES:
        raise UpstreamBadResponse(SERVICE, "file", "$.purpose", f"unknown purpose {file.purpose!r}")
    return FileObject(
        id=file.id,
        bytes=file.bytes,
        created_at=file.created_at,
        filename=file.filename,
        purpose=file.purpose,
        status=status,
        status_details=details,
    )


def deleted_from_azure(deleted: AzureFileDelete) -> FileDeleted:
    return FileDeleted(id=deleted.id, deleted=deleted.deleted)


# ---- OpenAI -> Azure ----------------------------------------------------------------


def dated_job_body(spec: JobCreate, body: dict[str, Any], api_version: str) -> dict[str, Any]:
    """The dated create body; a field the dated API lacks is a 400 naming it.

    ``"auto"`` hyperparameters are left out: absent is how the dated API says "you pick".
    ``method`` of type ``supervised`` is what the dated API trains anyway: its
    hyperparameters become the top-level ones. Any other method is refused.
    """
    for key, value in body.items():
        if key in DATED_JOB_FIELDS or key in GATEWAY_ONLY_JOB_FIELDS or value is None:
            continue
        if key == "method" and spec.method is not None and spec.method.type == "supervised":
            continue
        raise _lacks(api_version, f"'{key}' when creating a fine-tuning job", key)
    hyperparameters, hyper_given, where = spec.hyperparameters, body.get("hyperparameters"), ""
    if spec.method is not None and spec.method.type == "supervised":
        supervised = (body.get("method") or {}).get("supervised") or {}
        method_hyper = supervised.get("hyperparameters") if isinstance(supervised, dict) else None
        if method_hyper:
            if hyper_given:
                raise BadRequest(
                    "Give hyperparameters either at the top level or in "
                    "'method.supervised.hyperparameters', not both",
                    param="hyperparameters",
                    code="invalid_value",
                )
            supervised_spec = spec.method.supervised
            hyperparameters = None if supervised_spec is None else supervised_spec.hyperparameters
            hyper_given, where = method_hyper, "method.supervised."
    for key, value in hyper_given.items() if isinstance(hyper_given, dict) else ():
        if key not in DATED_HYPERPARAMETERS and value is not None:
            param = f"{where}hyperparameters.{key}"
            raise _lacks(api_version, f"the hyperparameter '{key}'", param)
    if spec.suffix is not None and len(spec.suffix) > DATED_SUFFIX_MAX:
        raise BadRequest(
            f"Invalid 'suffix': Azure OpenAI takes at most {DATED_SUFFIX_MAX} characters "
            f"(got {len(spec.suffix)})",
            param="suffix",
            code="invalid_value",
        )
    out: dict[str, Any] = {"model": spec.model, "training_file": spec.training_file}
    for name in ("validation_file", "suffix", "seed"):
        if (value := getattr(spec, name)) is not None:
            out[name] = value
    if hyperparameters is not None:
        hyper = {
            name: value
            for name in DATED_HYPERPARAMETERS
            if (value := getattr(hyperparameters, name)) not in (None, "auto")
        }
        if hyper:
            out["hyperparameters"] = hyper
    return out


def _lacks(api_version: str, what: str, param: str) -> BadRequest:
    return BadRequest(
        f"Azure OpenAI API version {api_version} does not accept {what}; use a virtual key "
        "with api_version 'v1' for it",
        param=param,
        code="unsupported_parameter",
    )


# ---- paging the dated files list, which has none ------------------------------------


def page_files(
    files: list[FileObject], *, limit: int, after: str | None, order: str | None
) -> tuple[list[FileObject], bool]:
    """One page of the whole list, as OpenAI pages it: by ``after=<id>``, newest first.

    Sorted on ``created_at`` only, and stably, so files created in the same second keep
    Azure's own order (which does not change between calls) and every page agrees.
    """
    ordered = sorted(files, key=lambda f: f.created_at)
    if order != "asc":
        ordered.reverse()
    # An `after` no longer in the list (deleted while paging) ends the walk, as
    # everywhere else in the gateway, rather than failing it.
    return page_of(ordered, PageQuery(limit=limit, after=after), lambda f: f.id)
