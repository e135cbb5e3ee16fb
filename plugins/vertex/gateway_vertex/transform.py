"""OpenAI fine-tuning objects <-> Vertex AI tuningJobs: pure functions, no I/O.

Create: ``model`` -> ``baseModel``, the staged files' ``gs://`` URIs -> the tuning spec
(``supervisedTuningSpec``, or ``preferenceOptimizationSpec`` for DPO), ``n_epochs`` ->
``epochCount`` (an int64, so a JSON string), ``learning_rate_multiplier`` as is, ``beta``
for DPO, ``adapterSize`` from ``provider_options.adapter_size``, ``suffix`` ->
``tunedModelDisplayName``, ``metadata`` -> ``labels``. What Vertex has no place for
(a batch size, a seed, integrations) is refused with its ``param`` rather than dropped,
so a job never trains with settings other than the ones asked for.

Read: every field OpenAI marks required is filled; statuses per the gateway's design
table; events and checkpoints are synthesized from the job with stable ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from gateway.answers import UpstreamBadResponse
from gateway.errors import BadRequest, NotSupported
from gateway.ids import decode_id, encode_id, stable_id
from gateway.models import (
    Checkpoint,
    DpoHyperparameters,
    DpoMethod,
    FineTuningJob,
    Hyperparameters,
    JobCreate,
    JobError,
    JobEvent,
    JobStatus,
    Method,
    SupervisedMethod,
)
from gateway_vertex import wire
from gateway_vertex.errors import CODE_NAMES

SLUG = "vertex-ai"
JOB_PREFIX = "ftjob-"
MethodType = Literal["supervised", "dpo"]

STATUS: dict[str, JobStatus] = {
    "JOB_STATE_PENDING": "validating_files",
    "JOB_STATE_QUEUED": "queued",
    "JOB_STATE_UNSPECIFIED": "queued",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_UPDATING": "running",
    # OpenAI's statuses have no "paused"; the job is neither finished nor waiting to start.
    "JOB_STATE_PAUSED": "running",
    "JOB_STATE_SUCCEEDED": "succeeded",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_CANCELLING": "cancelled",
    "JOB_STATE_CANCELLED": "cancelled",
}
TERMINAL: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})
ADAPTER_SIZES: dict[int, wire.AdapterSize] = {
    1: "ADAPTER_SIZE_ONE",
    2: "ADAPTER_SIZE_TWO",
    4: "ADAPTER_SIZE_FOUR",
    8: "ADAPTER_SIZE_EIGHT",
    16: "ADAPTER_SIZE_SIXTEEN",
    32: "ADAPTER_SIZE_THIRTY_TWO",
}
# Vertex labels: lowercase letters (any script), digits, "_" and "-"; keys start with a letter.
_LABEL_MAX = 64
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def status_of(job: wire.TuningJob) -> JobStatus:
    """OpenAI's status for the job's JobState; a state Vertex does not document is a 502."""
    if job.state not in STATUS:
        raise UpstreamBadResponse(
            "Vertex AI", "tuning job", "$.state", f"unknown state {job.state!r}"
        )
    return STATUS[job.state]


# ---- ids ----------------------------------------------------------------------------


def public_job_id(name: str) -> str:
    """``projects/p/locations/l/tuningJobs/123`` -> ``ftjob-`` + base64url("123")."""
    return encode_id(JOB_PREFIX, name.rsplit("/", 1)[-1])


def native_job_id(public_id: str) -> str:
    # It goes into a URL path: anything but a job id is the same 404 as an unknown id.
    return decode_id(JOB_PREFIX, public_id, what="fine-tuning job", shape=_JOB_ID)


# ---- create -------------------------------------------------------------------------


def method_of(spec: JobCreate) -> MethodType:
    kind = spec.method.type if spec.method is not None else "supervised"
    if kind == "reinforcement":
        raise NotSupported(SLUG, "reinforcement fine-tuning", "use 'supervised' or 'dpo'")
    return kind


def create_body(
    spec: JobCreate, body: dict[str, Any], training_uri: str, validation_uri: str | None
) -> wire.TuningJobCreate:
    """The ``tuningJobs.create`` body for an OpenAI create-job request."""
    method = method_of(spec)
    if spec.seed is not None:
        raise BadRequest("Vertex AI tuning jobs take no seed", param="seed", code="unsupported")
    if spec.integrations:
        raise NotSupported(SLUG, "fine-tuning integrations (Weights & Biases)")
    tuning = wire.TuningSpec(
        training_dataset_uri=training_uri,
        validation_dataset_uri=validation_uri,
        hyper_parameters=_hyper_parameters(spec, method, body),
    )
    return wire.TuningJobCreate(
        base_model=spec.model,
        tuned_model_display_name=spec.suffix,
        labels=_labels(spec.metadata),
        supervised_tuning_spec=tuning if method == "supervised" else None,
        preference_optimization_spec=tuning if method == "dpo" else None,
    )


def _hyper_parameters(
    spec: JobCreate, method: MethodType, body: dict[str, Any]
) -> wire.HyperParameters | None:
    # The deprecated top-level ``hyperparameters`` and the method's: both are read, so
    # neither is dropped (n_epochs at the top with a DPO beta in the method, say).
    chosen = getattr(spec.method, method, None) if spec.method else None
    sources: list[tuple[Hyperparameters, str]] = []
    if chosen is not None and chosen.hyperparameters is not None:
        sources.append((chosen.hyperparameters, f"method.{method}.hyperparameters"))
    if spec.hyperparameters is not None:
        sources.append((spec.hyperparameters, "hyperparameters"))
    out = wire.HyperParameters(adapter_size=_adapter_size(body))
    taken: dict[str, Any] = {}
    for given, where in sources:
        if isinstance(given.batch_size, int):
            raise BadRequest(
                "Vertex AI chooses the batch size itself: leave batch_size out or 'auto'",
                param=f"{where}.batch_size",
                code="unsupported",
            )
        for name in ("n_epochs", "learning_rate_multiplier", "beta"):
            value = getattr(given, name, None)
            if value is None or value == "auto":
                continue
            if name in taken and taken[name] != value:
                raise BadRequest(
                    f"{name} is set differently in 'hyperparameters' and in "
                    f"'method.{method}.hyperparameters'",
                    param=f"{where}.{name}",
                    code="invalid_value",
                )
            taken.setdefault(name, value)
    if "n_epochs" in taken:
        out.epoch_count = str(taken["n_epochs"])
    if "learning_rate_multiplier" in taken:
        out.learning_rate_multiplier = float(taken["learning_rate_multiplier"])
    if "beta" in taken:
        out.beta = float(taken["beta"])
    return None if out == wire.HyperParameters() else out


def _adapter_size(body: dict[str, Any]) -> wire.AdapterSize | None:
    options = body.get("provider_options")
    value = options.get("adapter_size") if isinstance(options, dict) else None
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value in ADAPTER_SIZES:
        return ADAPTER_SIZES[value]
    if isinstance(value, str) and value in ADAPTER_SIZES.values():
        return value  # type: ignore[return-value]  # checked against the enum just above
    raise BadRequest(
        f"adapter_size must be one of {sorted(ADAPTER_SIZES)}",
        param="provider_options.adapter_size",
        code="invalid_value",
    )


# The label that carries a create's Idempotency-Key (hashed): Vertex's tuningJobs create
# takes no request id, so a retried create finds its job by this label instead. Not
# shown as metadata.
IDEMPOTENCY_LABEL = "finetune-gateway-idempotency"


def idempotency_label(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _labels(metadata: dict[str, str] | None) -> dict[str, str] | None:
    if not metadata:
        return None
    for key, value in metadata.items():
        if not (_label_ok(key) and key[0].isalpha()):
            raise _bad_label(key, "key")
        if not (_label_ok(value) or value == ""):
            raise _bad_label(key, "value")
    return dict(metadata)


def _label_ok(text: str) -> bool:
    return 0 < len(text) <= _LABEL_MAX and all(
        (c.isalpha() and c == c.lower()) or c.isdigit() or c in "_-" for c in text
    )


def _bad_label(key: str, what: str) -> BadRequest:
    return BadRequest(
        f"metadata becomes Vertex AI labels: each {what} must be at most {_LABEL_MAX} "
        "lowercase letters, digits, '_' or '-' (keys starting with a letter)",
        param=f"metadata.{key}",
        code="invalid_value",
    )


# ---- read ---------------------------------------------------------------------------


def to_openai(
    job: wire.TuningJob, *, file_id_of: Callable[[str], str], organization: str
) -> FineTuningJob:
    """A Vertex TuningJob as OpenAI's FineTuningJob, with every required field."""
    status = status_of(job)
    spec = job.supervised_tuning_spec or job.preference_optimization_spec
    method: MethodType = "dpo" if job.preference_optimization_spec is not None else "supervised"
    hyper = _openai_hyperparameters(spec)
    tuned = job.tuned_model
    return FineTuningJob(
        id=public_job_id(job.name),
        model=job.base_model or "",
        created_at=_ts(job.create_time) or 0,
        status=status,
        training_file=file_id_of(spec.training_dataset_uri) if spec else "",
        validation_file=(
            file_id_of(spec.validation_dataset_uri)
            if spec and spec.validation_dataset_uri
            else None
        ),
        fine_tuned_model=(tuned.endpoint or tuned.model) if tuned else None,
        finished_at=_ts(job.end_time or job.update_time) if status in TERMINAL else None,
        error=_job_error(job) if status == "failed" else None,
        hyperparameters=hyper,
        organization_id=organization,
        trained_tokens=_trained_tokens(job, spec) if status == "succeeded" else None,
        method=_openai_method(method, hyper, spec),
        metadata={k: v for k, v in job.labels.items() if k != IDEMPOTENCY_LABEL} or None
        if job.labels
        else None,
    )


