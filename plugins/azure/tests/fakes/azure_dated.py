"""A stateful, in-memory stand-in for Azure OpenAI's dated API (``/openai/...``, 2024-10-21).

It answers in Azure's shapes, not OpenAI's (``organisation_id``, states ``created`` to
``failed``, event level ``warning``, ``-1`` for hyperparameters Azure picks, nulls left
out, 201 on create, no paging on the files list), and refuses what Azure refuses in
Microsoft's error envelope: so a gateway that forgets a mapping fails a test. The rules
are in ``azure_dated_rules``; this module holds the state, the routes and the knobs
tests turn (lifecycle, events, checkpoints, faults).
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from plugins.azure.tests.fakes.azure_dated_rules import (
    API_VERSION,
    INVALID_KEY,
    INVALID_TOKEN,
    JOB_STATES,
    JSON,
    LIST_PURPOSES,
    LOG_LEVELS,
    MISSING_KEY,
    TERMINAL_STATES,
    UPLOAD_PURPOSES,
    AzureError,
    invalid,
    json_response,
    validate_job_creation,
    without_nulls,
)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Recorded:
    """What reached the fake, so tests can assert on the gateway's outbound traffic."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)  # upload's non-file fields


@dataclass
class StoredJob:
    body: JSON
    seq: int
    events: list[JSON] = field(default_factory=list)
    checkpoints: list[JSON] = field(default_factory=list)


RESULTS_CSV = (
    b"step,train_loss,train_mean_token_accuracy,valid_loss,validation_mean_token_accuracy,"
    b"full_valid_loss,full_valid_mean_token_accuracy\n"
    b"1,1.25,0.5,1.5,0.375,,\n"
    b"2,0.75,0.625,1.0,0.5,0.875,0.5625\n"
)


