"""Settings, surfaces and routing on their own: what a virtual key or headers make of Azure."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.config import ConfigError, parse_config
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.registry import Registry
from gateway.routing import resolve_target
from gateway_azure import AzureOpenAIProvider, AzureSettings
from gateway_azure.settings import Surface


@pytest.mark.parametrize(
    ("api_version", "v1", "params"),
    [
        (None, True, {}),
        ("v1", True, {}),
        ("preview", True, {"api-version": "preview"}),
        ("latest", True, {"api-version": "latest"}),
        ("2024-10-21", False, {"api-version": "2024-10-21"}),
        ("2025-04-01-preview", False, {"api-version": "2025-04-01-preview"}),
    ],
)
def test_surface_of_api_version_picks_api_and_query(
    api_version: str | None, v1: bool, params: dict[str, str]
) -> None:
    surface = Surface.of(api_version)
    assert (surface.v1, surface.params()) == (v1, params)


@pytest.mark.parametrize(
    ("settings", "path", "url"),
    [
        (
            AzureSettings(resource_name="contoso", api_key="k"),
            "/files",
            "https://contoso.openai.azure.com/openai/v1/files",
        ),
        (
            AzureSettings(resource_name="contoso", api_key="k", api_version="2024-10-21"),
            "/fine_tuning/jobs",
            "https://contoso.openai.azure.com/openai/fine_tuning/jobs",
        ),
        (
            AzureSettings(custom_host="http://127.0.0.1:9/apim/", api_key="k", api_version="v1"),
            "/files",
            "http://127.0.0.1:9/apim/openai/v1/files",
        ),
    ],
)
async def test_provider_url_from_resource_or_custom_host(
    settings: AzureSettings, path: str, url: str
) -> None:
    async with aiohttp.ClientSession() as http:
        assert AzureOpenAIProvider(settings, http)._url(path) == url


async def test_provider_url_without_resource_or_host_is_a_400_naming_the_header() -> None:
    async with aiohttp.ClientSession() as http:
        provider = AzureOpenAIProvider(AzureSettings(api_key="k"), http)
        with pytest.raises(BadRequest) as caught:
            provider._url("/files")
    assert caught.value.param == "x-portkey-azure-resource-name"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "Authorization": "Bearer az-key",
                "x-portkey-azure-resource-name": "contoso",
                "x-portkey-azure-deployment-id": "ft-4o",
                "x-portkey-azure-api-version": "2024-10-21",
            },
            AzureSettings(
                api_key="az-key",
                resource_name="contoso",
                deployment_id="ft-4o",
                api_version="2024-10-21",
            ),
        ),
        ({"api-key": "az-key"}, AzureSettings(api_key="az-key")),
        ({"x-portkey-azure-ad-token": "tok"}, AzureSettings(ad_token="tok")),
        ({"x-portkey-azure-ad-token": "Bearer tok"}, AzureSettings(ad_token="tok")),
    ],
)
def test_settings_from_headers_reads_portkey_azure_headers(
    headers: dict[str, str], expected: AzureSettings
) -> None:
    assert AzureOpenAIProvider.settings_from_headers(CIMultiDict(headers)) == expected


@pytest.mark.parametrize("value", [None, "Basic abc", "Bearer "])
def test_settings_from_headers_without_credentials_is_401(value: str | None) -> None:
    headers = CIMultiDict({"x-portkey-azure-resource-name": "contoso"})
    if value is not None:
        headers["Authorization"] = value
    with pytest.raises(Unauthorized) as caught:
        AzureOpenAIProvider.settings_from_headers(headers)
    assert caught.value.code == "missing_provider_credentials"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        # Each would move the upstream host: https://{value}.openai.azure.com
        ("x-portkey-azure-resource-name", "169.254.169.254#"),
        ("x-portkey-azure-resource-name", "evil.example.com/x?"),
        ("x-portkey-azure-resource-name", "user@internal"),
        ("x-portkey-azure-resource-name", "-contoso"),
        ("x-portkey-azure-api-version", "2024-10-21&x=1"),
        ("x-portkey-azure-api-version", "v2"),
    ],
)
def test_settings_from_headers_refuses_values_that_would_change_the_url(
    header: str, value: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        AzureOpenAIProvider.settings_from_headers(CIMultiDict({"api-key": "k", header: value}))
    assert caught.value.param == header


def _config(registry: Registry, accept: bool, **vk: Any) -> Any:
    raw = {
        "routing": {"accept_header_credentials": accept},
        "virtual_keys": {"az": {"provider": "azure", **vk}},
    }
    return parse_config(raw, registry, {})


@pytest.mark.parametrize(
    ("vk", "problem"),
    [
        ({"resource_name": "contoso"}, "virtual_keys.az: give api_key or ad_token"),
        ({"api_key": "k", "resource_name": "a.b"}, "virtual_keys.az.resource_name"),
        ({"api_key": "k", "api_version": "2024-1-1"}, "virtual_keys.az.api_version"),
        ({"api_key": "k", "deployment": "x"}, "virtual_keys.az.deployment: unknown setting"),
    ],
)
def test_config_names_the_bad_virtual_key_setting(
    registry: Registry, vk: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(registry, True, **vk)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_registry_finds_slug_and_alias(registry: Registry) -> None:
    assert registry.get("azure-openai") is AzureOpenAIProvider
    assert registry.get("azure") is AzureOpenAIProvider
    config = _config(registry, True, api_key="k", resource_name="contoso", ad_token="t")
    assert config.virtual_keys["az"].settings == AzureSettings(
        api_key="k", resource_name="contoso", ad_token="t"
    )


@pytest.mark.parametrize("header", ["api-key", "x-portkey-azure-ad-token", "authorization"])
def test_credential_headers_are_refused_where_the_config_does_not_accept_them(
    registry: Registry, header: str
) -> None:
    config = _config(registry, False, api_key="k", resource_name="contoso")
    headers = CIMultiDict({"x-portkey-provider": "azure-openai", header: "Bearer secret"})
    with pytest.raises(Forbidden) as caught:
        resolve_target(headers, config, registry, None)
    assert caught.value.param == header


@pytest.mark.parametrize(
    ("custom_host", "api_version", "url"),
    [
        # Portkey's Azure base URL ends in /openai, so a carried-over custom host does too.
        ("https://apim.contoso.com/openai", None, "https://apim.contoso.com/openai/v1/files"),
        ("https://apim.contoso.com/openai/", "2024-10-21", "https://apim.contoso.com/openai/files"),
        # The OpenAI SDK's base_url for Azure's v1 API, as Azure's docs write it.
        (
            "https://x.openai.azure.com/openai/v1/",
            "v1",
            "https://x.openai.azure.com/openai/v1/files",
        ),
        (
            "https://x.openai.azure.com/openai/v1",
            "2024-10-21",
            "https://x.openai.azure.com/openai/files",
        ),
        (
            "http://127.0.0.1:9/openai-proxy",
            "v1",
            "http://127.0.0.1:9/openai-proxy/openai/v1/files",
        ),
    ],
)
async def test_provider_url_custom_host_ending_in_openai_is_not_doubled(
    custom_host: str, api_version: str | None, url: str
) -> None:
    settings = AzureSettings(custom_host=custom_host, api_key="k", api_version=api_version)
    async with aiohttp.ClientSession() as http:
        assert AzureOpenAIProvider(settings, http)._url("/files") == url


ENTRA_JWT = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL2NvZ25pdGl2ZXNlcnZpY2VzIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # The OpenAI SDK with an Entra token provider sends the token as its api_key.
        ({"Authorization": f"Bearer {ENTRA_JWT}"}, AzureSettings(ad_token=ENTRA_JWT)),
        # An explicit ad-token header still wins; the key beside it stays a key.
        (
            {"Authorization": "Bearer az-key", "x-portkey-azure-ad-token": ENTRA_JWT},
            AzureSettings(api_key="az-key", ad_token=ENTRA_JWT),
        ),
        ({"api-key": "az-key"}, AzureSettings(api_key="az-key")),
    ],
)
def test_settings_from_headers_entra_token_in_authorization_is_a_token_not_a_key(
    headers: dict[str, str], expected: AzureSettings
) -> None:
    assert AzureOpenAIProvider.settings_from_headers(CIMultiDict(headers)) == expected
