"""OpenAI's response schemas for files and fine-tuning, and a checker every test runs.

The schemas are copied from OpenAI's OpenAPI document (version 2.3.0: ``OpenAIFile``,
``ListFilesResponse``, ``DeleteFileResponse``, ``FineTuningJob``, ``FineTuningJobEvent``,
``FineTuningJobCheckpoint``, the list responses, ``FineTuneMethod`` and its parts,
``ErrorResponse``) rather than read from it, because a clone that runs these tests does
not carry the document. Descriptions are left out; types, enums, bounds, ``required``
and, above all, *which fields may be null* are kept exactly.

The checker is strict where a typed client generated from the schema is strict: a
``null`` is accepted only where the schema says ``null`` (a Go, Rust or strict
TypeScript client rejects it anywhere else, even though the Python SDK hides it), and a
required field must be present. Properties the schema does not name are allowed, as
OpenAI's schema allows them (no ``additionalProperties: false`` on responses).

One deliberate exception, :data:`EMPTY_PAGE_IDS`: the files list requires ``first_id``
and ``last_id`` as strings, which an empty page cannot honestly give; the gateway
answers ``null`` there (there is no id to name) rather than inventing one.
"""

from __future__ import annotations

import re
from typing import Any

Schema = dict[str, Any]

NULL: Schema = {"type": "null"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, NULL]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
AUTO: Schema = {"type": "string", "enum": ["auto"]}


def _auto_or(schema: Schema) -> Schema:
    return {"oneOf": [AUTO, schema]}


BATCH_SIZE = _auto_or({"type": "integer", "minimum": 1, "maximum": 256})
LEARNING_RATE_MULTIPLIER = _auto_or({"type": "number", "minimum": 0, "exclusiveMinimum": True})
N_EPOCHS = _auto_or({"type": "integer", "minimum": 1, "maximum": 50})
BETA = _auto_or({"type": "number", "minimum": 0, "maximum": 2, "exclusiveMinimum": True})

METADATA = nullable({"type": "object", "additionalProperties": STRING})

