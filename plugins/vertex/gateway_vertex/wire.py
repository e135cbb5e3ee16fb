"""Vertex AI and Cloud Storage wire objects, as msgspec Structs.

Wire policy: Google's JSON is lowerCamelCase (``rename="camel"``); fields Google may
leave out are optional, and absent ones are omitted when sending (``omit_defaults``), so
a request never carries a ``null`` Google would read as "clear this". int64 fields are
JSON strings in Google's encoding (``epochCount: "3"``); they are read as ``str | int``
to take either, and always written as strings. Unknown fields are ignored: Google adds
output fields often. Shapes follow ``aiplatform.v1`` (tuningJobs, discovery revision
20261106) and the GCS JSON API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

# A count (int64) as Google writes it, a string of decimal digits, or as a JSON number.
# Every int64 read here is a count, an epoch or a step: never negative; an epoch count is
# at least 1. Anything else is an answer the gateway cannot map (a 502 naming the field).
Int64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,19}$")] | Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt64 = (
    Annotated[str, msgspec.Meta(pattern=r"^0*[1-9][0-9]{0,18}$")]
    | Annotated[int, msgspec.Meta(ge=1)]
)

AdapterSize = Literal[
    "ADAPTER_SIZE_UNSPECIFIED",
    "ADAPTER_SIZE_ONE",
    "ADAPTER_SIZE_TWO",
    "ADAPTER_SIZE_FOUR",
    "ADAPTER_SIZE_EIGHT",
    "ADAPTER_SIZE_SIXTEEN",
    "ADAPTER_SIZE_THIRTY_TWO",
]


class Google(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Base of every Google wire Struct; see the module docstring."""


# ---- tuningJobs ---------------------------------------------------------------------


class HyperParameters(Google, kw_only=True):
    """SupervisedHyperParameters; ``beta`` only in PreferenceOptimizationHyperParameters."""

    epoch_count: PositiveInt64 | None = None
    learning_rate_multiplier: Positive | None = None
    adapter_size: AdapterSize | None = None
    beta: Positive | None = None


class TuningSpec(Google, kw_only=True):
    """SupervisedTuningSpec and PreferenceOptimizationSpec share these fields."""

    training_dataset_uri: str
    validation_dataset_uri: str | None = None
    hyper_parameters: HyperParameters | None = None
    export_last_checkpoint_only: bool | None = None


class Status(Google, kw_only=True):
    """google.rpc.Status: ``code`` is a google.rpc.Code number."""

    code: int = 0
    message: str = ""


class TunedModelCheckpoint(Google, kw_only=True):
    checkpoint_id: str | None = None
    epoch: Int64 | None = None
    step: Int64 | None = None
    endpoint: str | None = None


class TunedModel(Google, kw_only=True):
    model: str | None = None
    endpoint: str | None = None
    checkpoints: list[TunedModelCheckpoint] = []


class DataStats(Google, kw_only=True):
    """SupervisedTuningDataStats / PreferenceOptimizationDataStats: the counts used here."""

    total_billable_token_count: Int64 | None = None
    tuning_dataset_example_count: Int64 | None = None
    tuning_step_count: Int64 | None = None


class TuningDataStats(Google, kw_only=True):
    supervised_tuning_data_stats: DataStats | None = None
    preference_optimization_data_stats: DataStats | None = None


JobState = Literal[
    "JOB_STATE_UNSPECIFIED",
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_PAUSED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_UPDATING",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
]


class TuningJob(Google, kw_only=True):
    """A TuningJob as Vertex answers it (every field is output or optional)."""

    name: str
    base_model: str | None = None
    tuned_model_display_name: str | None = None
    description: str | None = None
    # A JobState not listed above cannot be mapped: a 502 (transform.status_of).
    state: str = "JOB_STATE_UNSPECIFIED"
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    update_time: datetime | None = None
    error: Status | None = None
    labels: dict[str, str] | None = None
    tuned_model: TunedModel | None = None
    tuning_data_stats: TuningDataStats | None = None
    supervised_tuning_spec: TuningSpec | None = None
    preference_optimization_spec: TuningSpec | None = None


class TuningJobCreate(Google, kw_only=True):
    """The body of ``tuningJobs.create``: only what the gateway sets."""

    base_model: str
    tuned_model_display_name: str | None = None
    labels: dict[str, str] | None = None
    supervised_tuning_spec: TuningSpec | None = None
    preference_optimization_spec: TuningSpec | None = None


class ListTuningJobsResponse(Google, kw_only=True):
    tuning_jobs: list[TuningJob] = []
    next_page_token: str | None = None


# ---- errors -------------------------------------------------------------------------


class GoogleErrorBody(Google, kw_only=True):
    code: int = 0
    message: str = ""
    # The canonical code's name (NOT_FOUND); Cloud Storage's JSON API leaves it out.
    status: str | None = None


class GoogleErrorEnvelope(Google, kw_only=True):
    error: GoogleErrorBody | None = None


# ---- Cloud Storage ------------------------------------------------------------------


class GcsObject(Google, kw_only=True):
    name: str
    size: Int64 = 0
    content_type: str | None = None
    time_created: datetime | None = None
    metadata: dict[str, str] | None = None


class GcsObjectList(Google, kw_only=True):
    items: list[GcsObject] = []
    next_page_token: str | None = None
