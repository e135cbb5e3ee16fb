"""Pure mapping between OpenAI's objects and Together AI's fine-tuning API; no I/O.

Together's answers are decoded into the Structs below (unknown fields ignored, required
ones required, as in Together's OpenAPI description) and rebuilt as ``gateway.models``
objects; what cannot be mapped is a 502 naming the field (``gateway.answers``).

A create request is checked first: what Together cannot express (``metadata``, W&B
``integrations`` without Together's own W&B key, reinforcement fine-tuning) is a 400
naming the field, never dropped.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

import msgspec

from gateway.answers import mapping
from gateway.errors import BadRequest, NotFound
from gateway.ids import stable_id
from gateway.jsonl import LineInvalid
from gateway.models import (
    Checkpoint,
    DpoHyperparameters,
    DpoMethod,
    FileDeleted,
    FileObject,
    FineTuningJob,
    Hyperparameters,
    JobCreate,
    JobError,
    JobEvent,
    JobStatus,
    Method,
    SupervisedMethod,
)
from gateway.training import ChatMessage, message_text

SLUG = "together-ai"
# Together's default learning rate (FinetuneRequest.learning_rate in its spec): OpenAI's
# learning_rate_multiplier is taken as a multiple of it.
DEFAULT_LEARNING_RATE = 1e-5

# OpenAI <- Together (FinetuneJobStatus).
JOB_STATUS: dict[str, JobStatus] = {
    "pending": "validating_files",
    "queued": "queued",
    "running": "running",
    "compressing": "running",
    "uploading": "running",
    "cancel_requested": "cancelled",
    "cancelled": "cancelled",
    "error": "failed",
    "completed": "succeeded",
}
EventLevel = Literal["info", "warn", "error"]
EVENT_LEVEL: dict[str | None, EventLevel] = {
    None: "info",
    "info": "info",
    "legacy_info": "info",
    "warning": "warn",
    "legacy_iwarning": "warn",
    "error": "error",
    "legacy_ierror": "error",
}
# Together's metric names -> OpenAI's metrics-event keys.
METRIC_NAMES = {
    "train/loss": "train_loss",
    "eval/loss": "valid_loss",
}
# Together ids are UUIDs, sometimes prefixed (ft-..., file-...): nothing else reaches a URL.
ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# Body fields that are Together's own, taken from the create body when a client sends
# them (the OpenAI SDK's extra_body): they have no OpenAI equivalent.
TOGETHER_FIELDS = frozenset(
    {
        "learning_rate",
        "n_checkpoints",
        "n_evals",
        "warmup_ratio",
        "max_grad_norm",
        "weight_decay",
        "max_seq_length",
        "packing",
        "lr_scheduler",
        "train_on_inputs",
    }
)
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_trainable_modules")


class _T(msgspec.Struct, kw_only=True):
    """Decoding only; unknown fields are ignored."""


class TogetherJob(_T, kw_only=True):
    id: str
    status: str
    created_at: str
    updated_at: str
    model: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    model_output_name: str | None = None
    n_epochs: int | None = None
    batch_size: int | str | None = None
    learning_rate: float | None = None
    random_seed: int | None = None
    token_count: int | None = None
    user_id: str | None = None
    training_method: dict[str, Any] | None = None


class TogetherJobList(_T):
    data: list[TogetherJob]


class TogetherEvent(_T, kw_only=True):
    created_at: str
    level: str | None = None
    message: str
    type: str
    hash: str


class TogetherEvents(_T):
    data: list[TogetherEvent]


class TogetherCheckpoint(_T, kw_only=True):
    step: int
    created_at: str
    path: str
    checkpoint_type: str


class TogetherCheckpoints(_T):
    data: list[TogetherCheckpoint]


class TogetherMetrics(_T):
    metrics: list[dict[str, float | int | None]]


class TogetherFile(_T, kw_only=True):
    id: str
    created_at: int
    filename: str
    bytes: int
    purpose: str
    processed: bool | None = msgspec.field(default=None, name="Processed")


class TogetherFileList(_T):
    data: list[TogetherFile]


class TogetherLoraLimits(_T):
    max_rank: int


class TogetherModelLimits(_T):
    lora_training: TogetherLoraLimits | None = None


class TogetherFileDeleted(_T):
    id: str
    deleted: bool


# ---- ids and times ------------------------------------------------------------------


def native_id(public_id: str, what: str) -> str:
    """A path-safe Together id; anything else is a 404 before it reaches a URL."""
    if not ID_SHAPE.fullmatch(public_id):
        raise NotFound(f"No {what} found with id '{public_id[:100]}'")
    return public_id


def epoch(value: str) -> int:
    """An ISO 8601 date-time as Unix seconds (a ``Z`` suffix taken)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"date-time without a time zone: {value[:40]!r}")
    return int(parsed.timestamp())


# ---- create -------------------------------------------------------------------------


def needs_rank(body: dict[str, Any]) -> bool:
    """Whether a LoRA job's rank must come from the model's limits (none was given)."""
    return body.get("lora", True) is True and "lora_r" not in body