SUPERVISED_HYPERPARAMETERS: Schema = {
    "type": "object",
    "properties": {
        "batch_size": BATCH_SIZE,
        "learning_rate_multiplier": LEARNING_RATE_MULTIPLIER,
        "n_epochs": N_EPOCHS,
    },
}
DPO_HYPERPARAMETERS: Schema = {
    "type": "object",
    "properties": {**SUPERVISED_HYPERPARAMETERS["properties"], "beta": BETA},
}
REINFORCEMENT_HYPERPARAMETERS: Schema = {
    "type": "object",
    "properties": {
        **SUPERVISED_HYPERPARAMETERS["properties"],
        "reasoning_effort": {"type": "string", "enum": ["default", "low", "medium", "high"]},
        "compute_multiplier": _auto_or({"type": "number"}),
        "eval_interval": _auto_or({"type": "integer"}),
        "eval_samples": _auto_or({"type": "integer"}),
    },
}
FINE_TUNE_METHOD: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["supervised", "dpo", "reinforcement"]},
        "supervised": {
            "type": "object",
            "properties": {"hyperparameters": SUPERVISED_HYPERPARAMETERS},
        },
        "dpo": {"type": "object", "properties": {"hyperparameters": DPO_HYPERPARAMETERS}},
        "reinforcement": {
            "type": "object",
            "required": ["grader"],
            "properties": {
                "grader": {"type": "object"},
                "hyperparameters": REINFORCEMENT_HYPERPARAMETERS,
            },
        },
    },
}
FINE_TUNING_INTEGRATION: Schema = {
    "type": "object",
    "required": ["type", "wandb"],
    "properties": {
        "type": {"type": "string", "enum": ["wandb"]},
        "wandb": {
            "type": "object",
            "required": ["project"],
            "properties": {
                "project": STRING,
                "name": nullable(STRING),
                "entity": nullable(STRING),
                "tags": {"type": "array", "items": STRING},
            },
        },
    },
}
FINE_TUNING_JOB: Schema = {
    "type": "object",
    "required": [
        "created_at",
        "error",
        "finished_at",
        "fine_tuned_model",
        "hyperparameters",
        "id",
        "model",
        "object",
        "organization_id",
        "result_files",
        "status",
        "trained_tokens",
        "training_file",
        "validation_file",
        "seed",
    ],
    "properties": {
        "id": STRING,
        "created_at": INTEGER,
        "error": nullable(
            {
                "type": "object",
                "required": ["code", "message", "param"],
                "properties": {"code": STRING, "message": STRING, "param": nullable(STRING)},
            }
        ),
        "fine_tuned_model": nullable(STRING),
        "finished_at": nullable(INTEGER),
        "hyperparameters": {
            "type": "object",
            "properties": {
                "batch_size": nullable(BATCH_SIZE),
                "learning_rate_multiplier": LEARNING_RATE_MULTIPLIER,
                "n_epochs": N_EPOCHS,
            },
        },
        "model": STRING,
        "object": {"type": "string", "enum": ["fine_tuning.job"]},
        "organization_id": STRING,
        "result_files": {"type": "array", "items": STRING},
        "status": {
            "type": "string",
            "enum": ["validating_files", "queued", "running", "succeeded", "failed", "cancelled"],
        },
        "trained_tokens": nullable(INTEGER),
        "training_file": STRING,
        "validation_file": nullable(STRING),
        "integrations": nullable(
            {"type": "array", "maxItems": 5, "items": FINE_TUNING_INTEGRATION}
        ),
        "seed": INTEGER,
        "estimated_finish": nullable(INTEGER),
        "method": FINE_TUNE_METHOD,
        "metadata": METADATA,
    },
}
FINE_TUNING_JOB_EVENT: Schema = {
    "type": "object",
    "required": ["id", "object", "created_at", "level", "message"],
    "properties": {
        "object": {"type": "string", "enum": ["fine_tuning.job.event"]},
        "id": STRING,
        "created_at": INTEGER,
        "level": {"type": "string", "enum": ["info", "warn", "error"]},
        "message": STRING,
        "type": {"type": "string", "enum": ["message", "metrics"]},
        "data": {"type": "object"},
    },
}
CHECKPOINT_METRIC_NAMES = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
FINE_TUNING_JOB_CHECKPOINT: Schema = {
    "type": "object",
    "required": [
        "created_at",
        "fine_tuning_job_id",
        "fine_tuned_model_checkpoint",
        "id",
        "metrics",
        "object",
        "step_number",
    ],
    "properties": {
        "id": STRING,
        "created_at": INTEGER,
        "fine_tuned_model_checkpoint": STRING,
        "step_number": INTEGER,
        "metrics": {
            "type": "object",
            "properties": {name: NUMBER for name in CHECKPOINT_METRIC_NAMES},
        },
        "fine_tuning_job_id": STRING,
        "object": {"type": "string", "enum": ["fine_tuning.job.checkpoint"]},
    },
}
OPENAI_FILE: Schema = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    "properties": {
        "id": STRING,
        "bytes": INTEGER,
        "created_at": INTEGER,
        "expires_at": INTEGER,
        "filename": STRING,
        "object": {"type": "string", "enum": ["file"]},
        # OpenAIFile's enum, plus "evals": CreateFileRequest accepts it, so a file
        # uploaded for evals is answered with the purpose it was given.
        "purpose": {
            "type": "string",
            "enum": [
                "assistants",
                "assistants_output",
                "batch",
                "batch_output",
                "fine-tune",
                "fine-tune-results",
                "vision",
                "user_data",
                "evals",
            ],
        },
        "status": {"type": "string", "enum": ["uploaded", "processed", "error"]},
        "status_details": STRING,
    },
}
LIST = {"type": "string", "enum": ["list"]}


def _list_of(item: Schema, **extra: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["object", "data", "has_more", *extra],
        "properties": {
            "object": LIST,
            "data": {"type": "array", "items": item},
            "has_more": BOOLEAN,
            **extra,
        },
    }


LIST_FILES = _list_of(OPENAI_FILE, first_id=STRING, last_id=STRING)
LIST_JOBS = _list_of(FINE_TUNING_JOB)
LIST_EVENTS = _list_of(FINE_TUNING_JOB_EVENT)
LIST_CHECKPOINTS = {
    **_list_of(FINE_TUNING_JOB_CHECKPOINT),
    "properties": {
        **_list_of(FINE_TUNING_JOB_CHECKPOINT)["properties"],
        "first_id": nullable(STRING),
        "last_id": nullable(STRING),
    },
}
DELETE_FILE: Schema = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {
        "id": STRING,
        "object": {"type": "string", "enum": ["file"]},
        "deleted": BOOLEAN,
    },
}
ERROR_RESPONSE: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "param", "code"],
            "properties": {
                "code": nullable(STRING),
                "message": STRING,
                "param": nullable(STRING),
                "type": STRING,
            },
        }
    },
}

