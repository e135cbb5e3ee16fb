"""Google OAuth access tokens, from a service account key or the default credentials.

One client for every plugin that calls Google (Vertex AI, Cloud Storage). gcloud-aio-auth's
``Token`` does the work: it signs a JWT assertion with the key, posts it to the key's
``token_uri``, caches the access token, refreshes it in the background once half its
lifetime has passed and refuses to hand out one past 95% of it, and lets concurrent
callers share one refresh. Without a key it uses the default application credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's own, the metadata server). It is imported on
first use: the core stays importable without it. What changes here:

- one attempt per refresh instead of the library's five with up to a minute of
  randomised backoff: a revoked key would otherwise hold every request for that long
  before failing; the caller is told at once, and the next request tries again;
- failures are the gateway's: an unreachable or slow token endpoint is a 502 or 504; a
  refused or unusable key is ``TokenRefused`` or ``KeyUnusable``, which the caller turns
  into its own error, as only it knows whose key it is (a caller's 401, the operator's
  502). No message ever holds the key or a token.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING, Any

import aiohttp

from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.upstream import redact

if TYPE_CHECKING:
    from gcloud.aio.auth import Token

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
STORAGE_READ_WRITE = "https://www.googleapis.com/auth/devstorage.read_write"


class KeyUnusable(Exception):
    """The key cannot be read or is not a service account key; ``reason`` holds no secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenRefused(Exception):
    """The token endpoint refused the key, or answered without a token; secrets masked."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def _token_class() -> type[Token]:
    from gcloud.aio.auth import Token
    from gcloud.aio.auth.token import BaseToken

    # The library's refresh without its tenacity retry wrapper (``functools.wraps`` keeps it).
    acquire_once: Callable[[BaseToken, int], Awaitable[None]] = getattr(
        BaseToken.acquire_access_token, "__wrapped__", BaseToken.acquire_access_token
    )

    class OneTryToken(Token):
        # The library's signature is tenacity's decorated type; the call is the same.
        async def acquire_access_token(self, timeout: int = 10) -> None:  # type: ignore[override]
            await acquire_once(self, timeout)

    return OneTryToken


class GoogleToken:
    """Access tokens for one key; ``http`` is the caller's session (never closed here).

    ``key`` is a key file's JSON or its path, or None for the default credentials;
    ``info`` is the JSON decoded, when the caller has it. ``KeyUnusable`` if it is neither.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        key: str | None,
        *,
        scopes: list[str],
        info: dict[str, Any] | None = None,
    ) -> None:
        service_file: IO[str] | str | None = key
        if key is not None and (info is not None or key.lstrip().startswith("{")):
            service_file = io.StringIO(key)  # the JSON itself, not a path
        try:
            self._token = _token_class()(
                service_file=service_file,  # type: ignore[arg-type]  # AnyStr: str here
                session=http,  # type: ignore[arg-type]  # the stubs say requests'; aiohttp's works
                scopes=scopes,
            )
        except OSError as exc:
            raise KeyUnusable(f"cannot be read: {exc.strerror}") from None
        except (ValueError, KeyError) as exc:
            raise KeyUnusable(f"is not usable: {type(exc).__name__}") from None
        data: dict[str, Any] = info or self._token.service_data or {}
        self._key_secrets = [str(data.get(k, "")) for k in ("private_key", "private_key_id")]
        self._key_secrets = [secret for secret in self._key_secrets if secret]
        self.token_uri: str = self._token.token_uri
        self.project_id: str | None = data.get("project_id")

    @property
    def token(self) -> Token:
        """The library's token, for gcloud-aio-storage (which fetches it on its own)."""
        return self._token

    @property
    def secrets(self) -> list[str]:
        """What must never reach a client or a log: the key and the current token."""
        access = self._token.access_token
        return [*self._key_secrets, *([access] if access else [])]

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.access_token()}"}

    async def access_token(self) -> str:
        try:
            access = await self._token.get()
        except GatewayError:
            raise  # the egress policy's refusal, say: already the gateway's
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
        except Exception as exc:  # a malformed key (PyJWT, cryptography) or answer
            raise self._refused(400, type(exc).__name__) from None
        if not access:
            raise self._refused(400, "no access token in the answer")
        return access

    def _refused(self, status: int, detail: str) -> TokenRefused:
        return TokenRefused(status, redact(detail, self._key_secrets))

    async def close(self) -> None:
        # Given the caller's session: closing the token leaves it open.
        await self._token.close()
