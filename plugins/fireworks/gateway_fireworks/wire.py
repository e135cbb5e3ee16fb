"""Fireworks' wire shapes (Gateway REST API: SFT jobs and datasets), as msgspec Structs.

Names are Fireworks' camelCase (``rename="camel"``). Answers are decoded through
``gateway.answers`` into these, so an answer that does not fit (a state outside the enum,
a time that is not RFC 3339) is a 502 naming the field. Requests are encoded from them with
``omit_defaults``: only what the gateway sets is sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

JobState = Literal[
    "JOB_STATE_UNSPECIFIED",
    "JOB_STATE_CREATING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_COMPLETED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_DELETING",
    "JOB_STATE_WRITING_RESULTS",
    "JOB_STATE_VALIDATING",
    "JOB_STATE_DELETING_CLEANING_UP",
    "JOB_STATE_PENDING",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_RE_QUEUEING",
    "JOB_STATE_CREATING_INPUT_DATASET",
    "JOB_STATE_IDLE",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_EARLY_STOPPED",
    "JOB_STATE_PAUSED",
    # In the docs' 5.10.0 enum, not in the SDK's (8399c127): accepted either way.
    "JOB_STATE_DELETED",
    "JOB_STATE_ARCHIVED",
]
DatasetState = Literal["STATE_UNSPECIFIED", "UPLOADING", "READY"]


class Wire(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Base of Fireworks' shapes: camelCase names, unset fields neither sent nor required."""


class Status(Wire, kw_only=True):
    """google.rpc-style: ``code`` is a name (``OK``, ``INVALID_ARGUMENT``, ...)."""

    code: str = "OK"
    message: str = ""


class JobCreateBody(Wire, kw_only=True):
    """The create body: the job resource itself, flat (the SDK's and the spec's shape)."""

    dataset: str
    base_model: str
    display_name: str | None = None
    evaluation_dataset: str | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    lora_rank: int | None = None
    batch_size_samples: int | None = None
    max_context_length: int | None = None


class Job(Wire, kw_only=True):
    name: str
    dataset: str
    state: JobState = "JOB_STATE_UNSPECIFIED"
    status: Status | None = None
    display_name: str | None = None
    create_time: datetime | None = None
    completed_time: datetime | None = None
    update_time: datetime | None = None
    base_model: str | None = None
    warm_start_from: str | None = None
    output_model: str | None = None
    evaluation_dataset: str | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    lora_rank: int | None = None
    batch_size_samples: int | None = None


class JobList(Wire, kw_only=True):
    supervised_fine_tuning_jobs: list[Job] = msgspec.field(default_factory=list)
    next_page_token: str | None = None


class Dataset(Wire, kw_only=True):
    name: str
    display_name: str | None = None
    create_time: datetime | None = None
    state: DatasetState = "STATE_UNSPECIFIED"
    status: Status | None = None
    example_count: str | None = None  # int64 as a JSON string


class DatasetList(Wire, kw_only=True):
    datasets: list[Dataset] = msgspec.field(default_factory=list)
    next_page_token: str | None = None
    total_size: int | None = None


class UploadEndpoint(Wire, kw_only=True):
    filename_to_signed_urls: dict[str, str]


class Error(msgspec.Struct):
    """Fireworks' error answers: ``{"error": {"message", "code"}}`` or ``{"message"}``."""

    message: str | None = None
    code: str | int | None = None