def _openai_hyperparameters(spec: wire.TuningSpec | None) -> Hyperparameters:
    given = spec.hyper_parameters if spec else None
    hyper = Hyperparameters(batch_size="auto", learning_rate_multiplier="auto", n_epochs="auto")
    if given is not None:
        if given.epoch_count is not None:
            hyper.n_epochs = int(given.epoch_count)
        if given.learning_rate_multiplier is not None:
            hyper.learning_rate_multiplier = given.learning_rate_multiplier
    return hyper


def _openai_method(
    method: MethodType, hyper: Hyperparameters, spec: wire.TuningSpec | None
) -> Method:
    if method == "supervised":
        return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=hyper))
    given = spec.hyper_parameters if spec else None
    beta: float | Literal["auto"] = given.beta if given and given.beta is not None else "auto"
    dpo = DpoHyperparameters(
        batch_size=hyper.batch_size,
        learning_rate_multiplier=hyper.learning_rate_multiplier,
        n_epochs=hyper.n_epochs,
        beta=beta,
    )
    return Method(type="dpo", dpo=DpoMethod(hyperparameters=dpo))


def _job_error(job: wire.TuningJob) -> JobError:
    if job.error is None or not job.error.message:
        expired = job.state == "JOB_STATE_EXPIRED"
        return JobError(
            code="expired" if expired else "job_failed",
            message="The Vertex AI tuning job expired" if expired else "The tuning job failed",
        )
    return JobError(
        code=CODE_NAMES.get(job.error.code, "unknown").lower(), message=job.error.message
    )


