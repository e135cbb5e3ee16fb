"""Sending events: signed, bounded in time, never following a redirect, retried until a 2xx.

A delivery is claimed with a lease, sent, and its outcome written back: a 2xx ends it;
anything else (another status, a refused address, a timeout, a reset) is retried after
an exponential backoff with full jitter, for ``retry_for_seconds`` from the job's end,
and then given up on, with a warning in the log and the count in ``/metrics``. The
event's id is the ``webhook-id`` of every attempt, so a receiver can drop a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from typing import TYPE_CHECKING

import aiohttp
import msgspec

from gateway.errors import GatewayError, UpstreamError
from gateway.webhooks import configured, signing
from gateway.webhooks.store import Claimed, EndpointRow, EventBody

if TYPE_CHECKING:
    from gateway.webhooks.service import Webhooks

log = logging.getLogger("finetune_gateway.webhooks")

_BATCH = 64
_IN_FLIGHT = 64


def _secrets_of(hooks: Webhooks, row: EndpointRow) -> list[str]:
    sealer = hooks.sealer()
    found = [sealer.open(row.secret)]
    if row.old_secret is not None and (row.old_until or 0) > time.time():
        found.append(sealer.open(row.old_secret))  # the grace period after a rotation
    return found


async def _target(hooks: Webhooks, endpoint_id: str) -> tuple[str, list[str]] | None:
    """The URL and signing secrets of an endpoint, the config's or the table's; None if
    it is gone (deleted, or its table left the config)."""
    if endpoint_id.startswith(configured.ID_PREFIX):
        found = hooks.configured.get(endpoint_id)
        return None if found is None else (found.url, [found.secret])
    row = await hooks.store.endpoint_by_id(endpoint_id)
    return None if row is None else (row.url, _secrets_of(hooks, row))


async def post(
    hooks: Webhooks, url: str, signing_secrets: list[str], event_id: str, body: bytes
) -> int:
    """One attempt: the receiver's status code; raises on no answer (or a refused address)."""
    headers = signing.headers(signing_secrets, event_id, int(time.time()), body)
    async with hooks.session.post(
        url, data=body, headers=headers, allow_redirects=False
    ) as response:
        return response.status  # the body is not read: nothing in it matters


async def send_test(hooks: Webhooks, row: EndpointRow, event_type: str) -> int:
    event_id = "evt_" + secrets.token_hex(12)
    body = msgspec.json.encode(
        EventBody(event_id, event_type, int(time.time()), EventBody.Data("ftjob_test"))
    )
    try:
        return await post(hooks, row.url, _secrets_of(hooks, row), event_id, body)
    except GatewayError:
        raise  # the egress policy's refusal, as itself
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(
            f"The webhook endpoint could not be reached: {type(exc).__name__}",
            code="webhook_unreachable",
        ) from None


def backoff(hooks: Webhooks, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, full jitter."""
    settings = hooks.settings
    ceiling = min(settings.max_retry_seconds, settings.first_retry_seconds * 2.0 ** (attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def attempt(hooks: Webhooks, claimed: Claimed) -> None:
    status: int | None = None
    error: str | None = None
    try:
        target = await _target(hooks, claimed.endpoint_id)
        if target is None:  # the endpoint was deleted since
            await hooks.store.delivery_done(claimed, "dropped", None, "endpoint deleted", 0)
            return
        status = await post(hooks, *target, claimed.event_id, claimed.body)
    except GatewayError as exc:
        error = exc.code or type(exc).__name__
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = type(exc).__name__
    now = time.time()
    if status is not None and 200 <= status < 300:
        if await _written(hooks, claimed, "delivered", status, None, now):
            hooks.metrics.delivered += 1
            hooks.metrics.latency.observe(now - claimed.first_at)
        return
    attempts = claimed.attempts + 1
    retry_at = now + backoff(hooks, attempts)
    outcome = f"status {status}" if status is not None else error
    if retry_at - claimed.first_at > hooks.settings.retry_for_seconds:
        if await _written(hooks, claimed, "given_up", status, error, now):
            hooks.metrics.given_up += 1
            log.warning(
                "webhook delivery given up: event %s to endpoint %s after %d attempts (%s)",
                claimed.event_id, claimed.endpoint_id, attempts, outcome,
            )  # fmt: skip
        return
    if await _written(hooks, claimed, "pending", status, error, retry_at):
        hooks.metrics.retried += 1
        log.info(
            "webhook delivery failed, retried in %.1f s: event %s to endpoint %s (%s)",
            retry_at - now, claimed.event_id, claimed.endpoint_id, outcome,
        )  # fmt: skip


async def _written(
    hooks: Webhooks, claimed: Claimed, state: str, status: int | None, error: str | None,
    next_at: float,
) -> bool:  # fmt: skip
    """Write an attempt's outcome, fenced on its claim: False if the lease had expired and
    the delivery was claimed again (by another process), whose outcome is the one kept."""
    if await hooks.store.delivery_done(claimed, state, status, error, next_at):
        return True
    log.info(
        "webhook delivery of event %s to endpoint %s outlived its lease: its outcome (%s) "
        "is left to the attempt that claimed it since",
        claimed.event_id, claimed.endpoint_id, state,
    )  # fmt: skip
    return False


async def deliver_forever(hooks: Webhooks) -> None:
    """Claim what is due and send each as its own task, a bounded number at a time."""
    in_flight: set[asyncio.Task[None]] = set()
    # An attempt ends within delivery_timeout; a claim held longer is a dead process's.
    lease = hooks.settings.delivery_timeout + 1.0
    while True:
        try:
            room = _IN_FLIGHT - len(in_flight)
            claimed = await hooks.store.claim_deliveries(min(room, _BATCH), lease) if room else []
        except Exception:
            log.exception("webhook deliveries could not be read")
            claimed = []
        for one in claimed:
            task = asyncio.create_task(_guarded(hooks, one))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if claimed and len(claimed) == _BATCH:
            continue
        hooks.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hooks.wake.wait(), hooks.settings.tick_seconds)


async def _guarded(hooks: Webhooks, claimed: Claimed) -> None:
    try:
        await attempt(hooks, claimed)
    except Exception:  # the lease expires and another attempt is made
        log.exception("webhook delivery of event %s failed unexpectedly", claimed.event_id)
