"""Fine-tuning jobs through the OpenAI SDK, the gateway and moto's Bedrock."""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest

from gateway.ids import encode_id

from .conftest import (
    ACCESS_KEY,
    BUCKET,
    OTHER_ROLE_ARN,
    PREFIX,
    ROLE_ARN,
    SECRET_KEY,
    Gateway,
    moto_job,
)

SYSTEM = {"role": "system", "content": "You are terse."}
ONE_TURN = [
    {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Bye?"}]},
            {"role": "assistant", "content": "Ciao."},
        ]
    },
]
TWO_TURNS = {
    "messages": [
        {"role": "user", "content": "A?"},
        {"role": "assistant", "content": "B."},
        {"role": "user", "content": "C?"},
        {"role": "assistant", "content": "D."},
    ]
}
NOVA = "amazon.nova-micro-v1:0:128k"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0:200k"
TITAN = "amazon.titan-text-express-v1:0:8k"
LLAMA = "meta.llama3-1-8b-instruct-v1:0:128k"


def jsonl(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(gateway: Gateway, *lines: dict[str, Any]) -> str:
    client = gateway.client()
    return client.files.create(file=("train.jsonl", jsonl(*lines)), purpose="fine-tune").id


def staged_lines(gateway: Gateway) -> list[Any]:
    [key] = gateway.keys(f"{PREFIX}staged/")
    return [json.loads(line) for line in gateway.read(key).splitlines()]


NOVA_LINES = [
    {
        "schemaVersion": "bedrock-conversation-2024",
        "system": [{"text": "You are terse."}],
        "messages": [
            {"role": "user", "content": [{"text": "Hi?"}]},
            {"role": "assistant", "content": [{"text": "Hello."}]},
        ],
    },
    {
        "schemaVersion": "bedrock-conversation-2024",
        "messages": [
            {"role": "user", "content": [{"text": "Bye?"}]},
            {"role": "assistant", "content": [{"text": "Ciao."}]},
        ],
    },
]
HAIKU_LINES = [
    {
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."},
        ],
    },
    {"messages": [{"role": "user", "content": "Bye?"}, {"role": "assistant", "content": "Ciao."}]},
]
PROMPT_LINES = [
    {"prompt": "You are terse.\n\nHi?", "completion": "Hello."},
    {"prompt": "Bye?", "completion": "Ciao."},
]


@pytest.mark.parametrize(
    ("model", "expected", "hyperparameters", "bedrock_hyperparameters"),
    [
        (
            NOVA,
            NOVA_LINES,
            {"n_epochs": 2, "learning_rate_multiplier": 2},
            {"epochCount": "2", "learningRate": "2e-05"},
        ),
        (
            HAIKU,
            HAIKU_LINES,
            {"batch_size": 8, "learning_rate_multiplier": 0.5},
            {"batchSize": "8", "learningRateMultiplier": "0.5"},
        ),
        (
            TITAN,
            PROMPT_LINES,
            {"n_epochs": 3, "batch_size": 1},
            {"epochCount": "3", "batchSize": "1"},
        ),
        (LLAMA, PROMPT_LINES, {"n_epochs": 1}, {"epochCount": "1"}),
    ],
)
def test_create_converts_training_file_for_the_model_family(
    gateway: Gateway,
    model: str,
    expected: list[Any],
    hyperparameters: dict[str, Any],
    bedrock_hyperparameters: dict[str, str],
) -> None:
    file_id = upload(gateway, *ONE_TURN)
    job = gateway.client().fine_tuning.jobs.create(
        model=model,
        training_file=file_id,
        suffix="support",
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},  # type: ignore[typeddict-item]
        metadata={"team": "search"},
    )
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.model == model and job.training_file == file_id and job.validation_file is None
    assert job.status == "running" and job.error is None and job.fine_tuned_model is None
    assert job.finished_at is None and job.metadata == {"team": "search"}
    assert job.organization_id == "123456789012"
    for name, value in hyperparameters.items():
        assert getattr(job.hyperparameters, name) == value

    sent = moto_job(job.id)
    assert sent.role_arn == ROLE_ARN
    assert sent.hyper_parameters == bedrock_hyperparameters
    # Trained on its format's copy: Nova's made at upload, the others' now.
    training = sent.training_data_config["s3Uri"].removeprefix(f"s3://{BUCKET}/")
    assert training in gateway.keys(f"{PREFIX}staged/")
    assert [json.loads(line) for line in gateway.read(training).splitlines()] == expected
    assert sent.output_data_config["s3Uri"].startswith(f"s3://{BUCKET}/{PREFIX}output/")
    assert sent.job_name.startswith("support-") and sent.client_request_token
    assert sent.job_tags == [{"key": "team", "value": "search"}]
    assert gateway.client().fine_tuning.jobs.retrieve(job.id) == job