def _trained_tokens(job: wire.TuningJob, spec: wire.TuningSpec | None) -> int | None:
    """Billable tokens processed: Vertex counts them per pass over the dataset."""
    stats = job.tuning_data_stats
    counts = stats and (
        stats.supervised_tuning_data_stats or stats.preference_optimization_data_stats
    )
    if not counts or counts.total_billable_token_count is None:
        return None
    tokens = int(counts.total_billable_token_count)
    epochs = spec.hyper_parameters.epoch_count if spec and spec.hyper_parameters else None
    # Vertex bills dataset tokens times epochs; OpenAI's trained_tokens is that total.
    return tokens * int(epochs) if epochs is not None else tokens


def _ts(when: datetime | None) -> int | None:
    return int(when.timestamp()) if when is not None else None


# ---- events and checkpoints ---------------------------------------------------------


def events(job: wire.TuningJob) -> list[JobEvent]:
    """What happened to the job, newest first, from the times and state it carries."""
    status = status_of(job)
    found: list[tuple[int, int, str, Literal["info", "warn", "error"], str]] = []
    created = _ts(job.create_time) or 0
    found.append((created, 0, "created", "info", "Created fine-tuning job"))
    if job.start_time is not None:
        found.append(
            (_ts(job.start_time) or created, 1, "started", "info", "Fine-tuning job started")
        )
    changed = _ts(job.end_time or job.update_time) or created
    data: dict[str, dict[str, Any]] = {}
    stats = _data_stats(job)
    if stats is not None:
        message, data["data-stats"] = stats
        at = _ts(job.start_time) or created
        found.append((at, 2, "data-stats", "info", message))
    if status in TERMINAL:
        found.extend(_final_events(job, status, changed))
    elif job.state not in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_QUEUED"):
        state = job.state.removeprefix("JOB_STATE_").lower().replace("_", " ")
        found.append((changed, 2, job.state, "info", f"Fine-tuning job is {state}"))
    found.sort(key=lambda event: (event[0], event[1]), reverse=True)
    return [
        JobEvent(
            id=stable_id("ftevent-", job.name, key),
            created_at=at,
            level=level,
            message=message,
            data={"state": job.state} if key in (job.state, "cancel") else data.get(key, {}),
        )
        for at, _, key, level, message in found
    ]


