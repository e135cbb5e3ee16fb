"""OpenAI's rules for files and fine-tuning requests, as the fake upstream enforces them.

The enums, ranges and required fields are copied from OpenAI's OpenAPI spec (version
2.3.0: CreateFileRequest, CreateFineTuningJobRequest, FineTuneMethod and the
hyperparameter schemas) rather than read from it, because checkouts that run these
tests do not carry the spec. Every refusal is an ``ApiError`` in OpenAI's envelope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiohttp import web

JSON = dict[str, Any]

# CreateFileRequest.purpose; wider than OpenAIFile.purpose, which lacks "evals".
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
UPLOAD_FIELDS = frozenset({"purpose", "expires_after[anchor]", "expires_after[seconds]"})
EXPIRY_SECONDS = (3600, 2592000)  # FileExpirationAfter.seconds; also the batch default
JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
JOB_REQUEST_FIELDS = frozenset(
    {
        "model",
        "training_file",
        "hyperparameters",
        "suffix",
        "validation_file",
        "integrations",
        "seed",
        "method",
        "metadata",
    }
)
# (python type, minimum, minimum is exclusive, maximum); the string "auto" is always allowed.
Range = tuple[type, float, bool, float | None]
COMMON_HYPERPARAMETERS: dict[str, Range] = {
    "batch_size": (int, 1, False, 256),
    "learning_rate_multiplier": (float, 0, True, None),
    "n_epochs": (int, 1, False, 50),
}
HYPERPARAMETER_RANGES: dict[str, dict[str, Range]] = {
    "supervised": COMMON_HYPERPARAMETERS,
    "dpo": {**COMMON_HYPERPARAMETERS, "beta": (float, 0, True, 2)},
    "reinforcement": {
        **COMMON_HYPERPARAMETERS,
        "compute_multiplier": (float, 1e-05, True, 10),
        "eval_interval": (int, 1, False, None),
        "eval_samples": (int, 1, False, None),
    },
}
REASONING_EFFORTS = ("default", "low", "medium", "high")
GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")
MAX_SEED = 2147483647
STATUS_EVENTS = {
    "validating_files": ("info", "Validating training file: {training_file}"),
    "queued": ("info", "Files validated, moving job to queued state"),
    "running": ("info", "Job started"),
    "succeeded": ("info", "The job has successfully completed"),
    "failed": ("error", "The job failed"),
    "cancelled": ("info", "Job cancelled"),
}
TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    dict: "an object",
    list: "an array",
    bool: "a boolean",
}


class ApiError(Exception):
    """Raised anywhere while handling so that every failure leaves in OpenAI's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"message": message, "type": type_, "param": param, "code": code}

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return json_response({"error": self.error}, self.status, headers)


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param, code)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(payload),
        content_type="application/json",
        headers=headers,
    )


def check_type(value: Any, expected: type, param: str) -> None:
    accepted = (int, float) if expected is float else expected
    if isinstance(value, bool) or not isinstance(value, accepted):
        got = "null" if value is None else TYPE_NAMES.get(type(value), type(value).__name__)
        raise bad(
            f"Invalid type for '{param}': expected {TYPE_NAMES[expected]}, but got {got} instead.",
            param,
            "invalid_type",
        )


def check_range(value: Any, rng: Range, param: str) -> None:
    kind, low, exclusive, high = rng
    check_type(value, kind, param)
    if value < low or (exclusive and value == low) or (high is not None and value > high):
        bounds = f"{'>' if exclusive else '>='} {low!r}" + (
            "" if high is None else f" and <= {high!r}"
        )
        raise bad(
            f"Invalid '{param}': expected a value {bounds}, but got {value} instead.",
            param,
            "invalid_value",
        )


def check_choice(value: Any, choices: Iterable[str], param: str) -> None:
    if value not in (choices := tuple(choices)):  # a tuple compares unhashable JSON safely
        raise bad(
            f"Invalid value for '{param}': expected one of {list(choices)}, but got {value!r}.",
            param,
            "invalid_value",
        )


