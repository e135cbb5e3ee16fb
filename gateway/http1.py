"""A lean HTTP/1.1 client with keep-alive, for the small JSON calls made to providers.

aiohttp's ``ClientSession`` spends about 130 µs of CPU on every request here (cookie jar,
tracing hooks, URL and header merging, a timer per read): more than the rest of a
proxied call together. A JSON call needs little of it: a method, a URL, a few headers,
a small body, and the answer read whole. This client keeps connections open per
(scheme, host, port), writes each request in one piece, reads the answer with one
inactivity timer, and returns the connection for the next call.

Used by ``gateway.upstream.call_json`` for bodies it encodes itself, under the same call
policy as every other upstream call (timeouts, retries: ``gateway.retry``) and the same
resolver as aiohttp's session (``gateway.resolver``: a request-named host's addresses are
checked again on connecting) and the same egress policy (``gateway.egress``: every
address is checked before it is connected to, and only checked addresses are); uploads
(multipart, streamed) and downloads stay on aiohttp. Failures are Python's own
exceptions (``TimeoutError``, ``ConnectionError``, ``ConnectFailed``), which
``gateway.upstream.mapped_errors`` turns into the gateway's errors like aiohttp's.
No redirects are followed (a 3xx is an answer, which ``gateway.upstream`` refuses as
``upstream_redirect``): a provider's JSON API does not redirect, and following one would
let an upstream aim the gateway at another host.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict
from yarl import URL

from gateway import __version__
from gateway.egress import EgressPolicy, current_policy

_USER_AGENT = f"finetune-gateway/{__version__}"
_MAX_HEAD = 64 * 1024
_MAX_PER_HOST = 100
_MAX_IDLE_PER_HOST = 64


class ConnectFailed(OSError):
    """The upstream could not be reached at all (refused, no route, name unknown)."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {error}")
        self.host = host
        self.port = port


class ProtocolError(ConnectionError):
    """The upstream's answer is not HTTP/1.x as this client reads it."""


@dataclass(slots=True)
class Answer:
    """A whole upstream answer; ``status``, ``reason`` and ``headers`` as aiohttp names them."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Answer] | None = None
        self.head_request = False
        self.last_read = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            if self.waiter is None:  # bytes nobody asked for: this connection is unusable
                self.close()
            return
        try:
            answer = self._parse(eof=False)
        except ProtocolError as exc:
            self.waiter.set_exception(exc)
            self.close()
            return
        if answer is not None:
            self.waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        self._finish_at_close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish_at_close()

    def _finish_at_close(self) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            try:
                answer = self._parse(eof=True)
            except ProtocolError as exc:
                self.waiter.set_exception(exc)
                return
            if answer is None:
                self.waiter.set_exception(ConnectionResetError("upstream closed the connection"))
            else:
                self.waiter.set_result(answer)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def keep_alive(self) -> bool:
        return not self.closed and not self.buffer

    async def exchange(self, request: bytes, *, head: bool, read_timeout: float) -> Answer:
        """Send one request and wait for its whole answer, failing after ``read_timeout``
        seconds in which nothing arrived."""
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.head_request = head
        self.last_read = self.loop.time()
        self.transport.write(request)
        timer = self.loop.call_at(self.last_read + read_timeout, self._check_silence, read_timeout)
        try:
            return await self.waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _check_silence(self, read_timeout: float) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        quiet_until = self.last_read + read_timeout
        if self.loop.time() < quiet_until:  # something arrived: wait the rest
            self.loop.call_at(quiet_until, self._check_silence, read_timeout)
            return
        waiter.set_exception(TimeoutError("upstream sent nothing in time"))
        self.close()

    def _parse(self, *, eof: bool) -> Answer | None:
        """The answer, once all of it is in the buffer; None while more is to come."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    raise ProtocolError("upstream answer headers too large")
                return None
            status, reason, headers, keep_alive = _parse_head(bytes(self.buffer[:end]))
            if status >= 200 or status == 101:
                break
            del self.buffer[: end + 4]  # an interim 1xx answer: the real one follows
        start = end + 4
        if self.head_request or status in (204, 304):
            body, consumed = b"", start
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            found = _dechunk(self.buffer, start)
            if found is None:
                return None
            body, consumed = found
        elif (length := headers.get("Content-Length")) is not None:
            size = _content_length(length)
            if len(self.buffer) - start < size:
                return None
            body, consumed = bytes(self.buffer[start : start + size]), start + size
        else:  # the body ends when the upstream closes the connection
            if not eof:
                return None
            body, consumed, keep_alive = bytes(self.buffer[start:]), len(self.buffer), False
        del self.buffer[:consumed]
        if not keep_alive:
            self.close()
        encoding = headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            body = _decompress(body, encoding)
        return Answer(status, reason, headers, body)