def _data_stats(job: wire.TuningJob) -> tuple[str, dict[str, Any]] | None:
    """The job's tuningDataStats as a message, with ``total_steps`` (its
    tuningStepCount): Vertex gives no per-step losses in its REST API."""
    stats = job.tuning_data_stats
    counts = stats and (
        stats.supervised_tuning_data_stats or stats.preference_optimization_data_stats
    )
    if not counts:
        return None
    parts = []
    if counts.tuning_dataset_example_count is not None:
        parts.append(f"{int(counts.tuning_dataset_example_count)} examples")
    if counts.total_billable_token_count is not None:
        parts.append(f"{int(counts.total_billable_token_count)} billable tokens")
    data: dict[str, Any] = {}
    if counts.tuning_step_count is not None:
        data["total_steps"] = int(counts.tuning_step_count)
        parts.append(f"{data['total_steps']} tuning steps")
    if not parts:
        return None
    return "Tuning data: " + ", ".join(parts), data


def _final_events(
    job: wire.TuningJob, status: JobStatus, at: int
) -> list[tuple[int, int, str, Literal["info", "warn", "error"], str]]:
    if status == "succeeded":
        model = job.tuned_model and (job.tuned_model.endpoint or job.tuned_model.model)
        done: list[tuple[int, int, str, Literal["info", "warn", "error"], str]] = [
            (at, 4, "succeeded", "info", "The job has successfully completed")
        ]
        if model:  # as OpenAI tells it: the model, then the job's success
            done.append((at, 3, "model", "info", f"New fine-tuned model created: {model}"))
        return done
    if status == "failed":
        return [(at, 3, "failed", "error", f"The job failed: {_job_error(job).message}")]
    word = "Cancelling" if job.state == "JOB_STATE_CANCELLING" else "Cancelled"
    # One key for both states, so the event keeps its id as CANCELLING becomes
    # CANCELLED and a client paging with after=<that id> still finds it.
    return [(at, 3, "cancel", "info", f"{word} fine-tuning job")]


def checkpoints(job: wire.TuningJob) -> list[Checkpoint]:
    """The tuned model's checkpoints, newest (highest step) first."""
    tuned = job.tuned_model
    if tuned is None:
        return []
    at = _ts(job.end_time or job.update_time or job.create_time) or 0
    out = []
    for cp in tuned.checkpoints:
        step = int(cp.step or 0)
        metrics = {"step": float(step)}
        if cp.epoch is not None:
            metrics["epoch"] = float(cp.epoch)
        out.append(
            Checkpoint(
                id=stable_id("ftckpt-", job.name, cp.checkpoint_id or str(step)),
                created_at=at,
                fine_tuning_job_id=public_job_id(job.name),
                fine_tuned_model_checkpoint=cp.endpoint or f"{tuned.model}@{cp.checkpoint_id}",
                step_number=step,
                metrics=metrics,
            )
        )
    out.sort(key=lambda c: c.step_number, reverse=True)
    return out
