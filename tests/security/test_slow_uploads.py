"""Finding 6: slow uploads from one key cannot starve everyone else's.

Before, 32 uploads from one key sending 64 bytes a second held every upload slot of
the process for as long as they liked (``client_body_timeout`` ends silence, not a
trickle) and every other key got 429s. Now one caller holds at most
``max_concurrent_uploads_per_key`` slots, and an upload whose average rate falls below
``min_upload_bytes_per_second`` after the grace period ends with a 408, storing nothing.
Limits are scaled down so the attack takes a moment: 4 slots, 2 per key, a floor of
4 KiB/s after 1 s.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from yarl import URL

from tests.security.conftest import KEY_A, KEY_B, Gateway, call

LIMITS = {
    "max_concurrent_uploads": 4,
    "max_concurrent_uploads_per_key": 2,
    "min_upload_bytes_per_second": 4096,
    "upload_rate_grace_seconds": 1.0,
    "client_body_timeout": 10.0,
}
BOUNDARY = "trickle"
LINE = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
).encode()


class Trickle:
    """An upload sent at a few bytes a second over a raw connection; its answer."""

    def __init__(self, url: str, key: str) -> None:
        self.url = URL(url)
        self.key = key
        self.answer: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.started = asyncio.Event()

    async def run(self, seconds: float = 8.0) -> None:
        reader, writer = await asyncio.open_connection(self.url.host, self.url.port)
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"fine-tune\r\n--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
        ).encode()
        writer.write(
            (
                f"POST {self.url.path}/files HTTP/1.1\r\nHost: {self.url.host}\r\n"
                f"Authorization: Bearer {self.key}\r\nx-portkey-provider: portkey\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: {len(head) + 10_000_000}\r\n\r\n"
            ).encode()
            + head
        )
        await writer.drain()
        self.started.set()
        reading = asyncio.ensure_future(reader.read(65536))
        try:
            async with asyncio.timeout(seconds):
                while not reading.done():
                    try:
                        writer.write(LINE[:16])  # 16 bytes each 0.1 s: 160 B/s
                        await writer.drain()
                    except ConnectionError:
                        break
                    await asyncio.wait({reading}, timeout=0.1)
                raw = await reading
        finally:
            writer.close()
        status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
        self.answer.set_result((status, raw.partition(b"\r\n\r\n")[2]))


async def _upload(url: str, key: str) -> tuple[int, dict[str, object]]:
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", LINE + b"\n", filename="train.jsonl")
    headers = {"Authorization": f"Bearer {key}", "x-portkey-provider": "portkey"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{url}/files", data=form) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_a_trickling_key_holds_its_share_only_and_is_cut_off(gateway: Gateway) -> None:
    url = await gateway(limits=LIMITS)
    attackers = [Trickle(url, KEY_A) for _ in range(2)]
    tasks = [asyncio.ensure_future(a.run()) for a in attackers]
    await asyncio.gather(*(a.started.wait() for a in attackers))
    await asyncio.sleep(0.1)  # both are in their slots now

    # A third from the same key is refused at once; another key is served meanwhile.
    status, body = await _upload(url, KEY_A)
    assert status == 429, body
    assert isinstance(body["error"], dict) and body["error"]["code"] == "too_many_uploads"
    status, body = await _upload(url, KEY_B)
    assert status == 200, body

    # The trickles fall below the floor once the grace is over: a 408 each, no file kept.
    await asyncio.gather(*tasks)
    for attacker in attackers:
        status, raw = attacker.answer.result()
        assert status == 408, raw
        assert json.loads(raw)["error"]["code"] == "request_too_slow"
    status, listed = await call(
        f"{url}/files", authorization=f"Bearer {KEY_A}", x_portkey_provider="portkey"
    )
    assert status == 200 and listed["data"] == []
    # And the key has its slots back.
    status, body = await _upload(url, KEY_A)
    assert status == 200, body