def job_body(spec: JobCreate, body: dict[str, Any], max_rank: int | None = None) -> dict[str, Any]:
    """Together's ``POST /fine-tunes`` body for an OpenAI create request.

    ``max_rank`` (the model's ``lora_training.max_rank``) is the LoRA rank when the
    body gives none, and twice it the alpha (Together's SDK's choice as far as we know;
    the spec gives no default).
    """
    if spec.metadata:
        raise _refused("metadata", "Together AI fine-tunes have no metadata")
    if spec.integrations:
        raise _refused(
            "integrations",
            "Together AI takes W&B settings with your W&B API key; send 'wandb_api_key' "
            "and 'wandb_project_name' in the body instead",
        )
    out: dict[str, Any] = {"model": spec.model, "training_file": spec.training_file}
    if spec.validation_file is not None:
        out["validation_file"] = spec.validation_file
    if spec.suffix is not None:
        out["suffix"] = spec.suffix
    if spec.seed is not None:
        out["random_seed"] = spec.seed
    hyper: Hyperparameters | None = spec.hyperparameters
    method = spec.method
    if method is not None and method.type == "reinforcement":
        raise _refused("method.type", "Together AI has no reinforcement fine-tuning")
    if method is not None and method.type == "dpo":
        dpo_hyper = method.dpo.hyperparameters if method.dpo else None
        hyper = dpo_hyper or hyper
        training: dict[str, Any] = {"method": "dpo"}
        if dpo_hyper is not None and dpo_hyper.beta not in (None, "auto"):
            training["dpo_beta"] = dpo_hyper.beta
        out["training_method"] = training
    else:
        if method is not None and method.supervised and method.supervised.hyperparameters:
            hyper = method.supervised.hyperparameters
        train_on_inputs = body.get("train_on_inputs", "auto")
        out["training_method"] = {"method": "sft", "train_on_inputs": train_on_inputs}
    if hyper is not None:
        if isinstance(hyper.n_epochs, int):
            out["n_epochs"] = hyper.n_epochs
        if isinstance(hyper.batch_size, int):
            out["batch_size"] = hyper.batch_size
        if isinstance(hyper.learning_rate_multiplier, float | int):
            out["learning_rate"] = hyper.learning_rate_multiplier * DEFAULT_LEARNING_RATE
    for name in TOGETHER_FIELDS - {"train_on_inputs"}:
        if name in body:
            if name == "learning_rate" and "learning_rate" in out:
                raise _refused(
                    "learning_rate", "give learning_rate or learning_rate_multiplier, not both"
                )
            out[name] = body[name]
    for name in ("wandb_api_key", "wandb_project_name", "wandb_name", "wandb_entity"):
        if name in body:
            out[name] = body[name]
    out["training_type"] = _training_type(body, max_rank)
    return out


def _training_type(body: dict[str, Any], max_rank: int | None) -> dict[str, Any]:
    lora = body.get("lora", True)
    if not isinstance(lora, bool):
        raise _refused("lora", "must be true (LoRA, Together's default) or false (full)")
    given = [name for name in LORA_FIELDS if name in body]
    if not lora:
        if given:
            raise _refused(given[0], "LoRA settings need 'lora' true")
        return {"type": "Full"}
    training: dict[str, Any] = {"type": "Lora"}
    for name in given:
        training[name] = body[name]
    if "lora_r" not in training:
        if max_rank is None:
            raise _refused("lora_r", "give a LoRA rank; the model's limits give none")
        training["lora_r"] = max_rank
    training.setdefault("lora_alpha", training["lora_r"] * 2)
    return training


def _refused(param: str, why: str) -> BadRequest:
    return BadRequest(f"Unsupported '{param}': {why}", param=param, code="unsupported_parameter")


# ---- answers ------------------------------------------------------------------------


def job_from_together(job: TogetherJob) -> FineTuningJob:
    with mapping(SLUG, "fine-tuning job"):
        status = JOB_STATUS.get(job.status)
        if status is None:
            raise ValueError(f"unknown status {job.status[:40]!r} - at `$.status`")
        updated = epoch(job.updated_at)
        finished = updated if status in ("succeeded", "failed", "cancelled") else None
        hyper = Hyperparameters(
            n_epochs=job.n_epochs if job.n_epochs else "auto",
            batch_size=job.batch_size if isinstance(job.batch_size, int) else "auto",
            learning_rate_multiplier=(
                job.learning_rate / DEFAULT_LEARNING_RATE if job.learning_rate else "auto"
            ),
        )
        method_name = (job.training_method or {}).get("method")
        if method_name == "dpo":
            beta = (job.training_method or {}).get("dpo_beta")
            dpo = DpoHyperparameters(
                n_epochs=hyper.n_epochs,
                batch_size=hyper.batch_size,
                learning_rate_multiplier=hyper.learning_rate_multiplier,
                beta=beta if isinstance(beta, float | int) else "auto",
            )
            method = Method(type="dpo", dpo=DpoMethod(hyperparameters=dpo))
        else:
            method = Method(type="supervised", supervised=SupervisedMethod(hyperparameters=hyper))
        return FineTuningJob(
            id=job.id,
            model=job.model or "",
            created_at=epoch(job.created_at),
            status=status,
            training_file=job.training_file or "",
            validation_file=job.validation_file,
            fine_tuned_model=job.model_output_name if status == "succeeded" else None,
            finished_at=finished,
            error=(
                JobError(code="together_error", message="The job failed on Together AI")
                if status == "failed"
                else None
            ),
            hyperparameters=hyper,
            organization_id=job.user_id or "",
            trained_tokens=job.token_count if status == "succeeded" else None,
            seed=job.random_seed or 0,
            method=method,
        )