def test_conversion_is_staged_once_per_format_and_reused(gateway: Gateway) -> None:
    client = gateway.client()
    file_id = upload(gateway, *ONE_TURN)
    client.fine_tuning.jobs.create(model=NOVA, training_file=file_id, suffix="one")
    [staged] = gateway.keys(f"{PREFIX}staged/")
    marker = b'{"schemaVersion": "marker"}\n'
    gateway.s3.put_object(Bucket=BUCKET, Key=staged, Body=marker)
    client.fine_tuning.jobs.create(
        model="amazon.nova-lite-v1:0:300k", training_file=file_id, suffix="two"
    )
    assert gateway.keys(f"{PREFIX}staged/") == [staged] and gateway.read(staged) == marker
    haiku = client.fine_tuning.jobs.create(
        model=HAIKU, training_file=file_id, validation_file=file_id
    )
    assert haiku.training_file == haiku.validation_file == file_id
    assert len(gateway.keys(f"{PREFIX}staged/")) == 2, "one more format, one more object"

    client.files.delete(file_id)
    assert gateway.keys(PREFIX + "staged/") == [], "conversions go with their file"


def test_lines_already_in_the_models_format_pass_through(gateway: Gateway) -> None:
    file_id = upload(gateway, NOVA_LINES[0], ONE_TURN[1])
    gateway.client().fine_tuning.jobs.create(model=NOVA, training_file=file_id)
    assert staged_lines(gateway) == NOVA_LINES


def test_nova_trains_on_the_copy_made_at_upload(gateway: Gateway) -> None:
    file_id = upload(gateway, *ONE_TURN)
    [copy] = gateway.keys(f"{PREFIX}staged/")
    assert staged_lines(gateway) == NOVA_LINES  # written while the file was checked
    job = gateway.client().fine_tuning.jobs.create(model=NOVA, training_file=file_id)
    assert moto_job(job.id).training_data_config["s3Uri"] == f"s3://{BUCKET}/{copy}"


def test_a_file_uploaded_without_its_copy_is_converted_at_create(gateway: Gateway) -> None:
    # As a file uploaded before copies were made at upload (or whose copy failed) is.
    file_id = upload(gateway, *ONE_TURN)
    [copy] = gateway.keys(f"{PREFIX}staged/")
    gateway.s3.delete_object(Bucket=BUCKET, Key=copy)
    job = gateway.client().fine_tuning.jobs.create(model=NOVA, training_file=file_id)
    assert moto_job(job.id).training_data_config["s3Uri"] == f"s3://{BUCKET}/{copy}"
    assert staged_lines(gateway) == NOVA_LINES


def test_a_file_not_all_in_one_format_gets_no_copy_and_create_says_why(gateway: Gateway) -> None:
    file_id = upload(gateway, ONE_TURN[0], {"prompt": "P", "completion": "C"})
    assert gateway.keys(f"{PREFIX}staged/") == [] and gateway.open_multipart_uploads() == []
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().fine_tuning.jobs.create(model=NOVA, training_file=file_id)
    assert "line 2" in caught.value.message and NOVA in caught.value.message
    assert caught.value.body["param"] == "training_file"  # type: ignore[index]


def test_single_turn_model_refuses_multi_turn_lines_and_stages_nothing(gateway: Gateway) -> None:
    file_id = upload(gateway, *ONE_TURN, TWO_TURNS, ONE_TURN[0], TWO_TURNS)
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().fine_tuning.jobs.create(model=TITAN, training_file=file_id)
    assert "line 3" in caught.value.message and "line 5" in caught.value.message
    assert "single-turn" in caught.value.message
    assert caught.value.body["param"] == "training_file"  # type: ignore[index]
    # Only the conversation copy made at upload: nothing of the refused conversion.
    [copy] = gateway.keys(f"{PREFIX}staged/")
    assert copy.endswith(".conversation.jsonl") and gateway.open_multipart_uploads() == []
    assert list(gateway.client().fine_tuning.jobs.list()) == []


