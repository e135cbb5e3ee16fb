"""OpenAI's webhook endpoints API, served by the gateway itself (never forwarded).

``/v1/webhook_endpoints`` and ``/v1/webhook_event_types``, shaped as openai-python's
``WebhookEndpoint``, ``WebhookEndpointWithSecret`` (the secret only on create and
rotate), ``DeletedWebhookEndpoint``, ``WebhookEndpointTestResult`` and
``WebhookEventTypeList``. An endpoint belongs to the gateway key that made it: another
key neither sees it nor its events; with no gateway keys the API is off.
"""

from __future__ import annotations

import secrets
import time

import msgspec
from aiohttp import web

from gateway import keys
from gateway.errors import BadRequest, Forbidden, NotFound, Unauthorized
from gateway.handlers.common import convert, path_id, read_json_object
from gateway.webhooks import signing
from gateway.webhooks.service import Webhooks, webhooks_of
from gateway.webhooks.store import END_EVENTS, EndpointRow

EVENT_TYPES = tuple(END_EVENTS.values())
ENDPOINT_ID = "webhook_endpoint_id"
_MAX_LIMIT = 100


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    url: str
    event_types: list[str]


class UpdateBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    url: str | None = None
    event_types: list[str] | None = None


class RotateBody(msgspec.Struct, forbid_unknown_fields=True):
    keep_old_secret_active_for_24_hours: bool = False


class TestBody(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str


class Endpoint(msgspec.Struct):
    id: str
    created_at: int
    event_types: list[str]
    name: str
    url: str
    signing_secret_hint: str
    updated_at: int
    object: str = "webhook_endpoint"


class EndpointWithSecret(msgspec.Struct):
    id: str
    created_at: int
    event_types: list[str]
    name: str
    url: str
    signing_secret: str
    signing_secret_hint: str
    updated_at: int
    object: str = "webhook_endpoint"


class EndpointList(msgspec.Struct):
    data: list[Endpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None
    object: str = "list"


class Deleted(msgspec.Struct):
    id: str
    deleted: bool = True
    object: str = "webhook_endpoint.deleted"


class TestResult(msgspec.Struct):
    event_type: str
    status_code: int
    webhook_endpoint_id: str
    success: bool = True
    object: str = "webhook_endpoint.test"


class EventTypeList(msgspec.Struct):
    data: list[str]
    object: str = "list"


def _json(value: msgspec.Struct) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), content_type="application/json")


def _public(row: EndpointRow) -> Endpoint:
    return Endpoint(
        row.id, row.created_at, row.event_types, row.name, row.url, row.hint, row.updated_at
    )


def _with_secret(row: EndpointRow, secret: str) -> EndpointWithSecret:
    return EndpointWithSecret(
        row.id, row.created_at, row.event_types, row.name, row.url, secret, row.hint,
        row.updated_at,
    )  # fmt: skip


def _owner(request: web.Request) -> tuple[Webhooks, str]:
    config = request.app[keys.CONFIG]
    if not config.gateway_keys:
        raise Forbidden(
            "The webhook endpoints API is off: this gateway has no gateway keys, and an "
            "endpoint belongs to the gateway key that creates it. Add a [gateway_keys.NAME] "
            "table (key = ...) and a [webhooks] database to the config to turn it on",
            code="webhooks_disabled",
        )
    gateway_key = request.get(keys.GATEWAY_KEY)
    if gateway_key is None:
        raise Unauthorized(
            "Webhook endpoints are managed with a gateway key (Authorization: Bearer ...)",
            code="invalid_api_key",
        )
    hooks = webhooks_of(request.app)
    if hooks is None:
        raise Forbidden(
            "Webhooks are off on this gateway: set [webhooks] database in the config "
            "to turn them on",
            code="webhooks_disabled",
        )
    return hooks, gateway_key.name


def _event_types(given: list[str], param: str = "event_types") -> list[str]:
    unknown = [t for t in given if t not in EVENT_TYPES]
    if unknown or not given:
        what = f"unsupported event types {unknown}" if unknown else "no event types"
        raise BadRequest(
            f"{param}: {what}; this gateway sends {', '.join(EVENT_TYPES)}",
            param=param,
            code="invalid_event_type",
        )
    return list(dict.fromkeys(given))


def _name(name: str) -> str:
    if not name.strip() or len(name) > 256:
        raise BadRequest("name must be 1 to 256 characters", param="name")
    return name


