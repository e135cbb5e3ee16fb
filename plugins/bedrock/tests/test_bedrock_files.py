"""Files through the OpenAI SDK, the gateway and moto's S3: what a user sees and what S3 holds."""

from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest

from tests.conftest import TRAINING_JSONL
from tests.support.prometheus import scrape, value

from .conftest import PREFIX, Gateway

MiB = 1024 * 1024


def chat_lines(count: int, *, size: int = 200) -> bytes:
    """``count`` OpenAI chat lines of about ``size`` bytes each."""
    lines = []
    for i in range(count):
        answer = f"Answer {i}: " + "x" * max(0, size - 120)
        line = {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": answer},
            ]
        }
        lines.append(json.dumps(line))
    return ("\n".join(lines) + "\n").encode()


def test_upload_list_retrieve_content_delete(gateway: Gateway) -> None:
    client = gateway.client()
    uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert uploaded.filename == "train.jsonl"
    assert uploaded.bytes == len(TRAINING_JSONL)
    assert uploaded.purpose == "fine-tune"
    assert abs(uploaded.created_at - time.time()) < 60

    [key] = gateway.keys(f"{PREFIX}files/")
    assert key.endswith("/train.jsonl")
    assert gateway.read(key) == TRAINING_JSONL
    head = gateway.s3.head_object(Bucket="ft-gateway-staging", Key=key, ChecksumMode="ENABLED")
    assert head["Metadata"]["filename"] == "train.jsonl"
    assert head["Metadata"]["purpose"] == "fine-tune"
    assert head["ChecksumCRC32"], "S3 checked every part against its CRC32"
    # Its copy in Nova's format, made in the same pass (staging.py).
    [copy] = gateway.keys(f"{PREFIX}staged/")
    assert copy.endswith(".conversation.jsonl")

    assert client.files.retrieve(uploaded.id) == uploaded
    assert [f.id for f in client.files.list()] == [uploaded.id]
    assert client.files.content(uploaded.id).content == TRAINING_JSONL

    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    assert gateway.keys(PREFIX) == []
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(uploaded.id)


def test_file_ids_are_url_safe_and_unknown_ids_are_404(gateway: Gateway) -> None:
    client = gateway.client()
    uploaded = client.files.create(file=("a b+c.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert uploaded.id.startswith("file-")
    assert all(c.isalnum() or c in "-_" for c in uploaded.id)
    assert client.files.retrieve(uploaded.id).filename == "a b+c.jsonl"
    for bogus in ("file-abc", "file-" + uploaded.id[5:-2], "ftjob-" + uploaded.id[5:]):
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(bogus)


def test_files_list_pages_newest_first_each_once(gateway: Gateway) -> None:
    client = gateway.client()
    ids = []
    for i in range(5):
        ids.append(client.files.create(file=(f"{i}.jsonl", TRAINING_JSONL), purpose="fine-tune").id)
        time.sleep(0.002)  # distinct millisecond stems: a deterministic order to check
    first = client.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more is True
    assert [f.id for f in client.files.list(limit=2)] == list(reversed(ids))
    assert [f.id for f in client.files.list(limit=2, order="asc")] == ids
    assert list(client.files.list(purpose="batch")) == []


def test_upload_with_other_purpose_is_400_naming_purpose(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("b.jsonl", TRAINING_JSONL), purpose="batch")
    assert caught.value.body["param"] == "purpose"  # type: ignore[index]
    assert gateway.keys() == []


def test_upload_with_expiry_is_refused_not_ignored(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().files.create(
            file=("t.jsonl", TRAINING_JSONL),
            purpose="fine-tune",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )
    assert caught.value.body["param"].startswith("expires_after")  # type: ignore[index]
    assert gateway.keys() == []


def test_bad_file_is_refused_with_line_numbers_and_nothing_is_left(gateway: Gateway) -> None:
    good = chat_lines(3)
    bad = good + b'{"messages": [{"role": "user", "content": "no answer"}]}\nnot json\n'
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    message = caught.value.message
    assert "line 4" in message and "line 5" in message and "line 1:" not in message
    assert caught.value.body["code"] == "invalid_training_file"  # type: ignore[index]
    assert gateway.keys() == [] and gateway.open_multipart_uploads() == []


def test_multipart_upload_of_11_mib_round_trips(gateway: Gateway) -> None:
    data = chat_lines(11 * MiB // 400, size=400)
    assert len(data) > 10 * MiB
    client = gateway.client()
    uploaded = client.files.create(file=("big.jsonl", data), purpose="fine-tune")
    assert uploaded.bytes == len(data)
    assert client.files.content(uploaded.id).content == data
    assert gateway.open_multipart_uploads() == []


async def test_upload_cut_off_mid_stream_leaves_no_upload_or_object(gateway: Gateway) -> None:
    """A client that sends 11 MiB of a larger multipart body, then closes the connection."""
    boundary = "cutoffboundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    body = chat_lines(11 * MiB // 400, size=400)
    host, port = gateway.url.removeprefix("http://").removesuffix("/v1").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            "POST /v1/files HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "Authorization: Bearer gw-search-team-0123456789\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(head) + 3 * len(body)}\r\n\r\n"
        ).encode()
        + head
    )
    for start in range(0, len(body), 256 * 1024):
        writer.write(body[start : start + 256 * 1024])
        await writer.drain()
    # Long enough for the first part to reach S3, so there is an upload to abort.
    deadline = time.monotonic() + 10
    while not gateway.open_multipart_uploads() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gateway.open_multipart_uploads(), "the upload should have started"
    writer.close()
    await writer.wait_closed()
    deadline = time.monotonic() + 10
    while gateway.open_multipart_uploads() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gateway.open_multipart_uploads() == []
    assert gateway.keys() == []
    del reader


def test_upload_and_conversion_count_staged_bytes(gateway: Gateway) -> None:
    client = gateway.client()
    uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    root = gateway.url.removesuffix("/v1")
    staged = "finetune_gateway_staged_bytes_total"
    # The original and its conversation copy, written in one pass.
    [nova] = gateway.keys(f"{PREFIX}staged/")
    expected = len(TRAINING_JSONL) + len(gateway.read(nova))
    assert value(scrape(root)[1], staged, provider="bedrock") == expected
    assert value(scrape(root)[1], "finetune_gateway_uploaded_bytes_total") == len(TRAINING_JSONL)

    # Nova trains on the copy as it is; Claude 3 Haiku's is converted at job create.
    client.fine_tuning.jobs.create(model="amazon.nova-micro-v1:0:128k", training_file=uploaded.id)
    assert value(scrape(root)[1], staged, provider="bedrock") == expected
    client.fine_tuning.jobs.create(
        model="anthropic.claude-3-haiku-20240307-v1:0:200k", training_file=uploaded.id
    )
    [haiku] = [key for key in gateway.keys(f"{PREFIX}staged/") if key != nova]
    expected += len(gateway.read(haiku))
    assert value(scrape(root)[1], staged, provider="bedrock") == expected
