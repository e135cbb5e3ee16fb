"""What a virtual key or the ``x-portkey-azure-*`` headers give the Azure provider.

An Azure OpenAI resource serves two fine-tuning APIs, and ``api_version`` picks one:

- the v1 API, ``{host}/openai/v1/...``, with OpenAI's own schema: chosen when
  ``api_version`` is absent, ``"v1"``, ``"preview"`` or ``"latest"``. The last two are
  sent on as ``?api-version=preview|latest``, which opts into Azure's preview features
  on v1; ``"v1"`` and absent send no ``api-version`` at all, as Azure's v1 API wants.
- the dated API, ``{host}/openai/...?api-version=YYYY-MM-DD[-preview]``, with Azure's
  own schema (see ``transform``): chosen by any dated version.

``{host}`` is ``https://{resource_name}.openai.azure.com``, or ``custom_host`` when core
sets it (an allow-listed ``x-portkey-custom-host``, or a config's ``custom_host``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

import msgspec
from msgspec import Meta

from gateway.errors import BadRequest, Unauthorized
from gateway.fields import HOST, Secret
from gateway.provider import ProviderSettings, bearer_token

V1_VERSIONS = frozenset({"v1", "preview", "latest"})

# A DNS label: the resource name becomes part of a host name, so anything else (a dot, a
# "#", an "@") could point the gateway at a host of the caller's choosing.
ResourceName = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?$"), HOST
]
ApiVersion = Annotated[str, Meta(pattern=r"^(?:v1|preview|latest|\d{4}-\d{2}-\d{2}(?:-preview)?)$")]

# A JSON Web Token (an Entra ID access token); Azure's API keys never look like one.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Request header -> setting, for a request that names the provider with x-portkey-provider.
HEADER_SETTINGS = {
    "x-portkey-azure-resource-name": "resource_name",
    "x-portkey-azure-deployment-id": "deployment_id",
    "x-portkey-azure-api-version": "api_version",
    "x-portkey-azure-ad-token": "ad_token",
}


class AzureSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    resource_name: ResourceName | None = None
    # Accepted so Portkey virtual keys carry over; fine-tuning and files are per resource,
    # not per deployment, so no call uses it.
    deployment_id: str | None = None
    api_version: ApiVersion | None = None
    api_key: Secret | None = None
    # A Microsoft Entra ID bearer token; used instead of api_key when both are given.
    ad_token: Secret | None = None

    def __post_init__(self) -> None:
        # Raised here, a missing credential is a config error naming the virtual key.
        if not (self.api_key or self.ad_token):
            raise ValueError("give api_key or ad_token (an Entra ID token)")


@dataclass(frozen=True, slots=True)
class Surface:
    """Which of the two APIs a provider instance talks to."""

    v1: bool
    # The api-version query value, or None for none (v1 proper).
    api_version: str | None

    @classmethod
    def of(cls, api_version: str | None) -> Surface:
        if api_version is None or api_version == "v1":
            return cls(True, None)
        return cls(api_version in V1_VERSIONS, api_version)

    def params(self) -> dict[str, str]:
        return {} if self.api_version is None else {"api-version": self.api_version}


def settings_from_headers(headers: Mapping[str, str]) -> AzureSettings:
    """Settings from ``x-portkey-azure-*`` headers; the key from ``Authorization`` or ``api-key``.

    Core has already removed ``Authorization`` when it carried the gateway's own key.
    """
    fields: dict[str, str] = {}
    for header, name in HEADER_SETTINGS.items():
        if value := headers.get(header, "").strip():
            fields[name] = value
    if (token := fields.get("ad_token", "")).lower().startswith("bearer "):
        fields["ad_token"] = token[len("bearer ") :].strip()  # sent as a header value
    if key := bearer_token(headers) or headers.get("api-key", "").strip():
        if _JWT.fullmatch(key) and "ad_token" not in fields:
            # An Entra ID token (the OpenAI SDK sends a token provider's token this way):
            # Azure refuses it in "api-key"; it must go as a bearer token.
            fields["ad_token"] = key
        else:
            fields["api_key"] = key
    if "api_key" not in fields and "ad_token" not in fields:
        raise Unauthorized(
            "No Azure OpenAI credentials in the request: send 'Authorization: Bearer <Azure "
            "key>', an 'api-key' header or 'x-portkey-azure-ad-token', or use a virtual key",
            code="missing_provider_credentials",
        )
    try:
        return msgspec.convert(fields, AzureSettings)
    except msgspec.ValidationError as exc:
        raise _header_error(exc) from None


def _header_error(exc: msgspec.ValidationError) -> BadRequest:
    message, _, where = str(exc).partition(" - at `$.")
    setting = where.rstrip("`")
    header = next((h for h, s in HEADER_SETTINGS.items() if s == setting), setting or None)
    if setting == "resource_name":
        message = "must be an Azure resource name (letters, digits and '-')"
    elif setting == "api_version":
        message = "must be 'v1', 'preview', 'latest' or a dated version such as '2024-10-21'"
    return BadRequest(f"Invalid '{header}': {message}", param=header, code="invalid_value")
