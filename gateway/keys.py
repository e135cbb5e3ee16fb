"""Typed keys for what the app and each request carry (aiohttp ``AppKey``s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.config import Config, GatewayKey
from gateway.http1 import Http1Pool
from gateway.line_budget import LineLimits
from gateway.pool import ProviderPool
from gateway.registry import Registry
from gateway.routing import RoutingCache

if TYPE_CHECKING:  # gateway.metrics reads the request keys below
    from gateway.metrics import Metrics

CONFIG = web.AppKey("config", Config)
REGISTRY = web.AppKey("registry", Registry)
HTTP = web.AppKey("http", aiohttp.ClientSession)
POOL = web.AppKey("pool", ProviderPool)
# Targets already resolved, by the routing headers that chose them (gateway.routing).
ROUTES = web.AppKey("routes", RoutingCache)
# The lean keep-alive client for providers' JSON calls (see gateway.http1).
HTTP1 = web.AppKey("http1", Http1Pool)
# The process's limits on training-file lines (set per request for gateway.jsonl).
LINE_LIMITS = web.AppKey("line_limits", LineLimits)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")

# Per-request values, set as the request goes through the middlewares and handlers and
# read by the access log.
REQUEST_ID = web.RequestKey("request_id", str)
# Absent on an open gateway (no gateway keys configured).
GATEWAY_KEY = web.RequestKey("gateway_key", GatewayKey)
PROVIDER = web.RequestKey("provider", str)
UPSTREAM_SECONDS = web.RequestKey("upstream_seconds", float)
# Request ids the providers gave this request's upstream calls (see gateway.upstream).
UPSTREAM_REQUEST_IDS = web.RequestKey("upstream_request_ids", list[str])
# Attempts of each upstream call made for this request (see gateway.retry).
UPSTREAM_ATTEMPTS = web.RequestKey("upstream_attempts", list[int])
# Set once a streamed response has sent its headers: an error after that cannot become
# an error response, and the connection is cut instead so the client sees a short body.
STREAM_STARTED = web.RequestKey("stream_started", bool)
