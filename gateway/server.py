"""The HTTP server: aiohttp's, with limits on clients and a graceful shutdown.

``finetune-gateway serve`` runs the app with ``serve`` here rather than ``web.run_app``,
for what run_app cannot be told to do:

- A request aiohttp's parser refuses (a header over ``limits.max_header_bytes``, too many
  header fields, bytes that are not HTTP) is answered in OpenAI's envelope, and logged by
  its kind only: aiohttp would log the offending line, which may carry a credential.
- On SIGTERM, requests in flight keep receiving their bodies. aiohttp's own shutdown
  closes every connection first, and a closed aiohttp connection drops whatever body is
  still arriving, so an upload in flight could never finish within the grace
  (aio-libs/aiohttp#2298).
- After the grace, what still runs is cancelled and waited for, so uploads abort their
  multipart uploads before the providers and their clients are closed.

Slow clients: aiohttp arms its keep-alive timer when a connection opens and after each
request, does not reset it as bytes trickle in, and closes the connection if no
complete request has arrived when it fires. Set to ``limits.client_header_timeout``, it
is the header timeout. A body that stalls is the handlers' to cut off
(``gateway.handlers.common.body_read``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway import keys
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge, InternalError
from gateway.middleware import render_error

log = logging.getLogger("finetune_gateway")
error_log = logging.getLogger("finetune_gateway.error")

_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# After the grace, cancelled requests get this long to abort what they started upstream
# (one S3 or GCS call per upload) before the providers are closed under them.
ABORT_SECONDS = 10.0
# The longest aiohttp keeps reading (and dropping) a body it has already answered, so the
# client can read the answer before the connection closes; aiohttp's own default.
_LINGER_SECONDS = 10.0


class _Connection(RequestHandler):
    """One client connection: aiohttp's, answering what it cannot parse in the envelope."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, BadHttpMessage):
            # Not the parser's: a bug past error_middleware. aiohttp logs its traceback.
            self.log_exception("Error handling request", exc_info=exc)
            error: GatewayError = InternalError("The gateway failed to handle this request")
        else:
            error = _parse_error(exc, self.max_field_size, self.max_headers)
            # Only the kind: the message quotes the offending line, maybe a credential.
            error_log.warning(
                "refused a request it could not parse: %d %s", error.status, type(exc).__name__
            )
        if request.writer.output_size > 0:
            raise ConnectionError("Response already started: the connection is cut instead")
        response = render_error(error)
        response.force_close()
        return response


def _parse_error(exc: BadHttpMessage, max_bytes: int, max_count: int) -> GatewayError:
    if isinstance(exc, LineTooLong):
        return HeadersTooLarge(
            f"The request line or a header field is longer than this gateway's limit of "
            f"{max_bytes} bytes (limits.max_header_bytes)",
            code="request_header_too_large",
        )
    if exc.message == "Too many headers received":
        return HeadersTooLarge(
            f"The request has more header fields than this gateway's limit of {max_count} "
            "(limits.max_header_count)",
            code="request_header_too_large",
        )
    return BadRequest(
        f"The gateway could not parse this HTTP request ({type(exc).__name__})",
        code="malformed_request",
    )


class _Server(web.Server):
    """aiohttp's Server, making _Connections and knowing which requests are in flight."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        self._app_handler = handler
        self.in_flight: dict[asyncio.Task[Any], RequestHandler] = {}
        self.stopping = False
        super().__init__(self._track, **kwargs)

    def __call__(self) -> RequestHandler:
        # aiohttp has no public way to choose the connection class: this is its own
        # Server.__call__ with _Connection for RequestHandler (tests/test_limits.py and
        # tests/test_shutdown.py fail if that changes under it).
        return _Connection(self, loop=self._loop, **self._kwargs)

    async def _track(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None  # aiohttp runs each request in its own task
        self.in_flight[task] = request.protocol
        try:
            response = await self._app_handler(request)
        finally:
            del self.in_flight[task]
        if self.stopping:
            response.force_close()  # the connection closes once this answer is out
        return response


class GatewayRunner(web.AppRunner):
    """An AppRunner whose server is a _Server, with the config's limits on connections."""

    def __init__(self, app: web.Application) -> None:
        limits = app[keys.CONFIG].limits
        super().__init__(
            app,
            access_log=None,  # the gateway writes its own (gateway.middleware)
            # Leftovers only: serve() has waited for and cancelled requests already.
            shutdown_timeout=ABORT_SECONDS,
            keepalive_timeout=limits.client_header_timeout,
            max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_header_count,
            lingering_time=min(_LINGER_SECONDS, limits.client_body_timeout),
        )

    @property
    def gateway_server(self) -> _Server:
        assert isinstance(self.server, _Server), "setup() first"
        return self.server

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )


async def serve(
    app: web.Application,
    *,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` (or a listening ``sock``, as ``--workers`` gives
    each worker) until SIGTERM or SIGINT, then shut down gracefully (see ``drain``)."""
    runner = GatewayRunner(app)
    await runner.setup()
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, signalled.set)
    try:
        site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
        await site.start()
        await signalled.wait()
        signalled.clear()  # a second signal ends the grace early
        await drain(runner, app[keys.CONFIG].server.shutdown_grace, signalled)
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)
        await runner.cleanup()  # app shutdown, then its cleanup: providers closed
    log.info("stopped")


async def drain(runner: GatewayRunner, grace: float, hurry: asyncio.Event) -> None:
    """Stop taking connections, let requests in flight finish, then cancel the rest.

    Idle connections are closed at once; busy ones close after their answer. Requests
    still running after ``grace`` seconds (or when ``hurry`` is set) are cancelled, and
    get ABORT_SECONDS to undo what they started upstream.
    """
    loop = asyncio.get_running_loop()
    server = runner.gateway_server
    for site in list(runner.sites):
        await site.stop()  # the listening socket closes: new connections are refused
    server.stopping = True
    busy = set(server.in_flight.values())
    idle = [c for c in server.connections if c not in busy]
    for connection in idle:
        connection.close()  # what aiohttp's pre_shutdown does, for idle ones only
    closing = [asyncio.ensure_future(c.shutdown(ABORT_SECONDS)) for c in idle]
    log.info(
        "shutting down: no new connections; %d request(s) in flight get up to %gs",
        len(server.in_flight),
        grace,
    )
    deadline = loop.time() + grace
    hurried = asyncio.ensure_future(hurry.wait())
    try:
        while server.in_flight and not hurry.is_set() and (left := deadline - loop.time()) > 0:
            await asyncio.wait(
                [*server.in_flight, hurried], timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
    finally:
        hurried.cancel()
    if left_running := list(server.in_flight):
        log.warning(
            "cancelling %d request(s) still running after the grace; "
            "their uploads in progress are aborted",
            len(left_running),
        )
        for task in left_running:
            task.cancel()
        await asyncio.wait(left_running, timeout=ABORT_SECONDS)
    await asyncio.gather(*closing, return_exceptions=True)
