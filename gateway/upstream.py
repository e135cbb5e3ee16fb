"""Calling an upstream over HTTP, and turning its failures into the gateway's errors.

Shared by every plugin that speaks HTTP, so the mapping is the same everywhere:
- a 4xx keeps its status, message, ``param`` and ``code`` (the caller's mistake);
- a 401/403 about credentials from the gateway's own config is a 502: the caller
  cannot fix the gateway's keys, and must not be told its own key is wrong;
- a 5xx is a 502 with the upstream's message; unreachable is 502, too slow is 504;
- whatever comes back, known secrets are masked before it reaches a client or a log.

Every call here retries and times out by the request's policy (``gateway.retry``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import aiohttp
import msgspec

from gateway.errors import (
    BadRequest,
    GatewayError,
    UpstreamError,
    UpstreamTimeout,
    error_for_status,
)
from gateway.http1 import Answer, ConnectFailed, Http1Pool, ProtocolError
from gateway.provider import Download
from gateway.retry import Failure, current_policy, retry_after_seconds, with_retries

# How much of an error body is read: enough for any message, bounded against a flood.
_ERROR_BODY_LIMIT = 64 * 1024


# The request ids upstreams gave this request's calls, newest last: passed back to the
# client as ``x-upstream-request-id`` because a provider's support asks for its own id.
# A list set per request by the middleware (so calls made in child tasks still add to
# it); None outside a request.
_upstream_request_ids: ContextVar[list[str] | None] = ContextVar(
    "upstream_request_ids", default=None
)
# Where providers put their request id (OpenAI, Azure's API management, AWS, Google).
UPSTREAM_REQUEST_ID_HEADERS = ("x-request-id", "apim-request-id", "x-amzn-requestid")


def collect_upstream_request_ids() -> list[str]:
    """Start collecting upstream request ids for the current request; returns the list."""
    ids: list[str] = []
    _upstream_request_ids.set(ids)
    return ids


def note_upstream_request_id(value: str | None) -> None:
    """Record an upstream's request id (for providers that do not go through ``request``)."""
    ids = _upstream_request_ids.get()
    if ids is not None and value and len(value) <= 128 and value.isprintable():
        ids.append(value)


# The app's keep-alive pool for JSON calls (``gateway.http1``), set per request by the
# middleware like the list above; outside a request, calls go through aiohttp.
_http1_pool: ContextVar[Http1Pool | None] = ContextVar("http1_pool", default=None)

# What a provider's ``check`` is given: aiohttp's response for streamed calls, the lean
# client's whole answer for JSON calls. Both have ``status``, ``reason`` and ``headers``.
UpstreamResponse = aiohttp.ClientResponse | Answer


def use_pool(pool: Http1Pool) -> None:
    """Send the current request's JSON calls through ``pool``."""
    _http1_pool.set(pool)


def _note_response(response: UpstreamResponse) -> None:
    for header in UPSTREAM_REQUEST_ID_HEADERS:
        if value := response.headers.get(header):
            note_upstream_request_id(value)
            return


# Reads an error body (and the HTTP reason, for bodies with no message) into
# ``(message, param, code)``.
ErrorParser = Callable[[bytes, str], tuple[str, str | None, str | None]]


class _OpenAIErrorBody(msgspec.Struct):
    message: str | None = None
    param: str | None = None
    code: str | int | None = None
    type: str | None = None


class _OpenAIEnvelope(msgspec.Struct):
    error: _OpenAIErrorBody | str | None = None


def redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _mask(secret))
    return text


def _mask(secret: str) -> str:
    return "***" if len(secret) < 12 else f"{secret[:3]}***{secret[-2:]}"


def upstream_error(
    *,
    provider: str,
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    caller_credentials: bool,
    secrets: Iterable[str | None] = (),
    retry_after: str | None = None,
) -> GatewayError:
    """The gateway error for an upstream's failure answer (see the module docstring)."""
    message = redact(message, secrets)
    if status in (401, 403) and not caller_credentials:
        return UpstreamError(
            f"{provider} refused the gateway's configured credentials ({status}): {message}",
            code="upstream_auth_failed",
        )
    if status >= 500 or status < 400:
        return UpstreamError(
            f"{provider} failed ({status}): {message}", code=code or "upstream_error"
        )
    headers = {"Retry-After": retry_after} if retry_after else None
    return error_for_status(status)(message, param=param, code=code, headers=headers)


async def raise_for_openai_status(
    response: UpstreamResponse,
    *,
    provider: str,
    caller_credentials: bool,
    secrets: Iterable[str | None] = (),
    parse: ErrorParser | None = None,
) -> None:
    """Raise the mapped error for a failed answer.

    The body is read in OpenAI's envelope unless ``parse`` reads the provider's own
    (Azure's Microsoft envelope, say) into ``(message, param, code)``.
    """
    if response.status < 400:
        return
    if isinstance(response, Answer):
        raw = response.body[:_ERROR_BODY_LIMIT]
    else:
        raw = await response.content.read(_ERROR_BODY_LIMIT)
    message, param, code = (parse or _parse_openai_error)(raw, response.reason or "")
    raise upstream_error(
        provider=provider,
        status=response.status,
        message=message,
        param=param,
        code=code,
        caller_credentials=caller_credentials,
        secrets=secrets,
        retry_after=response.headers.get("Retry-After"),
    )


