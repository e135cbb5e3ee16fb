"""The multipart writer against a recording fake S3 client, and the key layout."""

from __future__ import annotations

import asyncio
import base64
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import NotFound
from gateway_bedrock import s3
from gateway_bedrock.formats import LineFormat


def crc32(body: bytes) -> str:
    """S3's ChecksumCRC32: the big-endian CRC32, base64."""
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


class FakeS3:
    """Records calls; ``fail_part`` makes that part's upload fail."""

    def __init__(self, fail_part: int | None = None) -> None:
        self.fail_part = fail_part
        self.parts: dict[int, bytes] = {}
        self.completed: list[dict[str, Any]] | None = None
        self.aborted = False
        self.running = 0
        self.most_running = 0

    async def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {"UploadId": "u-1"}

    async def upload_part(
        self, *, PartNumber: int, Body: bytes, ChecksumAlgorithm: str, **kwargs: Any
    ) -> dict[str, Any]:
        assert ChecksumAlgorithm == "CRC32"  # S3 checks every part the gateway writes
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(0.001 * (PartNumber % 3))  # finish out of order
            if PartNumber == self.fail_part:
                raise RuntimeError("part refused")
            self.parts[PartNumber] = Body
            return {"ETag": f'"e{PartNumber}"', "ChecksumCRC32": crc32(Body)}
        finally:
            self.running -= 1

    async def complete_multipart_upload(
        self, *, MultipartUpload: dict[str, Any], **kwargs: Any
    ) -> None:
        self.completed = MultipartUpload["Parts"]

    async def abort_multipart_upload(self, **kwargs: Any) -> None:
        self.aborted = True


async def pieces(data: bytes, size: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        if fail_after is not None and start >= fail_after:
            raise ConnectionResetError("client went away")
        yield data[start : start + size]


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "PART_SIZE", 10)


async def test_write_multipart_sends_fixed_parts_in_order_few_at_a_time() -> None:
    client = FakeS3()
    data = bytes(range(256)) * 2
    written = await s3.write_multipart(client, "b", "k", pieces(data, 7))
    assert written == len(data)
    assert client.completed == [
        {"PartNumber": n, "ETag": f'"e{n}"', "ChecksumCRC32": crc32(client.parts[n])}
        for n in range(1, len(data) // 10 + 2)
    ]
    assert b"".join(client.parts[n] for n in sorted(client.parts)) == data
    assert all(len(client.parts[n]) == 10 for n in sorted(client.parts)[:-1])
    assert client.most_running <= s3.PARTS_IN_FLIGHT and not client.aborted


async def test_write_multipart_of_nothing_still_makes_an_object() -> None:
    client = FakeS3()
    assert await s3.write_multipart(client, "b", "k", pieces(b"", 5)) == 0
    assert client.completed == [{"PartNumber": 1, "ETag": '"e1"', "ChecksumCRC32": crc32(b"")}]


async def test_write_multipart_aborts_when_a_part_upload_fails() -> None:
    # A failing source, a cancellation, a client gone: tests/stores/test_promises.py.
    client = FakeS3(fail_part=4)
    with pytest.raises(RuntimeError):
        await s3.write_multipart(client, "b", "k", pieces(bytes(300), 7))
    assert client.aborted and client.completed is None


def test_file_ids_round_trip_and_refuse_what_was_never_issued() -> None:
    stem = s3.new_stem(now_ms=1_700_000_000_123)
    assert s3.stem_of(s3.file_id(stem)) == stem
    assert s3.created_at_of(stem) == 1_700_000_000
    for bogus in ("file-abc", s3.file_id("../etc"), "ftjob-" + s3.file_id(stem)[5:]):
        with pytest.raises(NotFound):
            s3.stem_of(bogus)


def test_layout_keys_fit_bedrocks_s3_uri_pattern_and_map_back() -> None:
    layout = s3.Layout("bucket-1", "team/gw/")
    stem = s3.new_stem()
    staged = layout.staged_key(stem, LineFormat.CLAUDE)
    assert staged == f"team/gw/staged/{stem}.claude-messages.jsonl"
    assert layout.source_of(layout.uri(staged)) == s3.file_id(stem)
    assert layout.source_of("s3://bucket-1/elsewhere/x.jsonl") is None
    # A user's own s3:// source is carried in the staged key and named back.
    user_uri = "s3://their-data/sets/2026 Q1/train+v2.jsonl"
    source = s3.staged_source_for_uri(user_uri, '"etag-1"')
    assert source != s3.staged_source_for_uri(user_uri, '"etag-2"')  # a new version
    assert (
        layout.source_of(layout.uri(layout.staged_key(source, LineFormat.CONVERSATION))) == user_uri
    )
    too_long = "s3://their-data/" + "x" * 700
    long_source = s3.staged_source_for_uri(too_long, '"e"')
    assert len(layout.staged_key(long_source, LineFormat.CONVERSATION)) < 1024
    assert (
        layout.source_of(layout.uri(layout.staged_key(long_source, LineFormat.CONVERSATION)))
        is None
    )
    assert layout.output_uri("run+1") == "s3://bucket-1/team/gw/output/run-1/"
    assert layout.file_key(stem, "a/b\n.jsonl") == f"team/gw/files/{stem}/a_b_.jsonl"
    assert s3.parse_s3_uri("s3://b/k/x.jsonl") == ("b", "k/x.jsonl")
    assert s3.parse_s3_uri("s3://b/") is None and s3.parse_s3_uri("https://b/k") is None


class UnansweredComplete(FakeS3):
    """S3 makes the object, but the answer to CompleteMultipartUpload never arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: set[str] = set()

    async def complete_multipart_upload(self, *, Key: str, **kwargs: Any) -> None:
        self.objects.add(Key)
        await asyncio.Event().wait()

    async def abort_multipart_upload(self, **kwargs: Any) -> None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        raise ClientError({"Error": {"Code": "NoSuchUpload"}}, "AbortMultipartUpload")

    async def delete_object(self, *, Key: str, **kwargs: Any) -> None:
        self.objects.discard(Key)


async def test_write_multipart_cancelled_while_completing_leaves_no_object() -> None:
    client = UnansweredComplete()
    write = asyncio.ensure_future(s3.write_multipart(client, "b", "k", pieces(b"x" * 25, 10)))
    while not client.objects:
        await asyncio.sleep(0)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert client.objects == set()