def test_training_file_may_be_an_s3_uri(gateway: Gateway) -> None:
    gateway.s3.put_object(Bucket=BUCKET, Key="datasets/train.jsonl", Body=jsonl(*ONE_TURN))
    uri = f"s3://{BUCKET}/datasets/train.jsonl"
    job = gateway.client().fine_tuning.jobs.create(model=HAIKU, training_file=uri)
    assert staged_lines(gateway) == HAIKU_LINES
    # Trained from a staged conversion, but named back as the user gave it.
    assert job.training_file == uri
    assert gateway.client().fine_tuning.jobs.retrieve(job.id).training_file == uri
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().fine_tuning.jobs.create(model=HAIKU, training_file=uri + ".missing")
    assert caught.value.body["param"] == "training_file"  # type: ignore[index]


def test_request_named_resources_must_be_listed_on_the_virtual_key(gateway: Gateway) -> None:
    # With the config's credentials, the gateway's identity would read or write wherever
    # the request says: only the roles and s3:// prefixes the virtual key lists may be named.
    gateway.s3.put_object(Bucket=BUCKET, Key="secrets/train.jsonl", Body=jsonl(*ONE_TURN))
    file_id = upload(gateway, *ONE_TURN)
    admin = "arn:aws:iam::123456789012:role/admin"
    attempts: list[tuple[str, str, dict[str, object]]] = [
        ("training_file", f"s3://{BUCKET}/secrets/train.jsonl", {}),
        ("training_file", f"s3://{BUCKET}/datasets/../secrets/train.jsonl", {}),
        ("training_file", f"s3://{BUCKET}-other/datasets/train.jsonl", {}),
        ("output_file", file_id, {"output_file": f"s3://{BUCKET}/elsewhere/"}),
        ("role_arn", file_id, {"role_arn": admin}),
        ("provider_options.role_arn", file_id, {"provider_options": {"role_arn": admin}}),
    ]
    before = gateway.keys()
    for param, training_file, extra in attempts:
        with pytest.raises(openai.BadRequestError) as caught:
            gateway.client().fine_tuning.jobs.create(
                model=NOVA, training_file=training_file, extra_body=extra
            )
        error = caught.value.body
        assert error["param"] == param and error["code"] == "resource_not_allowed"  # type: ignore[index]
    assert gateway.keys() == before  # nothing staged for a refused job
    assert list(gateway.client().fine_tuning.jobs.list()) == []


def test_job_name_role_and_output_from_provider_options(gateway: Gateway) -> None:
    file_id = upload(gateway, *ONE_TURN)
    role = OTHER_ROLE_ARN
    job = gateway.client().fine_tuning.jobs.create(
        model=NOVA,
        training_file=file_id,
        extra_body={
            "provider_options": {
                "job_name": "my-job.v1",
                "role_arn": role,
                "output_file": f"s3://{BUCKET}/results/",
                "hyper_parameters": {"learningRateWarmupSteps": 5},
            }
        },
    )
    sent = moto_job(job.id)
    assert sent.job_name == "my-job.v1" and sent.role_arn == role
    assert sent.output_data_config == {"s3Uri": f"s3://{BUCKET}/results/"}
    assert sent.hyper_parameters == {"learningRateWarmupSteps": "5"}
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().fine_tuning.jobs.create(
            model=NOVA, training_file=file_id, extra_body={"job_name": "no spaces allowed"}
        )
    assert caught.value.body["param"] == "job_name"  # type: ignore[index]


def test_nova_refuses_a_batch_size_it_cannot_take(gateway: Gateway) -> None:
    file_id = upload(gateway, *ONE_TURN)
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().fine_tuning.jobs.create(
            model=NOVA, training_file=file_id, hyperparameters={"batch_size": 4}
        )
    assert caught.value.body["param"] == "hyperparameters.batch_size"  # type: ignore[index]


