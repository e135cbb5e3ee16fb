"""Google's error envelope, ``{"error": {"code", "message", "status"}}``, as the gateway's errors.

Vertex AI and Cloud Storage answer failures the same way; ``status`` is the canonical
code's name (Cloud Storage leaves it out, then the HTTP status decides). The mapping is
the gateway's everywhere: NOT_FOUND 404; INVALID_ARGUMENT, FAILED_PRECONDITION and
OUT_OF_RANGE 400; ALREADY_EXISTS and ABORTED 409; RESOURCE_EXHAUSTED 429 (with its
Retry-After); PERMISSION_DENIED and UNAUTHENTICATED 403/401 when the credentials are the
caller's, 502 when they are the gateway's own; DEADLINE_EXCEEDED 504; the rest 502.
Known secrets are masked in every message.
"""

from __future__ import annotations

import msgspec

from gateway.errors import GatewayError, NotSupported, UpstreamTimeout
from gateway.retry import Failure, retry_after_seconds
from gateway.upstream import upstream_error
from gateway_vertex import wire

SLUG = "vertex-ai"

CODE_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}  # fmt: skip
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 502, "UNKNOWN": 502, "INTERNAL": 502, "DATA_LOSS": 502,
    "UNAVAILABLE": 503,
}  # fmt: skip
_error_decoder = msgspec.json.Decoder(wire.GoogleErrorEnvelope)


def google_error(
    status: int,
    raw: bytes,
    *,
    service: str,
    caller_credentials: bool,
    secrets: list[str],
    retry_after: str | None = None,
) -> GatewayError:
    """Google's ``{"error": {"code", "message", "status"}}`` as the gateway's error."""
    try:
        body = _error_decoder.decode(raw).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        body = None
    message = (body.message if body else "") or raw.decode("utf-8", "replace").strip()[:500]
    name = (body.status if body else None) or _name_for_http(status)
    if name == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(
            f"{service} did not finish in time: {message}", code="upstream_timeout"
        )
    if name == "UNIMPLEMENTED":
        return NotSupported(SLUG, "this operation", f"{service} answered: {message}")
    return upstream_error(
        provider=service,
        status=_HTTP_STATUS.get(name, status),
        message=message or name,
        code=name.lower(),
        caller_credentials=caller_credentials,
        secrets=secrets,
        retry_after=retry_after,
    )


# Google's HTTP -> canonical code table, for answers without a "status" (Cloud Storage's,
# or a proxy's HTML page).
_NAME_FOR_HTTP = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 409: "ABORTED", 412: "FAILED_PRECONDITION", 416: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}  # fmt: skip


def _name_for_http(status: int) -> str:
    return _NAME_FOR_HTTP.get(status) or ("UNKNOWN" if status >= 500 else "FAILED_PRECONDITION")


# Codes of answers worth another try (the statuses they come with), and of lost connections.
_RETRYABLE = {"resource_exhausted": 429, "internal": 500, "unknown": 500, "unavailable": 503}
_CONNECTION_LOST = frozenset({"upstream_unreachable", "upstream_connection_error"})


def retryable_failure(exc: BaseException) -> Failure | None:
    """A Vertex call's failure, already the gateway's error, as ``gateway.retry`` weighs it:
    for retrying a unit of several calls (a create with its look-up), not one request."""
    if not isinstance(exc, GatewayError) or exc.code is None:
        return None
    if exc.code in _CONNECTION_LOST:
        return Failure(None)
    status = _RETRYABLE.get(exc.code)
    return None if status is None else Failure(status, retry_after_seconds(exc.headers))
