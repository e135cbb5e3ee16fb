"""The routing cache: the same routing headers reuse a target, any change misses."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway import routing
from gateway.config import Config, parse_config
from gateway.errors import BadRequest
from gateway.registry import Registry
from gateway.routing import RoutingCache, Target, authenticate, resolve_checked_target

GATEWAY_KEY = "gw-key-aaaaaaaaaaaaaaaa"


def _config(registry: Registry) -> Config:
    raw = {
        "routing": {
            "accept_header_credentials": True,
            "custom_host_allowlist": ["127.0.0.1/32", "llm.example.com"],
        },
        "gateway_keys": {"a": {"key": GATEWAY_KEY, "default_virtual_key": "vk"}},
        "virtual_keys": {"vk": {"provider": "openai", "api_key": "sk-virtual"}},
    }
    return parse_config(raw, registry, {})


async def _route(registry: Registry, config: Config, cache: RoutingCache, **headers: str) -> Target:
    hdrs = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return await resolve_checked_target(hdrs, config, registry, authenticate(hdrs, config), cache)


def _by_headers(key: str, host: str = "http://127.0.0.1:9000/v1") -> dict[str, str]:
    return {
        "authorization": f"Bearer {GATEWAY_KEY}",
        "x_portkey_api_key": GATEWAY_KEY,
        "x_portkey_provider": "openai",
        "x_portkey_custom_host": host,
    } | ({"authorization": f"Bearer {key}"} if key else {})


async def test_same_routing_headers_reuse_the_target(registry: Registry) -> None:
    config, cache = _config(registry), RoutingCache()
    first = await _route(registry, config, cache, **_by_headers("sk-one"))
    # Headers routing never reads (a request id, the SDK's) do not make a new entry.
    again = await _route(
        registry, config, cache, **_by_headers("sk-one"), x_request_id="r2", user_agent="x"
    )
    assert again is first and len(cache) == 1
    assert first.settings.api_key == "sk-one"
    assert first.settings.custom_host == "http://127.0.0.1:9000/v1"


async def test_another_authorization_is_another_upstream_credential(registry: Registry) -> None:
    config, cache = _config(registry), RoutingCache()
    one = await _route(registry, config, cache, **_by_headers("sk-one"))
    two = await _route(registry, config, cache, **_by_headers("sk-two"))
    assert (one.settings.api_key, two.settings.api_key) == ("sk-one", "sk-two")
    assert (await _route(registry, config, cache, **_by_headers("sk-one"))) is one
    assert len(cache) == 2


async def test_a_changed_or_removed_header_is_never_served_stale(registry: Registry) -> None:
    config, cache = _config(registry), RoutingCache()
    await _route(registry, config, cache, **_by_headers("sk-one"))
    moved = await _route(
        registry, config, cache, **_by_headers("sk-one", "http://127.0.0.1:9001/v1")
    )
    assert moved.settings.custom_host == "http://127.0.0.1:9001/v1"
    # A custom host off the allow-list is refused, whatever was cached before it.
    with pytest.raises(BadRequest) as refused:
        await _route(registry, config, cache, **_by_headers("sk-one", "http://10.0.0.1/v1"))
    assert refused.value.code == "custom_host_not_allowed"
    # Without the provider header, the gateway key's default virtual key serves.
    headers = _by_headers("sk-one")
    del headers["x_portkey_provider"], headers["x_portkey_custom_host"]
    headers["authorization"] = f"Bearer {GATEWAY_KEY}"
    target = await _route(registry, config, cache, **headers)
    assert (target.virtual_key, target.settings.api_key) == ("vk", "sk-virtual")
    # With the OpenAI project header, which the provider reads, a new target.
    project = await _route(
        registry, config, cache, **_by_headers("sk-one"), openai_project="proj_1"
    )
    assert project.settings.project == "proj_1"


async def test_refusals_are_not_cached(registry: Registry) -> None:
    config, cache = _config(registry), RoutingCache()
    for _ in range(2):
        with pytest.raises(BadRequest):
            await _route(registry, config, cache, **_by_headers("sk-1", "http://10.0.0.1/v1"))
    assert len(cache) == 0


async def test_cache_is_bounded_and_shows_no_credential(registry: Registry) -> None:
    config, cache = _config(registry), RoutingCache(max_size=8)
    for index in range(50):
        await _route(registry, config, cache, **_by_headers(f"sk-secret-{index}"))
    assert len(cache) == 8
    assert "sk-secret" not in repr(cache)
    # The most recent entries are the ones kept.
    last = await _route(registry, config, cache, **_by_headers("sk-secret-49"))
    assert last is await _route(registry, config, cache, **_by_headers("sk-secret-49"))


async def test_a_name_is_checked_again_once_its_check_is_stale(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, cache = _config(registry), RoutingCache(name_ttl=60)
    checked: list[str] = []
    refuse = False

    async def check(host: str, *args: Any, **kwargs: Any) -> None:
        checked.append(host)
        if refuse:
            raise BadRequest("refused", code="custom_host_not_allowed")

    now = [1000.0]
    monkeypatch.setattr(routing, "check_resolved_name", check)
    monkeypatch.setattr(routing.time, "monotonic", lambda: now[0])
    headers = _by_headers("sk-one", "https://llm.example.com/v1")
    first = await _route(registry, config, cache, **headers)
    assert first is await _route(registry, config, cache, **headers)
    assert checked == ["llm.example.com"]  # allowed a moment ago: not looked up again
    # Past the TTL it is looked up again, cached target or not, and a refusal holds.
    now[0] += 61
    refuse = True
    for _ in range(2):
        with pytest.raises(BadRequest):
            await _route(registry, config, cache, **headers)
    assert checked == ["llm.example.com"] * 3
    # Without a cache (or with a TTL of 0) every request looks it up.
    uncached = RoutingCache(name_ttl=0)
    refuse = False
    await _route(registry, config, uncached, **headers)
    await _route(registry, config, uncached, **headers)
    assert checked == ["llm.example.com"] * 5


async def test_a_resolution_that_walks_every_header_is_not_cached(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, cache = _config(registry), RoutingCache()
    real = routing.resolve_target

    def walking(headers: Mapping[str, str], *args: Any) -> Target:
        walked: Iterator[str] = iter(headers)  # as a plugin copying the headers would
        list(walked)
        return real(headers, *args)

    monkeypatch.setattr(routing, "resolve_target", walking)
    await _route(registry, config, cache, **_by_headers("sk-one"))
    assert len(cache) == 0
