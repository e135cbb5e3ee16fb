"""The official OpenAI SDK, through the gateway, against Azure's v1 API (OpenAI's schema)."""

from __future__ import annotations

import openai
import pytest

from plugins.azure.tests.conftest import AD_TOKEN, AZURE_KEY, AzureStack
from tests.conftest import GATEWAY_KEY, OTHER_GATEWAY_KEY, TRAINING_JSONL

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 2}}}


def test_v1_full_loop_with_dpo_through_gateway_key_default(azure: AzureStack) -> None:
    client = azure.client()  # the gateway key's default virtual key: azure-v1

    uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert uploaded.bytes == len(TRAINING_JSONL)
    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id,
        model="gpt-4o-mini-2024-07-18",
        method=DPO,  # type: ignore[arg-type]
        metadata={"team": "search"},
        extra_body={"provider_options": {"job_name": "x"}, "role_arn": "arn:aws:iam::1:role/x"},
    )
    assert job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == 0.1
    assert job.metadata == {"team": "search"}
    sent = [r for r in azure.v1.service.requests if r.path == "/openai/v1/fine_tuning/jobs"]
    assert sent[-1].json["method"] == DPO, "DPO reaches Azure unchanged"
    assert sent[-1].json["metadata"] == {"team": "search"}
    assert "provider_options" not in sent[-1].json and "role_arn" not in sent[-1].json

    assert client.fine_tuning.jobs.retrieve(job.id).status == "validating_files"
    azure.v1.service.set_status(job.id, "running")
    assert client.fine_tuning.jobs.pause(job.id).id == job.id
    assert client.fine_tuning.jobs.resume(job.id).status == "running"
    azure.v1.service.add_checkpoint(job.id, 10)
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)] == [10]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1)]
    assert messages[:2] == ["Fine-tuning job resumed", "Fine-tuning job paused"]
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None

    assert client.files.retrieve(uploaded.id).filename == "train.jsonl"
    assert client.files.content(uploaded.id).content == TRAINING_JSONL
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)

    # Every call went to /openai/v1 with the Azure key, no api-version, no gateway key.
    for recorded in azure.v1.requests:
        assert recorded.path.startswith("/openai/v1/")
        assert recorded.headers["api-key"] == AZURE_KEY
        assert "api-version" not in recorded.query
        assert GATEWAY_KEY not in str(recorded.headers)


def test_v1_lists_auto_page_each_item_once(azure: AzureStack) -> None:
    client = azure.client()
    ids = [
        client.files.create(file=(f"{i}.jsonl", TRAINING_JSONL), purpose="fine-tune").id
        for i in range(3)
    ]
    assert [f.id for f in client.files.list(limit=1, order="asc")] == ids
    jobs = [client.fine_tuning.jobs.create(training_file=ids[0], model="gpt-4o-mini").id]
    jobs += [client.fine_tuning.jobs.create(training_file=ids[1], model="gpt-4o-mini").id]
    first = client.fine_tuning.jobs.list(limit=1)
    assert first.has_more is True
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1)] == jobs[::-1]
    listed = [r for r in azure.v1.requests if r.path == "/openai/v1/fine_tuning/jobs"]
    # Newest first, so the second page starts after the newest job.
    assert listed[-1].query == {"limit": "1", "after": jobs[1]}


def test_v1_entra_token_and_preview_api_version_reach_azure(azure: AzureStack) -> None:
    client = azure.client("azure-v1-entra")
    client.fine_tuning.jobs.list()
    assert azure.v1.requests[-1].headers["authorization"] == f"Bearer {AD_TOKEN}"
    assert "api-key" not in azure.v1.requests[-1].headers

    other_gateway = azure.start_gateway(
        {
            "routing": {"accept_header_credentials": True},
            "virtual_keys": {
                "preview": {
                    "provider": "azure-openai",
                    "api_version": "preview",
                    "api_key": AZURE_KEY,
                    "custom_host": azure.v1_url,
                }
            },
        }
    )
    preview = azure.client("preview", api_key="unused", base_url=other_gateway)
    preview.files.list()
    assert azure.v1.requests[-1].path == "/openai/v1/files"
    assert azure.v1.requests[-1].query["api-version"] == "preview"


def test_v1_by_portkey_provider_headers_with_key_in_authorization(azure: AzureStack) -> None:
    headers = {
        "x-portkey-provider": "azure-openai",
        "x-portkey-api-key": OTHER_GATEWAY_KEY,
        "x-portkey-azure-resource-name": "contoso",
        "x-portkey-azure-api-version": "v1",
        "x-portkey-custom-host": azure.v1_url,
    }
    # The SDK's api_key is the Azure key here; the gateway key travels in x-portkey-api-key.
    client = azure.client(api_key=AZURE_KEY, headers=headers)
    uploaded = client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert azure.v1.requests[-1].headers["api-key"] == AZURE_KEY
    assert [f.id for f in client.files.list()] == [uploaded.id]

    # A caller's own bad key is the caller's 401, not the gateway's 502.
    wrong = azure.client(api_key="azkey-not-a-real-key-000000", headers=headers)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.files.list()
    assert "invalid subscription key" in caught.value.message
    assert caught.value.code == "401"


def test_v1_entra_token_as_the_sdks_api_key_reaches_azure_as_bearer(azure: AzureStack) -> None:
    token = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL2FpLmF6dXJlLmNvbSJ9.c2lnbmF0dXJl"
    azure.v1.ad_tokens.add(token)
    azure.v1.service.api_keys.add(token)
    headers = {
        "x-portkey-provider": "azure-openai",
        "x-portkey-api-key": OTHER_GATEWAY_KEY,
        "x-portkey-custom-host": azure.v1_url,
    }
    # OpenAI(api_key=<Entra token provider>) sends the token as "Authorization: Bearer".
    client = azure.client(api_key=token, headers=headers)
    assert list(client.files.list()) == []
    sent = azure.v1.requests[-1].headers
    assert sent["authorization"] == f"Bearer {token}" and "api-key" not in sent
