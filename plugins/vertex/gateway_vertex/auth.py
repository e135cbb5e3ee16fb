"""OAuth access tokens for Vertex AI and Cloud Storage, from a service account.

gcloud-aio-auth's ``Token`` does the work: it signs a JWT assertion with the key,
posts it to the key file's ``token_uri``, caches the access token, starts a background
refresh once half its lifetime has passed and refuses to hand out one past 95% of it,
and lets concurrent callers share one refresh. What this module changes:

- one attempt per refresh instead of the library's five with up to a minute of
  randomised backoff: a revoked key would otherwise hold every request for that long
  before failing; the caller is told at once, and the next request tries again;
- failures become the gateway's errors: a key the token endpoint refuses is the
  caller's to fix when it came with the request (401), the gateway operator's when it
  is configured (502); an unreachable endpoint is a 502; secrets never appear.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
from gcloud.aio.auth import Token
from gcloud.aio.auth.token import BaseToken

from gateway.errors import GatewayError, InternalError, UpstreamError, UpstreamTimeout
from gateway.upstream import redact, upstream_error

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

# The library's refresh without its tenacity retry wrapper (``functools.wraps`` keeps it).
_acquire_once: Callable[[BaseToken, int], Awaitable[None]] = getattr(
    BaseToken.acquire_access_token, "__wrapped__", BaseToken.acquire_access_token
)


class _Token(Token):
    # The library's signature is tenacity's decorated type; the call is the same.
    async def acquire_access_token(self, timeout: int = 10) -> None:  # type: ignore[override]
        await _acquire_once(self, timeout)


class Credentials:
    """Access tokens for one provider instance; the HTTP session is core's, shared."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        key: str | None,
        info: dict[str, Any] | None,
        caller_credentials: bool,
    ) -> None:
        """``key`` is the key file's JSON (then ``info`` is it decoded) or its path."""
        self.caller_credentials = caller_credentials
        self._secrets = (
            [str(info.get(k, "")) for k in ("private_key", "private_key_id")] if info else []
        )
        service_file: io.StringIO | str | None = key
        if key is not None and info is not None:
            service_file = io.StringIO(key)
        try:
            # The library's stubs say requests' Session; at run time it takes aiohttp's.
            self._token = _Token(
                service_file=service_file,
                session=http,  # type: ignore[arg-type]
                scopes=SCOPES,
            )
        except OSError as exc:
            raise InternalError(
                f"The Vertex AI service account key file cannot be read: {exc.strerror}",
                code="provider_misconfigured",
            ) from None
        except (ValueError, KeyError) as exc:
            raise InternalError(
                f"The Vertex AI service account key file is not usable: {exc}",
                code="provider_misconfigured",
            ) from None
        self.token_uri: str = self._token.token_uri
        self.project_id: str | None = (info or self._token.service_data).get("project_id")

    @property
    def token(self) -> Token:
        """The library's token, for gcloud-aio-storage (which fetches it on its own)."""
        return self._token

    @property
    def secrets(self) -> list[str]:
        """What must never reach a client or a log: the key and the current token."""
        token = self._token.access_token
        return [*self._secrets, *([token] if token else [])]

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.access_token()}"}

    async def access_token(self) -> str:
        try:
            token = await self._token.get()
        except aiohttp.ClientResponseError as exc:
            raise self._refused(exc.status, exc.message) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(
                f"Google's token endpoint ({self.token_uri}) did not answer in time",
                code="upstream_timeout",
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"Could not get a Google access token from {self.token_uri}: {type(exc).__name__}",
                code="upstream_unreachable",
            ) from None
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            # A malformed key, or a token endpoint answer with no token in it.
            raise self._refused(400, f"{type(exc).__name__}: {exc}") from None
        if not token:
            raise self._refused(400, "no access token in the answer")
        return token

    def _refused(self, status: int, detail: str) -> GatewayError:
        message = f"Google's token endpoint refused the service account key ({status}): {detail}"
        # Whatever the token endpoint said, it is about the credentials: 401 for the
        # caller's own, 502 when they are the gateway's configured ones.
        return upstream_error(
            provider="vertex-ai",
            status=401,
            message=redact(message, self._secrets),
            code="invalid_service_account",
            caller_credentials=self.caller_credentials,
            secrets=self._secrets,
        )

    async def close(self) -> None:
        # The session is core's: the Token was given it, so closing does not close it.
        await self._token.close()
