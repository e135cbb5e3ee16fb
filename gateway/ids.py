"""Public ids for provider objects: URL-safe, round-tripping, stable.

Providers name things with ARNs, object keys and resource paths that hold ``/``, ``:``
and ``+``; none of those survive a URL path or query string intact. The public id is a
prefix OpenAI's clients recognise (``ftjob-``, ``file-``) followed by the native name in
unpadded base64url, so it decodes back to exactly the native name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from gateway.errors import NotFound


def encode_id(prefix: str, native: str) -> str:
    """``prefix`` + base64url(``native``) without padding."""
    encoded = base64.urlsafe_b64encode(native.encode()).rstrip(b"=").decode("ascii")
    return prefix + encoded


def decode_id(
    prefix: str, public_id: str, *, what: str, shape: re.Pattern[str] | None = None
) -> str:
    """The native name behind ``public_id``; a 404 for an id this gateway never issued.

    ``shape``, when given, is what every native name the provider issues matches in
    full; anything else is refused the same way, before it can reach a URL or a key.
    """
    body = public_id.removeprefix(prefix)
    if body == public_id or not body:
        raise _not_found(what, public_id)
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        native = raw.decode()
    except (binascii.Error, ValueError):
        raise _not_found(what, public_id) from None
    # Decoding is lenient about stray characters; only an id that encodes back the same
    # way is one we issued.
    if encode_id(prefix, native) != public_id:
        raise _not_found(what, public_id)
    if shape is not None and not shape.fullmatch(native):
        raise _not_found(what, public_id)
    return native


def stable_id(prefix: str, *parts: str) -> str:
    """An id derived from ``parts`` alone, so the same event gets the same id every time."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return prefix + digest[:24]


def _not_found(what: str, public_id: str) -> NotFound:
    return NotFound(f"No {what} found with id '{public_id}'")
