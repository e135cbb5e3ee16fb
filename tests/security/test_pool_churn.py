"""Finding 5: one caller churning request-chosen targets cannot harm another's work.

Before, 300 requests with distinct custom hosts filled the one LRU (256), evicted the
shared managed provider while it staged other teams' jobs, and closing it cancelled
their staging; the request that evicted it waited for the close. Now request-chosen
instances have their own bounded part, a busy or held instance is never evicted, and
evicted ones are closed in the background.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import aiohttp

from gateway.pool import ProviderPool
from gateway.provider import Provider, ProviderSettings
from gateway.routing import Target


class _Settings(ProviderSettings, frozen=True, kw_only=True):
    name: str = ""


class _Staging(Provider):
    """Stands for managed mode: busy while it stages, and slow to close."""

    slug: ClassVar[str] = "staging"
    Settings: ClassVar[type[ProviderSettings]] = _Settings
    closed: ClassVar[list[str]] = []
    staging: ClassVar[set[str]] = set()

    @classmethod
    def settings_from_headers(cls, headers: Any) -> ProviderSettings:
        return _Settings()

    def busy(self) -> bool:
        assert isinstance(self.settings, _Settings)
        return self.settings.name in self.staging

    async def close(self) -> None:
        assert isinstance(self.settings, _Settings)
        await asyncio.sleep(0.05)  # a slow close must never hold up a request
        self.closed.append(self.settings.name)


def _configured(name: str) -> Target:
    return Target(_Staging, _Settings(name=name), caller_credentials=False)


def _chosen(name: str) -> Target:
    return Target(_Staging, _Settings(name=name), caller_credentials=True, request_chosen=True)


async def test_custom_host_churn_never_evicts_configured_or_busy_providers() -> None:
    _Staging.closed.clear()
    _Staging.staging.clear()
    async with aiohttp.ClientSession() as http:
        pool = ProviderPool(http, max_size=8, max_configured=2)
        async with pool.use(_configured("managed")) as managed:
            pass
        _Staging.staging.add("managed")  # staging other teams' jobs, nobody holding it

        # The attacker: far more distinct request-chosen targets than the bound.
        for i in range(300):
            async with pool.use(_chosen(f"attacker-{i}")):
                pass
        async with pool.use(_configured("managed")) as again:
            assert again is managed, "the managed provider was replaced"
        assert "managed" not in _Staging.closed

        # Even among configured ones, a busy provider outlives the bound.
        for name in ("vk-1", "vk-2", "vk-3"):
            async with pool.use(_configured(name)):
                pass
        async with pool.use(_configured("managed")) as still:
            assert still is managed
            # Evictions so far are closing in the background, not on these requests.
            assert pool.closing > 0
        await pool.close()
    assert "managed" in _Staging.closed  # the pool's own close still closes everything
    assert sum(name.startswith("attacker-") for name in _Staging.closed) == 300
