"""The provider's access tokens (``gateway.stores.google_auth``), failures as Vertex's.

Whose key it is decides the error: a key the token endpoint refuses is the caller's to
fix when it came with the request (401), the gateway operator's when it is configured
(502). Secrets never appear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.errors import GatewayError, InternalError
from gateway.stores.google_auth import CLOUD_PLATFORM, GoogleToken, KeyUnusable, TokenRefused
from gateway.upstream import upstream_error

if TYPE_CHECKING:
    from gcloud.aio.auth import Token


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
        try:
            self._google = GoogleToken(http, key, scopes=[CLOUD_PLATFORM], info=info)
        except KeyUnusable as exc:
            raise InternalError(
                f"The Vertex AI service account key file {exc.reason}",
                code="provider_misconfigured",
            ) from None
        self.token_uri = self._google.token_uri
        self.project_id = self._google.project_id

    @property
    def token(self) -> Token:
        """The library's token, for gcloud-aio-storage (which fetches it on its own)."""
        return self._google.token

    @property
    def secrets(self) -> list[str]:
        """What must never reach a client or a log: the key and the current token."""
        return self._google.secrets

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.access_token()}"}

    async def access_token(self) -> str:
        try:
            return await self._google.access_token()
        except TokenRefused as exc:
            raise self._refused(exc) from None

    def _refused(self, refused: TokenRefused) -> GatewayError:
        message = (
            "Google's token endpoint refused the service account key "
            f"({refused.status}): {refused.detail}"
        )
        # Whatever the token endpoint said, it is about the credentials: 401 for the
        # caller's own, 502 when they are the gateway's configured ones.
        return upstream_error(
            provider="vertex-ai",
            status=401,
            message=message,
            code="invalid_service_account",
            caller_credentials=self.caller_credentials,
            secrets=self.secrets,
        )

    async def close(self) -> None:
        await self._google.close()
