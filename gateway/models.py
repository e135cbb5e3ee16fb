"""OpenAI's fine-tuning and files objects as msgspec Structs: the gateway's one wire format.

Wire policy, shared by every Struct here through ``Wire``:
- keyword-only construction, so adding a field never shifts positional callers;
- ``null`` only where OpenAI's schema allows it. Nullable fields such as ``error`` and
  ``finished_at`` are required there, so they are always encoded, ``null`` included.
  A field the schema does not let be null is left out when it has no value: nested
  Structs whose fields are all optional omit their defaults (``omit_defaults``), and an
  optional field beside required ones defaults to ``UNSET``; ``None`` given or decoded
  there is turned into ``UNSET`` (``_unset_nones``). A typed client generated from the
  schema (Go, Rust, strict TypeScript) rejects a ``null`` anywhere else;
- request Structs ignore fields they do not model: the raw body travels alongside, so
  what a newer SDK sends still reaches an upstream that understands it.
Constraints are the ones in OpenAI's spec (``CreateFineTuningJobRequest``), so a bad
value is refused by the gateway with a ``param``, the same way for every provider.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType


class Wire(msgspec.Struct, kw_only=True):
    """Base of every wire Struct; see the module docstring for the policy."""


class OptionalFields(Wire, kw_only=True, omit_defaults=True):
    """A Wire Struct all of whose fields may be left out: unset ones are not encoded."""


def _unset_nones(struct: msgspec.Struct, *names: str) -> None:
    """Fields OpenAI's schema does not let be null: ``None`` given means not given."""
    for name in names:
        if getattr(struct, name) is None:
            setattr(struct, name, UNSET)


Auto = Literal["auto"]
BatchSize = Auto | Annotated[int, Meta(ge=1, le=256)]
LearningRateMultiplier = Auto | Annotated[float, Meta(gt=0)]
Epochs = Auto | Annotated[int, Meta(ge=1, le=50)]
Beta = Auto | Annotated[float, Meta(gt=0, le=2)]
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]],
    Meta(max_length=16),
]


# ---- create-job request -------------------------------------------------------------


class Hyperparameters(OptionalFields, kw_only=True):
    batch_size: BatchSize | None = None
    learning_rate_multiplier: LearningRateMultiplier | None = None
    n_epochs: Epochs | None = None


class DpoHyperparameters(Hyperparameters, kw_only=True):
    beta: Beta | None = None


class SupervisedMethod(OptionalFields, kw_only=True):
    hyperparameters: Hyperparameters | None = None


class DpoMethod(OptionalFields, kw_only=True):
    hyperparameters: DpoHyperparameters | None = None


class Method(OptionalFields, kw_only=True):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    # Graders are a large, growing union: checked by the upstream, carried as they came.
    reinforcement: dict[str, Any] | None = None


class WandbIntegration(OptionalFields, kw_only=True):
    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None


class Integration(Wire, kw_only=True):
    type: Literal["wandb"]
    wandb: WandbIntegration


class PortkeyOptions(Wire, kw_only=True):
    """Where managed mode sends a job (PortkeyFinetuneJob in Portkey's spec)."""

    virtual_key: str = msgspec.field(name="x-portkey-virtual-key")
    aws_s3_bucket: str | None = msgspec.field(default=None, name="x-portkey-aws-s3-bucket")
    vertex_storage_bucket_name: str | None = msgspec.field(
        default=None, name="x-portkey-vertex-storage-bucket-name"
    )


class ProviderOptions(Wire, kw_only=True):
    """Bedrock-style options; Portkey accepts them here or at the top level."""

    job_name: str | None = None
    role_arn: str | None = None
    output_file: str | None = None


class JobCreate(Wire, kw_only=True):
    """The create-job body: OpenAI's fields plus Portkey's (Bedrock and Portkey jobs)."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2147483647)] | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    metadata: Metadata | None = None
    integrations: list[Integration] | None = None
    # Portkey's additions.
    job_name: str | None = None
    role_arn: str | None = None
    output_file: str | None = None
    portkey_options: PortkeyOptions | None = None
    provider_options: ProviderOptions | None = None


# Fields that only the gateway understands: never forwarded to an OpenAI-schema upstream.
GATEWAY_ONLY_JOB_FIELDS = frozenset(
    {"job_name", "role_arn", "output_file", "portkey_options", "provider_options"}
)


# ---- responses ----------------------------------------------------------------------

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class JobError(Wire, kw_only=True):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(Wire, kw_only=True):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    model: str
    created_at: int
    status: JobStatus
    training_file: str
    validation_file: str | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    error: JobError | None = None
    hyperparameters: Hyperparameters = msgspec.field(default_factory=Hyperparameters)
    organization_id: str = ""
    result_files: list[str] = msgspec.field(default_factory=list)
    trained_tokens: int | None = None
    seed: int = 0
    estimated_finish: int | None = None
    integrations: list[Integration] | None = None
    method: Method | UnsetType | None = UNSET
    metadata: dict[str, str] | None = None

    def __post_init__(self) -> None:
        _unset_nones(self, "method")
        # OpenAI answers "auto" for what the job left to the provider, never null (only
        # batch_size may be null in the schema; "auto" says the same, more plainly).
        hyper = self.hyperparameters
        if None in (hyper.batch_size, hyper.learning_rate_multiplier, hyper.n_epochs):
            self.hyperparameters = msgspec.structs.replace(
                hyper,
                batch_size=_auto_if_none(hyper.batch_size),
                learning_rate_multiplier=_auto_if_none(hyper.learning_rate_multiplier),
                n_epochs=_auto_if_none(hyper.n_epochs),
            )


V = TypeVar("V")


def _auto_if_none(value: V | None) -> V | Auto:
    return "auto" if value is None else value


class JobEvent(Wire, kw_only=True):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Checkpoint(Wire, kw_only=True):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuning_job_id: str
    fine_tuned_model_checkpoint: str
    step_number: int
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]


class FileObject(Wire, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | UnsetType | None = UNSET
    expires_at: int | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        _unset_nones(self, "status_details", "expires_at")


class FileDeleted(Wire, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


T = TypeVar("T")


class Page(Wire, Generic[T], kw_only=True):
    """A list response; ``first_id``/``last_id`` are what the files list requires."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    def __post_init__(self) -> None:
        if self.data and self.first_id is None:
            self.first_id = _item_id(self.data[0])
            self.last_id = _item_id(self.data[-1])


def _item_id(item: object) -> str | None:
    value = getattr(item, "id", None)
    return value if isinstance(value, str) else None