class FakeAzureDatedState:
    """Everything the fake remembers, plus the knobs tests turn to drive it."""

    def __init__(self, api_keys: Iterable[str] = (), ad_tokens: Iterable[str] = ()) -> None:
        self.api_keys = set(api_keys)
        self.ad_tokens = set(ad_tokens)
        self.requests: list[Recorded] = []
        self.files: dict[str, JSON] = {}
        self.contents: dict[str, bytes] = {}
        self.jobs: dict[str, StoredJob] = {}
        self.seq = itertools.count()
        self.faults: deque[tuple[int, JSON | bytes, dict[str, str]]] = deque()
        # The result file a succeeded job gets: Azure's results.csv, one row per step
        # (the full_* columns filled at the end of each epoch only).
        self.results_csv = RESULTS_CSV

    def fail_next(
        self, status: int, body: JSON | bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Make the next request, on any route, answer ``status`` with no side effect."""
        self.faults.append((status, body, dict(headers or {})))

    def add_file(
        self,
        filename: str,
        content: bytes,
        purpose: str = "fine-tune",
        status: str = "processed",
        created_at: int | None = None,
    ) -> JSON:
        meta: JSON = {
            "object": "file",
            "id": _new_id("file-"),
            "created_at": int(time.time()) if created_at is None else created_at,
            "bytes": len(content),
            "filename": filename,
            "purpose": purpose,
            "status": status,
        }
        self.files[meta["id"]] = meta
        self.contents[meta["id"]] = content
        return copy.deepcopy(meta)

    def file(self, file_id: str) -> JSON:
        if file_id not in self.files:
            raise AzureError(404, "notFound", f"File with id '{file_id}' was not found.")
        return self.files[file_id]

    def job(self, job_id: str) -> StoredJob:
        if job_id not in self.jobs:
            raise AzureError(
                404, "notFound", f"The specified fine-tuning job '{job_id}' could not be found."
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
        assert level in LOG_LEVELS, level
        event = without_nulls(
            {
                "object": "fine_tuning.job.event",
                "id": _new_id("ftevent-"),
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "type": type_,
                "data": data,
            }
        )
        self.job(job_id).events.append(event)
        return copy.deepcopy(event)

    def add_checkpoint(self, job_id: str, step: int, metrics: dict[str, float]) -> JSON:
        checkpoint = {
            "object": "fine_tuning.job.checkpoint",
            "id": _new_id("ftchkpt-"),
            "created_at": int(time.time()),
            "fine_tuned_model_checkpoint": f"{self.job(job_id).body['model']}.ft-ckpt-{step}",
            "fine_tuning_job_id": job_id,
            "step_number": step,
            "metrics": metrics,
        }
        self.job(job_id).checkpoints.append(checkpoint)
        return copy.deepcopy(checkpoint)

    def set_status(self, job_id: str, status: str, error: JSON | None = None) -> JSON:
        """Drive a job the way Azure's workers would, leaving the same traces."""
        assert status in JOB_STATES, status
        body = self.job(job_id).body
        body["status"] = status
        if status in TERMINAL_STATES:
            body["finished_at"] = int(time.time())
        if status == "succeeded":
            body["fine_tuned_model"] = f"{body['model']}.ft-{job_id[6:38]}"
            body["trained_tokens"] = 1234
            results = self.add_file("results.csv", self.results_csv, "fine-tune-results")
            body["result_files"] = [results["id"]]
        if status == "failed":
            body["error"] = error or {"code": "internalFailure", "message": "Training failed."}
        level = "error" if status == "failed" else "info"
        self.add_event(job_id, f"Job entered state {status}", level)
        return copy.deepcopy(body)


STATE = web.AppKey("fake_azure_dated_state", FakeAzureDatedState)
RECORD = web.RequestKey("fake_azure_dated_record", Recorded)


def _page(request: web.Request, items: list[JSON], default_limit: int) -> JSON:
    """``after``/``limit`` paging, newest first, as the jobs, events and checkpoints lists do."""
    raw = request.query.get("limit", str(default_limit))
    if not raw.isdigit() or int(raw) < 1:  # an int32 in the spec; below 1 makes no page
        raise invalid("The 'limit' parameter must be a positive integer.", "limit")
    if (after := request.query.get("after")) is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise invalid(f"No item with id '{after}' to page after.", "after")
        items = items[ids.index(after) + 1 :]
    return {"object": "list", "data": items[: int(raw)], "has_more": len(items) > int(raw)}


async def _upload(request: web.Request) -> web.Response:
    state, record = request.app[STATE], request[RECORD]
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        data = await part.read()
        if part.name == "file":
            upload = (part.filename or "file", bytes(data))
        else:
            fields[part.name or ""] = bytes(data).decode()
    record.form = fields
    purpose = fields.get("purpose")
    if purpose is None:
        raise invalid("The 'purpose' form field is required.", "purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise invalid(f"The purpose '{purpose}' is not supported.", "purpose")
    if upload is None:
        raise invalid("The 'file' form field is required.", "file")
    # Azure imports the file after answering: "pending" now, "processed" on the next call.
    meta = state.add_file(upload[0], upload[1], purpose, status="pending")
    location = f"{request.url.origin()}/openai/files/{meta['id']}"
    return json_response(meta, 201, {"Location": location})


async def _list_files(request: web.Request) -> web.Response:
    purpose = request.query.get("purpose")
    if purpose is not None and purpose not in LIST_PURPOSES:
        raise invalid(f"The purpose '{purpose}' is not supported.", "purpose")
    files = [f for f in request.app[STATE].files.values() if purpose in (None, f["purpose"])]
    return json_response({"object": "list", "data": files})  # no has_more: no paging


async def _get_file(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].file(request.match_info["file_id"]))


async def _delete_file(request: web.Request) -> web.Response:
    state, file_id = request.app[STATE], request.match_info["file_id"]
    state.file(file_id)
    del state.files[file_id], state.contents[file_id]
    return json_response({"object": "file", "deleted": True, "id": file_id})


async def _file_content(request: web.Request) -> web.Response:
    state, file_id = request.app[STATE], request.match_info["file_id"]
    state.file(file_id)
    return web.Response(body=state.contents[file_id], content_type="application/octet-stream")


async def _create_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = request[RECORD].json
    validate_job_creation(state.files, body)
    given = body.get("hyperparameters") or {}
    job_id = _new_id("ftjob-")
    job = without_nulls(
        {
            "object": "fine_tuning.job",
            "id": job_id,
            "created_at": int(time.time()),
            "status": "created",
            "model": body["model"],
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "result_files": [],
            "organisation_id": "org-contoso",
            # -1 is how Azure says "the service picks this one".
            "hyperparameters": {
                "n_epochs": given.get("n_epochs", -1),
                "batch_size": given.get("batch_size", -1),
                "learning_rate_multiplier": given.get("learning_rate_multiplier", -1),
            },
            "suffix": body.get("suffix"),
            "seed": body.get("seed", 42),
        }
    )
    state.jobs[job_id] = StoredJob(job, next(state.seq))
    state.add_event(job_id, "Job enqueued. Waiting for jobs ahead to complete.")
    location = f"{request.url.origin()}/openai/fine_tuning/jobs/{job_id}"
    return json_response(job, 201, {"Location": location})


async def _list_jobs(request: web.Request) -> web.Response:
    jobs = sorted(request.app[STATE].jobs.values(), key=lambda j: j.seq, reverse=True)
    return json_response(_page(request, [j.body for j in jobs], 20))


async def _get_job(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].job(request.match_info["job_id"]).body)


