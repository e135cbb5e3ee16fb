"""Upstream faults on Vertex AI and Cloud Storage, through a fault proxy on 127.0.0.1.

A create with an Idempotency-Key is retried as a whole, each attempt looking for the job
an earlier one made; without a key it is never retried. A resumable upload cut mid-chunk
is not replayed blindly: it fails with a 502 and leaves no object on fake-gcs-server.
"""

from __future__ import annotations

import openai
import pytest

from gateway_vertex import gcs
from tests.support.fault_proxy import FaultProxy, Seen
from tests.support.fault_proxy import make_app as make_fault_proxy

from .conftest import CHAT_LINES, VertexStack, jsonl

ATTEMPTS = "x-upstream-attempts"
MODEL = "gemini-2.0-flash-001"
RETRYING = {"attempts": 3, "backoff": 0.01}


def proxied(vertex: VertexStack, target: str, setting: str) -> tuple[openai.OpenAI, FaultProxy]:
    """A retrying gateway whose Vertex key reaches ``target`` through a fault proxy, the
    key's endpoint ``setting`` pointing at the proxy."""
    proxy = FaultProxy(target=target)
    proxy.url = vertex.servers.serve(make_fault_proxy(proxy))
    raw = vertex.config(**{setting: proxy.url})
    raw["upstream"]["retry"] = RETRYING
    return vertex.client(base_url=vertex.start_gateway(raw)), proxy


def _creates(seen: Seen) -> bool:
    return seen.method == "POST" and seen.path.endswith("/tuningJobs")


def test_create_with_key_answered_503_after_it_made_the_job_makes_one_job(
    vertex: VertexStack,
) -> None:
    client, proxy = proxied(vertex, vertex.google_url, "endpoint_url")
    file_id = client.files.create(file=("t.jsonl", jsonl(CHAT_LINES)), purpose="fine-tune").id
    proxy.add(_creates, "answer_after", status=503, body=b'{"error": {"code": 503}}')

    raw = client.with_raw_response.fine_tuning.jobs.create(
        training_file=file_id, model=MODEL, extra_headers={"Idempotency-Key": "create-1"}
    )

    assert raw.status_code == 200
    assert raw.headers[ATTEMPTS] == "2"
    assert len(vertex.google.jobs) == 1
    assert [s.fault for s in proxy.seen if _creates(s)] == ["answer_after"]


def test_create_without_key_is_not_retried(vertex: VertexStack) -> None:
    client, proxy = proxied(vertex, vertex.google_url, "endpoint_url")
    file_id = client.files.create(file=("t.jsonl", jsonl(CHAT_LINES)), purpose="fine-tune").id
    proxy.add(_creates, "answer", status=503, body=b'{"error": {"code": 503}}')

    with pytest.raises(openai.InternalServerError) as failed:
        client.fine_tuning.jobs.create(training_file=file_id, model=MODEL)

    assert failed.value.response.headers[ATTEMPTS] == "1"
    assert len([s for s in proxy.seen if _creates(s)]) == 1
    assert vertex.google.jobs == {}


def test_upload_reset_mid_chunk_is_502_and_leaves_no_object(
    vertex: VertexStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs, "CHUNK_BYTES", gcs.GRANULE)  # several chunks from a small file
    client, proxy = proxied(vertex, vertex.gcs.url, "storage_endpoint_url")
    puts = iter(range(1, 1000))
    proxy.add(lambda seen: seen.method == "PUT" and next(puts) == 2, "reset", after_bytes=1000)
    line = {
        "messages": [{"role": "user", "content": "z" * 5000}, {"role": "assistant", "content": "k"}]
    }

    with pytest.raises(openai.InternalServerError) as failed:
        client.files.create(file=("t.jsonl", jsonl([line] * 300)), purpose="fine-tune")

    assert failed.value.status_code == 502
    assert failed.value.response.json()["error"]["code"] == "upstream_connection_error"
    assert [s.fault for s in proxy.seen if s.method == "PUT"][1] == "reset"  # and not replayed
    assert len([s for s in proxy.seen if s.method == "PUT" and s.fault]) == 1
    cancelled = {c.query["upload_id"] for c in vertex.gcs.calls if c.method == "DELETE"}
    opened = {c.query["upload_id"] for c in vertex.gcs.calls if c.method == "PUT"}
    assert opened <= cancelled, "every resumable session opened is cancelled"
    assert vertex.objects() == {}
