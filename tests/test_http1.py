"""The lean upstream client (``gateway.http1``) against raw HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway import egress
from gateway.http1 import ConnectFailed, Http1Pool, ProtocolError

Reply = Callable[[bytes], Awaitable[bytes | None]]


class RawServer:
    """Answers each request with what ``reply`` makes of its head; counts connections."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                answer = await self.reply(head)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Reply], Awaitable[RawServer]]]:
    started: list[RawServer] = []

    async def start(reply: Reply) -> RawServer:
        server = RawServer(reply)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


def _pool() -> Http1Pool:
    return Http1Pool(egress=egress.policy(["127.0.0.0/8"]))  # the fakes are on loopback


def _ok(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def test_http1_reuses_one_connection_for_many_calls(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    async def reply(head: bytes) -> bytes:
        return _ok(b'{"n": 1}', b"x-request-id: up-1")

    server = await serve(reply)
    pool = _pool()
    for _ in range(5):
        answer = await pool.request("GET", server.url + "/v1/x", headers={"A": "b"})
        assert (answer.status, answer.body, answer.headers["X-Request-Id"]) == (
            200,
            b'{"n": 1}',
            "up-1",
        )
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"GET /v1/x HTTP/1.1\r\n") and b"\r\nA: b\r\n" in first
    await pool.close()


async def test_http1_reads_chunked_and_gzip_answers_and_sends_bodies(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    packed = gzip.compress(b'{"chunked": true}')

    async def reply(head: bytes) -> bytes:
        chunks = b"%x\r\n%s\r\n" % (5, packed[:5]) + b"%x\r\n%s\r\n0\r\n\r\n" % (
            len(packed) - 5,
            packed[5:],
        )
        return (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Encoding: gzip\r\n\r\n" + chunks
        )

    server = await serve(reply)
    pool = _pool()
    answer = await pool.request(
        "POST", server.url + "/v1/jobs", headers={}, params={"a": "1 2"}, body=b'{"x":1}'
    )
    assert (answer.status, answer.reason, answer.body) == (201, "Created", b'{"chunked": true}')
    sent = server.requests[0]
    assert sent.startswith(b"POST /v1/jobs?a=1+2 HTTP/1.1") and sent.endswith(b'\r\n\r\n{"x":1}')
    assert b"Content-Length: 7" in sent
    await pool.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_http1_never_sends_again_on_its_own(
    serve: Callable[..., Awaitable[RawServer]], method: str
) -> None:
    """A kept connection the upstream closed fails the call: the request's policy decides
    whether to try again (and counts the attempt), whatever the method."""
    answered = 0

    async def reply(head: bytes) -> bytes | None:
        nonlocal answered
        answered += 1
        # The second request on the first connection finds it closed by the upstream.
        return None if answered == 2 else _ok(b"{}")

    server = await serve(reply)
    pool = _pool()
    assert (await pool.request("GET", server.url + "/a", headers={})).status == 200
    with pytest.raises(ConnectionResetError):
        await pool.request(method, server.url + "/b", headers={}, body=b"{}")
    assert answered == 2 and server.connections == 1
    assert (await pool.request("GET", server.url + "/c", headers={})).status == 200
    await pool.close()


async def test_http1_times_out_on_a_silent_upstream(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    async def reply(head: bytes) -> bytes:
        await asyncio.sleep(2)
        return _ok(b"{}")

    server = await serve(reply)
    pool = _pool()
    with pytest.raises(TimeoutError):
        await pool.request("GET", server.url + "/slow", headers={}, read_timeout=0.2)
    assert pool.open_connections == 0  # the stalled connection is closed, not kept
    await pool.close()


async def test_http1_refuses_header_values_with_line_breaks() -> None:
    pool = _pool()
    with pytest.raises(ValueError, match="line break"):
        await pool.request(
            "GET", "http://127.0.0.1:9/x", headers={"Authorization": "Bearer k\r\nX-Evil: 1"}
        )


async def test_http1_reports_unreachable_and_garbled_upstreams(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    pool = _pool()
    with pytest.raises(ConnectFailed):
        await pool.request("GET", "http://127.0.0.1:9/x", headers={})

    async def reply(head: bytes) -> bytes:
        return b"SSH-2.0-OpenSSH\r\n\r\n"

    server = await serve(reply)
    with pytest.raises(ProtocolError):
        await pool.request("GET", server.url + "/x", headers={})
    await pool.close()


async def test_http1_bounds_connections_per_upstream(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    async def reply(head: bytes) -> bytes:
        await asyncio.sleep(0.05)
        return _ok(b"{}")

    server = await serve(reply)
    pool = _pool()
    calls = [pool.request("GET", server.url + "/x", headers={}) for _ in range(150)]
    answers = await asyncio.gather(*calls)
    assert all(answer.status == 200 for answer in answers)
    assert server.connections == 100  # the rest waited for one and reused it
    await pool.close()
