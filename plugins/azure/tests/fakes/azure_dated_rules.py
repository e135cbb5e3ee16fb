"""Azure OpenAI's dated API (2024-10-21) rules, as the fake enforces them.

Copied from the extract of Azure's authoring spec (``azureopenai.json`` at
Azure/azure-rest-api-specs 3ecc209, files + fine_tuning/jobs) rather than read from it,
since checkouts that run these tests do not carry the spec. What matters to the gateway:
``api-version`` is a required query parameter; create (job and file) answers 201; the
states, levels and purposes are the enums below; errors come in Microsoft's envelope
``{"error": {"code", "message", "target", "details", "innererror"}}``. The spec does not
forbid unknown request properties, and Azure ignores them: so does the fake, which is
why a gateway that forwarded ``method`` would silently train the wrong thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

JSON = dict[str, Any]

API_VERSION = "2024-10-21"
# Files_Upload formData ``purpose`` enum; Files_List's query enum adds batch_output.
UPLOAD_PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "assistants_output", "batch")
LIST_PURPOSES = (*UPLOAD_PURPOSES, "batch_output")
JOB_STATES = ("created", "pending", "running", "succeeded", "cancelled", "failed")
TERMINAL_STATES = frozenset({"succeeded", "cancelled", "failed"})
LOG_LEVELS = ("info", "warning", "error")
# ErrorCode enum.
ERROR_CODES = frozenset(
    {
        "conflict",
        "invalidPayload",
        "forbidden",
        "notFound",
        "unexpectedEntityState",
        "itemDoesAlreadyExist",
        "serviceUnavailable",
        "internalFailure",
        "quotaExceeded",
        "jsonlValidationFailed",
        "fileImportFailed",
        "tooManyRequests",
        "unauthorized",
        "contentFilter",
    }
)
INT32 = (-(2**31), 2**31 - 1)
# Azure's front door answers these itself, with the HTTP status as the code.
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription "
    "key when making requests to an API."
)
INVALID_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)
INVALID_TOKEN = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)


class AzureError(Exception):
    """Raised anywhere while handling so every failure leaves in Microsoft's envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        target: str | None = None,
        details: list[JSON] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error: JSON = {"code": code, "message": message}
        if target is not None:
            self.error["target"] = target
        if details:
            self.error["details"] = details
        if code == "invalidPayload":
            self.error["innererror"] = {"code": "invalidPayload"}

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return json_response({"error": self.error}, self.status, headers)


def invalid(message: str, target: str | None = None) -> AzureError:
    return AzureError(400, "invalidPayload", message, target)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(payload),
        content_type="application/json",
        headers=headers,
    )


def without_nulls(obj: JSON) -> JSON:
    """Azure leaves out a property with no value rather than sending null."""
    return {k: v for k, v in obj.items() if v is not None}


def _check_string(body: JSON, name: str, required: bool = False) -> None:
    if name not in body:
        if required:
            raise invalid(f"The '{name}' property is required.", name)
        return
    value = body[name]
    if not isinstance(value, str) or (required and not value):
        raise invalid(f"The '{name}' property must be a non-empty string.", name)


def _check_int32(value: Any, target: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not INT32[0] <= value <= INT32[1]:
        raise invalid(f"The '{target}' property must be a 32-bit integer.", target)


def validate_job_creation(files: Mapping[str, JSON], body: Any) -> None:
    """FineTuningJobCreation: model and training_file required, types as the spec says."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    _check_string(body, "model", required=True)
    _check_string(body, "training_file", required=True)
    _check_string(body, "validation_file")
    _check_string(body, "suffix")
    if "seed" in body:
        _check_int32(body["seed"], "seed")
    hyper = body.get("hyperparameters")
    if hyper is not None:
        if not isinstance(hyper, dict):
            raise invalid("The 'hyperparameters' property must be an object.", "hyperparameters")
        for name in ("n_epochs", "batch_size"):
            if name in hyper:
                _check_int32(hyper[name], f"hyperparameters.{name}")
        rate = hyper.get("learning_rate_multiplier")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
            target = "hyperparameters.learning_rate_multiplier"
            raise invalid(f"The '{target}' property must be a number.", target)
    for name in ("training_file", "validation_file"):
        if name in body:
            check_training_file(files, body[name], name)


def check_training_file(files: Mapping[str, JSON], file_id: str, target: str) -> None:
    meta = files.get(file_id)
    if meta is None:
        raise AzureError(
            400, "invalidPayload", f"The specified file '{file_id}' could not be found.", target
        )
    if meta["purpose"] != "fine-tune" or meta["status"] != "processed":
        raise invalid(
            f"The file '{file_id}' is not a processed file with purpose 'fine-tune'.", target
        )
