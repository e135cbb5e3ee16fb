"""Standard Webhooks signing (https://www.standardwebhooks.com), as OpenAI signs its events.

A secret is ``whsec_`` and the base64 of 32 random bytes (``secrets.token_bytes``); the
signature of a delivery is ``v1,`` and the base64 HMAC-SHA256, under the secret's bytes,
of ``"{webhook-id}.{webhook-timestamp}.{body}"``. Several signatures, space-separated,
are sent while an old secret is still honoured after a rotation: a receiver holding
either secret accepts the delivery (the SDK's ``client.webhooks.unwrap`` does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def hint(secret: str) -> str:
    """What may be shown of a secret once it is made: its prefix and last four characters."""
    return PREFIX + "..." + secret[-4:]


def _key(secret: str) -> bytes:
    if secret.startswith(PREFIX):
        return base64.b64decode(secret[len(PREFIX) :])
    return secret.encode()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(
    signing_secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, one signature per secret."""
    signed = " ".join(signature(s, webhook_id, timestamp, body) for s in signing_secrets)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signed,
        "Content-Type": "application/json",
    }
