"""A stateful fake of Together AI's fine-tuning API, true to its OpenAPI description.

Paths under ``/v1``: ``/fine-tunes`` (create, list), ``/fine-tunes/{id}`` (retrieve),
``/cancel``, ``/events``, ``/checkpoints``, ``/metrics``, ``/fine-tunes/models/limits``;
``/files`` list, retrieve, content, delete. Upload is Together's SDK flow (not in the
spec): ``POST /files?purpose&file_name&file_type`` answers 302 with ``Location`` (a signed
URL, here ``/signed/{id}``) and ``X-Together-File-Id``; ``PUT`` the bytes there; then
``POST /files/{id}/preprocess``. Times are ISO 8601 strings on jobs, events and
checkpoints, Unix seconds on files, as in the spec. Lists answer ``{"data": [...]}``
with no paging.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

STATUSES = (
    "pending", "queued", "running", "compressing", "uploading",
    "cancel_requested", "cancelled", "error", "completed",
)  # fmt: skip
LORA_MAX_RANK = {"meta-llama/Meta-Llama-3.1-8B-Instruct-Reference": 64}


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None


@dataclass
class FakeTogetherState:
    api_key: str
    now: int = 1_760_000_000
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    # Answers to give instead of the real one, by "METHOD path".
    override: dict[str, tuple[int, Any]] = field(default_factory=dict)
    # Errors to answer the next requests with, on any route, with no side effect.
    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def fail_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.faults.append((status, dict(headers or {})))

    def add_file(self, filename: str, content: bytes) -> str:
        """A file already uploaded and preprocessed, to start a test mid-story."""
        file_id = f"file-{uuid.uuid4()}"
        self.files[file_id] = {
            "id": file_id, "object": "file", "created_at": self.tick(), "filename": filename,
            "bytes": len(content), "purpose": "fine-tune", "FileType": "jsonl",
            "Processed": True, "LineCount": content.count(b"\n"),
        }  # fmt: skip
        self.content[file_id] = content
        return file_id

    def add_metrics(self, job_id: str, step: int, train_loss: float) -> None:
        """One row of ``GET /fine-tunes/{id}/metrics``, as the spec's sample names them."""
        self.metrics[job_id].append(
            {"train/loss": train_loss, "train/global_step": step, "train/learning_rate": 1e-5}
        )

    def tick(self) -> int:
        self.now += 1
        return self.now

    def set_status(self, job_id: str, status: str) -> None:
        assert status in STATUSES
        job = self.jobs[job_id]
        job["status"] = status
        job["updated_at"] = iso(self.tick())
        if status == "completed":
            job["model_output_name"] = f"user/{job['model'].split('/')[-1]}-{job_id[-6:]}"

    def add_event(self, job_id: str, message: str, *, level: str | None = "info") -> None:
        number = len(self.events[job_id])
        self.events[job_id].append(
            {
                "object": "fine-tune-event", "created_at": iso(self.tick()), "level": level,
                "message": message, "type": "job_start", "param_count": 0, "token_count": 0,
                "total_steps": 0, "wandb_url": "", "step": 0, "checkpoint_path": "",
                "model_path": "", "training_offset": 0, "hash": f"h{number}",
            }
        )  # fmt: skip

    def add_checkpoint(self, job_id: str, step: int) -> None:
        self.checkpoints[job_id].append(
            {"step": step, "created_at": iso(self.tick()),
             "path": f"ckpt/{job_id}/{step}", "checkpoint_type": "Intermediate"}
        )  # fmt: skip