async def _cancel_job(request: web.Request) -> web.Response:
    state, job_id = request.app[STATE], request.match_info["job_id"]
    status = state.job(job_id).body["status"]
    if status in TERMINAL_STATES:
        raise AzureError(
            409, "unexpectedEntityState", f"The job cannot be cancelled: it is {status}."
        )
    return json_response(state.set_status(job_id, "cancelled"))


async def _delete_job(request: web.Request) -> web.Response:
    state, job_id = request.app[STATE], request.match_info["job_id"]
    state.job(job_id)
    del state.jobs[job_id]
    return web.Response(status=204)


def _children(attr: str, default_limit: int) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        job = request.app[STATE].job(request.match_info["job_id"])
        return json_response(_page(request, getattr(job, attr)[::-1], default_limit))

    return handler


def _authenticate(state: FakeAzureDatedState, request: web.Request) -> None:
    if (key := request.headers.get("api-key")) is not None:
        if key not in state.api_keys:
            raise AzureError(401, "401", INVALID_KEY)
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        if token.strip() not in state.ad_tokens:
            raise AzureError(401, "401", INVALID_TOKEN)
        return
    raise AzureError(401, "401", MISSING_KEY)


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Record, misbehave if asked, authenticate, check ``api-version``; Azure's envelope."""
    state = request.app[STATE]
    record = Recorded(
        request.method,
        request.path,
        dict(request.query),
        {k.lower(): v for k, v in request.headers.items()},
    )
    state.requests.append(record)
    request[RECORD] = record
    try:
        if request.content_type == "application/json" and request.can_read_body:
            try:
                record.json = json.loads(await request.read())
            except ValueError:
                raise invalid("The request body is not valid JSON.") from None
        for meta in state.files.values():  # imports finish between calls
            if meta["status"] == "pending":
                meta["status"] = "processed"
        if state.faults:
            status, body, headers = state.faults.popleft()
            if isinstance(body, bytes):
                return web.Response(status=status, body=body, headers=headers)
            return json_response(body, status, headers)
        _authenticate(state, request)
        version = request.query.get("api-version")
        if version is None:
            raise AzureError(404, "404", "Resource not found")
        if version != API_VERSION:
            raise AzureError(400, "BadRequest", "API version not supported")
        return await handler(request)
    except AzureError as exc:
        return exc.response()
    except web.HTTPException as exc:  # no such route (pause, resume) or method
        if exc.status in (404, 405):
            return AzureError(404, "404", "Resource not found").response()
        raise


def make_app(state: FakeAzureDatedState) -> web.Application:
    app = web.Application(middlewares=[_middleware])
    app[STATE] = state
    jobs, job = "/openai/fine_tuning/jobs", "/openai/fine_tuning/jobs/{job_id}"
    app.add_routes(
        [
            web.post("/openai/files", _upload),
            web.get("/openai/files", _list_files),
            web.get("/openai/files/{file_id}", _get_file),
            web.delete("/openai/files/{file_id}", _delete_file),
            web.get("/openai/files/{file_id}/content", _file_content),
            web.post(jobs, _create_job),
            web.get(jobs, _list_jobs),
            web.get(job, _get_job),
            web.delete(job, _delete_job),
            web.post(f"{job}/cancel", _cancel_job),
            web.get(f"{job}/events", _children("events", 20)),
            web.get(f"{job}/checkpoints", _children("checkpoints", 10)),
        ]
    )
    return app