def _parse_openai_error(raw: bytes, reason: str) -> tuple[str, str | None, str | None]:
    try:
        envelope = msgspec.json.decode(raw, type=_OpenAIEnvelope)
    except msgspec.DecodeError:
        text = raw.decode("utf-8", "replace").strip()[:500]
        return (text or reason or "no message"), None, None
    error = envelope.error
    if isinstance(error, _OpenAIErrorBody):
        code = None if error.code is None else str(error.code)
        return (error.message or reason or "no message"), error.param, code
    return (error or reason or "no message"), None, None


@contextmanager
def mapped_errors(provider: str) -> Iterator[None]:
    """Connection failures and timeouts, also while reading a body, as gateway errors."""
    try:
        yield
    except GatewayError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(
            f"{provider} did not answer in time", code="upstream_timeout"
        ) from None
    except (aiohttp.ClientConnectorError, ConnectFailed) as exc:
        raise UpstreamError(
            f"Could not connect to {provider} at {exc.host}:{exc.port}",
            code="upstream_unreachable",
        ) from None
    except (aiohttp.ClientError, OSError) as exc:  # OSError: the lean client's failures
        raise UpstreamError(
            f"Connection to {provider} failed: {type(exc).__name__}",
            code="upstream_connection_error",
        ) from None


def without_silent_retries(http: aiohttp.ClientSession) -> None:
    """Turn off aiohttp's own retry of an idempotent request whose keep-alive connection
    dropped: the request's policy retries it instead, so attempts are counted and never
    exceed ``attempts`` (aiohttp has no public switch; its test client does the same)."""
    http._retry_connection = False


# Methods whose repetition changes nothing more than one call would (RFC 9110, 9.2.2); a
# POST is repeated only when the caller says the upstream makes it so (``idempotent``).
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@asynccontextmanager
async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    idempotent: bool | None = None,
    **kwargs: Any,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """``http.request``, its body read inside the block, with failures mapped."""
    response = await send(http, method, url, provider=provider, idempotent=idempotent, **kwargs)
    with mapped_errors(provider):
        async with response:
            yield response


async def send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    idempotent: bool | None = None,
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    """An open response, for streaming its body on; the caller releases it.

    Retried by the request's policy when the call may be repeated: ``idempotent`` (by
    default, by the method) and a body that can be sent again (bytes, not a stream).

    Redirects are never followed: the allow-list and the credentials' destinations were
    checked for this URL, not for wherever an upstream answer points. A 3xx answer is a
    502 ``upstream_redirect``, unless the caller passed ``allow_redirects=False`` itself
    to read 3xx answers as answers (Cloud Storage's resumable uploads answer 308).
    """
    redirects_are_answers = kwargs.get("allow_redirects") is False
    kwargs["allow_redirects"] = False
    policy = current_policy()
    kwargs.setdefault(
        "timeout",
        aiohttp.ClientTimeout(sock_connect=policy.connect_timeout, sock_read=policy.read_timeout),
    )
    repeatable = idempotent if idempotent is not None else method in _IDEMPOTENT_METHODS
    data = kwargs.get("data")
    replayable = data is None or isinstance(data, bytes | str)

    async def attempt() -> aiohttp.ClientResponse:
        return await http.request(method, url, **kwargs)

    with mapped_errors(provider):
        response = await with_retries(
            attempt,
            idempotent=repeatable and replayable,
            failure_of=connection_failure,
            answer_failure=_answer_failure,
            discard=lambda answer: answer.release(),
        )
    _note_response(response)
    if not redirects_are_answers and response.status in REDIRECTS:
        response.release()
        raise redirect_refused(provider, response.status)
    return response


DOWNLOAD_CHUNK = 256 * 1024


