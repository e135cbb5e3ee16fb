"""Request credentials refused where the config says so; gateway keys compared in constant time."""

from __future__ import annotations

import hmac
import json

import pytest
from multidict import CIMultiDict

from gateway.config import Config, parse_config
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.registry import Registry
from gateway.routing import authenticate, resolve_target

GATEWAY_KEYS = [f"gw-key-{i}-{'x' * 16}" for i in range(5)]

# Every credential header of every installed provider, and every setting an inline
# config could carry a secret in. A provider that adds one must add it here.
CREDENTIAL_HEADERS = {
    "openai": {"authorization"},
    "azure-openai": {"authorization", "api-key", "x-portkey-azure-ad-token"},
    "bedrock": {
        "x-portkey-aws-access-key-id",
        "x-portkey-aws-secret-access-key",
        "x-portkey-aws-session-token",
    },
    "vertex-ai": {"x-portkey-vertex-service-account-json"},
    "fireworks-ai": {"authorization"},
    "together-ai": {"authorization"},
    "portkey": set(),
}
CREDENTIAL_SETTINGS = {
    "openai": ["api_key"],
    "azure-openai": ["api_key", "ad_token"],
    "bedrock": ["aws_access_key_id", "aws_secret_access_key", "aws_session_token"],
    "vertex-ai": ["vertex_service_account_json"],
    "fireworks-ai": ["api_key"],
    "together-ai": ["api_key"],
}
# Managed mode's settings say where the gateway writes: never from a request at all.
CONFIG_ONLY_SETTINGS = [
    "data_dir",
    "database",
    "store",
    "store_aws_access_key_id",
    "store_aws_secret_access_key",
    "store_service_account_json",
]


def _config(registry: Registry, *, accept: bool) -> Config:
    raw = {
        "routing": {"accept_header_credentials": accept},
        "gateway_keys": {f"k{i}": {"key": key} for i, key in enumerate(GATEWAY_KEYS)},
        "virtual_keys": {"vk": {"provider": "openai", "api_key": "sk-config"}},
    }
    return parse_config(raw, registry, {})


def test_every_installed_provider_declares_its_credential_headers(registry: Registry) -> None:
    declared = {p.slug: set(p.provider.credential_headers) for p in registry.loaded}
    assert declared == CREDENTIAL_HEADERS
    for slug, names in CREDENTIAL_SETTINGS.items():
        assert set(names) <= set(registry.get(slug).Settings.__struct_fields__), slug


@pytest.mark.parametrize(
    ("slug", "header"),
    [(slug, header) for slug, headers in CREDENTIAL_HEADERS.items() for header in sorted(headers)],
)
def test_resolve_target_refuses_each_credential_header_where_config_forbids(
    registry: Registry, slug: str, header: str
) -> None:
    config = _config(registry, accept=False)
    value = "Bearer sk-from-request" if header == "authorization" else "secret-from-request"
    headers = CIMultiDict(
        {"x-portkey-api-key": GATEWAY_KEYS[0], "x-portkey-provider": slug, header: value}
    )
    with pytest.raises(Forbidden) as refused:
        resolve_target(headers, config, registry, authenticate(headers, config))
    assert (refused.value.param, refused.value.code) == (header, "header_credentials_not_allowed")
    assert "secret-from-request" not in refused.value.message
    assert "sk-from-request" not in refused.value.message


@pytest.mark.parametrize(
    ("slug", "setting"),
    [(slug, setting) for slug, settings in CREDENTIAL_SETTINGS.items() for setting in settings],
)
def test_resolve_target_refuses_an_inline_config_carrying_credentials(
    registry: Registry, slug: str, setting: str
) -> None:
    config = _config(registry, accept=False)
    inline = json.dumps({"provider": slug, setting: "secret-in-inline-config"})
    headers = CIMultiDict({"x-portkey-api-key": GATEWAY_KEYS[0], "x-portkey-config": inline})
    with pytest.raises(Forbidden) as refused:
        resolve_target(headers, config, registry, authenticate(headers, config))
    assert refused.value.param == "x-portkey-config"
    assert refused.value.code == "header_credentials_not_allowed"
    assert "secret-in-inline-config" not in refused.value.message


@pytest.mark.parametrize("accept", [False, True])
@pytest.mark.parametrize("setting", CONFIG_ONLY_SETTINGS)
def test_resolve_target_refuses_managed_mode_settings_from_a_request(
    registry: Registry, setting: str, accept: bool
) -> None:
    config = _config(registry, accept=accept)
    inline = json.dumps({"provider": "portkey", setting: "/somewhere/else"})
    headers = CIMultiDict({"x-portkey-api-key": GATEWAY_KEYS[0], "x-portkey-config": inline})
    with pytest.raises(BadRequest) as refused:
        resolve_target(headers, config, registry, authenticate(headers, config))
    assert refused.value.param == f"x-portkey-config.{setting}"
    assert "/somewhere/else" not in refused.value.message


def test_resolve_target_takes_header_credentials_where_config_allows(registry: Registry) -> None:
    config = _config(registry, accept=True)
    headers = CIMultiDict(
        {
            "x-portkey-api-key": GATEWAY_KEYS[0],
            "x-portkey-provider": "openai",
            "authorization": "Bearer sk-from-request",
        }
    )
    target = resolve_target(headers, config, registry, authenticate(headers, config))
    assert target.settings.api_key == "sk-from-request" and target.caller_credentials


@pytest.mark.parametrize(
    "given",
    [GATEWAY_KEYS[0], GATEWAY_KEYS[-1], "gw-key-wrong-xxxxxxxxxxxxxxxx", GATEWAY_KEYS[2][:-1], ""],
    ids=["first", "last", "wrong", "prefix", "empty"],
)
def test_authenticate_compares_against_every_key_whatever_matches(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """No early exit: the first key, the last, a wrong one all cost one comparison per key,
    each through hmac.compare_digest, so timing does not tell which key (if any) matched."""
    config = _config(registry, accept=False)
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    headers = CIMultiDict({"authorization": f"Bearer {given}"})
    if given in GATEWAY_KEYS:
        assert authenticate(headers, config).key == given  # type: ignore[union-attr]
    else:
        with pytest.raises(Unauthorized):
            authenticate(headers, config)
    # Two places a key may come in (x-portkey-api-key, empty here, then the bearer),
    # each compared with all five keys.
    expected = [key.encode() for key in GATEWAY_KEYS] * 2
    assert compared == expected