# (method, path pattern, schema of a 2xx JSON answer)
_ID = r"[^/]+"
ROUTES: tuple[tuple[str, re.Pattern[str], Schema], ...] = tuple(
    (method, re.compile(pattern), schema)
    for method, pattern, schema in (
        ("POST", r"/v1/files", OPENAI_FILE),
        ("GET", r"/v1/files", LIST_FILES),
        ("GET", rf"/v1/files/{_ID}", OPENAI_FILE),
        ("DELETE", rf"/v1/files/{_ID}", DELETE_FILE),
        ("POST", r"/v1/fine_tuning/jobs", FINE_TUNING_JOB),
        ("GET", r"/v1/fine_tuning/jobs", LIST_JOBS),
        ("GET", rf"/v1/fine_tuning/jobs/{_ID}", FINE_TUNING_JOB),
        ("POST", rf"/v1/fine_tuning/jobs/{_ID}/(cancel|pause|resume)", FINE_TUNING_JOB),
        ("GET", rf"/v1/fine_tuning/jobs/{_ID}/events", LIST_EVENTS),
        ("GET", rf"/v1/fine_tuning/jobs/{_ID}/checkpoints", LIST_CHECKPOINTS),
    )
)
# (path of a list, fields): null allowed there when the page is empty. See the docstring.
EMPTY_PAGE_IDS = {"first_id", "last_id"}


def schema_for(method: str, path: str, status: int) -> Schema | None:
    """The schema an answer must meet, or None where OpenAI's schema says nothing
    (file content, the gateway's own routes, answers that are not JSON)."""
    if status >= 400:
        return ERROR_RESPONSE if path.startswith("/v1/") else None
    if not 200 <= status < 300:
        return None
    for route_method, pattern, schema in ROUTES:
        if route_method == method and pattern.fullmatch(path):
            return schema
    return None


def violations(value: Any, schema: Schema, where: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, each with its JSON path; empty when none."""
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        found = [violations(value, option, where) for option in options]
        if any(not problems for problems in found):
            return []
        if value is None:
            return [f"{where}: null where the schema allows no null"]
        # The most specific explanation: the option whose type matched, if any.
        typed = [p for p, o in zip(found, options, strict=True) if _type_ok(value, o)]
        return typed[0] if typed else [f"{where}: {_describe(value)} matches no allowed type"]
    if not _type_ok(value, schema):
        if value is None:
            return [f"{where}: null where the schema allows no null"]
        return [f"{where}: {_describe(value)} where the schema wants {schema.get('type')}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        problems += _bounds(value, schema, where)
    if isinstance(value, dict):
        problems += _object(value, schema, where)
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{where}: more than {schema['maxItems']} items")
        item = schema.get("items")
        if item is not None:
            for index, element in enumerate(value):
                problems += violations(element, item, f"{where}[{index}]")
    return problems


def answer_violations(method: str, path: str, status: int, body: Any) -> list[str]:
    """What is wrong with one gateway answer, against the schema for its route."""
    schema = schema_for(method, path, status)
    if schema is None:
        return []
    problems = violations(body, schema)
    if isinstance(body, dict) and body.get("data") == []:
        allowed = {f"$.{name}: null where the schema allows no null" for name in EMPTY_PAGE_IDS}
        problems = [p for p in problems if p not in allowed]
    return problems


def _object(value: dict[str, Any], schema: Schema, where: str) -> list[str]:
    problems = [
        f"{where}.{name}: required, missing"
        for name in schema.get("required", ())
        if name not in value
    ]
    properties: dict[str, Schema] = schema.get("properties", {})
    extra: Schema | None = schema.get("additionalProperties")
    for name, element in value.items():
        if name in properties:
            problems += violations(element, properties[name], f"{where}.{name}")
        elif extra is not None:
            problems += violations(element, extra, f"{where}.{name}")
    return problems


def _bounds(value: float, schema: Schema, where: str) -> list[str]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and (value <= low if schema.get("exclusiveMinimum") else value < low):
        return [f"{where}: {value} is below the minimum {low}"]
    if high is not None and value > high:
        return [f"{where}: {value} is above the maximum {high}"]
    return []


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _type_ok(value: Any, schema: Schema) -> bool:
    wanted = schema.get("type")
    if wanted is None:
        return value is not None
    if isinstance(value, bool) and wanted in ("integer", "number"):
        return False
    return isinstance(value, _PYTHON_TYPES[wanted])


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__
