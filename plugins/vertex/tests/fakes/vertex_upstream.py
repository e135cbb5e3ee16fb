"""A stateful stand-in for Vertex AI's tuningJobs API and Google's OAuth token endpoint.

One app serves both, because they share state: the token endpoint checks the service
account's signed assertion (RS256, against the public key a test registers) and issues
access tokens that expire; the tuningJobs routes accept only those, unexpired. Jobs are
created as Vertex creates them (``JOB_STATE_PENDING``, RFC 3339 times with nanoseconds,
int64 as strings), listed newest first by ``pageSize``/``pageToken``, cancelled with
``:cancel`` answering ``{}``. Tests drive a job's state with ``set_state`` and friends,
inject failures with ``fail_next``, and read what arrived in ``requests``.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
from aiohttp import web

from plugins.vertex.tests.fakes.vertex_rules import (
    GS_URI,
    JSON,
    TERMINAL_STATES,
    GoogleError,
    check_dataset_line,
    invalid,
    validate_create,
)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def rfc3339(when: float) -> str:
    """Google's timestamp format: UTC, nanoseconds, 'Z'."""
    whole = datetime.fromtimestamp(int(when), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{int((when % 1) * 1e9):09d}Z"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any = None


@dataclass
class FakeGoogleState:
    """Everything the fake remembers, and the knobs tests turn."""

    projects: set[str]
    public_keys: dict[str, str] = field(default_factory=dict)  # client_email -> PEM
    token_lifetime: int = 3600
    gcs_url: str | None = None  # when set, dataset URIs must exist there, in Vertex's format
    max_page_size: int = 100
    requests: list[Recorded] = field(default_factory=list)
    token_calls: int = 0
    revoked: set[str] = field(default_factory=set)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    jobs: dict[str, JSON] = field(default_factory=dict)
    faults: deque[GoogleError] = field(default_factory=deque)
    page_tokens: dict[str, tuple[str, int]] = field(default_factory=dict)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def fail_next(
        self,
        http: int,
        status: str,
        message: str,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.faults.extend([GoogleError(http, status, message, headers)] * times)

    def job(self, job_id: str) -> JSON:
        if job_id not in self.jobs:
            raise GoogleError(404, "NOT_FOUND", f"The TuningJob {job_id} does not exist.")
        return self.jobs[job_id]

    def set_state(self, job_id: str, state: str, *, error: JSON | None = None) -> JSON:
        job = self.job(job_id)
        now = time.time()
        job["state"] = state
        job["updateTime"] = rfc3339(now)
        if state == "JOB_STATE_RUNNING":
            job.setdefault("startTime", rfc3339(now))
        if state in TERMINAL_STATES:
            job["endTime"] = rfc3339(now)
        if error is not None:
            job["error"] = error
        return copy.deepcopy(job)

    def succeed(
        self, job_id: str, *, checkpoints: int = 2, tokens: int = 1234, steps_per: int = 5
    ) -> JSON:
        job = self.job(job_id)
        base = job["name"].split("/tuningJobs/")[0]
        number = job_id[-6:]
        job["tunedModel"] = {
            "model": f"{base}/models/{number}@1",
            "endpoint": f"{base}/endpoints/{number}",
            "checkpoints": [
                {
                    "checkpointId": str(i + 1),
                    "epoch": str(i + 1),
                    "step": str((i + 1) * steps_per),
                    "endpoint": f"{base}/endpoints/{number}-ckpt{i + 1}",
                }
                for i in range(checkpoints)
            ],
        }
        stats_key = (
            "preferenceOptimizationDataStats"
            if "preferenceOptimizationSpec" in job
            else "supervisedTuningDataStats"
        )
        job["tuningDataStats"] = {
            stats_key: {
                "totalBillableTokenCount": str(tokens),
                "tuningDatasetExampleCount": "2",
                "tuningStepCount": str(checkpoints * steps_per),
            }
        }
        self.set_state(job_id, "JOB_STATE_RUNNING")
        return self.set_state(job_id, "JOB_STATE_SUCCEEDED")

    def fail(self, job_id: str, code: int = 3, message: str = "Dataset is invalid.") -> JSON:
        self.set_state(job_id, "JOB_STATE_RUNNING")
        return self.set_state(job_id, "JOB_STATE_FAILED", error={"code": code, "message": message})


STATE_KEY = web.AppKey("fake_google_state", FakeGoogleState)
HTTP_KEY = web.AppKey("fake_google_http", aiohttp.ClientSession)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


# ---- OAuth ---------------------------------------------------------------------------


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.token_calls += 1
    form = await request.post()

    def refused(description: str) -> web.Response:
        return _json({"error": "invalid_grant", "error_description": description}, 400)

    if form.get("grant_type") != JWT_BEARER:
        return _json({"error": "unsupported_grant_type"}, 400)
    assertion = str(form.get("assertion", ""))
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
        issuer = str(claims["iss"])
        jwt.decode(
            assertion,
            state.public_keys[issuer],
            algorithms=["RS256"],
            audience=str(request.url),
        )
    except (jwt.PyJWTError, KeyError):
        return refused("Invalid JWT Signature.")
    if issuer in state.revoked:
        return refused("Invalid grant: account not found")
    if SCOPE not in str(claims.get("scope", "")).split():
        return _json({"error": "invalid_scope", "error_description": "Bad scope."}, 400)
    token = "ya29.fake-" + secrets.token_urlsafe(24)
    state.tokens[token] = time.time() + state.token_lifetime
    return _json(
        {"access_token": token, "expires_in": state.token_lifetime, "token_type": "Bearer"}
    )


# ---- tuningJobs ----------------------------------------------------------------------


def _parent(request: web.Request) -> str:
    project, location = request.match_info["project"], request.match_info["location"]
    if project not in request.app[STATE_KEY].projects:
        raise GoogleError(
            403,
            "PERMISSION_DENIED",
            f"Permission 'aiplatform.tuningJobs.list' denied on resource "
            f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}' "
            "(or it may not exist).",
        )
    return f"projects/{project}/locations/{location}"


async def _create(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    parent = _parent(request)
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise invalid("Invalid JSON payload received.") from None
    kind, spec = validate_create(body)
    for field_name in ("trainingDatasetUri", "validationDatasetUri"):
        if field_name in spec:
            await _check_dataset(request, spec[field_name], kind)
    job_id = str(10**18 + secrets.randbelow(9 * 10**18))
    now = rfc3339(time.time())
    job = {
        **body,
        "name": f"{parent}/tuningJobs/{job_id}",
        "state": "JOB_STATE_PENDING",
        "createTime": now,
        "updateTime": now,
        "experiment": f"{parent}/metadataStores/default/contexts/tuning-experiment-{job_id}",
        "_seq": next(state.seq),
    }
    state.jobs[job_id] = job
    return _json(_public(job))


async def _check_dataset(request: web.Request, uri: str, kind: str) -> None:
    state = request.app[STATE_KEY]
    match = GS_URI.fullmatch(uri)
    if state.gcs_url is None or match is None:
        return
    bucket, name = match.groups()
    url = f"{state.gcs_url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
    async with request.app[HTTP_KEY].get(url, params={"alt": "media"}) as response:
        if response.status == 404:
            raise invalid(f"Dataset {uri} does not exist.")
        data = await response.read()
    for number, raw in enumerate(data.splitlines(), 1):
        if raw.strip():
            problem = check_dataset_line(json.loads(raw), kind)
            if problem:
                raise invalid(f"Dataset {uri} line {number}: {problem}.")


def _public(job: JSON) -> JSON:
    return {k: v for k, v in job.items() if not k.startswith("_")}


async def _list(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    parent = _parent(request)
    raw_size = request.query.get("pageSize", "0")
    if not raw_size.isdigit():
        raise invalid("Invalid value at 'page_size'.")
    size = min(int(raw_size) or 50, state.max_page_size)
    filter_ = request.query.get("filter", "")
    wanted = _parse_filter(filter_)
    token = request.query.get("pageToken")
    start = 0
    if token:
        if token not in state.page_tokens or state.page_tokens[token][0] != filter_:
            raise invalid("Invalid page token.")
        start = state.page_tokens[token][1]
    jobs = sorted(
        (j for j in state.jobs.values() if j["name"].startswith(parent)),
        key=lambda j: j["_seq"],
        reverse=True,
    )
    jobs = [j for j in jobs if all((j.get("labels") or {}).get(k) == v for k, v in wanted)]
    page = jobs[start : start + size]
    body: JSON = {"tuningJobs": [_public(j) for j in page]}
    if start + size < len(jobs):
        next_token = secrets.token_urlsafe(12)
        state.page_tokens[next_token] = (filter_, start + size)
        body["nextPageToken"] = next_token
    return _json(body)


def _parse_filter(text: str) -> list[tuple[str, str]]:
    """Only what the gateway sends: ``labels.k="v"`` terms joined by ``AND``."""
    if not text:
        return []
    terms = []
    for term in text.split(" AND "):
        key, sep, value = term.partition("=")
        if not sep or not key.startswith("labels.") or not (value[:1] == value[-1:] == '"'):
            raise invalid(f"Unsupported filter: {text}")
        terms.append((key[len("labels.") :], value[1:-1]))
    return terms


async def _get(request: web.Request) -> web.Response:
    _parent(request)
    return _json(_public(request.app[STATE_KEY].job(request.match_info["job"])))


async def _cancel(request: web.Request) -> web.Response:
    _parent(request)
    state = request.app[STATE_KEY]
    try:
        body = json.loads(await request.read() or b"null")
    except ValueError:
        body = None
    if body != {}:
        raise invalid("The request body must be a CancelTuningJobRequest ({}).")
    job = state.job(request.match_info["job"])
    if job["state"] in TERMINAL_STATES:
        raise GoogleError(
            400,
            "FAILED_PRECONDITION",
            f"Cannot cancel tuning job {job['name']} in state {job['state']}.",
        )
    state.set_state(request.match_info["job"], "JOB_STATE_CANCELLING")
    return _json({})


@web.middleware
async def _google_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Record, authenticate, misbehave if asked; every failure in Google's envelope."""
    state = request.app[STATE_KEY]
    record = Recorded(
        request.method,
        request.path,
        dict(request.query),
        {k.lower(): v for k, v in request.headers.items()},
    )
    state.requests.append(record)
    if request.path == "/token":
        return await handler(request)
    try:
        if request.can_read_body:
            raw = await request.read()
            record.json = json.loads(raw) if raw else None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = state.tokens.get(token.strip())
        if scheme.lower() != "bearer" or expiry is None or expiry < time.time():
            raise GoogleError(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if state.faults:
            raise state.faults.popleft()
        return await handler(request)
    except GoogleError as exc:
        return web.json_response(exc.body(), status=exc.http, headers=exc.headers)
    except ValueError:
        return _json(invalid("Invalid JSON payload received.").body(), 400)
    except web.HTTPException as exc:
        return _json(GoogleError(exc.status, "NOT_FOUND", exc.reason).body(), exc.status)


async def _client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        app[HTTP_KEY] = http
        yield


def make_app(state: FakeGoogleState) -> web.Application:
    app = web.Application(middlewares=[_google_middleware])
    app[STATE_KEY] = state
    app.cleanup_ctx.append(_client)
    jobs = "/v1/projects/{project}/locations/{location}/tuningJobs"
    app.add_routes(
        [
            web.post("/token", _token),
            web.post(jobs, _create),
            web.get(jobs, _list),
            web.get(jobs + "/{job:[0-9]+}", _get),
            web.post(jobs + "/{job:[0-9]+}:cancel", _cancel),
        ]
    )
    return app
