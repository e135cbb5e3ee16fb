"""Finding 7: a long line is held within limits, whatever the uploads hold.

Four concurrent uploads of a 60 MiB single-line file raised a process by about
370 MiB: lines up to 64 MiB were joined and decoded whole. Now a line over
``limits.max_line_bytes`` is a 400 naming it, and the lines being held in a process
share ``limits.line_buffer_budget_bytes``: an upload that cannot get budget is a 429,
never more memory. Limits scaled down here (1 MiB lines, a 6 MiB budget); the memory
figure at full size is a benchmark (bench/long_lines.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp

from tests.security.conftest import KEY_A, Gateway

LIMITS = {"max_line_bytes": 1 << 20, "line_buffer_budget_bytes": 6 << 20}
BOUNDARY = "long-lines"


def line(size: int) -> bytes:
    """One valid chat example of about ``size`` bytes."""
    filler = "x" * (size - 80)
    messages = [{"role": "user", "content": filler}, {"role": "assistant", "content": "ok"}]
    return json.dumps({"messages": messages}).encode()


async def _slowly(file: bytes) -> AsyncIterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        f"fine-tune\r\n--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
    ).encode()
    for start in range(0, len(file), 64 * 1024):
        yield file[start : start + 64 * 1024]
        await asyncio.sleep(0.005)  # so the four are mid-line at the same time
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def upload(url: str, file: bytes) -> tuple[int, dict[str, object]]:
    headers = {
        "Authorization": f"Bearer {KEY_A}",
        "x-portkey-provider": "portkey",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/files", data=_slowly(file), headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_a_line_over_the_maximum_is_a_400_naming_it(gateway: Gateway) -> None:
    url = await gateway(limits=LIMITS)
    status, body = await upload(url, line(1000) + b"\n" + line(2 << 20) + b"\n")
    assert status == 400, body
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "invalid_training_file"
    assert "line 2" in str(error["message"]) and "limits.max_line_bytes" in str(error["message"])


async def test_concurrent_long_lines_share_the_budget_and_give_it_back(gateway: Gateway) -> None:
    url = await gateway(limits=LIMITS)
    # Each line of 900 KiB holds 2.7 MiB while joined: two fit in 6 MiB, four do not.
    file = line(900 * 1024) + b"\n"
    answers = await asyncio.gather(*(upload(url, file) for _ in range(4)))
    statuses = sorted(status for status, _ in answers)
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, answers
    for status, body in answers:
        if status == 429:
            error = body["error"]
            assert isinstance(error, dict) and error["code"] == "line_buffer_full"
    # Nothing leaked: one at a time, every one gets the budget again.
    for _ in range(4):
        status, body = await upload(url, file)
        assert status == 200, body
