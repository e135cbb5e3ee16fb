"""Upstream faults on Bedrock and S3: moto behind a proxy on 127.0.0.1 that fails on request.

Retries are core's (botocore makes one attempt each), so what reaches moto is counted
here exactly: a retried create makes one job, a cut upload leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from moto.bedrock.models import bedrock_backends
from moto.core import DEFAULT_ACCOUNT_ID

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from tests.support.fault_proxy import FaultProxy, Seen
from tests.support.fault_proxy import make_app as make_fault_proxy

from .conftest import PREFIX, REGION, Gateway, bedrock_config

ATTEMPTS = "x-upstream-attempts"
NOVA = "amazon.nova-micro-v1:0:128k"
LINE = {
    "messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}


@pytest.fixture
def faulty(moto_url: str, s3: Any, registry: Registry) -> Iterator[tuple[Gateway, FaultProxy]]:
    """A gateway whose Bedrock virtual key reaches moto through a fault proxy, retrying."""
    servers = ServerThread()
    proxy = FaultProxy(target=moto_url)
    proxy.url = servers.serve(make_fault_proxy(proxy))
    raw = bedrock_config(proxy.url)
    raw["upstream"]["retry"] = {"attempts": 3, "backoff": 0.01}
    config = parse_config(raw, registry, {})
    gateway = Gateway(servers.serve(make_app(config, registry)) + "/v1", moto_url, s3)
    yield gateway, proxy
    for client in gateway.clients:
        client.close()
    servers.close()


def jsonl(lines: int) -> bytes:
    return b"".join(json.dumps(LINE).encode() + b"\n" for _ in range(lines))


def moto_jobs() -> list[str]:
    return list(bedrock_backends[DEFAULT_ACCOUNT_ID][REGION].model_customization_jobs)


def _creates(seen: Seen) -> bool:
    return seen.method == "POST" and seen.path == "/model-customization-jobs"


def test_create_answered_500_after_it_made_the_job_is_retried_into_one_job(
    faulty: tuple[Gateway, FaultProxy],
) -> None:
    gateway, proxy = faulty
    client = gateway.client()
    file_id = client.files.create(file=("t.jsonl", jsonl(2)), purpose="fine-tune").id
    # Moto makes the job; the gateway is told 500: only the same token makes the retry safe.
    proxy.add(
        _creates,
        "answer_after",
        status=500,
        body=b'{"message": "Internal failure"}',
        headers={"x-amzn-ErrorType": "InternalServerException"},
    )

    raw = client.with_raw_response.fine_tuning.jobs.create(training_file=file_id, model=NOVA)

    assert raw.status_code == 200
    assert raw.headers[ATTEMPTS] == "2"
    assert len(moto_jobs()) == 1
    tokens = [json.loads(seen.body)["clientRequestToken"] for seen in proxy.seen if _creates(seen)]
    assert len(tokens) == 2 and tokens[0] == tokens[1]
    assert client.fine_tuning.jobs.retrieve(raw.parse().id).id == raw.parse().id


def test_throttled_read_is_retried(faulty: tuple[Gateway, FaultProxy]) -> None:
    gateway, proxy = faulty
    proxy.add(
        lambda seen: seen.method == "GET" and seen.path == "/model-customization-jobs",
        "answer",
        status=429,
        body=b'{"message": "Rate exceeded"}',
        headers={"x-amzn-ErrorType": "ThrottlingException"},
    )

    raw = gateway.client().with_raw_response.fine_tuning.jobs.list()

    assert raw.status_code == 200
    assert raw.headers[ATTEMPTS] == "2"


def test_upload_reset_mid_part_is_502_and_leaves_no_object_or_open_upload(
    faulty: tuple[Gateway, FaultProxy],
) -> None:
    gateway, proxy = faulty
    proxy.add(
        lambda seen: seen.method == "PUT" and "partNumber" in seen.query,
        "reset",
        times=100,
        after_bytes=1000,
    )

    with pytest.raises(openai.InternalServerError) as failed:
        gateway.client().files.create(file=("t.jsonl", jsonl(100)), purpose="fine-tune")

    assert failed.value.status_code == 502
    assert failed.value.response.headers[ATTEMPTS] == "3"  # each part is retried, no more
    parts = [s for s in proxy.seen if "partNumber" in s.query]
    # The original's first part, tried three times; its conversation copy's, at most so.
    assert len([s for s in parts if "/files/" in s.path]) == 3
    assert len([s for s in parts if "/staged/" in s.path]) <= 3
    assert gateway.open_multipart_uploads() == []
    assert gateway.keys(PREFIX) == []
