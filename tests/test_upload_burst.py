"""A burst of uploads against one ``serve`` process: every one is answered, 200 or 429.

``limits.max_concurrent_uploads`` promises a 429 with ``Retry-After`` to the upload that
finds no slot. The promise is only kept if the client can read it: the refused upload's
client is still sending its body when the answer goes out, and closing the connection
on unread bytes makes the kernel send a reset that can destroy the answer before the
client has read it. Here many more uploads than slots arrive at once, each on its own
connection, each sending its whole body without waiting: none may see a reset.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import GATEWAY_KEY, Stack, base_config
from tests.support.serve import serving

SLOTS = 4
BURST = 12 * SLOTS
LINE = (
    b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
)
BODY_LINES = 4000  # about 360 KB: far more than a socket buffer, still being sent when refused


def _form(boundary: str = "burst") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="train.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        + LINE * BODY_LINES
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def _upload(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[Any, ...]:
    headers = {
        "Authorization": f"Bearer {GATEWAY_KEY}",
        "Content-Type": "multipart/form-data; boundary=burst",
    }
    try:
        async with session.post(f"{url}/v1/files", data=body, headers=headers) as response:
            answer = await response.json()
            return response.status, response.headers.get("Retry-After"), answer
    except aiohttp.ClientError as exc:  # a reset, a connection closed before any answer
        return ("no answer", type(exc).__name__, str(exc)[:100])


async def _burst(url: str) -> list[tuple[Any, ...]]:
    body = _form()
    # One connection per upload, all opened at once, as a load test's client does.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await asyncio.gather(*(_upload(session, url, body) for _ in range(BURST)))


def test_every_upload_of_a_burst_gets_its_answer(stack: Stack, tmp_path: Path) -> None:
    raw = base_config(stack.upstream_url)
    raw["limits"] = {"max_concurrent_uploads": SLOTS, "max_concurrent_uploads_per_key": SLOTS}
    raw["server"] = {"access_log": False}
    with serving(raw, tmp_path) as served:
        outcomes = asyncio.run(_burst(served.url))
    statuses = Counter(outcome[0] for outcome in outcomes)
    assert set(statuses) <= {200, 429}, (statuses, [o for o in outcomes if o[0] == "no answer"][:3])
    assert statuses[200] >= SLOTS and statuses[429] > 0, statuses  # the burst did overflow
    for status, retry_after, answer in outcomes:
        if status == 429:
            assert retry_after == "5" and answer["error"]["code"] == "too_many_uploads"
        else:
            assert answer["object"] == "file" and answer["bytes"] == len(LINE) * BODY_LINES
    assert len(stack.upstream.files) == statuses[200]  # nothing refused reached OpenAI
