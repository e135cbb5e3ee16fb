"""AWS plumbing: settings, one pair of aiobotocore clients per settings, errors mapped.

aiobotocore ships no type stubs, so its clients are ``Any`` here and nowhere else: the
rest of the plugin talks to them through the typed helpers in ``s3.py`` and the
provider's few Bedrock calls, and decodes what comes back into msgspec Structs.

Errors are mapped by AWS error code, never by HTTP status: Bedrock answers 400 for both
a bad request and a conflict, and moto answers 400 for a job that does not exist.

Retries are core's (``gateway.retry``), not botocore's: botocore makes one attempt, and
each client call is retried by the request's policy, as every provider's calls are, so
attempts are not multiplied and are counted. Timeouts are the policy's too: a client is
made per (connect, read) timeout pair in use, which the config bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from multidict import CIMultiDict

from gateway.errors import (
    BadRequest,
    GatewayError,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.fields import HOST, Secret, Url
from gateway.provider import ProviderSettings
from gateway.resources import ROLE_ARN_PATTERN
from gateway.resources import S3_PREFIX_PATTERN as S3_URI_PREFIX_PATTERN
from gateway.retry import Failure, current_policy, retry_after_seconds, with_retries
from gateway.stores.aws import aws_session, one_try_http_session_class
from gateway.upstream import redact, upstream_error

if TYPE_CHECKING:  # botocore takes tens of milliseconds to import: on first use only
    from botocore import exceptions as boto  # type: ignore[import-untyped]

# Object keys handed to Bedrock must match its S3Uri pattern, so the prefix may only hold
# these characters.
S3_PREFIX_PATTERN = r"^[-!_*'().a-zA-Z0-9/]*$"


class BedrockSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A virtual key's ``bedrock`` settings (Portkey's names), or the ``x-portkey-aws-*`` headers.

    Without an access key, a virtual key uses the gateway's own AWS credential chain
    (environment, instance role); a request never does.
    """

    aws_access_key_id: Secret | None = None
    aws_secret_access_key: Secret | None = None
    aws_session_token: Secret | None = None
    # Part of the host names botocore calls (bedrock.{region}.amazonaws.com): a host.
    aws_region: Annotated[
        str, msgspec.Meta(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"), HOST
    ] = "us-east-1"
    # The IAM role Bedrock assumes to read the training data: the default for jobs.
    aws_role_arn: str | None = None
    aws_s3_bucket: str | None = None
    aws_s3_prefix: Annotated[str, msgspec.Meta(pattern=S3_PREFIX_PATTERN)] = "finetune-gateway/"
    # One endpoint for both S3 and Bedrock (a local stand-in); custom_host wins over it.
    endpoint_url: Url | None = None
    # With the config's credentials, the only roles and s3:// prefixes ("s3://bucket/" is
    # the whole bucket) a request may name, besides aws_role_arn and the staging bucket.
    allowed_role_arns: tuple[Annotated[str, msgspec.Meta(pattern=ROLE_ARN_PATTERN)], ...] = ()
    allowed_s3_uris: tuple[Annotated[str, msgspec.Meta(pattern=S3_URI_PREFIX_PATTERN)], ...] = ()

    def __repr__(self) -> str:
        # Settings end up in pool keys and tracebacks: never show the secrets.
        shown = {
            "region": self.aws_region,
            "bucket": self.aws_s3_bucket,
            "access_key_id": _mask(self.aws_access_key_id),
            "endpoint": self.custom_host or self.endpoint_url,
        }
        return f"BedrockSettings({shown})"

    @property
    def secrets(self) -> tuple[str | None, ...]:
        return (self.aws_secret_access_key, self.aws_session_token, self.aws_access_key_id)


def _mask(value: str | None) -> str | None:
    return None if value is None else f"{value[:4]}***"


class Clients:
    """The S3 and Bedrock clients for one settings; made on first use, closed once."""

    def __init__(self, settings: BedrockSettings, *, caller_credentials: bool) -> None:
        self._settings = settings
        self._caller_credentials = caller_credentials
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def s3(self) -> Any:
        return await self._client("s3")

    async def bedrock(self) -> Any:
        return await self._client("bedrock")

    async def _client(self, service: str) -> Any:
        policy = current_policy()
        key = f"{service} {policy.connect_timeout} {policy.read_timeout}"
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._lock:
            if key not in self._clients:
                created = self._create(service, policy.connect_timeout, policy.read_timeout)
                self._clients[key] = RetryingClient(await self._stack.enter_async_context(created))
            return self._clients[key]

    def _create(self, service: str, connect_timeout: float, read_timeout: float) -> Any:
        s = self._settings
        if self._caller_credentials and not (s.aws_access_key_id and s.aws_secret_access_key):
            # Falling back to the gateway's own credential chain would hand the caller
            # the gateway's AWS identity.
            raise missing_credentials()
        # Imported here, not at the top: aiobotocore takes about half a second and 13 MiB
        # to import, which every gateway would pay at startup, Bedrock configured or not.
        from aiobotocore.config import AioConfig  # type: ignore[import-untyped]

        config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": 1},  # core retries (above)
            http_session_cls=one_try_http_session_class(),
            # Local and S3-compatible endpoints serve buckets by path, not by host name.
            # No SHA-256 of every payload (it was a tenth of an upload's CPU): the parts
            # the gateway writes carry a CRC32 that S3 checks instead (s3.CHECKSUM).
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            # Only where the gateway asks for one (its parts) or the call needs one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return aws_session().create_client(
            service,
            region_name=s.aws_region,
            endpoint_url=s.custom_host or s.endpoint_url,
            aws_access_key_id=s.aws_access_key_id,
            aws_secret_access_key=s.aws_secret_access_key,
            aws_session_token=s.aws_session_token,
            config=config,
        )

    async def close(self) -> None:
        self._clients.clear()
        await self._stack.aclose()


