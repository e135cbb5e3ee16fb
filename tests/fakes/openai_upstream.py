"""A stateful, in-memory stand-in for OpenAI's files and fine-tuning HTTP API.

Gateway tests need an upstream that rejects what OpenAI rejects and answers in OpenAI's
exact shapes, so that a gateway bug fails a test instead of surfacing in production. What
OpenAI's spec refuses is in ``openai_rules``; this module holds the state, the routes and
the knobs tests turn (faults, stalls, lifecycle).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import secrets
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web

from tests.fakes.openai_rules import (
    EXPIRY_SECONDS,
    FILE_PURPOSES,
    JOB_STATUSES,
    JSON,
    MAX_SEED,
    STATUS_EVENTS,
    TERMINAL_STATUSES,
    UPLOAD_FIELDS,
    ApiError,
    bad,
    check_choice,
    check_range,
    json_response,
    validate_job_request,
)

DEFAULT_API_KEYS = frozenset({"sk-test-upstream"})
_T = TypeVar("_T")


def _new_id(prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(24))


@dataclass
class RecordedRequest:
    """What reached the upstream, so tests can assert on the gateway's outbound traffic."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any = None
    # JSON: raw body length; upload: bytes of the file part; faulted request: raw body drained
    body_bytes_received: int = 0
    form: dict[str, str] = field(default_factory=dict)  # upload's non-file fields + filename


@dataclass
class StoredFile:
    meta: JSON
    content: bytes
    sha256: str
    seq: int


@dataclass
class StoredJob:
    body: JSON
    seq: int
    model_name: str
    paused: bool = False
    events: list[JSON] = field(default_factory=list)
    checkpoints: list[JSON] = field(default_factory=list)


