"""What Vertex AI refuses in a ``tuningJobs.create`` body, as the fake enforces it.

Copied from ``aiplatform.v1`` (discovery revision 20261106: TuningJob,
SupervisedTuningSpec, PreferenceOptimizationSpec, the hyperparameter schemas) and
``tuning_job.proto``, because checkouts that run these tests do not carry the specs.
Stricter than Google in two places, on purpose: output-only fields are refused rather
than ignored (the gateway has no business sending them), and int64 fields must be JSON
strings (Google's encoding; Google also takes numbers, the gateway must not rely on it).
"""

from __future__ import annotations

import re
from typing import Any

JSON = dict[str, Any]

JOB_FIELDS = frozenset(
    {
        "baseModel",
        "preTunedModel",
        "tunedModelDisplayName",
        "description",
        "labels",
        "supervisedTuningSpec",
        "preferenceOptimizationSpec",
        "encryptionSpec",
        "serviceAccount",
    }
)
OUTPUT_ONLY = frozenset(
    {
        "name",
        "state",
        "createTime",
        "startTime",
        "endTime",
        "updateTime",
        "error",
        "experiment",
        "tunedModel",
        "tuningDataStats",
        "evaluateDatasetRuns",
        "gcsMetricsUri",
    }
)
SPEC_FIELDS = frozenset(
    {
        "trainingDatasetUri",
        "validationDatasetUri",
        "hyperParameters",
        "exportLastCheckpointOnly",
        "evaluationConfig",
    }
)
SUPERVISED_HYPER = frozenset({"epochCount", "learningRateMultiplier", "adapterSize"})
PREFERENCE_HYPER = SUPERVISED_HYPER | {"beta"}
ADAPTER_SIZES = frozenset(
    {
        "ADAPTER_SIZE_UNSPECIFIED",
        "ADAPTER_SIZE_ONE",
        "ADAPTER_SIZE_TWO",
        "ADAPTER_SIZE_FOUR",
        "ADAPTER_SIZE_EIGHT",
        "ADAPTER_SIZE_SIXTEEN",
        "ADAPTER_SIZE_THIRTY_TWO",
    }
)
TERMINAL_STATES = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
GS_URI = re.compile(r"gs://([a-z0-9][a-z0-9._-]+[a-z0-9])/(.+)")
_LABEL = re.compile(r"[a-z0-9_-]{0,64}")


class GoogleError(Exception):
    """Raised while handling: every failure leaves in Google's error envelope."""

    def __init__(
        self, http: int, status: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http, self.status, self.message = http, status, message
        self.headers = dict(headers or {})  # a throttled answer's Retry-After, say

    def body(self) -> JSON:
        return {"error": {"code": self.http, "message": self.message, "status": self.status}}


def invalid(message: str) -> GoogleError:
    return GoogleError(400, "INVALID_ARGUMENT", message)


def _unknown(name: str, where: str) -> GoogleError:
    return invalid(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}'.")


def validate_create(body: Any) -> tuple[str, JSON]:
    """Check a create body; returns which spec it carries and that spec."""
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    for key in body:
        if key in OUTPUT_ONLY:
            raise invalid(f"'{key}' is output only and must not be set.")
        if key not in JOB_FIELDS:
            raise _unknown(key, "tuning_job")
    if ("baseModel" in body) == ("preTunedModel" in body):
        raise invalid("Exactly one of base_model or pre_tuned_model must be set.")
    if "baseModel" in body and not _nonempty_str(body["baseModel"]):
        raise invalid("base_model must be a non-empty string.")
    specs = [k for k in ("supervisedTuningSpec", "preferenceOptimizationSpec") if k in body]
    if len(specs) != 1:
        raise invalid("Exactly one tuning spec must be set.")
    kind = specs[0]
    spec = body[kind]
    _validate_spec(spec, kind)
    name = body.get("tunedModelDisplayName")
    if name is not None and (not isinstance(name, str) or len(name) > 128):
        raise invalid("tuned_model_display_name must be a string of at most 128 characters.")
    _validate_labels(body.get("labels"))
    return kind, spec


def _validate_spec(spec: Any, kind: str) -> None:
    if not isinstance(spec, dict):
        raise invalid(f"{kind} must be an object.")
    for key in spec:
        if key not in SPEC_FIELDS:
            raise _unknown(key, f"tuning_job.{kind}")
    training = spec.get("trainingDatasetUri")
    if not _nonempty_str(training):
        raise invalid(f"{kind}.training_dataset_uri is required.")
    for field in ("trainingDatasetUri", "validationDatasetUri"):
        if field in spec and not GS_URI.fullmatch(str(spec[field])):
            raise invalid(f"{field} must be a Cloud Storage URI (gs://bucket/object).")
    hyper = spec.get("hyperParameters")
    if hyper is None:
        return
    allowed = PREFERENCE_HYPER if kind == "preferenceOptimizationSpec" else SUPERVISED_HYPER
    if not isinstance(hyper, dict):
        raise invalid("hyper_parameters must be an object.")
    for key, value in hyper.items():
        if key not in allowed:
            raise _unknown(key, f"tuning_job.{kind}.hyper_parameters")
        if key == "epochCount" and not (isinstance(value, str) and value.isdigit()):
            raise invalid(f"epoch_count is an int64: a JSON string of digits, got {value!r}.")
        if key in ("learningRateMultiplier", "beta") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise invalid(f"{key} must be a number, got {value!r}.")
        if key == "adapterSize" and value not in ADAPTER_SIZES:
            raise invalid(f"Invalid value at 'adapter_size': {value!r}.")


def _validate_labels(labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise invalid("labels must be a map of strings.")
    for key, value in labels.items():
        ok_key = bool(key) and key[0].isalpha() and _LABEL.fullmatch(key) is not None
        if not ok_key or not isinstance(value, str) or not _LABEL.fullmatch(value):
            raise invalid(f"Label '{key}' is not a valid label (lowercase, digits, '_', '-').")


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def check_dataset_line(line: JSON, kind: str) -> str | None:
    """What Vertex would say about one dataset line, or None (a light check)."""
    contents = line.get("contents")
    if not isinstance(contents, list) or not contents:
        return "missing 'contents'"
    for content in contents:
        if content.get("role") not in (None, "user", "model") or not content.get("parts"):
            return "a content has a bad role or no parts"
    if kind == "preferenceOptimizationSpec":
        completions = line.get("completions")
        if not isinstance(completions, list) or len(completions) != 2:
            return "preference examples need a pair of 'completions'"
    elif "completions" in line:
        return "'completions' in a supervised dataset"
    return None
