"""The gateway's own OpenAPI 3.1 document, served at ``GET /openapi.json``.

Every schema in it is generated from the msgspec Structs the handlers decode and encode
(``gateway.models``, and ``gateway.errors`` for the error envelope), so the document
cannot drift from the wire format. The routes are listed once, in ``OPERATIONS``; a test
holds that list to the app's router both ways. OpenAPI 3.1, because msgspec writes JSON
Schema 2020-12 (``null`` as a type), which is 3.1's dialect.

Served without a gateway key, like ``/health``: it describes the API, and holds no
configuration, key or provider name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import msgspec
from aiohttp import web

from gateway import __version__
from gateway.errors import ErrorEnvelope
from gateway.handlers.common import _ID as ID_PATTERN
from gateway.handlers.common import _MAX_LIMIT as MAX_LIMIT
from gateway.models import (
    Checkpoint,
    FileDeleted,
    FileObject,
    FilePurpose,
    FineTuningJob,
    JobCreate,
    JobEvent,
    Page,
)
from gateway.webhooks import api as hooks

PATH = "/openapi.json"

Body = Literal["job", "upload"] | None
# What a 200 answer holds: a Struct's JSON (the Struct, or Page[Struct]), or one of these.
_MARKERS = ("bytes", "health", "metrics", "openapi")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    answer: Any  # a Struct, Page[Struct], or one of _MARKERS
    body: Body = None
    query: tuple[str, ...] = ()
    idempotent_create: bool = False
    # A JSON body decoded into this Struct (the webhooks API's).
    body_struct: Any = None
    # Chosen by routing headers (a provider's call); False: served by the gateway itself.
    routed: bool = True

    @property
    def public(self) -> bool:
        """Outside ``/v1``: no gateway key, no provider routing."""
        return not self.path.startswith("/v1/")


_JOBS = "/v1/fine_tuning/jobs"
_JOB = _JOBS + "/{fine_tuning_job_id}"
_FILES = "/v1/files"
_FILE = _FILES + "/{file_id}"
_PAGE = ("after", "limit")
_HOOKS = "/v1/webhook_endpoints"
_HOOK = _HOOKS + "/{webhook_endpoint_id}"

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/health", "health", "Liveness: 200 while the gateway serves", "health"),
    Operation("GET", PATH, "openapi", "This document", "openapi"),
    Operation(
        "GET", "/metrics", "metrics", "This worker process's metrics (Prometheus)", "metrics"
    ),
    Operation(
        "POST", _JOBS, "createFineTuningJob", "Create a fine-tuning job", FineTuningJob,
        body="job", idempotent_create=True,
    ),
    Operation(
        "GET", _JOBS, "listFineTuningJobs", "List fine-tuning jobs, newest first",
        Page[FineTuningJob], query=(*_PAGE, "metadata"),
    ),
    Operation("GET", _JOB, "retrieveFineTuningJob", "Retrieve a job", FineTuningJob),
    Operation("POST", _JOB + "/cancel", "cancelFineTuningJob", "Cancel a job", FineTuningJob),
    Operation("POST", _JOB + "/pause", "pauseFineTuningJob", "Pause a job", FineTuningJob),
    Operation("POST", _JOB + "/resume", "resumeFineTuningJob", "Resume a job", FineTuningJob),
    Operation(
        "GET", _JOB + "/events", "listFineTuningEvents", "A job's events, newest first",
        Page[JobEvent], query=_PAGE,
    ),
    Operation(
        "GET", _JOB + "/checkpoints", "listFineTuningJobCheckpoints", "A job's checkpoints",
        Page[Checkpoint], query=_PAGE,
    ),
    Operation("POST", _FILES, "createFile", "Upload a file (streamed)", FileObject, "upload"),
    Operation(
        "GET", _FILES, "listFiles", "List files", Page[FileObject],
        query=(*_PAGE, "order", "purpose"),
    ),
    Operation("GET", _FILE, "retrieveFile", "Retrieve a file's metadata", FileObject),
    Operation("DELETE", _FILE, "deleteFile", "Delete a file", FileDeleted),
    Operation("GET", _FILE + "/content", "downloadFile", "A file's bytes (streamed)", "bytes"),
    Operation(
        "POST", _HOOKS, "createWebhookEndpoint", "Create a webhook endpoint (its secret shown "
        "once)", hooks.EndpointWithSecret, body_struct=hooks.CreateBody, routed=False,
    ),
    Operation(
        "GET", _HOOKS, "listWebhookEndpoints", "The caller's webhook endpoints, newest first",
        hooks.EndpointList, query=_PAGE, routed=False,
    ),
    Operation(
        "GET", _HOOK, "retrieveWebhookEndpoint", "Retrieve a webhook endpoint", hooks.Endpoint,
        routed=False,
    ),
    Operation(
        "POST", _HOOK, "updateWebhookEndpoint", "Update a webhook endpoint", hooks.Endpoint,
        body_struct=hooks.UpdateBody, routed=False,
    ),
    Operation(
        "DELETE", _HOOK, "deleteWebhookEndpoint", "Delete a webhook endpoint", hooks.Deleted,
        routed=False,
    ),
    Operation(
        "POST", _HOOK + "/rotate_secret", "rotateWebhookEndpointSecret",
        "A new signing secret (the old one honoured 24 h if asked)", hooks.EndpointWithSecret,
        body_struct=hooks.RotateBody, routed=False,
    ),
    Operation(
        "POST", _HOOK + "/test", "testWebhookEndpoint", "Send a sample event now",
        hooks.TestResult, body_struct=hooks.TestBody, routed=False,
    ),
    Operation(
        "GET", "/v1/webhook_event_types", "listWebhookEventTypes", "The event types sent",
        hooks.EventTypeList, routed=False,
    ),
)  # fmt: skip

_ROUTING_HEADERS = {
    "x-portkey-virtual-key": "A virtual key of the config: provider, credentials, options.",
    "x-portkey-provider": "A provider slug; its credentials then come from provider headers "
    "(x-portkey-aws-*, x-portkey-vertex-*, x-portkey-azure-*, Authorization), where the "
    "config accepts credentials in requests.",
    "x-portkey-config": "The name of a config in the config file, or inline JSON "
    '({"provider": ..., "api_key": ...} or {"virtual_key": ...}).',
    "x-portkey-custom-host": "The provider's base URL; only hosts on the config's "
    "routing.custom_host_allowlist.",
}
_QUERY: dict[str, dict[str, Any]] = {
    "after": {"schema": {"type": "string"}, "description": "Id of the last item seen."},
    "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
    "order": {"schema": {"enum": ["asc", "desc"]}},
    "purpose": {"schema": {"type": "string"}, "description": "Only files of this purpose."},
    "metadata": {
        "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        "style": "deepObject",
        "explode": True,
        "description": "metadata[key]=value: only jobs with this metadata.",
    },
}
_PATH_PARAMS = ("fine_tuning_job_id", "file_id", "webhook_endpoint_id")


def document() -> bytes:
    """The document as served: built once, then the same bytes for every request."""
    return _encoded()


@cache
def _encoded() -> bytes:
    answers = [op.answer for op in OPERATIONS if op.answer not in _MARKERS]
    bodies = [op.body_struct for op in OPERATIONS if op.body_struct is not None]
    structs: list[Any] = list(dict.fromkeys([JobCreate, ErrorEnvelope, *answers, *bodies]))
    refs, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    schemas = dict(zip(structs, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "finetune-gateway",
            "version": __version__,
            "description": "OpenAI's fine-tuning and files API in front of every provider. "
            "Errors are OpenAI's envelope {error: {message, type, param, code}}.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "parameters": _parameters(),
            "responses": {
                "Error": {
                    "description": "An error, in OpenAI's envelope",
                    "content": {"application/json": {"schema": schemas[ErrorEnvelope]}},
                }
            },
            "securitySchemes": {
                "gatewayKey": {"type": "http", "scheme": "bearer"},
                "portkeyApiKey": {"type": "apiKey", "in": "header", "name": "x-portkey-api-key"},
            },
        },
        "security": [{"gatewayKey": []}, {"portkeyApiKey": []}],
    }
    return msgspec.json.encode(doc)


def _operation(op: Operation, schemas: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "responses": {"200": _answer(op.answer, schemas)},
    }
    if op.public:
        out["security"] = []  # no gateway key needed
    else:
        out["responses"] |= {"4XX": _ref("responses", "Error"), "5XX": _ref("responses", "Error")}
        names = [n for n in _PATH_PARAMS if "{" + n + "}" in op.path]
        names += [f"query.{n}" for n in op.query]
        names += list(_ROUTING_HEADERS) if op.routed else []
        if op.idempotent_create:
            names.append("Idempotency-Key")
        out["parameters"] = [_ref("parameters", name) for name in names]
    if op.body == "job":
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas[JobCreate]}},
        }
    elif op.body_struct is not None:
        out["requestBody"] = {
            "required": op.body_struct is not hooks.RotateBody,
            "content": {"application/json": {"schema": schemas[op.body_struct]}},
        }
    elif op.body == "upload":
        out["requestBody"] = {"required": True, "content": {"multipart/form-data": _UPLOAD}}
    return out


# Fields before the file, as every SDK sends them: the file then streams straight through.
_UPLOAD = {
    "schema": {
        "type": "object",
        "properties": {
            "purpose": msgspec.json.schema(FilePurpose),
            "file": {"type": "string", "format": "binary"},
        },
        "required": ["purpose", "file"],
    },
    "encoding": {"file": {"contentType": "application/octet-stream"}},
}


def _answer(answer: Any, schemas: dict[Any, Any]) -> dict[str, Any]:
    content: dict[str, Any]
    if answer == "bytes":
        content = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    elif answer == "health":
        schema = {"type": "object", "properties": {"status": {"const": "ok"}}}
        content = {"application/json": {"schema": schema | {"required": ["status"]}}}
    elif answer == "metrics":
        content = {"text/plain": {"schema": {"type": "string"}}}
    elif answer == "openapi":
        content = {"application/json": {"schema": {"type": "object"}}}
    else:
        content = {"application/json": {"schema": schemas[answer]}}
    return {"description": "OK", "content": content}


def _parameters() -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in _PATH_PARAMS:
        schema = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}
        params[name] = {"name": name, "in": "path", "required": True, "schema": schema}
    for name, spec in _QUERY.items():
        params[f"query.{name}"] = {"name": name, "in": "query", "required": False, **spec}
    for name, text in _ROUTING_HEADERS.items():
        params[name] = {
            "name": name,
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": text,
        }
    params["Idempotency-Key"] = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The same key with the same body returns the first job, never a second.",
    }
    return params


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=document(), content_type="application/json")
