"""Files through the gateway with the OpenAI SDK, staged on fake-gcs-server."""

from __future__ import annotations

import json
import re

import openai
import pytest

from gateway_vertex import gcs
from plugins.vertex.tests.conftest import (
    BUCKET,
    CHAT_LINES,
    PREFERENCE_LINES,
    VertexStack,
    jsonl,
)


def test_upload_stages_original_and_gemini_copy(vertex: VertexStack) -> None:
    client = vertex.client()
    data = jsonl(CHAT_LINES)

    uploaded = client.files.create(file=("train.jsonl", data), purpose="fine-tune")

    assert uploaded.filename == "train.jsonl" and uploaded.purpose == "fine-tune"
    assert uploaded.bytes == len(data) and uploaded.status == "processed"
    assert re.fullmatch(r"file-[A-Za-z0-9_-]+", uploaded.id), "URL-safe id"
    objects = vertex.objects()
    assert len(objects) == 2
    original = next(name for name in objects if "/files/" in name)
    staged = next(name for name in objects if "/vertex/" in name)
    assert objects[original] == data, "the upload is kept byte for byte"
    gemini = [json.loads(line) for line in objects[staged].splitlines()]
    assert gemini[0] == {
        "contents": [
            {"role": "user", "parts": [{"text": "Capital of France?"}]},
            {"role": "model", "parts": [{"text": "Paris."}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
    }
    assert gemini[1]["contents"][0] == {"role": "user", "parts": [{"text": "2+2?"}]}

    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data
    assert [f.id for f in client.files.list()] == [uploaded.id]


def test_upload_uses_resumable_chunks_of_256k_multiples(
    vertex: VertexStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs, "CHUNK_BYTES", gcs.GRANULE)
    line = {
        "messages": [{"role": "user", "content": "x" * 3000}, {"role": "assistant", "content": "y"}]
    }
    data = jsonl([line] * 400)  # about 1.2 MB: four full chunks and a short last one

    uploaded = vertex.client().files.create(file=("big.jsonl", data), purpose="fine-tune")

    assert uploaded.bytes == len(data)
    sessions: dict[str, list[str]] = {}
    for call in vertex.gcs.puts():
        sessions.setdefault(call.query["upload_id"], []).append(call.content_range or "")
    assert vertex.objects()[next(n for n in vertex.objects() if "/files/" in n)] == data
    for ranges in sessions.values():
        *middle, last = ranges
        assert middle, "a file over one chunk goes in several PUTs"
        offset = 0
        for span in middle:
            start, end = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/\*", span).groups())  # type: ignore[union-attr]
            assert start == offset and (end - start + 1) % (256 * 1024) == 0
            offset = end + 1
        assert re.fullmatch(rf"bytes {offset}-\d+/\d+", last), last
    init = [c for c in vertex.gcs.calls if c.method == "POST"]
    assert all(c.query.get("uploadType") == "resumable" for c in init)
    assert all(
        c.authorization and c.authorization.startswith("Bearer ya29.") for c in vertex.gcs.calls
    )


def test_bad_file_refused_with_line_numbers_and_nothing_staged(vertex: VertexStack) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    lines = [
        CHAT_LINES[0],
        {
            "messages": [
                {"role": "user", "content": [image]},
                {"role": "assistant", "content": "a cat"},
            ]
        },
        CHAT_LINES[1],
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c"}]},
            ]
        },
    ]
    client = vertex.client()

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("train.jsonl", jsonl(lines)), purpose="fine-tune")

    message = refused.value.message
    assert "line 2: messages[0].content[0] is an image given as a data URL" in message
    assert "line 4: messages[1] has a tool call" in message
    assert "line 1" not in message and "line 3" not in message
    assert refused.value.code == "invalid_training_file"
    assert vertex.objects() == {}
    assert list(client.files.list()) == []


