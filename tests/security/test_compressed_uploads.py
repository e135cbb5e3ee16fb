"""Finding 10: a compressed upload is refused, or its decoded bytes are counted.

222 KiB sent with ``Content-Encoding: gzip`` used to be stored as 64 MiB, with no
bound on the ratio. Now it is a 415 unless ``limits.accept_compressed_uploads`` is on,
and then ``limits.max_upload_bytes`` counts the decoded bytes. Nothing is stored either
way (managed mode's local store shows it).
"""

from __future__ import annotations

import gzip
import json

import aiohttp
import pytest

from tests.security.conftest import KEY_A, Gateway, call

LINE = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
).encode()
HEADERS = {"Authorization": f"Bearer {KEY_A}", "x-portkey-provider": "portkey"}


BOUNDARY = "security-suite-boundary"


def form(file: bytes, *, part_encoding: str | None = None) -> tuple[bytes, str]:
    """A multipart upload body written out by hand (aiohttp's writer refuses a part
    with a Content-Encoding, as it should)."""
    file_headers = "Content-Type: application/jsonl\r\n"
    if part_encoding:
        file_headers += f"Content-Encoding: {part_encoding}\r\n"
    body = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\n'
            f"fine-tune\r\n--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="train.jsonl"\r\n'
            f"{file_headers}\r\n"
        ).encode()
        + file
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={BOUNDARY}"


async def post(url: str, body: bytes, content_type: str, **extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {**HEADERS, "Content-Type": content_type, **extra}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/files", data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def stored(url: str) -> list[object]:
    status, body = await call(
        f"{url}/files", **{k.replace("-", "_"): v for k, v in HEADERS.items()}
    )
    assert status == 200, body
    return list(body["data"])


# (An encoding aiohttp cannot decode at all, br without brotli, is its own plain 400.)
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP "])
async def test_a_compressed_upload_is_a_415(gateway: Gateway, encoding: str) -> None:
    url = await gateway()
    body, content_type = form(LINE * 1000)
    status, answer = await post(
        url, gzip.compress(body), content_type, **{"Content-Encoding": encoding}
    )
    assert status == 415, answer
    assert (answer["error"]["param"], answer["error"]["code"]) == (
        "Content-Encoding",
        "unsupported_content_encoding",
    )
    assert await stored(url) == []


async def test_a_compressed_part_is_a_415_even_when_compressed_uploads_are_on(
    gateway: Gateway,
) -> None:
    url = await gateway(limits={"accept_compressed_uploads": True})
    body, content_type = form(gzip.compress(b"\n".join([LINE] * 1000)), part_encoding="gzip")
    status, answer = await post(url, body, content_type)
    assert status == 415, answer
    assert answer["error"]["param"] == "file"
    assert await stored(url) == []


async def test_accepted_compression_counts_the_decoded_bytes(gateway: Gateway) -> None:
    url = await gateway(limits={"accept_compressed_uploads": True, "max_upload_bytes": 1 << 20})
    # About 8 MiB of lines, a few KiB once compressed: the limit is on what it becomes.
    body, content_type = form(b"\n".join([LINE] * 100_000) + b"\n")
    squeezed = gzip.compress(body)
    assert len(squeezed) < 1 << 20 < len(body)
    status, answer = await post(url, squeezed, content_type, **{"Content-Encoding": "gzip"})
    assert status == 413, answer
    assert answer["error"]["code"] == "file_too_large"
    assert await stored(url) == []
    # A small one is taken, decoded.
    small, content_type = form(b"\n".join([LINE] * 10) + b"\n")
    status, answer = await post(
        url, gzip.compress(small), content_type, **{"Content-Encoding": "gzip"}
    )
    assert status == 200, answer
    assert answer["bytes"] == len(b"\n".join([LINE] * 10) + b"\n")
