"""The OpenAI plugin's own pieces: settings from headers."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.errors import Unauthorized
from gateway_openai.provider import OpenAIProvider, OpenAISettings


def test_settings_from_headers_reads_key_organization_and_project() -> None:
    settings = OpenAIProvider.settings_from_headers(
        CIMultiDict(
            {
                "Authorization": "Bearer sk-abc",
                "OpenAI-Organization": "org-1",
                "x-portkey-openai-project": "proj-2",
            }
        )
    )
    assert settings == OpenAISettings(api_key="sk-abc", organization="org-1", project="proj-2")


@pytest.mark.parametrize("value", [None, "", "Bearer ", "Basic sk-abc", "sk-abc"])
def test_settings_from_headers_without_bearer_key_is_401(value: str | None) -> None:
    headers = CIMultiDict({} if value is None else {"Authorization": value})
    with pytest.raises(Unauthorized) as caught:
        OpenAIProvider.settings_from_headers(headers)
    assert caught.value.code == "missing_provider_credentials"
