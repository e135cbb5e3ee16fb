"""A stateful, in-memory stand-in for Fireworks' Gateway REST API (SFT jobs + datasets).

True to the spec the gateway was built from (Gateway REST API 5.10.0 / 4.21.6 pages and
Fireworks' Python SDK at 8399c127): camelCase resources under
``/v1/accounts/{account}/``, the job body flat with its id in the query string, RFC 3339
times, ``JOB_STATE_*`` states, page tokens that are opaque, the four-step dataset upload
(create, ``:getUploadEndpoint``, PUT to a signed URL, ``:validateUpload``), and no cancel
for SFT jobs. Unknown fields in a create body are refused, as protobuf JSON does, so a
``learning_rate`` where Fireworks wants ``learningRate`` fails a test. Errors come as
grpc-gateway's ``{"code", "message", "details"}``.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

JSON = Any
JOB_FIELDS = {
    "displayName", "dataset", "evaluationDataset", "baseModel", "warmStartFrom", "outputModel",
    "epochs", "learningRate", "maxContextLength", "loraRank", "batchSizeSamples", "isTurbo",
    "evalAutoCarveout", "learningRateWarmupSteps", "wandbConfig", "lrScheduler",
}  # fmt: skip
_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6}
_BODY = web.RequestKey("body", object)
START = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None


@dataclass
class FakeFireworksState:
    api_key: str
    account: str
    requests: list[Recorded] = field(default_factory=list)
    jobs: dict[str, JSON] = field(default_factory=dict)
    datasets: dict[str, JSON] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    clock: itertools.count[int] = field(default_factory=itertools.count)
    base_url: str = ""
    fail_put: int | None = None
    # Errors to answer the next requests with, on any route, with no side effect.
    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def fail_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.faults.append((status, dict(headers or {})))

    def now(self) -> str:
        moment = START + timedelta(seconds=next(self.clock))
        return moment.isoformat().replace("+00:00", "Z")

    def set_state(self, job_id: str, state: str, status: JSON | None = None) -> None:
        job = self.jobs[job_id]
        job["state"] = state
        job["updateTime"] = self.now()
        if status is not None:
            job["status"] = status
        if state in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            job["completedTime"] = job["updateTime"]

    def add_dataset(self, dataset_id: str, content: bytes = b"{}\n") -> None:
        self.datasets[dataset_id] = {
            "name": f"accounts/{self.account}/datasets/{dataset_id}",
            "displayName": dataset_id,
            "createTime": self.now(),
            "state": "READY",
            "format": "CHAT",
            "exampleCount": str(content.count(b"\n")),
        }
        self.blobs[dataset_id] = content


def _error(status: int, message: str) -> web.Response:
    body = {"code": _CODES.get(status, 13), "message": message, "details": []}
    return web.json_response(body, status=status)


def make_app(state: FakeFireworksState) -> web.Application:
    routes = web.RouteTableDef()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        body = None
        if request.path.startswith("/v1/") and request.can_read_body:
            body = json.loads(await request.read() or b"null")
        state.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        request[_BODY] = body
        if state.faults:
            status, headers = state.faults.pop(0)
            failed = _error(status, f"fake Fireworks fault {status}")
            failed.headers.update(headers)
            return failed
        if request.path.startswith("/v1/"):
            if request.headers.get("Authorization") != f"Bearer {state.api_key}":
                return _error(401, "invalid API key")
            if request.match_info.get("account") != state.account:
                return _error(403, "no access to this account")
        return await handler(request)

    def job_or_404(job_id: str) -> JSON:
        if job_id not in state.jobs:
            raise web.HTTPNotFound(
                text=json.dumps({"code": 5, "message": f"job {job_id} not found"}),
                content_type="application/json",
            )
        return state.jobs[job_id]

    def dataset_named(name: str) -> JSON | None:
        prefix = f"accounts/{state.account}/datasets/"
        return state.datasets.get(name[len(prefix) :]) if name.startswith(prefix) else None

    @routes.post("/v1/accounts/{account}/supervisedFineTuningJobs")
    async def create_job(request: web.Request) -> web.Response:
        body: Any = request[_BODY]
        if not isinstance(body, dict):
            return _error(400, "body must be a job object")
        unknown = sorted(set(body) - JOB_FIELDS)
        if unknown:
            return _error(400, f'unknown field "{unknown[0]}" in gateway.SupervisedFineTuningJob')
        dataset = dataset_named(body.get("dataset", ""))
        if dataset is None or dataset["state"] != "READY":
            return _error(400, f"dataset {body.get('dataset')!r} not found or not ready")
        if "evaluationDataset" in body and dataset_named(body["evaluationDataset"]) is None:
            return _error(400, "evaluation dataset not found")
        if ("baseModel" in body) == ("warmStartFrom" in body):
            return _error(400, "exactly one of base_model and warm_start_from must be set")
        job_id = request.query.get("supervisedFineTuningJobId") or secrets.token_hex(8)
        if job_id in state.jobs:
            return _error(409, f"job {job_id} already exists")
        now = state.now()
        job = {
            **body,
            "name": f"accounts/{state.account}/supervisedFineTuningJobs/{job_id}",
            "state": "JOB_STATE_VALIDATING",
            "createTime": now,
            "updateTime": now,
            "createdBy": "dev@example.com",
            "outputModel": body.get("outputModel", f"accounts/{state.account}/models/{job_id}"),
        }
        state.jobs[job_id] = job
        return web.json_response(job)

    @routes.get("/v1/accounts/{account}/supervisedFineTuningJobs")
    async def list_jobs(request: web.Request) -> web.Response:
        size = min(int(request.query.get("pageSize", "50")), 200)
        jobs = list(state.jobs.values())
        if request.query.get("orderBy") == "createTime desc":
            jobs.sort(key=lambda j: j["createTime"], reverse=True)
        else:
            jobs.sort(key=lambda j: j["name"])
        start = 0
        if token := request.query.get("pageToken"):
            if token not in state.tokens:
                return _error(400, "invalid page token")
            start = state.tokens[token]
        page: JSON = {"supervisedFineTuningJobs": copy.deepcopy(jobs[start : start + size])}
        if start + size < len(jobs):
            token = "pt" + secrets.token_urlsafe(12)
            state.tokens[token] = start + size
            page["nextPageToken"] = token
        return web.json_response(page)

    @routes.route("*", "/v1/accounts/{account}/supervisedFineTuningJobs/{rest}")
    async def one_job(request: web.Request) -> web.Response:
        job_id, _, verb = request.match_info["rest"].partition(":")
        job = job_or_404(job_id)
        if request.method == "GET" and not verb:
            return web.json_response(job)
        if request.method == "DELETE" and not verb:
            del state.jobs[job_id]
            return web.json_response({})
        if request.method == "POST" and verb == "resume":
            if job["state"] not in ("JOB_STATE_PAUSED", "JOB_STATE_FAILED"):
                return _error(400, f"job in {job['state']} cannot be resumed")
            state.set_state(job_id, "JOB_STATE_RUNNING")
            return web.json_response(job)
        return _error(404, f"no method {request.method} {verb or ''}")

    @routes.post("/v1/accounts/{account}/datasets")
    async def create_dataset(request: web.Request) -> web.Response:
        body = request[_BODY] or {}
        dataset_id, dataset = body.get("datasetId"), body.get("dataset")
        if not dataset_id or not isinstance(dataset, dict):
            return _error(400, "datasetId and dataset are required")
        if dataset_id in state.datasets:
            return _error(409, f"dataset {dataset_id} already exists")
        state.datasets[dataset_id] = {
            **dataset,
            "name": f"accounts/{state.account}/datasets/{dataset_id}",
            "createTime": state.now(),
            "state": "UPLOADING",
        }
        return web.json_response(state.datasets[dataset_id])

    @routes.get("/v1/accounts/{account}/datasets")
    async def list_datasets(request: web.Request) -> web.Response:
        listed = list(state.datasets.values())
        return web.json_response({"datasets": listed, "totalSize": len(listed)})

    @routes.route("*", "/v1/accounts/{account}/datasets/{rest}")
    async def one_dataset(request: web.Request) -> web.Response:
        dataset_id, _, verb = request.match_info["rest"].partition(":")
        if dataset_id not in state.datasets:
            return _error(404, f"dataset {dataset_id} not found")
        dataset = state.datasets[dataset_id]
        if request.method == "GET" and not verb:
            return web.json_response(dataset)
        if request.method == "DELETE" and not verb:
            del state.datasets[dataset_id]
            state.blobs.pop(dataset_id, None)
            return web.json_response({})
        if request.method == "POST" and verb == "getUploadEndpoint":
            sizes = (request[_BODY] or {}).get("filenameToSize") or {}
            urls = {}
            for filename, size in sizes.items():
                state.sizes[dataset_id] = int(size)
                urls[filename] = f"{state.base_url}/storage/{dataset_id}/{filename}?sig=x"
            return web.json_response({"filenameToSignedUrls": urls})
        if request.method == "POST" and verb == "validateUpload":
            if dataset_id not in state.blobs:
                return _error(400, "no file was uploaded to this dataset")
            dataset["state"] = "READY"
            dataset["exampleCount"] = str(state.blobs[dataset_id].count(b"\n"))
            return web.json_response({})
        return _error(404, f"no method {request.method} {verb or ''}")

    @routes.put("/storage/{dataset_id}/{filename}")
    async def put_blob(request: web.Request) -> web.Response:
        if state.fail_put is not None:
            return web.Response(status=state.fail_put, text="storage is down")
        dataset_id = request.match_info["dataset_id"]
        data = await request.read()
        size = state.sizes.get(dataset_id)
        if (
            request.headers.get("x-goog-content-length-range") != f"{size},{size}"
            or len(data) != size
        ):
            return web.Response(status=400, text="size does not match the signed range")
        if "Authorization" in request.headers:
            return web.Response(status=400, text="signed URLs take no Authorization")
        state.blobs[dataset_id] = data
        return web.Response(status=200)

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    return app
