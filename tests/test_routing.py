"""Routing decisions on their own: precedence, gateway keys, the custom-host allow-list."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.config import Config, ConfigError, parse_config
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.registry import Registry
from gateway.routing import authenticate, check_custom_host, resolve_target

KEY_A = "gw-key-aaaaaaaaaaaaaaaa"
KEY_B = "gw-key-bbbbbbbbbbbbbbbb"


def _config(registry: Registry, **routing: Any) -> Config:
    raw = {
        "routing": {"accept_header_credentials": True, **routing},
        "gateway_keys": {
            "a": {"key": KEY_A, "default_virtual_key": "vk-default"},
            "b": {"key": KEY_B},
        },
        "virtual_keys": {
            "vk-default": {"provider": "openai", "api_key": "sk-default"},
            "vk-named": {"provider": "openai", "api_key": "sk-named"},
            "vk-config": {"provider": "openai", "api_key": "sk-config"},
        },
        "configs": {"cfg": {"virtual_key": "vk-config"}},
    }
    return parse_config(raw, registry, {})


def _resolve(registry: Registry, config: Config, **headers: str) -> Any:
    hdrs = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    key = authenticate(hdrs, config)
    return resolve_target(hdrs, config, registry, key)


def test_resolve_target_precedence_config_then_virtual_key_then_provider_then_default(
    registry: Registry,
) -> None:
    config = _config(registry)
    everything = {
        "authorization": f"Bearer {KEY_A}",
        "x_portkey_config": "cfg",
        "x_portkey_virtual_key": "vk-named",
        "x_portkey_provider": "openai",
    }
    assert _resolve(registry, config, **everything).settings.api_key == "sk-config"
    del everything["x_portkey_config"]
    assert _resolve(registry, config, **everything).virtual_key == "vk-named"
    del everything["x_portkey_virtual_key"]
    # With the provider header, the bearer is the gateway key, so no provider key is left.
    with pytest.raises(Unauthorized):
        _resolve(registry, config, **everything)
    del everything["x_portkey_provider"]
    target = _resolve(registry, config, **everything)
    assert (target.virtual_key, target.gateway_key) == ("vk-default", "a")
    assert target.caller_credentials is False


def test_resolve_target_provider_key_from_bearer_when_gateway_key_in_portkey_header(
    registry: Registry,
) -> None:
    config = _config(registry)
    target = _resolve(
        registry,
        config,
        authorization="Bearer sk-callers",
        x_portkey_api_key=KEY_B,
        x_portkey_provider="openai",
    )
    assert target.settings.api_key == "sk-callers"
    assert target.caller_credentials is True and target.gateway_key == "b"


def test_authenticate_refuses_missing_wrong_and_prefix_keys(registry: Registry) -> None:
    config = _config(registry)
    for headers in (
        {},
        {"authorization": "Bearer nope"},
        {"authorization": f"Bearer {KEY_A[:-1]}"},
        {"authorization": f"Basic {KEY_A}"},
        {"x-portkey-api-key": ""},
    ):
        with pytest.raises(Unauthorized):
            authenticate(CIMultiDict(headers), config)
    assert authenticate(CIMultiDict({"x-portkey-api-key": KEY_B}), config).name == "b"
    assert authenticate(CIMultiDict({}), Config.default()) is None  # open gateway


def test_resolve_target_refuses_header_credentials_where_config_forbids(
    registry: Registry,
) -> None:
    config = _config(registry, accept_header_credentials=False)
    with pytest.raises(Forbidden) as caught:
        _resolve(
            registry,
            config,
            authorization="Bearer sk-x",
            x_portkey_api_key=KEY_B,
            x_portkey_provider="openai",
        )
    assert caught.value.param == "authorization"
    # A virtual key is still fine: its credentials come from the config.
    assert (
        _resolve(
            registry, config, authorization=f"Bearer {KEY_B}", x_portkey_virtual_key="vk-named"
        ).virtual_key
        == "vk-named"
    )


def test_resolve_target_custom_host_takes_a_virtual_keys_credentials_only_where_listed(
    registry: Registry,
) -> None:
    raw = {
        "routing": {"accept_header_credentials": True, "custom_host_allowlist": ["127.0.0.1"]},
        "gateway_keys": {"a": {"key": KEY_A, "default_virtual_key": "vk-default"}},
        "virtual_keys": {
            "vk-default": {
                "provider": "openai",
                "api_key": "sk-default",
                "custom_hosts": ["http://127.0.0.1:9000"],
            },
        },
    }
    config = parse_config(raw, registry, {})
    target = _resolve(
        registry,
        config,
        authorization=f"Bearer {KEY_A}",
        x_portkey_custom_host="http://127.0.0.1:9000/v1/",
    )
    assert target.settings.custom_host == "http://127.0.0.1:9000/v1"
    assert target.settings.api_key == "sk-default"
    # Another port of the same allowed address is another destination: not for this key.
    with pytest.raises(BadRequest) as caught:
        _resolve(
            registry,
            config,
            authorization=f"Bearer {KEY_A}",
            x_portkey_custom_host="http://127.0.0.1:9001/v1",
        )
    assert caught.value.code == "custom_host_not_allowed_for_virtual_key"
    assert caught.value.param == "x-portkey-custom-host"


def test_resolve_target_holds_urls_in_request_settings_to_the_allow_list(
    registry: Registry,
) -> None:
    """An inline config's base_url would otherwise reach any address the caller names."""
    config = _config(registry, custom_host_allowlist=["127.0.0.0/8"])
    inline = '{"provider": "openai", "api_key": "sk-x", "base_url": "%s"}'
    with pytest.raises(BadRequest) as caught:
        _resolve(
            registry,
            config,
            authorization=f"Bearer {KEY_B}",
            x_portkey_config=inline % "http://169.254.169.254/latest",
        )
    assert caught.value.param == "x-portkey-config.base_url"
    assert caught.value.code == "custom_host_not_allowed"
    allowed = _resolve(
        registry,
        config,
        authorization=f"Bearer {KEY_B}",
        x_portkey_config=inline % "http://127.0.0.1:9/v1",
    )
    assert allowed.settings.base_url == "http://127.0.0.1:9/v1"
    # Leading spaces do not hide a URL; a value that merely mentions one (a key file's
    # JSON with its token_uri, say) is not a URL the gateway calls, and is left alone.
    with pytest.raises(BadRequest):
        _resolve(
            registry,
            config,
            authorization=f"Bearer {KEY_B}",
            x_portkey_config=inline % " http://10.0.0.1/v1",
        )
    mention = '{"provider": "openai", "api_key": "sk-x", "organization": "see http://10.0.0.1"}'
    assert _resolve(registry, config, authorization=f"Bearer {KEY_B}", x_portkey_config=mention)
    # A named config comes from the trusted config file: not held to the list.
    assert _resolve(registry, config, authorization=f"Bearer {KEY_B}", x_portkey_config="cfg")


