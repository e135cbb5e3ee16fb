"""The dashboard: ``/ui``, a page of every job the caller can reach, and a job's page.

The page and its script and style load without a key (they hold nothing); the page asks
for the gateway key, keeps it in sessionStorage and sends it in the Authorization
header, never in a URL. Its data comes from the API itself (``/v1/fine_tuning/jobs``,
once per virtual key, with ``x-portkey-virtual-key``) and from two JSON endpoints here,
authenticated as ``/v1`` is (``gateway.middleware.auth_middleware``):

    GET /ui/api/virtual-keys            the virtual keys this gateway key may use
    GET /ui/api/jobs/{id}/metrics       a job's metrics series, downsampled here

Everything is served with a strict Content-Security-Policy: no inline script or style,
nothing from elsewhere. The script renders what a job carries as text only.
"""

from __future__ import annotations

from importlib import resources

import msgspec
from aiohttp import web

from gateway import keys
from gateway.handlers.common import path_id, provider_for, timed
from gateway.handlers.jobs import JOB_ID
from gateway.provider import PageQuery
from gateway.ui.series import Event, decode_page, page_of, series_of

PREFIX = "/ui"
API_PREFIX = "/ui/api/"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_STATIC = {
    "app.js": "text/javascript",
    "chart.js": "text/javascript",
    "app.css": "text/css",
}
# Buckets a series is cut to (each keeps its minimum and maximum: up to twice as many
# points); a page may ask for fewer.
MAX_BUCKETS = 2000
_EVENTS_PAGE = 10_000
# A job with more events than this is plotted from its first pages only.
_MAX_EVENT_PAGES = 100


def _asset(name: str) -> bytes:
    return resources.files("gateway.ui").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.Response(
        body=_asset(name),
        content_type=_STATIC[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def virtual_keys(request: web.Request) -> web.Response:
    """Names and provider slugs of the virtual keys this caller's gateway key may use."""
    gateway_key = request.get(keys.GATEWAY_KEY)
    config = request.app[keys.CONFIG]
    listed = [
        {"name": vk.name, "provider": vk.provider.slug}
        for vk in config.virtual_keys.values()
        if gateway_key is None or gateway_key.may_use(vk.name)
    ]
    return web.json_response({"object": "list", "data": listed})


async def job_metrics(request: web.Request) -> web.Response:
    """The job's metrics series, from its metrics events, routed as the API is."""
    job_id = path_id(request, JOB_ID)
    buckets = _buckets(request.query.get("buckets"))
    events: list[Event] = []
    async with provider_for(request) as provider:
        after: str | None = None
        for _ in range(_MAX_EVENT_PAGES):
            query = PageQuery(_EVENTS_PAGE, after=after)
            result = await timed(request, provider.list_events(job_id, query))
            if isinstance(result, msgspec.Raw):
                page = decode_page(bytes(result))
            else:
                page = page_of(msgspec.to_builtins(result))
            events.extend(page.data)
            last = page.data[-1].id if page.data else None
            if not page.has_more or not isinstance(last, str):
                break
            after = last
    return web.json_response(
        {"object": "fine_tuning.job.metrics", "series": series_of(events, buckets)}
    )


def _buckets(raw: str | None) -> int:
    try:
        value = int(raw) if raw is not None else MAX_BUCKETS
    except ValueError:
        value = MAX_BUCKETS
    return max(1, min(value, MAX_BUCKETS))


async def harden(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: every ``/ui`` answer, errors too, under the strict policy."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"


def add_routes(app: web.Application) -> None:
    app.on_response_prepare.append(harden)
    app.router.add_get(PREFIX, index)
    app.router.add_get(PREFIX + "/", index)
    app.router.add_get(PREFIX + "/static/{name}", static)
    app.router.add_get(API_PREFIX + "virtual-keys", virtual_keys)
    app.router.add_get(API_PREFIX + "jobs/{" + JOB_ID + "}/metrics", job_metrics)
