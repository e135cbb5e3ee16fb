"""What a virtual key or Portkey's headers give the Fireworks provider.

Fireworks names everything under an account (``/v1/accounts/{account_id}/...``), so the
account id is a setting beside the API key, as in Portkey (``x-portkey-fireworks-account-id``)
and Fireworks' SDK (``FIREWORKS_ACCOUNT_ID``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec
from msgspec import Meta

from gateway.errors import BadRequest
from gateway.fields import Secret, Url
from gateway.provider import ProviderSettings, bearer_key

DEFAULT_BASE_URL = "https://api.fireworks.ai"
ACCOUNT_HEADER = "x-portkey-fireworks-account-id"

# An account id becomes a URL path segment: nothing that could leave it ("/", "?", "..").
AccountId = Annotated[str, Meta(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,62})$")]


class FireworksSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_key: Secret
    account_id: AccountId
    base_url: Url = DEFAULT_BASE_URL


def settings_from_headers(headers: Mapping[str, str]) -> FireworksSettings:
    """The key from ``Authorization: Bearer``, the account from Portkey's header.

    Core has already removed ``Authorization`` when it carried the gateway's own key.
    """
    key = bearer_key(headers, "Fireworks")
    account = headers.get(ACCOUNT_HEADER, "").strip()
    if not account:
        raise BadRequest(
            f"No Fireworks account: send '{ACCOUNT_HEADER}' or use a virtual key with account_id",
            param=ACCOUNT_HEADER,
            code="missing_fireworks_account",
        )
    try:
        return msgspec.convert({"api_key": key, "account_id": account}, FireworksSettings)
    except msgspec.ValidationError:
        raise BadRequest(
            f"Invalid '{ACCOUNT_HEADER}': a Fireworks account id is lower-case letters, "
            "digits and '-'",
            param=ACCOUNT_HEADER,
            code="invalid_value",
        ) from None
