"""Findings 1, 2 and 4: a configured secret goes only where the config sends it.

Each attack is tried by every route a request has (the custom-host header, an inline
config, a named config, managed mode's portkey_options) and must fail before anything
leaves the gateway: the listener, a host the allow-list does name, never sees the
config's key; the internal service on 127.0.0.2 is never called; nothing is a 500.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.conftest import TRAINING_JSONL
from tests.security.conftest import (
    AZURE_SECRET,
    KEY_A,
    KEY_B,
    SECRET_A,
    SECRET_B,
    Gateway,
    Recorder,
    call,
)

BOUND = "custom_host_not_allowed_for_virtual_key"


def _refused(status: int, body: dict[str, object], param: str, code: str) -> None:
    assert status == 400, body
    error = body["error"]
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == (param, code), error


async def test_a_virtual_keys_credentials_never_follow_a_request_chosen_host(
    gateway: Gateway, listener: Recorder
) -> None:
    url = await gateway()
    target = f"{listener.url}/v1"
    attempts = [
        (
            {"x_portkey_virtual_key": "vk-a", "x_portkey_custom_host": target},
            "x-portkey-custom-host",
        ),
        ({"x_portkey_custom_host": target}, "x-portkey-custom-host"),  # the default key's
        (
            {"x_portkey_config": json.dumps({"virtual_key": "vk-a", "custom_host": target})},
            "x-portkey-config.custom_host",
        ),
        (
            {"x_portkey_virtual_key": "azure-a", "x_portkey_custom_host": target},
            "x-portkey-custom-host",
        ),
    ]
    # Unscoped, so azure-a may be named.
    gateway_keys = {"team-a": {"key": KEY_A, "default_virtual_key": "vk-a"}}
    url_all = await gateway(gateway_keys=gateway_keys)
    for headers, param in attempts:
        for base in (url, url_all):
            status, body = await call(
                f"{base}/fine_tuning/jobs", authorization=f"Bearer {KEY_A}", **headers
            )
            if base == url and headers.get("x_portkey_virtual_key") == "azure-a":
                assert status == 403  # team A's list does not have it either
                continue
            _refused(status, body, param, BOUND)
    assert listener.hits == [], "the config's credentials reached the caller's host"
    for secret in (SECRET_A, AZURE_SECRET):
        assert not listener.saw(secret)


async def test_the_config_can_name_custom_hosts_for_a_virtual_key(
    gateway: Gateway, listener: Recorder, upstream: tuple[object, str]
) -> None:
    """The control: listed on the virtual key, the same request does reach the host."""
    _, upstream_url = upstream
    keys = {
        "vk-a": {
            "provider": "openai",
            "api_key": SECRET_A,
            "base_url": upstream_url,
            "custom_hosts": [listener.url],
        },
        "vk-b": {"provider": "openai", "api_key": SECRET_B, "base_url": upstream_url},
    }
    url = await gateway(virtual_keys=keys, configs={})
    status, body = await call(
        f"{url}/fine_tuning/jobs",
        authorization=f"Bearer {KEY_A}",
        x_portkey_custom_host=f"{listener.url}/v1",
    )
    assert (status, body["object"]) == (200, "list")
    assert listener.saw(SECRET_A)


async def test_provider_table_credentials_are_bound_too(
    gateway: Gateway, listener: Recorder
) -> None:
    """``[providers.openai]`` settings with a key: a request's base_url may not take it."""
    url = await gateway(
        routing={"accept_header_credentials": True, "custom_host_allowlist": ["127.0.0.1"]},
        providers={"openai": {"api_key": SECRET_A}},
    )
    inline = json.dumps({"provider": "openai", "base_url": f"{listener.url}/v1"})
    status, body = await call(
        f"{url}/fine_tuning/jobs", x_portkey_api_key=KEY_A, x_portkey_config=inline
    )
    _refused(status, body, "x-portkey-config.base_url", BOUND)
    # With a key of its own, the caller may go to an allowed host of its choosing.
    own = json.dumps(
        {"provider": "openai", "api_key": "sk-callers-own", "base_url": f"{listener.url}/v1"}
    )
    status, body = await call(
        f"{url}/fine_tuning/jobs", x_portkey_api_key=KEY_A, x_portkey_config=own
    )
    assert status == 200, body
    assert listener.saw("sk-callers-own") and not listener.saw(SECRET_A)


CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", " ", "\u00a0", "\u2028"]


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
async def test_a_control_character_in_a_url_setting_is_a_400_and_reaches_nothing(
    gateway: Gateway, internal: Recorder, control: str
) -> None:
    url = await gateway(
        routing={"accept_header_credentials": True, "custom_host_allowlist": ["127.0.0.1"]}
    )
    for where in (f"{control}{internal.url}/v1", f"{internal.url}{control}/v1"):
        inline = json.dumps({"provider": "openai", "api_key": "sk-caller", "base_url": where})
        status, body = await call(
            f"{url}/fine_tuning/jobs", x_portkey_api_key=KEY_A, x_portkey_config=inline
        )
        _refused(status, body, "x-portkey-config.base_url", "invalid_url")
        inline = json.dumps({"provider": "openai", "api_key": "sk-caller", "custom_host": where})
        status, body = await call(
            f"{url}/fine_tuning/jobs", x_portkey_api_key=KEY_A, x_portkey_config=inline
        )
        _refused(status, body, "x-portkey-config.custom_host", "invalid_url")
    assert internal.hits == []


async def test_gateway_key_a_cannot_use_team_bs_virtual_key_by_any_route(
    gateway: Gateway, upstream: tuple[object, str]
) -> None:
    url = await gateway()
    jobs = f"{url}/fine_tuning/jobs"
    routes = [
        ({"x_portkey_virtual_key": "vk-b"}, "x-portkey-virtual-key"),
        ({"x_portkey_config": json.dumps({"virtual_key": "vk-b"})}, "x-portkey-config"),
        ({"x_portkey_config": "cfg-b"}, "x-portkey-config"),
    ]
    for headers, param in routes:
        status, body = await call(jobs, authorization=f"Bearer {KEY_A}", **headers)
        assert status == 403, body
        assert (body["error"]["param"], body["error"]["code"]) == (param, "virtual_key_not_allowed")
        # Team B's own key may.
        status, body = await call(jobs, authorization=f"Bearer {KEY_B}", **headers)
        assert (status, body["object"]) == (200, "list")
    # Files and deletes too: the same routing decides every operation.
    status, _ = await call(
        f"{url}/files/file-of-b",
        "DELETE",
        authorization=f"Bearer {KEY_A}",
        x_portkey_virtual_key="vk-b",
    )
    assert status == 403


async def test_managed_mode_holds_portkey_options_to_the_callers_virtual_keys(
    gateway: Gateway, upstream: tuple[object, str]
) -> None:
    url = await gateway()
    headers = {"Authorization": f"Bearer {KEY_A}", "x-portkey-provider": "portkey"}
    async with aiohttp.ClientSession(headers=headers) as http:
        form = aiohttp.FormData()
        form.add_field("purpose", "fine-tune")
        form.add_field("file", TRAINING_JSONL, filename="train.jsonl")
        async with http.post(f"{url}/files", data=form) as uploaded:
            assert uploaded.status == 200, await uploaded.text()
            file_id = (await uploaded.json())["id"]
        job = {
            "model": "gpt-4o-mini",
            "training_file": file_id,
            "portkey_options": {"x-portkey-virtual-key": "vk-b"},
        }
        async with http.post(f"{url}/fine_tuning/jobs", json=job) as created:
            body = await created.json()
            assert created.status == 403, body
        assert body["error"]["param"] == "portkey_options.x-portkey-virtual-key"
        assert body["error"]["code"] == "virtual_key_not_allowed"
        async with http.get(f"{url}/fine_tuning/jobs") as listed:
            assert (await listed.json())["data"] == [], "no job was kept"
    state, _ = upstream
    assert not any(SECRET_B in str(r) for r in getattr(state, "requests", []))
