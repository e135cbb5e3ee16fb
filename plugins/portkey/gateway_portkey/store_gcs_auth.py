"""OAuth access tokens for the GCS store, from gcloud-aio-auth's ``Token``.

The library signs the service account key's assertion (or, without a key, uses the
default application credentials: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's own,
the metadata server), caches the token and refreshes it ahead of expiry. What changes
here: one attempt per refresh instead of five with up to a minute of backoff (a revoked
key fails the request now, not a minute from now), and failures are the gateway's
errors (the credentials are the gateway's own: a 502, never the caller's 401), with the
key and token masked.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import aiohttp
from gcloud.aio.auth import Token
from gcloud.aio.auth.token import BaseToken

from gateway.errors import InternalError, UpstreamError, UpstreamTimeout
from gateway.upstream import redact

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]

# The library's refresh without its tenacity retry wrapper (``functools.wraps`` keeps it).
_acquire_once: Callable[[BaseToken, int], Awaitable[None]] = getattr(
    BaseToken.acquire_access_token, "__wrapped__", BaseToken.acquire_access_token
)


class _Token(Token):
    async def acquire_access_token(self, timeout: int = 10) -> None:  # type: ignore[override]
        await _acquire_once(self, timeout)


class GcsAuth:
    """Bearer headers for one store; ``key`` is a key file's path or its JSON, or None."""

    def __init__(self, key: str | None) -> None:
        self._key = key
        self._token: _Token | None = None
        self._key_secrets: list[str] = []

    async def headers(self, http: aiohttp.ClientSession) -> dict[str, str]:
        token = self._token or self._make_token(http)
        try:
            access = await token.get()
        except aiohttp.ClientResponseError as exc:
            raise self.refused(f"{exc.status} {exc.message}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(
                "Google's token endpoint did not answer in time", code="upstream_timeout"
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"Could not get a Google access token for the file store: {type(exc).__name__}",
                code="upstream_unreachable",
            ) from None
        except Exception as exc:  # a malformed key (PyJWT, cryptography) or answer
            raise self.refused(type(exc).__name__) from None
        if not access:
            raise self.refused("no access token in the answer")
        return {"Authorization": f"Bearer {access}"}

    def _make_token(self, http: aiohttp.ClientSession) -> _Token:
        key = self._key
        service_file: io.StringIO | str | None = key
        if key is not None and key.lstrip().startswith("{"):  # the JSON itself, not a path
            service_file = io.StringIO(key)
        try:
            self._token = _Token(
                service_file=service_file,
                session=http,  # type: ignore[arg-type]  # the stubs say requests'; aiohttp's works
                scopes=SCOPES,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise InternalError(
                f"The GCS file store's service account key is not usable: {type(exc).__name__}",
                code="store_misconfigured",
            ) from None
        data = self._token.service_data
        self._key_secrets = [str(data.get(k, "")) for k in ("private_key", "private_key_id")]
        return self._token

    @property
    def secrets(self) -> list[str]:
        """What must never reach a client or a log: the key and the current token."""
        access = self._token.access_token if self._token is not None else None
        return [*self._key_secrets, *([access] if access else [])]

    def refused(self, detail: str) -> UpstreamError:
        return UpstreamError(
            f"Google refused the GCS file store's credentials: {redact(detail, self.secrets)}",
            code="upstream_auth_failed",
        )

    async def close(self) -> None:
        if self._token is not None:
            await self._token.close()  # given the store's session: this leaves it open
            self._token = None
