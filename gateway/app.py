"""The application factory: middlewares, routes, and the shared upstream session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway import keys
from gateway.config import Config
from gateway.handlers import files, jobs
from gateway.http1 import Http1Pool
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.middleware import (
    add_request_id,
    auth_middleware,
    context_middleware,
    error_middleware,
)
from gateway.pool import ProviderPool
from gateway.registry import Registry


def make_app(
    config: Config, registry: Registry | None = None, *, worker: int = 0
) -> web.Application:
    app = web.Application(middlewares=[context_middleware, error_middleware, auth_middleware])
    app[keys.CONFIG] = config
    app[keys.REGISTRY] = registry if registry is not None else Registry.discover()
    app[keys.METRICS] = Metrics(worker)
    app.cleanup_ctx.append(_upstream_session)
    app.on_response_prepare.append(add_request_id)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    jobs.add_routes(app)
    files.add_routes(app)
    return app


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    """Keep-alive connections to the upstreams, closed on shutdown: aiohttp's session for
    streamed calls and SDKs, and the lean pool for JSON calls (``gateway.http1``)."""
    upstream = app[keys.CONFIG].upstream
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
    )
    app[keys.HTTP1] = Http1Pool(
        connect_timeout=upstream.connect_timeout, read_timeout=upstream.read_timeout
    )
    async with aiohttp.ClientSession(timeout=timeout) as http:
        app[keys.HTTP] = http
        app[keys.POOL] = ProviderPool(http)
        try:
            yield
        finally:
            await app[keys.POOL].close()
            app[keys.HTTP1].close()


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[keys.METRICS].render().encode(), headers={"Content-Type": CONTENT_TYPE}
    )