def check_hyperparameters(value: Any, method_type: str, param: str) -> None:
    check_type(value, dict, param)
    for key, item in value.items():
        rng = HYPERPARAMETER_RANGES[method_type].get(key)
        if key == "reasoning_effort" and method_type == "reinforcement":
            check_choice(item, REASONING_EFFORTS, f"{param}.{key}")
        elif rng is not None and item != "auto":
            check_range(item, rng, f"{param}.{key}")


def check_method(method: Any) -> None:
    check_type(method, dict, "method")
    if "type" not in method:
        raise bad(
            "Missing required parameter: 'method.type'.",
            "method.type",
            "missing_required_parameter",
        )
    kind = method["type"]
    check_choice(kind, HYPERPARAMETER_RANGES, "method.type")
    if (config := method.get(kind)) is None and kind != "reinforcement":
        return
    check_type(config, dict, f"method.{kind}")
    if "hyperparameters" in config:
        check_hyperparameters(config["hyperparameters"], kind, f"method.{kind}.hyperparameters")
    if kind == "reinforcement":  # FineTuneReinforcementMethod requires a grader
        check_type(config.get("grader"), dict, "method.reinforcement.grader")
        check_choice(config["grader"].get("type"), GRADER_TYPES, "method.reinforcement.grader.type")


def check_metadata(metadata: Any) -> None:
    check_type(metadata, dict, "metadata")
    if len(metadata) > 16:
        raise bad(
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"16 properties, but got {len(metadata)} instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, value in metadata.items():
        check_type(value, str, f"metadata.{key}")
        if len(key) > 64 or len(value) > 512:
            raise bad(
                "Invalid 'metadata': keys are limited to 64 characters and values to "
                f"512, but {key[:64]!r} breaks that.",
                "metadata",
                "invalid_value",
            )


def check_integrations(integrations: Any) -> None:
    check_type(integrations, list, "integrations")
    if len(integrations) > 5:  # FineTuningJob.integrations has maxItems 5
        raise bad("Invalid 'integrations': at most 5 integrations are allowed.", "integrations")
    for i, item in enumerate(integrations):
        check_type(item, dict, f"integrations[{i}]")
        check_choice(item.get("type"), ("wandb",), f"integrations[{i}].type")
        check_type(item.get("wandb"), dict, f"integrations[{i}].wandb")
        check_type(item["wandb"].get("project"), str, f"integrations[{i}].wandb.project")


def check_file_ref(files: Mapping[str, Any], file_id: Any, param: str) -> None:
    check_type(file_id, str, param)
    if (stored := files.get(file_id)) is None:
        raise bad(f"invalid {param}: {file_id}", param)
    if stored.meta["purpose"] != "fine-tune":
        raise bad(
            f"File {file_id} has purpose {stored.meta['purpose']!r}; {param} must be "
            "uploaded with purpose 'fine-tune'.",
            param,
        )


def validate_job_request(files: Mapping[str, Any], body: JSON) -> None:
    """Refuse what OpenAI's CreateFineTuningJobRequest refuses, naming the param."""
    for key in body:
        if key not in JOB_REQUEST_FIELDS:
            raise bad(f"Unrecognized request argument supplied: {key}", key)
    for key in ("model", "training_file"):
        if key not in body:
            raise bad(f"Missing required parameter: '{key}'.", key, "missing_required_parameter")
    check_type(body["model"], str, "model")
    check_file_ref(files, body["training_file"], "training_file")
    if body.get("validation_file") is not None:
        check_file_ref(files, body["validation_file"], "validation_file")
    if (suffix := body.get("suffix")) is not None:
        check_type(suffix, str, "suffix")
        if not 1 <= len(suffix) <= 64:
            raise bad(
                f"Invalid 'suffix': expected 1 to 64 characters, but got {len(suffix)}.",
                "suffix",
                "invalid_value",
            )
    if body.get("seed") is not None:
        check_range(body["seed"], (int, 0, False, MAX_SEED), "seed")
    if "hyperparameters" in body:  # the deprecated top-level form is supervised-only
        check_hyperparameters(body["hyperparameters"], "supervised", "hyperparameters")
    if "method" in body:
        check_method(body["method"])
    if body.get("metadata") is not None:
        check_metadata(body["metadata"])
    if body.get("integrations") is not None:
        check_integrations(body["integrations"])