@pytest.mark.parametrize(
    ("url", "allowlist", "allowed"),
    [
        ("http://127.0.0.1:8080/v1", ["127.0.0.0/8"], True),
        ("http://127.9.9.9/", ["127.0.0.0/8"], True),
        ("http://[::1]:8080/", ["::1"], True),
        ("http://[::ffff:127.0.0.1]/", ["127.0.0.0/8"], True),
        ("https://LocalHost./v1", ["localhost"], True),
        ("https://api.example.com/v1", ["api.example.com"], True),
        # Refused: not listed, or a spelling nobody lists.
        ("http://localhost/", ["127.0.0.0/8"], False),
        ("http://0.0.0.0/", ["127.0.0.0/8"], False),
        ("http://2130706433/", ["127.0.0.0/8"], False),
        ("http://0x7f000001/", ["127.0.0.0/8"], False),
        ("http://[::ffff:127.0.0.1]/", ["api.example.com"], False),
        ("http://169.254.169.254/latest/meta-data", ["127.0.0.0/8"], False),
        ("http://10.1.2.3/", ["127.0.0.0/8"], False),
        ("http://sub.api.example.com/", ["api.example.com"], False),
        ("http://api.example.com.evil.test/", ["api.example.com"], False),
        ("ftp://127.0.0.1/", ["127.0.0.0/8"], False),
        ("http://user:pw@127.0.0.1/", ["127.0.0.0/8"], False),
        ("127.0.0.1:8080", ["127.0.0.0/8"], False),
        ("http:///nohost", ["127.0.0.0/8"], False),
        ("http://127.0.0.1/", [], False),
    ],
)
def test_check_custom_host(url: str, allowlist: list[str], allowed: bool) -> None:
    if allowed:
        check_custom_host(url, allowlist, "x-portkey-custom-host")
    else:
        with pytest.raises(BadRequest) as caught:
            check_custom_host(url, allowlist, "x-portkey-custom-host")
        assert caught.value.param == "x-portkey-custom-host"


def test_resolve_target_provider_slug_uses_the_configs_provider_settings_under_headers(
    registry: Registry,
) -> None:
    """``[providers.openai]`` fills what a request naming the provider leaves out."""
    raw = {
        "routing": {"accept_header_credentials": True},
        "providers": {"openai": {"base_url": "http://10.1.2.3/v1", "organization": "org-cfg"}},
    }
    config = parse_config(raw, registry, {})
    target = _resolve(
        registry, config, x_portkey_provider="openai", authorization="Bearer sk-from-request"
    )
    # The config's base_url is trusted (no allow-list for it); the key is the request's.
    assert target.settings.base_url == "http://10.1.2.3/v1"
    assert target.settings.organization == "org-cfg"
    assert target.settings.api_key == "sk-from-request"
    assert target.caller_credentials


def test_parse_config_provider_settings_are_checked_and_named(registry: Registry) -> None:
    raw = {"providers": {"openai": {"base_urll": "x"}, "no-such": {}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, registry, {})
    problems = "\n".join(caught.value.problems)
    assert "providers.openai.base_urll: unknown setting" in problems
    assert "providers.no-such: Unknown provider 'no-such'" in problems


def test_with_overrides_replaces_only_fields_the_settings_have() -> None:
    from gateway.scope import with_overrides
    from gateway_openai.provider import OpenAISettings

    settings = OpenAISettings(api_key="sk-a", organization="org-a")
    changed = with_overrides(
        settings, {"x-portkey-organization": "org-b", "x-portkey-vertex-storage-bucket-name": "b"}
    )
    assert changed == OpenAISettings(api_key="sk-a", organization="org-b")
    assert with_overrides(settings, {}) is settings