async def _row(request: web.Request, hooks: Webhooks, owner: str) -> EndpointRow:
    endpoint_id = path_id(request, ENDPOINT_ID)
    row = await hooks.store.endpoint(owner, endpoint_id)
    if row is None:  # another key's endpoint is as absent as one never made
        raise NotFound(f"No webhook endpoint found with id '{endpoint_id}'", param=ENDPOINT_ID)
    return row


async def create(request: web.Request) -> web.Response:
    hooks, owner = _owner(request)
    body = convert(await read_json_object(request), CreateBody)
    url = await hooks.check_url(body.url)
    secret = signing.new_secret()
    now = int(time.time())
    row = EndpointRow(
        id="we_" + secrets.token_hex(12),
        owner=owner,
        name=_name(body.name),
        url=url,
        event_types=_event_types(body.event_types),
        secret=hooks.sealer().seal(secret),
        old_secret=None,
        old_until=None,
        hint=signing.hint(secret),
        created_at=now,
        updated_at=now,
    )
    await hooks.store.add_endpoint(row)
    return _json(_with_secret(row, secret))


async def list_endpoints(request: web.Request) -> web.Response:
    hooks, owner = _owner(request)
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise BadRequest("limit must be an integer", param="limit") from None
    if not 1 <= limit <= _MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {_MAX_LIMIT}", param="limit")
    rows = await hooks.store.endpoints(owner, request.query.get("after"), limit + 1)
    data = [_public(row) for row in rows[:limit]]
    first = data[0].id if data else None
    last = data[-1].id if data else None
    return _json(EndpointList(data, len(rows) > limit, first, last))


async def retrieve(request: web.Request) -> web.Response:
    hooks, owner = _owner(request)
    return _json(_public(await _row(request, hooks, owner)))


async def update(request: web.Request) -> web.Response:
    hooks, owner = _owner(request)
    row = await _row(request, hooks, owner)
    body = convert(await read_json_object(request), UpdateBody)
    changed = msgspec.structs.replace(
        row,
        name=row.name if body.name is None else _name(body.name),
        url=row.url if body.url is None else await hooks.check_url(body.url),
        event_types=row.event_types if body.event_types is None else _event_types(body.event_types),
    )
    if changed != row:
        changed = msgspec.structs.replace(changed, updated_at=int(time.time()))
        await hooks.store.replace_endpoint(changed)
    return _json(_public(changed))


async def delete(request: web.Request) -> web.Response:
    hooks, owner = _owner(request)
    row = await _row(request, hooks, owner)
    await hooks.store.delete_endpoint(owner, row.id)
    return _json(Deleted(row.id))


async def rotate_secret(request: web.Request) -> web.Response:
    hooks, owner = _owner(request)
    row = await _row(request, hooks, owner)
    body = (
        convert(await read_json_object(request), RotateBody)
        if request.can_read_body
        else RotateBody()
    )
    secret = signing.new_secret()
    now = int(time.time())
    keep = body.keep_old_secret_active_for_24_hours
    rotated = msgspec.structs.replace(
        row,
        secret=hooks.sealer().seal(secret),
        old_secret=row.secret if keep else None,
        old_until=now + 24 * 3600 if keep else None,
        hint=signing.hint(secret),
        updated_at=now,
    )
    await hooks.store.replace_endpoint(rotated)
    return _json(_with_secret(rotated, secret))


async def test(request: web.Request) -> web.Response:
    hooks, owner = _owner(request)
    row = await _row(request, hooks, owner)
    body = convert(await read_json_object(request), TestBody)
    _event_types([body.event_type], param="event_type")
    status = await hooks.send_test(row, body.event_type)
    return _json(TestResult(body.event_type, status, row.id))


async def event_types(request: web.Request) -> web.Response:
    _owner(request)
    return _json(EventTypeList(list(EVENT_TYPES)))


def add_routes(app: web.Application) -> None:
    base = "/v1/webhook_endpoints"
    one = base + "/{" + ENDPOINT_ID + "}"
    app.router.add_post(base, create)
    app.router.add_get(base, list_endpoints)
    app.router.add_get(one, retrieve)
    app.router.add_post(one, update)
    app.router.add_delete(one, delete)
    app.router.add_post(one + "/rotate_secret", rotate_secret)
    app.router.add_post(one + "/test", test)
    app.router.add_get("/v1/webhook_event_types", event_types)
