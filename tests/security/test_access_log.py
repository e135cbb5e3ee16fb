"""Finding 9: a request cannot forge access-log lines.

An encoded CR/LF in the path (no gateway key needed: a 401 is logged too) decoded into
the access-log line and wrote a second, forged one. Every field a caller or an upstream
can shape is now percent-encoded, so each request is exactly one line.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.security.conftest import Gateway

FORGED = "request_id=forged method=DELETE path=/v1/files/everything status=200"


@pytest.mark.parametrize("separator", ["%0d%0a", "%0a", "%0d", "%09", "%20", "%00", "%e2%80%a8"])
async def test_an_encoded_line_break_in_the_path_stays_on_one_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, separator: str
) -> None:
    url = await gateway()
    caplog.set_level(logging.INFO, logger="finetune_gateway.access")
    path = f"/v1/files/x{separator}{FORGED.replace(' ', separator)}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url.removesuffix("/v1") + path, skip_auto_headers=()) as response,
    ):
        assert response.status == 401  # no gateway key: refused, and still logged

    lines = [r.getMessage() for r in caplog.records if r.name == "finetune_gateway.access"]
    assert len(lines) == 1, lines
    [line] = lines
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    # The forged fields are inside the path field, not fields of their own.
    fields = line.split(" ")
    assert sum(f.startswith("request_id=") for f in fields) == 1
    assert sum(f.startswith("status=") for f in fields) == 1
    assert [f for f in fields if f.startswith("status=")] == ["status=401"]
