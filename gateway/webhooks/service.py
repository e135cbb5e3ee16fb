"""The webhooks of one gateway process: its store, its delivery client, its two loops.

The watcher (``gateway.webhooks.watcher``) looks at the jobs not ended and records each
end with its event; the deliverer (``gateway.webhooks.delivery``) sends what is due.
Both claim work with leases in the shared database, so several processes split it and
a process that dies leaves its share to the others. Each delivery runs as its own task,
bounded by ``delivery_timeout``: a stalling receiver holds neither loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import yarl
from aiohttp import web

from gateway import egress
from gateway.addresses import parse_address
from gateway.config import Config
from gateway.egress import EgressRefused
from gateway.errors import BadRequest
from gateway.metrics import Histogram
from gateway.resolver import resolve_name
from gateway.upstream import refusing_redirects
from gateway.webhooks import configured, delivery, watcher
from gateway.webhooks.sealing import Sealer, SealKeyMissing
from gateway.webhooks.store import EndpointRow, Store
from gateway.webhooks.store_pg import PgStore, open_store

log = logging.getLogger("finetune_gateway.webhooks")

# Seconds from a job's end (as the watcher saw it) to its delivery's 2xx.
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


@dataclass(slots=True)
class WebhookMetrics:
    emitted: int = 0
    delivered: int = 0
    retried: int = 0
    given_up: int = 0
    latency: Histogram = field(default_factory=lambda: Histogram(DELIVERY_BUCKETS))

    def render(self, out: list[str]) -> None:
        prefix = "finetune_gateway_webhook_"
        for name, value, text in (
            ("events_emitted_total", self.emitted, "Fine-tuning job events recorded"),
            ("deliveries_total", self.delivered, "Deliveries a receiver answered with a 2xx"),
            ("delivery_retries_total", self.retried, "Delivery attempts that failed, retried"),
            ("deliveries_given_up_total", self.given_up, "Deliveries given up on"),
        ):
            out.append(f"# HELP {prefix}{name} {text}")
            out.append(f"# TYPE {prefix}{name} counter")
            out.append(f"{prefix}{name} {value}")
        name = prefix + "delivery_latency_seconds"
        out.append(f"# HELP {name} Time from a job's end to its event's delivery")
        out.append(f"# TYPE {name} histogram")
        cumulative = 0
        bounds = (*self.latency.bounds, None)
        for bound, count in zip(bounds, self.latency.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound is None else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        out.append(f"{name}_sum {self.latency.total!r}")
        out.append(f"{name}_count {self.latency.count}")


class Webhooks:
    def __init__(self, config: Config, sealer: Sealer | None) -> None:
        assert config.webhooks.database is not None
        self.config = config
        self.settings = config.webhooks
        self.store: Store | PgStore = open_store(config.webhooks.database)
        self._sealer = sealer
        # The config's endpoints, by their deliveries' endpoint id.
        self.configured = {found.id: found for found in config.webhook_endpoints}
        self.policy = egress.policy_of(config)
        self.metrics = WebhookMetrics()
        self.wake = asyncio.Event()  # a new event: the deliverer looks now
        self._session: aiohttp.ClientSession | None = None

    def sealer(self) -> Sealer:
        if self._sealer is None:
            raise SealKeyMissing()
        return self._sealer

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Its own connector: every connection's addresses checked after DNS, against
            # the egress policy, on every delivery (no pooled connection is reused).
            self._session = aiohttp.ClientSession(
                connector=egress.GuardedConnector(egress=self.policy, force_close=True),
                timeout=aiohttp.ClientTimeout(total=self.settings.delivery_timeout),
                trace_configs=[refusing_redirects()],
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.store.close()

    async def check_url(self, raw: str) -> str:
        """A receiver URL this gateway may deliver to, or a 400 naming ``url``."""
        shape = configured.url_problem(raw, self.settings.allow_http)
        if shape is not None:
            raise BadRequest(shape, param="url", code="invalid_url")
        url = yarl.URL(raw)
        host = url.host or ""
        literal = parse_address(host)
        try:
            addresses = [literal] if literal is not None else await resolve_name(host, 5.0)
        except OSError:
            raise BadRequest(
                f"Webhook host '{host}' could not be resolved", param="url", code="invalid_url"
            ) from None
        try:
            self.policy.check(host, addresses)
        except EgressRefused as exc:
            raise BadRequest(
                configured.refusal(host, exc), param="url", code="webhook_url_not_allowed"
            ) from None
        return str(url)

    def configured_for(self, owner: str, event_type: str) -> list[str]:
        """The config's endpoints that want ``event_type`` of ``owner``'s jobs."""
        return [id_ for id_, found in self.configured.items() if found.wants(owner, event_type)]

    async def send_test(self, row: EndpointRow, event_type: str) -> int:
        return await delivery.send_test(self, row, event_type)


WEBHOOKS: web.AppKey[Webhooks] = web.AppKey("webhooks")


def webhooks_of(app: web.Application) -> Webhooks | None:
    return app.get(WEBHOOKS)


async def running(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the watcher and the deliverer, while the app runs."""
    hooks = app[WEBHOOKS]
    tasks = [
        asyncio.create_task(watcher.watch(app, hooks), name="webhook-watcher"),
        asyncio.create_task(delivery.deliver_forever(hooks), name="webhook-deliverer"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hooks.close()
