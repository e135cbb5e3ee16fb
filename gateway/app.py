"""The application factory: middlewares, routes, and the shared upstream session.

Every connection the shared session and the lean client open is held to the config's
egress policy (``gateway.egress``), installed here for plugins' own clients too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway import egress, keys, log_redaction, openapi, ui
from gateway.addresses import allow_list
from gateway.config import Config
from gateway.handlers import files, jobs
from gateway.http1 import Http1Pool
from gateway.line_budget import LineBudget, LineLimits
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.middleware import (
    add_request_id,
    auth_middleware,
    context_middleware,
    error_middleware,
)
from gateway.pool import ProviderPool
from gateway.registry import Registry
from gateway.resolver import GuardedResolver
from gateway.routing import RoutingCache
from gateway.upstream import refusing_redirects, without_silent_retries
from gateway.webhooks import api as webhooks_api
from gateway.webhooks.sealing import Sealer
from gateway.webhooks.service import WEBHOOKS, Webhooks
from gateway.webhooks.service import running as webhooks_running


def make_app(
    config: Config, registry: Registry | None = None, *, worker: int = 0
) -> web.Application:
    app = web.Application(middlewares=[context_middleware, error_middleware, auth_middleware])
    log_redaction.install()  # libraries' DEBUG lines carry credentials: masked
    app[keys.CONFIG] = config
    app[keys.REGISTRY] = registry if registry is not None else Registry.discover()
    app[keys.METRICS] = Metrics(worker)
    app[keys.ROUTES] = RoutingCache()
    limits = config.limits
    app[keys.LINE_LIMITS] = LineLimits(
        limits.max_line_bytes, LineBudget(limits.line_buffer_budget_bytes)
    )
    app.cleanup_ctx.append(_upstream_session)
    if config.webhooks.database is not None:
        app[WEBHOOKS] = Webhooks(config, Sealer.from_env())
        app[keys.METRICS].extra.append(app[WEBHOOKS].metrics.render)
        app.cleanup_ctx.append(webhooks_running)  # after the session: stopped before it
    app.on_response_prepare.append(add_request_id)
    app.router.add_get("/health", health)
    app.router.add_get(openapi.PATH, openapi.serve)
    app.router.add_get("/metrics", metrics)
    jobs.add_routes(app)
    files.add_routes(app)
    webhooks_api.add_routes(app)
    ui.add_routes(app)
    return app


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled, keep-alive client session for every upstream call, closed on shutdown."""
    upstream = app[keys.CONFIG].upstream
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
    )
    # Connections to allow-listed names are checked again as they are made (DNS rebinding),
    # and every connection's addresses against the egress policy.
    allowlist = allow_list(app[keys.CONFIG].routing.custom_host_allowlist)
    resolver = GuardedResolver(allowlist, upstream.connect_timeout)
    policy = egress.policy_of(app[keys.CONFIG])
    before = egress.install(policy)  # for plugins' own clients (aiobotocore, GCS sessions)
    connector = egress.GuardedConnector(resolver=resolver, egress=policy)
    # Providers' JSON calls go through the lean client (aiohttp's costs more per call than
    # the rest of the gateway); it resolves names through the same guarded resolver.
    app[keys.HTTP1] = Http1Pool(resolver=resolver, egress=policy)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, trace_configs=[refusing_redirects()]
    ) as http:
        without_silent_retries(http)
        app[keys.HTTP] = http
        app[keys.POOL] = ProviderPool(http)
        try:
            yield
        finally:
            await app[keys.POOL].close()
            await app[keys.HTTP1].close()
            egress.install(before)  # an app in a test, stopped: the next one's is its own


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[keys.METRICS].render().encode(), headers={"Content-Type": CONTENT_TYPE}
    )