class FakeOpenAIState:
    """Everything the fake remembers, plus the knobs tests turn to drive it."""

    def __init__(
        self, api_keys: Iterable[str] = DEFAULT_API_KEYS, organization_id: str = "org-fake"
    ) -> None:
        self.api_keys = set(api_keys)
        self.organization_id = organization_id
        self.requests: list[RecordedRequest] = []
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, StoredJob] = {}
        # Idempotency-Key -> the job it created: OpenAI answers a repeat with that job.
        self.idempotent_jobs: dict[str, str] = {}
        # Timestamps are whole seconds; this counter keeps ordering deterministic within one.
        self.seq = itertools.count()
        self.faults: deque[tuple[int, JSON | bytes | None, dict[str, str]]] = deque()
        self.stalls: deque[float] = deque()

    def fail_next(
        self,
        status: int,
        body: JSON | bytes | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next `times` requests, on any route, answer `status` with no side effect."""
        self.faults.extend([(status, body, dict(headers or {}))] * times)

    def stall_next(self, seconds: float, times: int = 1) -> None:
        """Delay the next `times` requests. The request still takes effect afterwards, as it
        would on a slow upstream after the client gave up, so retries can be tested."""
        self.stalls.extend([seconds] * times)

    def add_file(
        self,
        filename: str,
        content: bytes,
        purpose: str = "fine-tune",
        expires_at: int | None = None,
        sha256: str | None = None,
    ) -> JSON:
        """Store a file; tests call it directly to start mid-story, skipping the upload."""
        meta: JSON = {
            "id": _new_id("file-"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        # OpenAIFile's expires_at and status_details are not nullable: absent when unset.
        if expires_at is not None:
            meta["expires_at"] = expires_at
        digest = sha256 or hashlib.sha256(content).hexdigest()
        self.files[meta["id"]] = StoredFile(meta, content, digest, next(self.seq))
        return meta

    def file(self, file_id: str) -> StoredFile:
        if file_id not in self.files:
            raise ApiError(404, f"No such File object: {file_id}", "id", "not_found")
        return self.files[file_id]

    def job(self, job_id: str) -> StoredJob:
        if job_id not in self.jobs:
            raise ApiError(
                404, f"Could not find fine-tune: {job_id}", "fine_tuning_job_id", "not_found"
            )
        return self.jobs[job_id]

    def add_event(
        self,
        job_id: str,
        message: str,
        level: str = "info",
        type_: str = "message",
        data: JSON | None = None,
    ) -> JSON:
        event = {
            "object": "fine_tuning.job.event",
            "id": _new_id("ftevent-"),
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "type": type_,
            "data": data or {},
        }
        self.job(job_id).events.append(event)
        return event

    def add_metrics(self, job_id: str, step: int, train_loss: float) -> JSON:
        """As OpenAI's trainer logs a step: a metrics event beside the job's messages."""
        data = {"step": step, "train_loss": train_loss}
        message = f"Step {step}: training loss={train_loss:.4f}"
        return self.add_event(job_id, message, "info", "metrics", data)

    def set_status(
        self,
        job_id: str,
        status: str,
        *,
        fine_tuned_model: str | None = None,
        trained_tokens: int | None = None,
        error: JSON | None = None,
    ) -> JSON:
        """Drive a job the way OpenAI's workers would, leaving the same traces behind."""
        if status not in JOB_STATUSES:
            raise ValueError(f"not a FineTuningJob status: {status}")
        job = self.job(job_id)
        body = job.body
        body["status"] = status
        if trained_tokens is not None:
            body["trained_tokens"] = trained_tokens
        if fine_tuned_model is not None or status == "succeeded":
            body["fine_tuned_model"] = fine_tuned_model or job.model_name
        if status in TERMINAL_STATUSES:
            job.paused = False
            body["finished_at"] = int(time.time())
        if status == "succeeded" and not body["result_files"]:
            results = self.add_file(
                "step_metrics.csv", b"step,train_loss\n1,1.0\n", "fine-tune-results"
            )
            body["result_files"] = [results["id"]]
        if status == "failed":
            body["error"] = error or {
                "code": "job_failed",
                "message": "The job failed.",
                "param": None,
            }
        level, message = STATUS_EVENTS[status]
        self.add_event(job_id, message.format(**body), level)
        return copy.deepcopy(body)

    def add_checkpoint(
        self, job_id: str, step_number: int, metrics: dict[str, float] | None = None
    ) -> JSON:
        job = self.job(job_id)
        checkpoint = {
            "object": "fine_tuning.job.checkpoint",
            "id": _new_id("ftckpt_"),
            "created_at": int(time.time()),
            "fine_tuning_job_id": job_id,
            "fine_tuned_model_checkpoint": f"{job.model_name}:ckpt-step-{step_number}",
            "step_number": step_number,
            "metrics": {"step": float(step_number)} if metrics is None else metrics,
        }
        job.checkpoints.append(checkpoint)
        return copy.deepcopy(checkpoint)


STATE_KEY = web.AppKey("fake_openai_state", FakeOpenAIState)
RECORD_KEY = web.RequestKey("fake_openai_record", RecordedRequest)


def _int_query(request: web.Request, name: str, default: int, high: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(
            f"Invalid '{name}': expected an integer, but got {raw!r}.", name, "invalid_type"
        ) from None
    check_range(value, (int, 1, False, high), name)
    return value


def _page(
    items: list[_T],
    request: web.Request,
    default_limit: int,
    ident: Callable[[_T], str],
    keep: Callable[[_T], bool] = lambda _: True,
    max_limit: int | None = None,
) -> tuple[list[_T], bool]:
    """Cursor pagination over an ordered list. The cursor is located before filtering, so a
    cursor that the filter would hide still marks a place."""
    limit = _int_query(request, "limit", default_limit, max_limit)
    if (after := request.query.get("after")) is not None:
        ids = [ident(item) for item in items]
        if after not in ids:
            raise bad(f"Invalid 'after': no object with id {after!r} in this list.", "after")
        items = items[ids.index(after) + 1 :]
    matching = [item for item in items if keep(item)]
    return matching[:limit], len(matching) > limit


def _list_body(data: list[JSON], has_more: bool, with_ids: bool) -> JSON:
    body: JSON = {"object": "list", "data": data, "has_more": has_more}
    if with_ids:
        body["first_id"] = data[0]["id"] if data else None
        body["last_id"] = data[-1]["id"] if data else None
    return body


async def _read_upload(request: web.Request) -> tuple[dict[str, str], tuple[str, bytes, str]]:
    """Stream the multipart body part by part, hashing as it goes, in whatever part order."""
    record, fields = request[RECORD_KEY], {}
    upload: tuple[str, bytes, str] | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise bad("Nested multipart bodies are not supported.")
        name = part.name or ""
        if name != "file" and name not in UPLOAD_FIELDS:
            raise bad(f"Unrecognized request argument supplied: {name}", name)
        if name == "file" and upload is not None:
            raise bad("Only one 'file' part is allowed.", "file")
        digest, content = hashlib.sha256(), bytearray()
        while chunk := await part.read_chunk():
            digest.update(chunk)
            content += chunk
            if name == "file":
                record.body_bytes_received += len(chunk)
            elif len(content) > 65536:
                raise bad(f"Form field {name!r} is too large.", name)
        if name == "file":
            upload = (part.filename or "file", bytes(content), digest.hexdigest())
        else:
            fields[name] = content.decode()
    record.form = {**fields, **({"filename": upload[0]} if upload else {})}
    if upload is None:
        raise bad("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    return fields, upload


async def _create_file(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise bad("Expected a multipart/form-data request body.")
    try:
        fields, (filename, content, sha256) = await _read_upload(request)
    except (ValueError, AssertionError) as exc:
        raise bad(f"Could not parse multipart form: {exc}") from None
    if (purpose := fields.get("purpose")) is None:
        raise bad("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    if purpose not in FILE_PURPOSES:
        raise bad(f"{purpose!r} is not one of {list(FILE_PURPOSES)} - 'purpose'", "purpose")
    now = int(time.time())
    expires_at = now + EXPIRY_SECONDS[1] if purpose == "batch" else None
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is not None or seconds is not None:
        check_choice(anchor, ("created_at",), "expires_after[anchor]")
        if seconds is None or not seconds.isdigit():
            raise bad(
                "Invalid 'expires_after[seconds]': expected an integer.",
                "expires_after[seconds]",
                "invalid_type",
            )
        check_range(
            int(seconds),
            (int, EXPIRY_SECONDS[0], False, EXPIRY_SECONDS[1]),
            "expires_after[seconds]",
        )
        expires_at = now + int(seconds)
    state = request.app[STATE_KEY]
    return json_response(state.add_file(filename, content, purpose, expires_at, sha256))


async def _list_files(request: web.Request) -> web.Response:
    state, order = request.app[STATE_KEY], request.query.get("order", "desc")
    check_choice(order, ("asc", "desc"), "order")
    ordered = sorted(
        state.files.values(), key=lambda f: (f.meta["created_at"], f.seq), reverse=order == "desc"
    )
    purpose = request.query.get("purpose")
    page, has_more = _page(
        ordered,
        request,
        10000,
        lambda f: str(f.meta["id"]),
        lambda f: purpose is None or f.meta["purpose"] == purpose,
        10000,
    )
    return json_response(_list_body([f.meta for f in page], has_more, with_ids=True))


async def _get_file(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].file(request.match_info["file_id"]).meta)


async def _file_content(request: web.Request) -> web.Response:
    content = request.app[STATE_KEY].file(request.match_info["file_id"]).content
    return web.Response(
        body=content,
        content_type="application/octet-stream",
        headers={"Content-Length": str(len(content))},
    )


async def _delete_file(request: web.Request) -> web.Response:
    state, file_id = request.app[STATE_KEY], request.match_info["file_id"]
    del state.files[state.file(file_id).meta["id"]]
    return json_response({"id": file_id, "object": "file", "deleted": True})


async def _create_job(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise bad(
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly.)"
        ) from None
    if not isinstance(body, dict):
        raise bad("Invalid request body: expected a JSON object.")
    validate_job_request(state.files, body)
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key and idempotency_key in state.idempotent_jobs:
        return json_response(state.jobs[state.idempotent_jobs[idempotency_key]].body)
    job_id, suffix, method = _new_id("ftjob-"), body.get("suffix"), body.get("method")
    hyper = {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}
    method_config = method.get(method["type"]) if method else None
    source = body.get("hyperparameters") or (method_config or {}).get("hyperparameters") or {}
    hyper.update({k: v for k, v in source.items() if k in hyper})
    seed = body["seed"] if body.get("seed") is not None else secrets.randbelow(MAX_SEED)
    job = {
        "object": "fine_tuning.job",
        "id": job_id,
        "model": body["model"],
        "created_at": int(time.time()),
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": state.organization_id,
        "result_files": [],
        "status": "validating_files",
        "validation_file": body.get("validation_file"),
        "training_file": body["training_file"],
        "hyperparameters": hyper,
        "trained_tokens": None,
        "error": None,
        "integrations": body.get("integrations") or [],
        "seed": seed,
        "estimated_finish": None,
        "method": method or {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "metadata": body.get("metadata"),
        "user_provided_suffix": suffix,
    }
    model_name = f"ft:{body['model']}:{state.organization_id}:{suffix or ''}:{job_id[6:14]}"
    state.jobs[job_id] = StoredJob(job, next(state.seq), model_name)
    if idempotency_key:
        state.idempotent_jobs[idempotency_key] = job_id
    state.add_event(job_id, "Created fine-tuning job")
    return json_response(job)


def _metadata_filter(request: web.Request) -> Callable[[StoredJob], bool]:
    """Read the deepObject-style `metadata[k]=v` filter; `metadata=null` means 'has none'."""
    if request.query.get("metadata") == "null":
        return lambda job: not job.body["metadata"]
    wanted = {
        k[len("metadata[") : -1]: v
        for k, v in request.query.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    return lambda job: all((job.body["metadata"] or {}).get(k) == v for k, v in wanted.items())


async def _list_jobs(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    newest_first = sorted(
        state.jobs.values(), key=lambda j: (j.body["created_at"], j.seq), reverse=True
    )
    page, has_more = _page(
        newest_first, request, 20, lambda j: str(j.body["id"]), _metadata_filter(request)
    )
    return json_response(_list_body([j.body for j in page], has_more, with_ids=False))


async def _get_job(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].job(request.match_info["job_id"]).body)


async def _cancel_job(request: web.Request) -> web.Response:
    state, job_id = request.app[STATE_KEY], request.match_info["job_id"]
    status = state.job(job_id).body["status"]
    if status in TERMINAL_STATUSES:
        word = {"succeeded": "completed", "cancelled": "been cancelled"}.get(status, status)
        raise bad(f"Job has already {word}: {job_id}")
    return json_response(state.set_status(job_id, "cancelled"))


def _pause_toggle(pause: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Pausing keeps status "running" (the spec's enum has no "paused") and flips a flag."""

    async def handler(request: web.Request) -> web.Response:
        state, job_id = request.app[STATE_KEY], request.match_info["job_id"]
        job = state.job(job_id)
        if pause and (job.body["status"] != "running" or job.paused):
            why = "already paused" if job.paused else f"{job.body['status']}, not running"
            raise bad(f"Job {job_id} cannot be paused: it is {why}.")
        if not pause and not job.paused:
            raise bad(f"Job {job_id} cannot be resumed: it is not paused.")
        job.paused = pause
        state.add_event(job_id, f"Fine-tuning job {'paused' if pause else 'resumed'}")
        return json_response(job.body)

    return handler


def _job_children(
    attr: str, default_limit: int, with_ids: bool
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Events and checkpoints page the same way: newest first, cursor is a child id."""

    async def handler(request: web.Request) -> web.Response:
        job = request.app[STATE_KEY].job(request.match_info["job_id"])
        items: list[JSON] = getattr(job, attr)[::-1]
        page, has_more = _page(items, request, default_limit, lambda item: str(item["id"]))
        return json_response(_list_body(page, has_more, with_ids))

    return handler


def _mask(key: str) -> str:
    return f"{key[:5]}***{key[-2:]}" if len(key) >= 12 else "***"


@web.middleware
async def _upstream_middleware(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Record, then misbehave if asked, then authenticate: tests must see every request,
    including those the fake refused."""
    state = request.app[STATE_KEY]
    record = RecordedRequest(
        request.method,
        request.path,
        dict(request.query.items()),
        {k.lower(): v for k, v in request.headers.items()},
    )
    state.requests.append(record)
    request[RECORD_KEY] = record
    try:
        if request.content_type == "application/json" and request.can_read_body:
            raw = await request.read()
            record.body_bytes_received = len(raw)
            try:
                record.json = json.loads(raw)
            except ValueError:
                record.json = None
        if state.stalls:
            await asyncio.sleep(state.stalls.popleft())
        if state.faults:
            status, body, headers = state.faults.popleft()
            while chunk := await request.content.readany():  # drain, as a real server would
                record.body_bytes_received += len(chunk)
            if isinstance(body, bytes):
                return web.Response(status=status, body=body, headers=headers)
            if body is not None:
                return json_response(body, status, headers)
            return ApiError(
                status,
                "The server had an error while processing your request. Sorry about that!",
                type_="server_error",
            ).response(headers)
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key "
                "in an Authorization header using Bearer auth (i.e. Authorization: "
                "Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if key.strip() not in state.api_keys:
            raise ApiError(
                401,
                f"Incorrect API key provided: {_mask(key.strip())}. You can find "
                "your API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:  # unknown route, wrong method, body too large
        message = (
            f"Invalid URL ({request.method} {request.path})"
            if exc.status in (404, 405)
            else exc.reason
        )
        return ApiError(exc.status, message).response()


async def _name_request(request: web.Request, response: web.StreamResponse) -> None:
    """OpenAI names every answer with its own request id, as ``x-request-id``."""
    response.headers["x-request-id"] = f"req_upstream_{len(request.app[STATE_KEY].requests)}"


def make_app(state: FakeOpenAIState) -> web.Application:
    """Build the fake as an app so tests can serve it with aiohttp's test server or any runner."""
    app = web.Application(middlewares=[_upstream_middleware])
    app[STATE_KEY] = state
    app.on_response_prepare.append(_name_request)
    jobs, job = "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{job_id}"
    app.add_routes(
        [
            web.post("/v1/files", _create_file),
            web.get("/v1/files", _list_files),
            web.get("/v1/files/{file_id}", _get_file),
            web.delete("/v1/files/{file_id}", _delete_file),
            web.get("/v1/files/{file_id}/content", _file_content),
            web.post(jobs, _create_job),
            web.get(jobs, _list_jobs),
            web.get(job, _get_job),
            web.post(f"{job}/cancel", _cancel_job),
            web.post(f"{job}/pause", _pause_toggle(pause=True)),
            web.post(f"{job}/resume", _pause_toggle(pause=False)),
            web.get(f"{job}/events", _job_children("events", 20, with_ids=False)),
            web.get(f"{job}/checkpoints", _job_children("checkpoints", 10, with_ids=True)),
        ]
    )
    return app
