"""Reading providers' answers: what cannot be mapped is a 502 that names the field.

A provider's answer is untrusted input like a caller's request. Every plugin decodes
answers through :func:`decode_answer` or :func:`convert_answer` and maps them inside
:func:`mapping`, so an answer of the right JSON type but the wrong format (a timestamp
that is not RFC 3339, an int64 string that is not a number), a missing required field or
an unknown enum value is an :class:`UpstreamBadResponse`: a 502 in OpenAI's envelope
naming the provider and the field, logged by the error middleware with the upstream
request id. Never a 500, which would say the gateway itself is broken.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, overload

import msgspec

from gateway.errors import UpstreamError

T = TypeVar("T")

_PATH = re.compile(r" - at `(\$[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")


class UpstreamBadResponse(UpstreamError):
    """The provider answered something the gateway cannot map to OpenAI's objects."""

    def __init__(self, provider: str, what: str, field: str | None, problem: str) -> None:
        self.provider = provider
        self.field = field
        where = f" at `{field}`" if field else ""
        super().__init__(
            f"{provider} answered a {what} the gateway cannot map{where}: {problem}",
            code="upstream_bad_response",
        )


def bad_answer(provider: str, what: str, exc: Exception) -> UpstreamBadResponse:
    """The 502 for ``exc``, raised while reading ``what`` from ``provider``."""
    if isinstance(exc, UpstreamBadResponse):
        return exc
    text = str(exc)
    found = _PATH.search(text)
    field = found.group(1) if found else None
    problem = text[: found.start()] if found else text
    if missing := _MISSING.match(problem):
        field = f"{field or '$'}.{missing.group(1)}"
        problem = "a required field is missing"
    return UpstreamBadResponse(provider, what, field, problem[:300] or type(exc).__name__)


@overload
def decode_answer(raw: bytes, type_: msgspec.json.Decoder[T], *, provider: str, what: str) -> T:
    pass


@overload
def decode_answer(raw: bytes, type_: type[T], *, provider: str, what: str) -> T:
    pass


def decode_answer(raw: bytes, type_: Any, *, provider: str, what: str) -> Any:
    """``raw`` (JSON) as ``type_`` (a type or a reusable ``msgspec.json.Decoder``)."""
    try:
        if isinstance(type_, msgspec.json.Decoder):
            return type_.decode(raw)
        return msgspec.json.decode(raw, type=type_)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise bad_answer(provider, what, exc) from None


def convert_answer(value: Any, type_: type[T], *, provider: str, what: str) -> T:
    """An already-decoded answer (an SDK's dict, say) as ``type_``."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise bad_answer(provider, what, exc) from None


@contextmanager
def mapping(provider: str, what: str) -> Iterator[None]:
    """Around the code that turns a decoded answer into OpenAI's object: a value that
    decoded but cannot be used (``int("3.5")``, a date out of range) is a 502 too."""
    try:
        yield
    except (ValueError, OverflowError, msgspec.ValidationError) as exc:
        raise bad_answer(provider, what, exc) from None
