"""``/v1/fine_tuning/jobs``: decode, hand to the provider, answer."""

from __future__ import annotations

from aiohttp import web

from gateway import keys
from gateway.handlers.common import (
    answer,
    call_provider,
    convert,
    page_query,
    path_id,
    provider_for,
    read_json_object,
    timed,
)
from gateway.models import JobCreate
from gateway.provider import JobRequest
from gateway.webhooks import watcher
from gateway.webhooks.service import webhooks_of

JOB_ID = "fine_tuning_job_id"


async def create_job(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    job = JobRequest(
        spec=convert(body, JobCreate),
        body=body,
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    async with provider_for(request) as provider:
        created = await timed(request, provider.create_job(job))
    hooks = webhooks_of(request.app)
    if hooks is not None:  # watched until it ends, for its fine_tuning.job.* event
        await watcher.record(hooks, request.headers, request.get(keys.GATEWAY_KEY), created)
    return answer(created)


async def list_jobs(request: web.Request) -> web.Response:
    query = page_query(request, default_limit=20)
    return await call_provider(request, lambda p: p.list_jobs(query))


async def retrieve_job(request: web.Request) -> web.Response:
    job_id = path_id(request, JOB_ID)
    return await call_provider(request, lambda p: p.retrieve_job(job_id))


async def cancel_job(request: web.Request) -> web.Response:
    job_id = path_id(request, JOB_ID)
    return await call_provider(request, lambda p: p.cancel_job(job_id))


async def pause_job(request: web.Request) -> web.Response:
    job_id = path_id(request, JOB_ID)
    return await call_provider(request, lambda p: p.pause_job(job_id))


async def resume_job(request: web.Request) -> web.Response:
    job_id = path_id(request, JOB_ID)
    return await call_provider(request, lambda p: p.resume_job(job_id))


async def list_events(request: web.Request) -> web.Response:
    job_id = path_id(request, JOB_ID)
    query = page_query(request, default_limit=20)
    return await call_provider(request, lambda p: p.list_events(job_id, query))


async def list_checkpoints(request: web.Request) -> web.Response:
    job_id = path_id(request, JOB_ID)
    query = page_query(request, default_limit=10)
    return await call_provider(request, lambda p: p.list_checkpoints(job_id, query))


def add_routes(app: web.Application) -> None:
    base = "/v1/fine_tuning/jobs"
    job = base + "/{" + JOB_ID + "}"
    app.router.add_post(base, create_job)
    app.router.add_get(base, list_jobs)
    app.router.add_get(job, retrieve_job)
    app.router.add_post(job + "/cancel", cancel_job)
    app.router.add_post(job + "/pause", pause_job)
    app.router.add_post(job + "/resume", resume_job)
    app.router.add_get(job + "/events", list_events)
    app.router.add_get(job + "/checkpoints", list_checkpoints)
