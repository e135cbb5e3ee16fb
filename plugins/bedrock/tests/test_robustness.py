"""Hostile ids, odd jobs from outside the gateway, partial S3 failures: each test failed
before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.errors import BadRequest, NotFound
from gateway.ids import encode_id
from gateway.jsonl import LINE_ERRORS
from gateway_bedrock import provider, s3, transform
from gateway_bedrock.aws import BedrockSettings
from gateway_bedrock.files import FileStore
from gateway_bedrock.formats import LineFormat, check_line, convert_line

NOVA = "amazon.nova-micro-v1:0:128k"
TITAN_MM = "amazon.titan-embed-image-v1"


# ---- job names: no catastrophic backtracking -------------------------------------------

# "a", dashes, then a character the pattern refuses: the old pattern tried every way of
# splitting the dashes between its two parts (2^n) before failing.
_PATHOLOGICAL = "a" + "-" * 28 + "!"


def test_job_name_of_refuses_a_pathological_id_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(NotFound):
        transform.job_name_of(encode_id(transform.JOB_ID_PREFIX, _PATHOLOGICAL))
    assert time.monotonic() - started < 0.5


def test_check_job_name_refuses_a_pathological_name_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(BadRequest):
        transform.check_job_name(_PATHOLOGICAL, "job_name")
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("run-1.v2+x", True),
        ("a--b", True),
        ("a-", True),
        ("-a", False),
        ("a_b", False),
        ("a" * 63, True),
        ("", False),
    ],
)
def test_job_name_pattern_is_bedrocks(name: str, ok: bool) -> None:
    assert bool(transform.JOB_NAME.fullmatch(name)) is ok


# ---- training lines: a message's name is never dropped silently ------------------------


def _named() -> bytes:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "example_user"},
        {"role": "assistant", "content": "Hello"},
    ]
    return json.dumps({"messages": messages}).encode()


def test_check_line_refuses_a_named_message() -> None:
    with pytest.raises(LINE_ERRORS, match=r"messages\[1\].*name"):
        check_line(_named())


@pytest.mark.parametrize("target", list(LineFormat))
def test_convert_line_refuses_a_named_message(target: LineFormat) -> None:
    with pytest.raises(LINE_ERRORS, match="name"):
        convert_line(_named(), target, NOVA)


# ---- jobs made outside the gateway still list ------------------------------------------


def _job(hyper: dict[str, str]) -> transform.BedrockJob:
    return transform.decode_job(
        {
            "jobArn": "arn:aws:bedrock:us-east-1:111122223333:model-customization-job/x",
            "jobName": "x",
            "baseModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{TITAN_MM}",
            "creationTime": datetime(2026, 1, 1, tzinfo=UTC),
            "hyperParameters": hyper,
        }
    )


def test_to_openai_job_survives_hyperparameters_that_are_not_numbers() -> None:
    # Titan Multimodal Embeddings takes epochCount "Auto"; a console job may hold anything.
    job = _job({"epochCount": "Auto", "batchSize": "576.0", "learningRate": "fast"})
    out = transform.to_openai_job(job, tags=None, source_of=lambda uri: None)
    hp = out.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == ("auto", "auto", "auto")


# ---- S3: deletes that S3 refused, sources left open ------------------------------------


class _Body:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def iter_chunks(self, size: int) -> Any:
        yield b'{"prompt": "p", "completion": "c"}\n'


class _RefusingS3:
    """Reads work; writes and deletes are refused, the way S3 refuses them."""

    def __init__(self) -> None:
        self.body = _Body()

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        if Bucket == "gw":  # the staged copy does not exist yet
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ETag": '"e1"'}

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        return {"Body": self.body, "ContentLength": 10}

    async def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "x"}}, "CreateMultipartUpload")

    async def delete_objects(self, *, Delete: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {
            "Errors": [
                {"Key": item["Key"], "Code": "AccessDenied", "Message": "Access Denied"}
                for item in Delete["Objects"]
            ]
        }


class _Clients:
    def __init__(self, client: _RefusingS3) -> None:
        self.client = client

    async def s3(self) -> _RefusingS3:
        return self.client


@contextlib.contextmanager
def _no_mapping(service: str = "S3") -> Iterator[None]:
    yield


async def test_staged_closes_the_source_when_the_write_fails_before_reading_it() -> None:
    client = _RefusingS3()
    settings = BedrockSettings(aws_s3_bucket="gw", aws_access_key_id="a", aws_secret_access_key="b")
    store = FileStore(settings, _Clients(client), _no_mapping)  # type: ignore[arg-type]
    with pytest.raises(ClientError):
        await store.staged(
            "s3://src/data.jsonl", LineFormat.PROMPT_COMPLETION, "amazon.titan-text", "t"
        )
    assert client.body.closed


async def test_delete_keys_raises_when_s3_refuses_a_key() -> None:
    with pytest.raises(ClientError) as caught:
        await s3.delete_keys(_RefusingS3(), "gw", ["a", "b"])
    assert caught.value.response["Error"]["Code"] == "AccessDenied"


# ---- concurrent calls: a failure cancels the rest --------------------------------------


async def test_bounded_cancels_the_other_calls_when_one_fails() -> None:
    finished: list[str] = []

    async def fails() -> str:
        raise NotFound("gone")

    async def slow() -> str:
        await asyncio.sleep(0.2)
        finished.append("slow")
        return "slow"

    with pytest.raises(NotFound):
        await provider._bounded([fails(), slow()])
    await asyncio.sleep(0.3)
    assert finished == []
