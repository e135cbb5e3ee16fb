"""What every handler shares: choosing the provider, reading bodies, paging, answering."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from gateway import keys
from gateway.config import GatewayKey
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, RequestTimeout
from gateway.json_depth import decode_bounded
from gateway.provider import PageQuery, Provider
from gateway.retry import policy_applied
from gateway.routing import check_overrides, resolve_checked_target, target_of_virtual_key
from gateway.scope import CallScope, entered, with_overrides

T = TypeVar("T")

# Ids are placed in upstream URL paths: only URL-safe characters, never "/" or "%".
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~=-]{0,1023}")
_MAX_LIMIT = 10_000


@asynccontextmanager
async def provider_for(request: web.Request) -> AsyncIterator[Provider]:
    """The provider instance serving this request, chosen from its headers, in its scope,
    its upstream calls under the target's retry and timeout policy."""
    async with provider_for_headers(
        request.app, request.headers, request.get(keys.GATEWAY_KEY), request
    ) as provider:
        yield provider


@asynccontextmanager
async def provider_for_headers(
    app: web.Application,
    headers: Mapping[str, str],
    gateway_key: GatewayKey | None,
    request: web.Request | None = None,
) -> AsyncIterator[Provider]:
    """``provider_for`` from routing headers alone: for a request, or for work the gateway
    does on a caller's behalf later (the webhooks' watcher, with the job's routing)."""
    target = await resolve_checked_target(
        headers, app[keys.CONFIG], app[keys.REGISTRY], gateway_key, app.get(keys.ROUTES)
    )
    if request is not None:
        request[keys.PROVIDER] = target.provider.slug
    scope = CallScope(
        owner=gateway_key.name if gateway_key else None,
        open_target=partial(_open_virtual_key, app, gateway_key),
    )
    policy = target.policy or app[keys.CONFIG].upstream
    async with entered(scope), policy_applied(policy), app[keys.POOL].use(target) as provider:
        yield provider


@asynccontextmanager
async def _open_virtual_key(
    app: web.Application,
    gateway_key: GatewayKey | None,
    name: str,
    overrides: Mapping[str, str],
    *,
    param: str,
) -> AsyncIterator[Provider]:
    """A virtual key's provider for a provider acting for the caller (managed mode),
    under the caller's gateway key scope and the virtual key's own destinations."""
    target = target_of_virtual_key(name, app[keys.CONFIG], gateway_key, param=param)
    settings = with_overrides(target.settings, overrides)
    check_overrides(target, settings, app[keys.CONFIG], param=param)
    target.provider.check_overrides(target.settings, settings, param=param)
    # The virtual key's policy without the request's clock: a provider acting for a caller
    # (managed mode) may use the target after the request is answered (staging).
    policy = target.policy or app[keys.CONFIG].upstream
    async with (
        policy_applied(policy, enforce_total=False),
        app[keys.POOL].use(replace(target, settings=settings)) as provider,
    ):
        yield provider


async def call_provider(
    request: web.Request, call: Callable[[Provider], Awaitable[Any]]
) -> web.Response:
    """Answer with what one provider call returns, timed as upstream latency."""
    async with provider_for(request) as provider:
        return answer(await timed(request, call(provider)))


async def timed(request: web.Request, call: Awaitable[T]) -> T:
    """Await a provider call, adding its time to the request's upstream latency."""
    started = time.perf_counter()
    try:
        return await call
    finally:
        elapsed = time.perf_counter() - started
        request[keys.UPSTREAM_SECONDS] = request.get(keys.UPSTREAM_SECONDS, 0.0) + elapsed


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not _ID.fullmatch(value):
        raise BadRequest(f"'{value}' is not a valid {name}", param=name, code="invalid_id")
    return value


def answer(result: Any, status: int = 200) -> web.Response:
    """A JSON response from a Struct, or from an upstream's bytes passed on as they came."""
    body = result if isinstance(result, msgspec.Raw) else msgspec.json.encode(result)
    return web.Response(body=bytes(body), status=status, content_type="application/json")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, read with the configured size limit."""
    limit = request.app[keys.CONFIG].limits.max_json_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    body = bytearray()
    while chunk := await body_read(request, request.content.readany()):
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    try:
        depth = request.app[keys.CONFIG].limits.max_json_depth
        value = decode_bounded(bytes(body), max_depth=depth, param=None, what="The body")
    except msgspec.DecodeError:
        raise BadRequest(
            "We could not parse the JSON body of your request: it is not valid JSON",
            code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object", code="invalid_json")
    return value


async def body_read(
    request: web.Request,
    read: Awaitable[T],
    *,
    within: float | None = None,
    too_slow: Callable[[], GatewayError] | None = None,
) -> T:
    """One read of the request body, cut off after limits.client_body_timeout of silence.

    A client that stalls mid-body must not hold its connection, an upload slot and an
    upload in progress upstream for ever. ``within`` shortens the wait (an upload's
    minimum rate), ending it with ``too_slow()`` when it is the shorter.
    """
    timeout = request.app[keys.CONFIG].limits.client_body_timeout
    if within is not None and within < timeout and too_slow is not None:
        try:
            async with asyncio.timeout(within):
                return await read
        except TimeoutError:
            raise too_slow() from None
    try:
        async with asyncio.timeout(timeout):
            return await read
    except TimeoutError:
        raise RequestTimeout(
            f"The request body stopped arriving: nothing came for {timeout:g} seconds "
            "(limits.client_body_timeout)",
            code="request_timeout",
        ) from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body is larger than this gateway's limit of {limit} bytes "
        "(limits.max_json_body_bytes)",
        code="request_too_large",
    )


def convert(value: Any, type_: type[T]) -> T:
    """msgspec.convert, with a validation error split into a message and its ``param``."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: msgspec.ValidationError) -> BadRequest:
    message, _, where = str(exc).partition(" - at `$")
    path = where.rstrip("`").lstrip(".")
    missing = re.match(r"Object missing required field `([^`]+)`", message)
    if missing:
        path = f"{path}.{missing[1]}".lstrip(".")
        message = f"Missing required parameter: '{path}'"
    else:
        message = f"Invalid value for '{path}': {message}" if path else message
    return BadRequest(message, param=path or None, code="invalid_value")


def page_query(request: web.Request, *, default_limit: int, with_order: bool = False) -> PageQuery:
    query = request.query
    for name in ("limit", "after", "order", "purpose"):
        if len(query.getall(name, ())) > 1:  # which one was meant? say so, never guess
            raise BadRequest(f"'{name}' is given more than once", param=name, code="invalid_value")
    limit = _int_param(query.get("limit"), "limit", default_limit)
    order = query.get("order") if with_order else None
    if order is not None and order not in ("asc", "desc"):
        raise BadRequest("'order' must be 'asc' or 'desc'", param="order", code="invalid_value")
    metadata: dict[str, str] | None = None
    if query.get("metadata") == "null":
        metadata = {}
    for key, value in query.items():
        if key.startswith("metadata[") and key.endswith("]"):
            metadata = {} if metadata is None else metadata
            metadata[key[len("metadata[") : -1]] = value
    return PageQuery(
        limit=limit,
        after=query.get("after") or None,
        order=order,  # type: ignore[arg-type]  # checked just above
        purpose=query.get("purpose") or None,
        metadata=metadata,
    )


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_LIMIT:
        raise BadRequest(
            f"'{name}' must be a whole number from 1 to {_MAX_LIMIT}",
            param=name,
            code="invalid_value",
        )
    return value