def _parse_head(head: bytes) -> tuple[int, str, CIMultiDict[str], bool]:
    try:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
    except ValueError:
        raise ProtocolError("upstream answer is not HTTP") from None
    if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
        raise ProtocolError("upstream answer is not HTTP/1.x")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError("malformed header in upstream answer")
        headers.add(name.strip(), value.strip())
    connection = headers.get("Connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return status, reason, headers, keep_alive


def _content_length(value: str) -> int:
    if not value.isdigit():
        raise ProtocolError("bad Content-Length in upstream answer")
    return int(value)


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body from ``start``: (body, bytes consumed), or None if incomplete."""
    pieces: list[bytes] = []
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size_text = bytes(buffer[at:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError("bad chunk size in upstream answer") from None
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", at - 2)
            if trailer_end < 0:
                return None
            return b"".join(pieces), trailer_end + 4
        if len(buffer) < at + size + 2:
            return None
        pieces.append(bytes(buffer[at : at + size]))
        at += size + 2


def _decompress(body: bytes, encoding: str) -> bytes:
    try:
        return zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    except zlib.error:
        raise ProtocolError("upstream answer does not decompress") from None


class Http1Pool:
    """Keep-alive connections per (scheme, host, port), for one event loop."""

    def __init__(
        self, *, resolver: AbstractResolver | None = None, egress: EgressPolicy | None = None
    ) -> None:
        # Every connection's addresses are held to the egress policy (None: the installed one).
        self._egress = egress
        # Names are resolved by the same resolver as aiohttp's session, so the custom-host
        # allow-list's check on connecting (gateway.resolver) holds here too.
        self._resolver: AbstractResolver = resolver if resolver is not None else DefaultResolver()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._tls: ssl.SSLContext | None = None
        # Calls in flight per upstream, as aiohttp's connector bounds them: a burst of
        # requests waits for a connection instead of opening hundreds at a provider.
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
    ) -> Answer:
        """One call; a connection the upstream closed is the caller's to retry (counted as
        an attempt by its policy), never silently sent again here."""
        target = URL(url)
        if params:
            target = target.extend_query(params)
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise ValueError(f"not an http(s) URL: {target.scheme}://{target.raw_host}")
        port = target.port or (443 if target.scheme == "https" else 80)
        key = (target.scheme, target.raw_host, port)
        message = _request_bytes(method, target, headers, body)
        head = method == "HEAD"
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(_MAX_PER_HOST)
        async with slots:
            connection = self._take_idle(key)
            if connection is None:
                connection = await self._connect(key, connect_timeout)
            return await self._exchange(key, connection, message, head, read_timeout)

    async def _exchange(
        self,
        key: tuple[str, str, int],
        connection: _Connection,
        message: bytes,
        head: bool,
        read_timeout: float,
    ) -> Answer:
        try:
            answer = await connection.exchange(message, head=head, read_timeout=read_timeout)
        except BaseException:
            connection.close()
            self._open.discard(connection)
            raise
        idle = self._idle.setdefault(key, [])
        if connection.keep_alive and len(idle) < _MAX_IDLE_PER_HOST:
            idle.append(connection)
        else:
            connection.close()
            self._open.discard(connection)
        return answer

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.keep_alive:
                return connection
            connection.close()
            self._open.discard(connection)
        return None

    async def _connect(self, key: tuple[str, str, int], timeout: float) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if scheme == "https" else None
        failure: OSError | None = None
        async with asyncio.timeout(timeout):
            try:
                found = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
            except OSError as exc:
                raise ConnectFailed(host, port, exc) from None
            policy = self._egress if self._egress is not None else current_policy()
            found = policy.checked(host, found)  # connect to these, with no second lookup
            for address in found:  # the checked addresses, in the resolver's order
                try:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop),
                        address["host"],
                        address["port"],
                        ssl=tls,
                        server_hostname=host if tls else None,
                    )
                except ssl.SSLError:
                    raise
                except OSError as exc:
                    failure = exc
                    continue
                self._open.add(connection)
                return connection
        raise ConnectFailed(host, port, failure or OSError(f"{host} resolved to no address"))

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:  # loading the CA store takes a while: only when needed
            self._tls = ssl.create_default_context()
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def close(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()


def _request_bytes(
    method: str, target: URL, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    host = target.raw_host or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if not target.is_default_port():
        host = f"{host}:{target.port}"
    lines = [f"{method} {target.raw_path_qs} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if "user-agent" not in (name.lower() for name in headers):
        lines.append(f"User-Agent: {_USER_AGENT}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    text = "\r\n".join(lines)
    # A header value from a request (a key in an inline config, say) must not smuggle
    # another header or request into the upstream connection: the only line breaks are
    # the ones put between the lines here.
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
        raise ValueError("a header holds a line break")
    head = (text + "\r\n\r\n").encode()
    return head + body if body else head
