"""Credentials: service-account tokens, header credentials, hosts; through the gateway."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import openai
import pytest

from gateway_vertex import settings as vertex_settings
from gateway_vertex.settings import SERVICE_ACCOUNT_HEADER as SERVICE_ACCOUNT
from gateway_vertex.settings import VertexSettings
from plugins.vertex.tests.conftest import (
    BUCKET,
    CLIENT_EMAIL,
    PROJECT,
    REGION,
    VertexStack,
)


def test_token_is_cached_and_renewed_before_it_expires(vertex: VertexStack) -> None:
    # gcloud-aio-auth refreshes in the background once half the lifetime has passed; its
    # clock has one-second steps, hence a 4 s lifetime and a first look after 3 s.
    vertex.google.token_lifetime = 4  # the fake refuses a token past this
    client = vertex.client()

    client.fine_tuning.jobs.list()
    issued = time.monotonic()  # the token was issued before this: every wait below is longer
    for _ in range(2):
        client.fine_tuning.jobs.list()
    assert vertex.google.token_calls == 1, "one token serves many requests"

    time.sleep(max(0.0, issued + 3.05 - time.monotonic()))
    client.fine_tuning.jobs.list()  # still the first token, and a refresh under way
    time.sleep(0.3)
    assert vertex.google.token_calls == 2, "renewed before it ran out"

    time.sleep(max(0.0, issued + 4.3 - time.monotonic()))
    client.fine_tuning.jobs.list()  # the first token is refused by now: the new one is used
    assert vertex.google.token_calls == 2


def test_revoked_service_account_is_a_prompt_502(vertex: VertexStack) -> None:
    vertex.google.revoked.add(CLIENT_EMAIL)
    started = time.monotonic()

    with pytest.raises(openai.InternalServerError) as failed:
        vertex.client().fine_tuning.jobs.list()

    assert failed.value.status_code == 502
    assert "refused the service account key" in failed.value.message
    assert "account not found" in failed.value.message
    assert vertex.key_info["private_key"][40:80] not in failed.value.message
    assert vertex.google.token_calls == 1, "no retry storm against the token endpoint"
    assert time.monotonic() - started < 3


def test_unreadable_key_file_is_reported_as_misconfiguration(vertex: VertexStack) -> None:
    gateway = vertex.start_gateway(vertex.config(vertex_service_account_json="/nonexistent/k.json"))
    with pytest.raises(openai.InternalServerError) as failed:
        vertex.client(base_url=gateway).fine_tuning.jobs.list()
    assert failed.value.status_code == 500
    assert "cannot be read" in failed.value.message


def test_inline_key_json_in_the_virtual_key_works(vertex: VertexStack) -> None:
    inline = json.dumps(vertex.key_info)
    gateway = vertex.start_gateway(
        vertex.config(vertex_service_account_json=inline, vertex_project_id=None)
    )
    listed = vertex.client(base_url=gateway).fine_tuning.jobs.list()
    assert listed.data == []
    assert vertex.google.requests[-1].path.startswith(f"/v1/projects/{PROJECT}/"), (
        "the project comes from the key file when the virtual key names none"
    )


def headers(vertex: VertexStack, **overrides: str) -> dict[str, str]:
    base = {
        "x-portkey-provider": "vertex-ai",
        "x-portkey-vertex-project-id": PROJECT,
        "x-portkey-vertex-region": REGION,
        "x-portkey-vertex-storage-bucket-name": BUCKET,
        SERVICE_ACCOUNT: json.dumps(vertex.key_info),
        "x-portkey-custom-host": vertex.google_url,
    }
    return {k: v for k, v in {**base, **overrides}.items() if v}


def header_client(vertex: VertexStack, **overrides: str) -> openai.OpenAI:
    # The "no-default" gateway key of the shared base config: the provider comes from headers.
    return openai.OpenAI(
        base_url=vertex.gateway_url,
        api_key="gw-no-default-9876543210",
        max_retries=0,
        default_headers=headers(vertex, **overrides),
    )


def test_header_credentials_work_with_an_allowed_token_endpoint(
    vertex: VertexStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = vertex_settings.GOOGLE_TOKEN_URIS | {vertex.key_info["token_uri"]}
    monkeypatch.setattr(vertex_settings, "GOOGLE_TOKEN_URIS", allowed)
    with header_client(vertex) as client:
        assert client.fine_tuning.jobs.list().data == []
    assert vertex.google.token_calls == 1


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        (
            {"x-portkey-vertex-service-account-json": ""},
            openai.AuthenticationError,
            "No Vertex AI credentials",
        ),
        (
            {"x-portkey-vertex-service-account-json": "/etc/hostname"},
            openai.BadRequestError,
            "must hold the service account key file's JSON",
        ),
        ({}, openai.BadRequestError, "is not Google's token endpoint"),
        (
            {"x-portkey-vertex-region": "evil.example/x#"},
            openai.BadRequestError,
            "Invalid 'x-portkey-vertex-region'",
        ),
    ],
    ids=["no-key", "key-as-path", "foreign-token-uri", "region-injection"],
)
def test_header_credentials_are_refused_when_unsafe(
    vertex: VertexStack,
    overrides: dict[str, str],
    error: type[openai.APIStatusError],
    fragment: str,
) -> None:
    with header_client(vertex, **overrides) as client, pytest.raises(error) as refused:
        client.fine_tuning.jobs.list()
    assert fragment in refused.value.message
    assert vertex.google.token_calls == 0, "nothing was posted anywhere"


def test_callers_own_revoked_key_is_a_401(
    vertex: VertexStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = vertex_settings.GOOGLE_TOKEN_URIS | {vertex.key_info["token_uri"]}
    monkeypatch.setattr(vertex_settings, "GOOGLE_TOKEN_URIS", allowed)
    vertex.google.revoked.add(CLIENT_EMAIL)
    with header_client(vertex) as client, pytest.raises(openai.AuthenticationError):
        client.fine_tuning.jobs.list()


def test_custom_host_replaces_the_virtual_keys_endpoint(vertex: VertexStack) -> None:
    config = vertex.config(endpoint_url="http://127.0.0.1:9", custom_hosts=[vertex.google_url])
    gateway = vertex.start_gateway(config)
    client = vertex.client(
        base_url=gateway, default_headers={"x-portkey-custom-host": vertex.google_url}
    )
    assert client.fine_tuning.jobs.list().data == []
    # The key's credentials go to the hosts it lists, and nowhere else.
    elsewhere = vertex.client(
        base_url=gateway, default_headers={"x-portkey-custom-host": "http://127.0.0.1:9/"}
    )
    with pytest.raises(openai.BadRequestError) as caught:
        elsewhere.fine_tuning.jobs.list()
    assert caught.value.code == "custom_host_not_allowed_for_virtual_key"
    with pytest.raises(openai.InternalServerError):
        vertex.client(base_url=gateway).fine_tuning.jobs.list()  # the dead endpoint


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"vertex_region": "us-central1"}, "https://us-central1-aiplatform.googleapis.com"),
        ({"vertex_region": "global"}, "https://aiplatform.googleapis.com"),
        ({"endpoint_url": "https://psc.example/"}, "https://psc.example"),
        ({"endpoint_url": "https://psc.example", "custom_host": "http://h:1"}, "http://h:1"),
    ],
)
def test_settings_base_url(fields: dict[str, Any], url: str) -> None:
    assert VertexSettings(**fields).base_url() == url


def test_settings_prefix_always_ends_with_a_slash() -> None:
    assert VertexSettings(vertex_storage_prefix="team-a").prefix == "team-a/"
    assert VertexSettings(vertex_storage_prefix="").prefix == ""


def test_no_secret_in_any_log_line(
    vertex: VertexStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What `finetune-gateway serve` would write (INFO and up, the gateway's own DEBUG too):
    neither the key file's private key nor an access token issued from it."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="finetune_gateway")
    caplog.set_level(logging.DEBUG, logger="gateway_vertex")
    allowed = vertex_settings.GOOGLE_TOKEN_URIS | {vertex.key_info["token_uri"]}
    monkeypatch.setattr(vertex_settings, "GOOGLE_TOKEN_URIS", allowed)
    vertex.google.revoked.add(CLIENT_EMAIL)
    with header_client(vertex) as client, pytest.raises(openai.AuthenticationError):
        client.fine_tuning.jobs.list()
    vertex.google.revoked.clear()
    with header_client(vertex) as client:
        client.fine_tuning.jobs.list()
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-bm9wZQ")

    issued = list(vertex.google.tokens)
    assert issued, "a token was issued, so there was one to leak"
    private_key_body = vertex.key_info["private_key"].splitlines()[1]
    server_side = [
        r for r in caplog.records if not r.name.startswith(("openai", "httpx", "httpcore"))
    ]
    assert any(r.name == "finetune_gateway.access" for r in server_side)
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in server_side)
    for secret in [private_key_body, *issued]:
        assert secret not in text