async def download(
    http: aiohttp.ClientSession,
    url: str,
    *,
    provider: str,
    check: Callable[[UpstreamResponse], Awaitable[None]],
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> Download:
    """A file's content from a ``GET``, streamed on as it arrives.

    ``check`` raises the mapped error for a failed answer, as for ``call_json``; the
    connection is released on that error, or by the ``Download``'s ``release`` once the
    gateway has sent the body on.
    """
    response = await send(http, "GET", url, provider=provider, params=params, headers=headers)
    try:
        await check(response)
    except BaseException:
        response.release()
        raise

    async def release() -> None:
        response.release()

    return Download(
        chunks=response.content.iter_chunked(DOWNLOAD_CHUNK),
        # A compressed answer is decompressed on the way: its length no longer holds.
        size=None if "Content-Encoding" in response.headers else response.content_length,
        content_type=response.headers.get("Content-Type", "application/octet-stream"),
        release=release,
    )


# The statuses with which an HTTP client would follow a Location (RFC 9110, 15.4).
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def redirect_refused(provider: str, status: int) -> UpstreamError:
    # The Location is not named: it is the upstream's to choose, and may carry anything.
    return UpstreamError(
        f"{provider} answered {status}, a redirect; the gateway never follows redirects",
        code="upstream_redirect",
    )


def refusing_redirects() -> aiohttp.TraceConfig:
    """For every ``aiohttp.ClientSession`` the gateway makes: a redirect is refused even by
    a caller that left aiohttp's ``allow_redirects=True`` (gcloud-aio's token and metadata
    calls do), instead of each caller having to remember. ``send``'s own calls pass
    ``allow_redirects=False`` and never reach it."""

    async def refuse(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        raise redirect_refused(params.url.host or "an upstream", params.response.status)

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(refuse)
    trace.freeze()
    return trace


def connection_failure(exc: BaseException) -> Failure | None:
    """A lost or refused connection (worth another try); None for anything else.

    A timeout is not one (see ``gateway.retry``), nor a TLS failure (it will fail again).
    """
    if isinstance(exc, aiohttp.ServerTimeoutError | aiohttp.ClientSSLError | TimeoutError):
        return None
    return Failure(None) if isinstance(exc, aiohttp.ClientConnectionError) else None


def _answer_failure(response: UpstreamResponse) -> Failure | None:
    if response.status < 400:
        return None
    return Failure(response.status, retry_after_seconds(response.headers))


async def call_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    check: Callable[[UpstreamResponse], Awaitable[None]],
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    body: Any = None,
    form: aiohttp.MultipartWriter | None = None,
    idempotent: bool | None = None,
) -> msgspec.Raw:
    """One upstream call answered with JSON, for providers with JSON APIs.

    ``body`` is sent as JSON, ``form`` as multipart (never retried: it streams);
    ``check`` raises the mapped error for a failed answer (``raise_for_openai_status``
    with the provider's secrets, say). ``idempotent`` as for ``send``.
    """
    sent = dict(headers)
    data: bytes | aiohttp.MultipartWriter | None = form
    if body is not None:
        data = msgspec.json.encode(body)
        sent["Content-Type"] = "application/json"
    pool = _http1_pool.get()
    if pool is not None and not isinstance(data, aiohttp.MultipartWriter):
        answer = await _lean_call(
            pool, method, url, provider=provider, headers=sent, params=params, body=data,
            idempotent=idempotent,
        )  # fmt: skip
        await check(answer)
        return _checked_json(answer.body, answer.status, provider)
    async with request(
        http,
        method,
        url,
        provider=provider,
        idempotent=idempotent,
        params=params,
        data=data,
        headers=sent,
    ) as response:
        await check(response)
        return await read_json(response, provider)


async def _lean_call(
    pool: Http1Pool,
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None,
    body: bytes | None,
    idempotent: bool | None,
) -> Answer:
    """A JSON call through the lean client, under the same policy as ``send``'s."""
    policy = current_policy()
    repeatable = idempotent if idempotent is not None else method in _IDEMPOTENT_METHODS

    async def attempt() -> Answer:
        try:
            return await pool.request(
                method, url, headers=headers, params=params, body=body,
                connect_timeout=policy.connect_timeout, read_timeout=policy.read_timeout,
            )  # fmt: skip
        except ValueError as exc:  # a header or URL that cannot be sent as it is
            raise BadRequest(f"Cannot call {provider}: {exc}", code="invalid_value") from None

    with mapped_errors(provider):
        answer = await with_retries(
            attempt,
            idempotent=repeatable,
            failure_of=_lean_connection_failure,
            answer_failure=_answer_failure,
        )
    _note_response(answer)
    if answer.status in REDIRECTS:  # the lean client never follows one either
        raise redirect_refused(provider, answer.status)
    return answer


def _lean_connection_failure(exc: BaseException) -> Failure | None:
    """As ``connection_failure``, for the lean client: refused or reset is worth another
    try; a timeout, a TLS failure or an answer that is not HTTP is not."""
    if isinstance(exc, TimeoutError | ssl.SSLError | ProtocolError):
        return None
    return Failure(None) if isinstance(exc, ConnectFailed | ConnectionError) else None


async def read_json(response: aiohttp.ClientResponse, provider: str) -> msgspec.Raw:
    """The upstream's JSON body as it came, checked to be JSON (never forwarded blindly)."""
    return _checked_json(await response.read(), response.status, provider)


def _checked_json(body: bytes, status: int, provider: str) -> msgspec.Raw:
    try:
        # Decoding into Raw checks the whole document without building its objects.
        msgspec.json.decode(body, type=msgspec.Raw)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested past all reason
        raise UpstreamError(
            f"{provider} answered {status} with a body that is not JSON",
            code="upstream_bad_response",
        ) from None
    return msgspec.Raw(body)