def test_failed_upload_cancels_its_sessions_and_leaves_no_object(
    vertex: VertexStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs, "CHUNK_BYTES", gcs.GRANULE)
    vertex.gcs.fail_put(3)
    line = {
        "messages": [{"role": "user", "content": "z" * 5000}, {"role": "assistant", "content": "k"}]
    }

    with pytest.raises(openai.InternalServerError) as failed:
        vertex.client().files.create(file=("t.jsonl", jsonl([line] * 300)), purpose="fine-tune")

    assert failed.value.status_code == 502 and "Cloud Storage" in failed.value.message
    cancelled = {c.query["upload_id"] for c in vertex.gcs.calls if c.method == "DELETE"}
    opened = {c.query["upload_id"] for c in vertex.gcs.puts()}
    assert opened and cancelled == opened, "every resumable session opened is cancelled"
    assert vertex.objects() == {}


def test_upload_refuses_other_purposes(vertex: VertexStack) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        vertex.client().files.create(file=("b.jsonl", jsonl(CHAT_LINES)), purpose="batch")
    assert refused.value.param == "purpose"
    assert vertex.objects() == {}


def test_gemini_file_is_stored_once_and_trained_on_as_is(vertex: VertexStack) -> None:
    lines = [
        {
            "contents": [
                {"role": "user", "parts": [{"text": "Q"}]},
                {"role": "model", "parts": [{"text": "A"}]},
            ]
        }
    ]
    client = vertex.client()

    uploaded = client.files.create(file=("g.jsonl", jsonl(lines)), purpose="fine-tune")
    client.fine_tuning.jobs.create(model="gemini-2.5-flash", training_file=uploaded.id)

    (name,) = vertex.objects()
    uri = vertex.sent("POST", "/tuningJobs")[0]["supervisedTuningSpec"]["trainingDatasetUri"]
    assert uri == f"gs://{BUCKET}/{name}"


def test_preference_file_is_staged_in_vertex_preference_format(vertex: VertexStack) -> None:
    vertex.client().files.create(file=("p.jsonl", jsonl(PREFERENCE_LINES)), purpose="fine-tune")

    staged = next(v for k, v in vertex.objects().items() if "/vertex/" in k)
    assert json.loads(staged)["completions"] == [
        {"score": 1, "completion": {"role": "model", "parts": [{"text": "Hi!"}]}},
        {"score": 0, "completion": {"role": "model", "parts": [{"text": "Go away."}]}},
    ]


def test_files_list_pages_newest_first_and_oldest_first(vertex: VertexStack) -> None:
    client = vertex.client()
    ids = [
        client.files.create(file=(f"{i}.jsonl", jsonl(CHAT_LINES)), purpose="fine-tune").id
        for i in range(3)
    ]

    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    assert [f.id for f in client.files.list(limit=1)] == ids[::-1], "each file once"
    assert [f.id for f in client.files.list(limit=1, order="asc")] == ids
    assert list(client.files.list(purpose="batch")) == []


def test_delete_file_removes_both_objects(vertex: VertexStack) -> None:
    client = vertex.client()
    uploaded = client.files.create(file=("t.jsonl", jsonl(CHAT_LINES)), purpose="fine-tune")

    deleted = client.files.delete(uploaded.id)

    assert deleted.deleted and deleted.id == uploaded.id
    assert vertex.objects() == {}
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(uploaded.id)


@pytest.mark.parametrize("file_id", ["file-nope", "file-Li4vLi4vZXRj", "nonsense"])
def test_unknown_file_ids_are_404(vertex: VertexStack, file_id: str) -> None:
    with pytest.raises(openai.NotFoundError):
        vertex.client().files.retrieve(file_id)


def test_storage_emulator_host_is_honoured_without_a_token(
    vertex: VertexStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", vertex.gcs.url)
    gateway = vertex.start_gateway(vertex.config(storage_endpoint_url=None))

    uploaded = vertex.client(base_url=gateway).files.create(
        file=("t.jsonl", jsonl(CHAT_LINES)), purpose="fine-tune"
    )

    assert uploaded.bytes == len(jsonl(CHAT_LINES))
    assert vertex.gcs.calls and all(c.authorization is None for c in vertex.gcs.calls)