class RetryingClient:
    """An aiobotocore client whose API calls are retried by the request's policy.

    Every call may be repeated (reads, deletes, aborts, parts of a multipart upload,
    Bedrock's create with its clientRequestToken) except ``create_multipart_upload``:
    a retry after a lost answer would open a second upload that nothing aborts.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._operations: dict[str, str] = client.meta.method_to_api_mapping

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in self._operations:
            return method  # meta, exceptions, paginators: not calls to AWS

        async def call(**params: Any) -> Any:
            return await with_retries(
                lambda: method(**params),
                idempotent=name not in _NOT_REPEATABLE,
                failure_of=aws_failure,
            )

        return call


_NOT_REPEATABLE = frozenset({"create_multipart_upload"})


def aws_failure(exc: BaseException) -> Failure | None:
    """A failed AWS call worth retrying: its status (by error code, as below), or a lost
    connection; timeouts are not retried (see ``gateway.retry``)."""
    from botocore import exceptions as boto

    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectionClosedError):
        return Failure(None)  # refused, reset, disconnected (a timeout is neither)
    if not isinstance(exc, boto.ClientError):
        return None
    meta = exc.response.get("ResponseMetadata", {})
    code = str(exc.response.get("Error", {}).get("Code") or "")
    status = _STATUS_BY_CODE.get(code) or int(meta.get("HTTPStatusCode") or 0)
    return Failure(status, retry_after_seconds(CIMultiDict(meta.get("HTTPHeaders") or {})))


def client_error() -> type[Exception]:
    """botocore's ClientError, imported on first use like the rest of the SDK."""
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    return ClientError  # type: ignore[no-any-return]


def missing_credentials() -> Unauthorized:
    return Unauthorized(
        "No AWS credentials in the request: send 'x-portkey-aws-access-key-id' and "
        "'x-portkey-aws-secret-access-key', or use a virtual key",
        code="missing_provider_credentials",
    )


# AWS answers with an error code; the HTTP status is not reliable (moto answers a missing
# job with 400), so the code decides the status the client sees.
_STATUS_BY_CODE: dict[str, int] = {
    "ValidationException": 400,
    "TooManyTagsException": 400,
    "InvalidRequest": 400,
    "ResourceNotFoundException": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotFound": 404,
    "404": 404,
    "ConflictException": 409,
    "ResourceInUseException": 409,
    "ThrottlingException": 429,
    "TooManyRequestsException": 429,
    "SlowDown": 429,
    # A quota (concurrent jobs, say) frees up as jobs end: worth retrying later.
    "ServiceQuotaExceededException": 429,
    "InternalServerException": 500,
    "InternalError": 500,
    "ServiceUnavailableException": 503,
    "ServiceUnavailable": 503,
    # The identity is refused outright (bad key, bad signature, expired token).
    "UnrecognizedClientException": 401,
    "InvalidSignatureException": 401,
    "SignatureDoesNotMatch": 401,
    "InvalidAccessKeyId": 401,
    "InvalidClientTokenId": 401,
    "ExpiredToken": 401,
    "ExpiredTokenException": 401,
    "InvalidToken": 401,
    # The identity is known but may not do this.
    "AccessDeniedException": 403,
    "AccessDenied": 403,
    "403": 403,
}


def map_client_error(
    exc: boto.ClientError, *, service: str, caller_credentials: bool, secrets: Any
) -> GatewayError:
    """By AWS error code, then as core maps any upstream failure (a refusal of the
    gateway's own credentials is a 502, secrets masked)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or code or "no message")
    if code == "NoSuchBucket" and caller_credentials:
        return BadRequest(
            f"S3 bucket does not exist: {redact(message, secrets)}",
            param="x-portkey-aws-s3-bucket",
            code=code,
        )
    meta = exc.response.get("ResponseMetadata", {})
    http_status = int(meta.get("HTTPStatusCode") or 0)
    status = _STATUS_BY_CODE.get(code) or (500 if code == "NoSuchBucket" else http_status or 502)
    # A throttled caller is told when to come back, as AWS (or a proxy before it) said.
    retry_after = CIMultiDict(meta.get("HTTPHeaders") or {}).get("Retry-After")
    return upstream_error(
        provider=service,
        status=status,
        message=message,
        code=code or None,
        caller_credentials=caller_credentials,
        secrets=secrets,
        retry_after=retry_after,
    )


@contextlib.contextmanager
def aws_errors(service: str, *, caller_credentials: bool, secrets: Any) -> Iterator[None]:
    """botocore's failures, raised inside the block, as the gateway's errors."""
    from botocore import exceptions as boto

    try:
        yield
    except boto.ClientError as exc:
        raise map_client_error(
            exc, service=service, caller_credentials=caller_credentials, secrets=secrets
        ) from None
    except boto.ParamValidationError as exc:
        raise BadRequest(redact(str(exc), secrets), code="invalid_value") from None
    except (boto.NoCredentialsError, boto.PartialCredentialsError):
        if caller_credentials:
            raise missing_credentials() from None
        raise UpstreamError(
            "The gateway has no AWS credentials for this virtual key",
            code="upstream_auth_failed",
        ) from None
    except (boto.ConnectTimeoutError, boto.ReadTimeoutError, TimeoutError):
        raise UpstreamTimeout(
            f"{service} did not answer in time", code="upstream_timeout"
        ) from None
    except boto.EndpointConnectionError:
        raise UpstreamError(
            f"Could not connect to {service}", code="upstream_unreachable"
        ) from None
    except boto.BotoCoreError as exc:
        raise UpstreamError(
            f"Call to {service} failed: {type(exc).__name__}", code="upstream_error"
        ) from None