def event_from_together(job_id: str, index: int, event: TogetherEvent) -> JobEvent:
    with mapping(SLUG, "event"):
        return JobEvent(
            id=stable_id("ftevent-", job_id, str(index), event.hash),
            created_at=epoch(event.created_at),
            level=EVENT_LEVEL.get(event.level, "info"),
            message=event.message,
        )


def checkpoint_from_together(job_id: str, checkpoint: TogetherCheckpoint) -> Checkpoint:
    with mapping(SLUG, "checkpoint"):
        return Checkpoint(
            id=stable_id("ftckpt-", job_id, str(checkpoint.step), checkpoint.checkpoint_type),
            created_at=epoch(checkpoint.created_at),
            fine_tuning_job_id=job_id,
            fine_tuned_model_checkpoint=checkpoint.path,
            step_number=checkpoint.step,
        )


def file_from_together(file: TogetherFile) -> FileObject:
    return FileObject(
        id=file.id,
        bytes=file.bytes,
        created_at=file.created_at,
        filename=file.filename,
        purpose=file.purpose,
        status="uploaded" if file.processed is False else "processed",
    )


def deleted_from_together(deleted: TogetherFileDeleted) -> FileDeleted:
    return FileDeleted(id=deleted.id, deleted=deleted.deleted)


# ---- training data ------------------------------------------------------------------

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class _Line(msgspec.Struct, kw_only=True):
    messages: list[ChatMessage] | None = None
    input: dict[str, Any] | None = None
    preferred_output: list[ChatMessage] | None = None
    non_preferred_output: list[ChatMessage] | None = None
    text: str | None = None
    prompt: str | None = None
    completion: str | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None


class _Input(msgspec.Struct, kw_only=True):
    messages: list[ChatMessage]
    tools: list[Any] | None = None


_line_decoder = msgspec.json.Decoder(_Line)
_input_decoder = msgspec.json.Decoder(_Input)


def _messages(messages: list[ChatMessage], where: str) -> list[dict[str, str]]:
    if not messages:
        raise LineInvalid(f"'{where}' is empty")
    out = []
    for index, message in enumerate(messages):
        here = f"{where}[{index}]"
        role = _ROLES.get(message.role)
        if role is None:
            raise LineInvalid(
                f"{here} has role '{message.role}'; Together AI takes only system, user "
                "and assistant messages"
            )
        if message.tool_calls or message.function_call:
            raise LineInvalid(f"{here} has a tool call; Together AI cannot train on those")
        if message.weight is not None:
            raise LineInvalid(f"{here} has a 'weight'; Together AI has no per-message weight")
        out.append({"role": role, "content": message_text(message, here)})
    return out


def convert_line(raw: bytes) -> bytes:
    """An OpenAI chat or preference line as Together's conversation or preference line.

    Lines already in one of Together's own formats (``text``, ``prompt``+``completion``)
    pass through untouched; what Together cannot express raises ``LineInvalid``.
    """
    line = _line_decoder.decode(raw)
    if line.tools or line.functions:
        raise LineInvalid("'tools' are not supported by Together AI fine-tuning")
    if line.messages is not None:
        return msgspec.json.encode({"messages": _messages(line.messages, "messages")})
    if line.input is not None or line.preferred_output is not None:
        if line.input is None or line.preferred_output is None or not line.non_preferred_output:
            raise LineInvalid(
                "a preference (DPO) line needs 'input', 'preferred_output' and "
                "'non_preferred_output'"
            )
        given = msgspec.convert(line.input, _Input)
        if given.tools:
            raise LineInvalid("'input.tools' are not supported by Together AI fine-tuning")
        return msgspec.json.encode(
            {
                "input": {"messages": _messages(given.messages, "input.messages")},
                "preferred_output": _messages(line.preferred_output, "preferred_output"),
                "non_preferred_output": _messages(
                    line.non_preferred_output, "non_preferred_output"
                ),
            }
        )
    if line.text is not None or (line.prompt is not None and line.completion is not None):
        return raw.strip()
    raise LineInvalid(
        "not a fine-tuning line: expected 'messages' (or 'input', 'preferred_output' and "
        "'non_preferred_output' for DPO; or Together's 'text' or 'prompt'+'completion')"
    )
