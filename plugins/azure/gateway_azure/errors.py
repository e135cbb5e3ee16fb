"""Azure's error answers, read into OpenAI's terms (message, param, code); no I/O.

The dated API answers in Microsoft's envelope, ``{"error": {"code", "message",
"target", "details", "innererror"}}``; the v1 API mostly in OpenAI's, ``{"error":
{"message", "type", "param", "code"}}``, but Azure's front door answers auth failures in
Microsoft's on both. One reader takes either, keeping Azure's message and code: the
``code`` (``notFound``, ``invalidPayload``, ...) is what Azure's docs and support use.
"""

from __future__ import annotations

import msgspec


class _Detail(msgspec.Struct):
    message: str | None = None
    target: str | None = None


class _Inner(msgspec.Struct):
    code: str | None = None


class _Error(msgspec.Struct):
    message: str | None = None
    # Microsoft's envelope: ``code`` is sometimes the HTTP status as a string, or a number.
    code: str | int | None = None
    param: str | None = None
    target: str | None = None
    details: list[_Detail] | None = None
    innererror: _Inner | None = None


class _Envelope(msgspec.Struct):
    error: _Error | str | None = None


def parse_error(raw: bytes, reason: str) -> tuple[str, str | None, str | None]:
    """``(message, param, code)`` from an error body in either envelope, or its text."""
    try:
        envelope = msgspec.json.decode(raw, type=_Envelope)
    except msgspec.DecodeError:
        text = raw.decode("utf-8", "replace").strip()[:500]
        return (text or reason or "no message"), None, None
    error = envelope.error
    if not isinstance(error, _Error):
        return (error or reason or "no message"), None, None
    message = error.message or reason or "no message"
    details = [d for d in error.details or [] if d.message]
    if details:
        # Azure puts what exactly is wrong (which line, which field) in the details.
        message += " (" + "; ".join(d.message for d in details if d.message) + ")"
    param = error.param or error.target or next((d.target for d in details if d.target), None)
    code = error.code
    if code is None and error.innererror is not None:
        code = error.innererror.code
    return message, param, None if code is None else str(code)