def test_dpo_is_a_clear_400_and_makes_no_job(gateway: Gateway) -> None:
    client = gateway.client()
    file_id = upload(gateway, *ONE_TURN)
    with pytest.raises(openai.BadRequestError) as dpo:
        client.fine_tuning.jobs.create(
            model=NOVA, training_file=file_id, method={"type": "dpo", "dpo": {}}
        )
    assert "'bedrock'" in dpo.value.message and "dpo" in dpo.value.message
    assert list(client.fine_tuning.jobs.list()) == []


def test_unknown_jobs_are_404(gateway: Gateway) -> None:
    client = gateway.client()
    # Not a job, a job name Bedrock could not have, a file id.
    for bogus in ("ftjob-bm9wZQ", encode_id("ftjob-", "has space"), "file-bm9wZQ"):
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve(bogus)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel("ftjob-bm9wZQ")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-bm9wZQ")
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=NOVA, training_file="file-bm9wZQ")
    assert caught.value.body["param"] == "training_file"  # type: ignore[index]


def test_header_credentials_with_custom_host(gateway: Gateway) -> None:
    headers = {
        "x-portkey-provider": "bedrock",
        "x-portkey-aws-access-key-id": ACCESS_KEY,
        "x-portkey-aws-secret-access-key": SECRET_KEY,
        "x-portkey-aws-region": "us-east-1",
        "x-portkey-aws-s3-bucket": BUCKET,
        "x-portkey-custom-host": gateway.moto_url,
    }
    client = gateway.client(default_headers=headers)
    uploaded = client.files.create(file=("h.jsonl", jsonl(*ONE_TURN)), purpose="fine-tune")
    assert gateway.keys("finetune-gateway/files/"), "the default prefix, no virtual key's"
    with pytest.raises(openai.BadRequestError) as no_role:
        client.fine_tuning.jobs.create(model=NOVA, training_file=uploaded.id)
    assert no_role.value.body["param"] == "role_arn"  # type: ignore[index]
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=uploaded.id, extra_body={"role_arn": ROLE_ARN}
    )
    assert client.fine_tuning.jobs.retrieve(job.id).training_file == uploaded.id

    without_secret = {k: v for k, v in headers.items() if "secret" not in k}
    with pytest.raises(openai.AuthenticationError) as caught:
        gateway.client(default_headers=without_secret).fine_tuning.jobs.list()
    assert SECRET_KEY not in str(caught.value.body)


def test_inline_config_cannot_point_the_client_at_any_endpoint(gateway: Gateway) -> None:
    config = {
        "provider": "bedrock",
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_s3_bucket": BUCKET,
        "endpoint_url": "http://169.254.169.254",
    }
    client = gateway.client(default_headers={"x-portkey-config": json.dumps(config)})
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.list()
    # Core holds every URL a request supplies to the custom-host allow-list.
    assert caught.value.body["code"] == "custom_host_not_allowed"  # type: ignore[index]
    assert caught.value.body["param"] == "x-portkey-config.endpoint_url"  # type: ignore[index]


def test_no_secret_in_any_log_line(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    """What `finetune-gateway serve` would write (INFO and up, the gateway's own DEBUG too)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="finetune_gateway")
    caplog.set_level(logging.DEBUG, logger="gateway_bedrock")
    session_token = "FwoGZXIvYXdzEXAMPLE-session-token-0123456789"
    headers = {
        "x-portkey-provider": "bedrock",
        "x-portkey-aws-access-key-id": ACCESS_KEY,
        "x-portkey-aws-secret-access-key": SECRET_KEY,
        "x-portkey-aws-session-token": session_token,
        "x-portkey-aws-region": "us-east-1",
        "x-portkey-aws-s3-bucket": BUCKET,
        "x-portkey-custom-host": gateway.moto_url,
    }
    client = gateway.client(default_headers=headers)
    uploaded = client.files.create(file=("s.jsonl", jsonl(*ONE_TURN)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=uploaded.id, extra_body={"role_arn": ROLE_ARN}
    )
    client.fine_tuning.jobs.list()
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve(job.id + "x")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("bad.jsonl", b"{oops\n"), purpose="fine-tune")

    server_side = [
        r for r in caplog.records if not r.name.startswith(("openai", "httpx", "httpcore"))
    ]
    assert any(r.name == "finetune_gateway.access" for r in server_side)
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in server_side)
    for secret in (SECRET_KEY, session_token):
        assert secret not in text
