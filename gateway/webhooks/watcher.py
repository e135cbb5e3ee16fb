"""Watching the jobs created through the gateway until they end, on any provider.

A job is recorded when its create call succeeds, with the routing headers that chose
its provider (a virtual key, a named config, a provider slug, a custom host: never a
credential) and the gateway key that made it. The watcher claims the jobs due for a
look, asks each one's provider through the same routing (``retrieve_job``, as a client
would), and when the status is an end state records the end and its event in one
transaction (``Store.job_ended``), once. A job whose provider answers with an error
(429 and 5xx included) is looked at later, the wait doubling with each failure up to
``max_poll_seconds``; a ``Retry-After`` the provider gave is honoured.

Jobs created with credentials in the request's headers are not watched: the gateway
does not keep a caller's credentials.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from gateway import keys
from gateway.config import GatewayKey
from gateway.errors import GatewayError
from gateway.ids import stable_id
from gateway.webhooks.store import END_EVENTS, DueJob

if TYPE_CHECKING:
    from gateway.webhooks.service import Webhooks

log = logging.getLogger("finetune_gateway.webhooks")

_ROUTE_HEADERS = ("x-portkey-virtual-key", "x-portkey-config", "x-portkey-provider",
                  "x-portkey-custom-host")  # fmt: skip
# Headers that neither choose a target nor carry credentials.
_HARMLESS = frozenset({"x-portkey-api-key", "x-portkey-trace-id", "x-portkey-metadata"})
_BATCH = 64
_CONCURRENT = 16


class _Job(msgspec.Struct):
    id: str
    status: str
    finished_at: int | None = None


_decode_job = msgspec.json.Decoder(_Job).decode


def _status_of(result: Any) -> _Job:
    if isinstance(result, msgspec.Raw):
        return _decode_job(result)
    return _Job(result.id, result.status, getattr(result, "finished_at", None))


def route_of(headers: Mapping[str, str], gateway_key: GatewayKey) -> dict[str, str] | None:
    """The routing headers to find a job's provider again; None if it cannot be (the
    request carried credentials of its own, which the gateway does not keep)."""
    route: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _ROUTE_HEADERS:
            if lower == "x-portkey-config" and value.lstrip().startswith("{"):
                return None  # an inline config may carry an api_key
            route[lower] = value
        elif lower.startswith("x-portkey-") and lower not in _HARMLESS:
            return None
    bearer = headers.get("Authorization", "")
    if bearer and bearer.removeprefix("Bearer ").strip() != gateway_key.key:
        return None
    return route


async def record(
    hooks: Webhooks, headers: Mapping[str, str], gateway_key: GatewayKey | None, result: Any
) -> None:
    """Watch a job just created through the gateway (if it can be found again)."""
    if gateway_key is None:
        return
    route = route_of(headers, gateway_key)
    if route is None:
        log.info("job created with request credentials: not watched for webhooks")
        return
    job = _status_of(result)
    await hooks.store.watch_job(
        job.id, gateway_key.name, msgspec.json.encode(route).decode(), job.status
    )


def _key_named(app: web.Application, name: str) -> GatewayKey | None:
    return next((k for k in app[keys.CONFIG].gateway_keys if k.name == name), None)


async def look(app: web.Application, hooks: Webhooks, due: DueJob) -> None:
    from gateway.handlers.common import provider_for_headers

    settings = hooks.settings
    gateway_key = _key_named(app, due.owner)
    if gateway_key is None:  # the key left the config: its jobs wait for it
        await hooks.store.job_seen(due.job_id, "unknown", time.time() + settings.max_poll_seconds,
                                   due.failures)  # fmt: skip
        return
    headers = {**msgspec.json.decode(due.route), "Authorization": f"Bearer {gateway_key.key}"}
    try:
        async with asyncio.timeout(60):
            async with provider_for_headers(app, headers, gateway_key) as provider:
                job = _status_of(await provider.retrieve_job(due.job_id))
    except (GatewayError, TimeoutError, OSError) as exc:
        failures = due.failures + 1
        wait = min(settings.max_poll_seconds, settings.poll_seconds * 2**failures)
        retry_after = getattr(exc, "headers", {}).get("Retry-After", "")
        if retry_after.isdigit():
            wait = max(wait, float(retry_after))
        wait = wait / 2 + random.uniform(0, wait / 2)
        log.info("job %s could not be looked at (%s): again in %.0f s", due.job_id,
                 getattr(exc, "code", None) or type(exc).__name__, wait)  # fmt: skip
        await hooks.store.job_seen(due.job_id, "unknown", time.time() + wait, failures)
        return
    if job.status in END_EVENTS:
        created_at = job.finished_at or int(time.time())
        event_id = stable_id("evt_", due.job_id, job.status)
        if await hooks.store.job_ended(
            due.job_id, job.status, event_id, created_at, hooks.configured_for
        ):
            hooks.metrics.emitted += 1
            hooks.wake.set()
        return
    next_at = time.time() + settings.poll_seconds * random.uniform(0.9, 1.1)
    await hooks.store.job_seen(due.job_id, job.status, next_at, 0)


async def watch(app: web.Application, hooks: Webhooks) -> None:
    """Look at the jobs due, a bounded number at once, every ``tick_seconds``."""
    gate = asyncio.Semaphore(_CONCURRENT)
    lease = 120.0

    async def one(due: DueJob) -> None:
        async with gate:
            try:
                await look(app, hooks, due)
            except Exception:
                log.exception("job %s could not be watched", due.job_id)

    while True:
        try:
            due = await hooks.store.claim_jobs(_BATCH, lease)
        except Exception:
            log.exception("watched jobs could not be read")
            due = []
        if due:
            await asyncio.gather(*(one(d) for d in due))
        if len(due) < _BATCH:
            await asyncio.sleep(hooks.settings.tick_seconds)
