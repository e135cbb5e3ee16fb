"""The middlewares every request goes through, outermost first.

1. ``context_middleware``: a request id (kept from a sane ``x-request-id``, else new),
   echoed on every response, one access-log line per request, and its metrics.
2. ``error_middleware``: the one place errors are rendered, in OpenAI's envelope.
   Unknown exceptions become a 500 that names the request id, never a stack trace.
3. ``auth_middleware``: the gateway key, for everything under ``/v1`` and the
   dashboard's data (``/ui/api``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from secrets import token_hex
from typing import IO

import msgspec
from aiohttp import web

from gateway import keys, metrics
from gateway.answers import UpstreamBadResponse
from gateway.errors import (
    BadRequest,
    GatewayError,
    InternalError,
    NotFound,
    PayloadTooLarge,
    error_for_status,
)
from gateway.line_budget import use_line_limits
from gateway.retry import collect_attempts
from gateway.routing import authenticate
from gateway.upstream import collect_upstream_request_ids, use_pool

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

access_log = logging.getLogger("finetune_gateway.access")
error_log = logging.getLogger("finetune_gateway.error")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else f"req_{token_hex(16)}"
    request[keys.REQUEST_ID] = request_id
    request[keys.UPSTREAM_REQUEST_IDS] = collect_upstream_request_ids()
    request[keys.UPSTREAM_ATTEMPTS] = collect_attempts()
    app = request.app
    if (http1 := app.get(keys.HTTP1)) is not None:
        use_pool(http1)
    if (line_limits := app.get(keys.LINE_LIMITS)) is not None:
        use_line_limits(line_limits)
    counts = app[keys.METRICS]
    metrics.track(counts, request)
    counts.in_flight += 1
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        seconds = time.perf_counter() - started
        counts.in_flight -= 1
        counts.observe_request(
            route=metrics.route_of(request),
            method=metrics.method_of(request),
            provider=request.get(keys.PROVIDER, metrics.NO_PROVIDER),
            status=status,
            seconds=seconds,
            upstream_seconds=request.get(keys.UPSTREAM_SECONDS),
        )
        if app[keys.CONFIG].server.access_log:
            _log_access(request, status, seconds)


def _log_access(request: web.Request, status: int, seconds: float) -> None:
    # Only fields the gateway chose: never headers or bodies, which carry secrets. Those
    # a caller or an upstream can shape (the decoded path, an upstream's request id) are
    # escaped, so one request is always one line of space-separated fields.
    upstream = request.get(keys.UPSTREAM_SECONDS)
    line = (
        f"request_id={log_field(request[keys.REQUEST_ID])}"
        f" method={log_field(request.method)}"
        f" path={log_field(request.path)}"
        f" provider={log_field(request.get(keys.PROVIDER, '-'))}"
        f" status={status:d}"
        f" upstream_ms={'-' if upstream is None else f'{upstream * 1000:.2f}'}"
        f" total_ms={seconds * 1000:.2f}"
        f" upstream_request_id={log_field((request.get(keys.UPSTREAM_REQUEST_IDS) or ['-'])[-1])}"
    )
    writer = _writer
    if writer is not None and writer.sole_handler():
        writer.write(line)  # what logging would do with the record, without making one
    else:
        access_log.info("%s", line)


class AccessLogWriter(logging.Handler):
    """The access log as ``serve`` writes it: the root handler's format, buffered.

    A line per request written and flushed at once costs a write(2) each, a fifth of a
    cheap request's time; here lines are formatted without a LogRecord or a Formatter
    and written together, at most ``FLUSH_SECONDS`` after the first of them (scheduled
    on the running event loop) or once ``MAX_PENDING`` wait, whichever is first. No line
    is dropped: ``flush`` (and so ``logging.shutdown``, which ``serve`` and every worker
    run on their way out) writes whatever waits. Only a process killed outright loses
    the lines of its last ``FLUSH_SECONDS``.
    """

    FLUSH_SECONDS = 0.1
    MAX_PENDING = 256

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self._pending: list[str] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ""
        self._guard = threading.Lock()  # the pending lines, between threads

    def sole_handler(self) -> bool:
        """Whether logging would hand an access line to this handler and no other."""
        logger = access_log
        return (
            not logger.propagate
            and logger.handlers == [self]
            and not logger.filters
            and not logger.disabled
            and logger.isEnabledFor(logging.INFO)
        )

    def write(self, message: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # logging's asctime, formatted once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        milliseconds = int((now - second) * 1000)
        line = f"{self._stamp},{milliseconds:03d} INFO {access_log.name} {message}\n"
        with self._guard:
            self._pending.append(line)
            full = len(self._pending) >= self.MAX_PENDING
            schedule = not full and not self._scheduled
            self._scheduled = self._scheduled or schedule
        if full:
            self.flush()
        elif schedule:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no event loop in this thread: no later, so now
                self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(record.getMessage())
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self._guard:
            lines, self._pending = self._pending, []
            self._scheduled = False
            if lines:
                self.stream.write("".join(lines))
                self.stream.flush()

    def close(self) -> None:
        self.flush()
        super().close()


_writer: AccessLogWriter | None = None


def install_access_log(stream: IO[str]) -> AccessLogWriter:
    """Write the access log to ``stream`` through an ``AccessLogWriter`` (for ``serve``):
    the access logger's lines then go there alone, as the root handler would write them."""
    global _writer
    writer = AccessLogWriter(stream)
    access_log.addHandler(writer)
    access_log.propagate = False
    _writer = writer
    return writer


