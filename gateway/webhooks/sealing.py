"""Signing secrets sealed at rest, so a dump of the database alone does not give them away.

The key comes from the environment (``FINETUNE_GATEWAY_WEBHOOK_KEY``, any string of at
least 32 characters; ``finetune-gateway`` makes none up). Core depends on nothing but
aiohttp and msgspec, so the seal is built from the standard library: encrypt-then-MAC,
a keystream of HMAC-SHA256(encryption key, nonce || counter) blocks XORed with the
secret, and an HMAC-SHA256 tag over nonce and ciphertext under a second, derived key. A
sealed value is ``v1.`` + base64(nonce 16 || ciphertext || tag 32).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from gateway.errors import Forbidden, InternalError

ENV = "FINETUNE_GATEWAY_WEBHOOK_KEY"
_VERSION = "v1."


class SealKeyMissing(Forbidden):
    def __init__(self) -> None:
        super().__init__(
            "Webhook endpoints need a key to seal their signing secrets: set the environment "
            f"variable {ENV} (at least 32 characters) for the gateway's processes",
            param=None,
            code="webhook_key_missing",
        )


class Sealer:
    def __init__(self, key: str) -> None:
        if len(key) < 32:
            raise ValueError(f"{ENV} must be at least 32 characters long")
        root = hashlib.sha256(key.encode()).digest()
        self._enc = hmac.new(root, b"finetune-gateway webhook enc", hashlib.sha256).digest()
        self._mac = hmac.new(root, b"finetune-gateway webhook mac", hashlib.sha256).digest()

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] | None = None) -> Sealer | None:
        key = (os.environ if env is None else env).get(ENV)
        return cls(key) if key else None

    def _stream(self, nonce: bytes, length: int) -> bytes:
        blocks = []
        for counter in range((length + 31) // 32):
            block = nonce + counter.to_bytes(8, "big")
            blocks.append(hmac.new(self._enc, block, hashlib.sha256).digest())
        return b"".join(blocks)[:length]

    def seal(self, plain: str) -> str:
        data = plain.encode()
        nonce = secrets.token_bytes(16)
        cipher = bytes(a ^ b for a, b in zip(data, self._stream(nonce, len(data)), strict=True))
        tag = hmac.new(self._mac, nonce + cipher, hashlib.sha256).digest()
        return _VERSION + base64.b64encode(nonce + cipher + tag).decode()

    def open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed.removeprefix(_VERSION))
        nonce, cipher, tag = raw[:16], raw[16:-32], raw[-32:]
        expected = hmac.new(self._mac, nonce + cipher, hashlib.sha256).digest()
        if not sealed.startswith(_VERSION) or not hmac.compare_digest(tag, expected):
            # Never the value: only that the key is not the one it was sealed with.
            raise InternalError(f"A webhook signing secret does not open with {ENV}")
        stream = self._stream(nonce, len(cipher))
        return bytes(a ^ b for a, b in zip(cipher, stream, strict=True)).decode()
