"""Checks that the fake Azure upstreams keep Azure's contract, since gateway tests trust them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from plugins.azure.tests.fakes.azure_dated import FakeAzureDatedState
from plugins.azure.tests.fakes.azure_dated import make_app as make_dated_app
from plugins.azure.tests.fakes.azure_v1 import FakeAzureV1State
from plugins.azure.tests.fakes.azure_v1 import make_app as make_v1_app

KEY, TOKEN = "azure-key-1234567890", "entra-token-1234567890"
AUTH = {"api-key": KEY}
V = {"api-version": "2024-10-21"}
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def dated() -> FakeAzureDatedState:
    return FakeAzureDatedState(api_keys={KEY}, ad_tokens={TOKEN})


@pytest.fixture
async def client(aiohttp_client: MakeClient, dated: FakeAzureDatedState) -> Client:
    return await aiohttp_client(make_dated_app(dated))


async def _json(response: aiohttp.ClientResponse) -> Any:
    assert response.content_type == "application/json"
    return await response.json()


async def test_dated_create_job_answers_201_in_azure_shape(
    client: Client, dated: FakeAzureDatedState
) -> None:
    training = dated.add_file("t.jsonl", b"{}\n")
    body = {"model": "gpt-4o-mini", "training_file": training["id"], "method": {"type": "dpo"}}
    response = await client.post("/openai/fine_tuning/jobs", params=V, json=body, headers=AUTH)
    job = await _json(response)
    assert response.status == 201 and response.headers["Location"].endswith(job["id"])
    assert job["status"] == "created" and job["organisation_id"] == "org-contoso"
    assert job["hyperparameters"] == {
        "n_epochs": -1,
        "batch_size": -1,
        "learning_rate_multiplier": -1,
    }
    # Nulls are left out, and "method" is silently ignored, as Azure's schema allows.
    assert "finished_at" not in job and "method" not in job


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ({"training_file": "file-x"}, "model"),
        ({"model": "m", "training_file": "file-x"}, "training_file"),
        ({"model": "m", "training_file": "{file}", "seed": "7"}, "seed"),
        (
            {"model": "m", "training_file": "{file}", "hyperparameters": {"n_epochs": "auto"}},
            "hyperparameters.n_epochs",
        ),
    ],
)
async def test_dated_create_job_refuses_in_microsofts_envelope(
    client: Client, dated: FakeAzureDatedState, body: dict[str, Any], target: str
) -> None:
    file_id = dated.add_file("t.jsonl", b"{}\n")["id"]
    body = {k: (file_id if v == "{file}" else v) for k, v in body.items()}
    response = await client.post("/openai/fine_tuning/jobs", params=V, json=body, headers=AUTH)
    error = (await _json(response))["error"]
    assert response.status == 400
    assert (error["code"], error["target"]) == ("invalidPayload", target)
    assert error["innererror"] == {"code": "invalidPayload"}


@pytest.mark.parametrize(
    ("params", "headers", "status", "code"),
    [
        ({}, AUTH, 404, "404"),
        ({"api-version": "2023-05-15"}, AUTH, 400, "BadRequest"),
        (V, {}, 401, "401"),
        (V, {"api-key": "wrong"}, 401, "401"),
        (V, {"Authorization": "Bearer wrong"}, 401, "401"),
    ],
)
async def test_dated_requires_api_version_and_credentials(
    client: Client, params: dict[str, str], headers: dict[str, str], status: int, code: str
) -> None:
    response = await client.get("/openai/fine_tuning/jobs", params=params, headers=headers)
    assert response.status == status
    assert (await _json(response))["error"]["code"] == code


async def test_dated_files_upload_pending_then_processed_and_list_without_paging(
    client: Client,
) -> None:
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", b"{}\n", filename="t.jsonl")
    response = await client.post("/openai/files", params=V, data=form, headers=AUTH)
    uploaded = await _json(response)
    assert response.status == 201 and uploaded["status"] == "pending"
    listed = await _json(await client.get("/openai/files", params=V, headers=AUTH))
    assert listed == {"object": "list", "data": [{**uploaded, "status": "processed"}]}


async def test_dated_has_no_pause_and_pages_events(
    client: Client, dated: FakeAzureDatedState
) -> None:
    training = dated.add_file("t.jsonl", b"{}\n")
    body = {"model": "m", "training_file": training["id"]}
    job = await _json(
        await client.post("/openai/fine_tuning/jobs", params=V, json=body, headers=AUTH)
    )
    pause = await client.post(f"/openai/fine_tuning/jobs/{job['id']}/pause", params=V, headers=AUTH)
    assert pause.status == 404 and (await _json(pause))["error"]["code"] == "404"
    dated.add_event(job["id"], "careful", level="warning")
    events_url = f"/openai/fine_tuning/jobs/{job['id']}/events"
    page = await _json(await client.get(events_url, params={**V, "limit": "1"}, headers=AUTH))
    assert [e["level"] for e in page["data"]] == ["warning"] and page["has_more"] is True
    rest = {**V, "after": page["data"][0]["id"]}
    page = await _json(await client.get(events_url, params=rest, headers=AUTH))
    assert len(page["data"]) == 1 and page["has_more"] is False


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({}, AUTH, 200),
        ({}, {"Authorization": f"Bearer {TOKEN}"}, 200),
        ({"api-version": "preview"}, AUTH, 200),
        ({"api-version": "2024-10-21"}, AUTH, 400),
        ({}, {}, 401),
        ({}, {"api-key": "wrong"}, 401),
    ],
)
async def test_v1_door_takes_azure_credentials_and_only_v1_versions(
    aiohttp_client: MakeClient, params: dict[str, str], headers: dict[str, str], status: int
) -> None:
    state = FakeAzureV1State(api_keys={KEY}, ad_tokens={TOKEN})
    client = await aiohttp_client(make_v1_app(state))
    response = await client.get("/openai/v1/fine_tuning/jobs", params=params, headers=headers)
    body = await _json(response)
    assert response.status == status
    if status == 200:
        assert body == {"object": "list", "data": [], "has_more": False}
    else:
        assert set(body["error"]) == {"code", "message"}  # Microsoft's envelope
    assert state.requests[-1].headers.get("api-key") == headers.get("api-key")