# Printable ASCII but the characters that would make a field ambiguous: "%" (the escape
# itself), quotes and backslash (for log shippers that parse them), "=" stays (key=value).
_PLAIN = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('%"\\')
# Any character not in _PLAIN (one regex scan: a field is checked on every request).
_NOT_PLAIN = re.compile("[^" + "".join(re.escape(ch) for ch in sorted(_PLAIN)) + "]")


def log_field(value: str) -> str:
    """``value`` with every other character percent-encoded (UTF-8), as in a URL: no
    CR, LF, space or other control can split or forge a log line."""
    if _NOT_PLAIN.search(value) is None:
        return value or "-"
    return _NOT_PLAIN.sub(lambda found: _percent(found.group()), value)


def _percent(ch: str) -> str:
    return "".join(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:  # aiohttp's own: unknown path, wrong method, ...
        if exc.status < 400:
            raise
        error: GatewayError = _from_http_exception(exc)
    except Exception as exc:
        request_id = request[keys.REQUEST_ID]
        if request.get(keys.STREAM_STARTED):
            # Headers are out: no error response can follow. Re-raising makes aiohttp cut
            # the connection, so the client sees a short body instead of a complete one.
            error_log.warning("request %s failed mid-stream: %s", request_id, type(exc).__name__)
            raise
        if isinstance(exc, GatewayError):
            error = exc
            if isinstance(exc, UpstreamBadResponse):
                # The provider's support needs its own id for the answer; the message
                # names the provider and field, never the answer's content beyond that.
                upstream_ids = request.get(keys.UPSTREAM_REQUEST_IDS) or ["-"]
                error_log.warning(
                    "request %s: %s (upstream request id %s)",
                    request_id, log_field(str(exc)), log_field(upstream_ids[-1]),
                )  # fmt: skip
        else:
            error_log.exception("unhandled error in request %s", request_id)
            error = InternalError(
                f"The gateway failed to handle this request (request id {request_id})"
            )
    return render_error(error)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: every response, streamed ones too, names its request.

    ``x-upstream-request-id`` is the id the provider gave its last call for this request,
    which is what its support asks for. ``x-upstream-attempts`` is the most attempts any
    one upstream call of the request took (1: nothing was retried); absent when no
    upstream call was made.
    """
    request_id = request.get(keys.REQUEST_ID)
    if request_id is not None:
        response.headers["x-request-id"] = request_id
    if upstream_ids := request.get(keys.UPSTREAM_REQUEST_IDS):
        response.headers["x-upstream-request-id"] = upstream_ids[-1]
    if attempts := request.get(keys.UPSTREAM_ATTEMPTS):
        response.headers["x-upstream-attempts"] = str(max(attempts))


def render_error(exc: GatewayError) -> web.Response:
    response = web.Response(
        status=exc.status,
        body=msgspec.json.encode(exc.envelope()),
        content_type="application/json",
    )
    response.headers.update(exc.headers)
    return response


def _from_http_exception(exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(
            "Unknown path: this gateway serves OpenAI's /v1/files and "
            "/v1/fine_tuning/jobs endpoints",
            code="unknown_url",
        )
    if exc.status == 405:
        return BadRequest(f"Method not allowed: {exc.reason}", code="method_not_allowed")
    if exc.status == 413:
        return PayloadTooLarge("Request body too large", code="request_too_large")
    return error_for_status(exc.status)(exc.reason)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(("/v1/", "/ui/api/")):
        gateway_key = authenticate(request.headers, request.app[keys.CONFIG])
        if gateway_key is not None:
            request[keys.GATEWAY_KEY] = gateway_key
    return await handler(request)
