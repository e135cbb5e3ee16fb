"""Errors as classes, each knowing the status and OpenAI error ``type`` it renders as.

Everything that goes wrong in a request is raised as one of these and rendered once, by
``gateway.middleware.error_middleware``, in OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``. The statuses are the ones the
official SDK maps to its exception classes (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 409 ConflictError,
422 UnprocessableEntityError, 429 RateLimitError, 5xx InternalServerError).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class GatewayError(Exception):
    """Base of every error the gateway answers with; subclasses set status and type."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        # Headers worth passing on to the client, such as an upstream's Retry-After.
        self.headers = headers or {}

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code))


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class NotSupported(BadRequest):
    """An operation the chosen provider lacks; never silently mapped to another one."""

    def __init__(self, provider: str, operation: str, why: str = "") -> None:
        detail = f": {why}" if why else ""
        super().__init__(
            f"The '{provider}' provider does not support {operation}{detail}",
            code="unsupported_operation",
        )


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"


class RequestTimeout(GatewayError):
    """The client stopped sending its request body (limits.client_body_timeout)."""

    status = 408
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"


class Unprocessable(GatewayError):
    status = 422
    type = "invalid_request_error"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"


class HeadersTooLarge(GatewayError):
    """A request line or header field over limits.max_header_bytes, or too many fields."""

    status = 431
    type = "invalid_request_error"


class UpstreamError(GatewayError):
    """The provider failed, answered nonsense, or refused the gateway's own credentials."""

    status = 502
    type = "upstream_error"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout"


class InternalError(GatewayError):
    status = 500
    type = "server_error"


_BY_STATUS: dict[int, type[GatewayError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
}


def error_for_status(status: int) -> type[GatewayError]:
    """The class for a client-side status; anything else is the upstream's fault (502)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return BadRequest
    return UpstreamError