def _error(status: int, message: str, code: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": code, "param": None, "code": None}}
    return web.json_response(body, status=status)


def make_app(state: FakeTogetherState) -> web.Application:
    routes = web.RouteTableDef()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        body = None
        if request.can_read_body and request.content_type == "application/json":
            body = await request.json()
        state.requests.append(
            Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        if state.faults:
            status, headers = state.faults.pop(0)
            failed = _error(status, f"fake Together fault {status}", "server_error")
            failed.headers.update(headers)
            return failed
        signed = request.path.startswith("/signed/")
        if not signed and request.headers.get("Authorization") != f"Bearer {state.api_key}":
            return _error(401, "Invalid API key provided", "authentication_error")
        # Overrides match the route's pattern ("GET /v1/fine-tunes/{id}"), so tests need
        # not know the generated ids.
        pattern = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        )
        if (found := state.override.get(f"{request.method} {pattern}")) is not None:
            status, answer = found
            if isinstance(answer, bytes):
                return web.Response(status=status, body=answer, content_type="application/json")
            return web.json_response(answer, status=status)
        return await handler(request)

    def job_or_404(request: web.Request) -> dict[str, Any]:
        job = state.jobs.get(request.match_info["id"])
        if job is None:
            raise web.HTTPNotFound(
                text='{"error": {"message": "Fine-tune job not found"}}',
                content_type="application/json",
            )
        return job

    @routes.post("/v1/fine-tunes")
    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        for name in ("training_file", "model"):
            if name not in body:
                return _error(400, f"'{name}' is required")
        if body["training_file"] not in state.files:
            return _error(400, f"Training file {body['training_file']} not found")
        job_id = f"ft-{uuid.uuid4()}"
        now = iso(state.tick())
        job = {
            "id": job_id, "status": "pending", "created_at": now, "updated_at": now,
            "model": body["model"], "training_file": body["training_file"],
            "validation_file": body.get("validation_file", ""),
            "n_epochs": body.get("n_epochs", 1), "batch_size": body.get("batch_size", "max"),
            "learning_rate": body.get("learning_rate", 1e-5), "suffix": body.get("suffix"),
            "random_seed": body.get("random_seed"), "user_id": "user-42",
            "training_method": body.get("training_method", {"method": "sft"}),
            "training_type": body.get("training_type"), "token_count": 1234, "events": [],
        }  # fmt: skip
        state.jobs[job_id] = job
        state.events[job_id] = []
        state.checkpoints[job_id] = []
        state.metrics[job_id] = []
        state.add_event(job_id, "Fine tune request created")
        return web.json_response(job)

    @routes.get("/v1/fine-tunes")
    async def list_jobs(request: web.Request) -> web.Response:
        return web.json_response({"data": list(state.jobs.values())})

    @routes.get("/v1/fine-tunes/models/limits")
    async def limits(request: web.Request) -> web.Response:
        name = request.query.get("model_name", "")
        rank = LORA_MAX_RANK.get(name)
        answer: dict[str, Any] = {
            "model_name": name, "max_num_epochs": 20, "max_num_evals": 100,
            "max_learning_rate": 1.0, "min_learning_rate": 1e-8, "supports_vision": False,
            "supports_tools": False, "supports_reasoning": False, "merge_output_lora": True,
            "full_training": {"max_batch_size": 96, "max_batch_size_dpo": 48, "min_batch_size": 8},
        }  # fmt: skip
        if rank is not None:
            answer["lora_training"] = {
                "max_batch_size": 128, "max_batch_size_dpo": 64, "min_batch_size": 8,
                "max_rank": rank, "target_modules": ["q_proj", "v_proj"],
            }  # fmt: skip
        return web.json_response(answer)

    @routes.get("/v1/fine-tunes/{id}")
    async def retrieve(request: web.Request) -> web.Response:
        return web.json_response(job_or_404(request))

    @routes.post("/v1/fine-tunes/{id}/cancel")
    async def cancel(request: web.Request) -> web.Response:
        job = job_or_404(request)
        if job["status"] in ("completed", "error", "cancelled"):
            return _error(400, f"Job is already {job['status']} and cannot be cancelled")
        state.set_status(job["id"], "cancel_requested")
        return web.json_response(job)

    @routes.get("/v1/fine-tunes/{id}/events")
    async def events(request: web.Request) -> web.Response:
        return web.json_response({"data": state.events[job_or_404(request)["id"]]})

    @routes.get("/v1/fine-tunes/{id}/checkpoints")
    async def checkpoints(request: web.Request) -> web.Response:
        return web.json_response({"data": state.checkpoints[job_or_404(request)["id"]]})

    @routes.get("/v1/fine-tunes/{id}/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.json_response({"metrics": state.metrics[job_or_404(request)["id"]]})

    @routes.post("/v1/files")
    async def start_upload(request: web.Request) -> web.Response:
        for name in ("purpose", "file_name", "file_type"):
            if name not in request.query:
                return _error(400, f"'{name}' is required")
        file_id = f"file-{uuid.uuid4()}"
        state.files[file_id] = {
            "id": file_id, "object": "file", "created_at": state.tick(),
            "filename": request.query["file_name"], "bytes": 0,
            "purpose": request.query["purpose"], "FileType": request.query["file_type"],
            "Processed": False, "LineCount": 0,
        }  # fmt: skip
        location = f"{request.scheme}://{request.host}/signed/{file_id}?sig=abc"
        raise web.HTTPFound(location, headers={"X-Together-File-Id": file_id})

    @routes.put("/signed/{id}")
    async def put_bytes(request: web.Request) -> web.Response:
        file = state.files.get(request.match_info["id"])
        if file is None or request.query.get("sig") != "abc":
            return web.Response(status=403, text="bad signature")
        data = await request.read()
        state.content[file["id"]] = data
        file["bytes"] = len(data)
        return web.Response(status=200)

    @routes.post("/v1/files/{id}/preprocess")
    async def preprocess(request: web.Request) -> web.Response:
        file = state.files.get(request.match_info["id"])
        if file is None:
            return _error(404, "File not found")
        file["Processed"] = True
        return web.json_response({"id": file["id"], "status": "processed"})

    @routes.get("/v1/files")
    async def list_files(request: web.Request) -> web.Response:
        return web.json_response({"data": list(state.files.values())})

    @routes.get("/v1/files/{id}")
    async def get_file(request: web.Request) -> web.Response:
        file = state.files.get(request.match_info["id"])
        return web.json_response(file) if file else _error(404, "File not found")

    @routes.get("/v1/files/{id}/content")
    async def content(request: web.Request) -> web.Response:
        if request.match_info["id"] not in state.files:
            return _error(404, "File not found")
        return web.Response(
            body=state.content.get(request.match_info["id"], b""), content_type="text/plain"
        )

    @routes.delete("/v1/files/{id}")
    async def delete_file(request: web.Request) -> web.Response:
        if state.files.pop(request.match_info["id"], None) is None:
            return _error(404, "File not found")
        state.content.pop(request.match_info["id"], None)
        return web.json_response({"id": request.match_info["id"], "deleted": True})

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    return app
