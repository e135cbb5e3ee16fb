"""Provider instances, one per distinct settings, reused across requests.

Two bounded least-recently-used parts. Targets a request chose (settings or a custom
host from headers, see ``Target.request_chosen``) can be made without end by any caller,
so they have their own part: churning through them never pushes out the configured
providers, which live in a part of their own bounded generously by what a config holds.

Eviction never takes an instance a request holds or one that says it is ``busy()``
(managed mode while it stages jobs: closing it would cancel the staging). An evicted
instance is closed in the background, never on a request's path, and every close still
running is awaited when the pool closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import aiohttp

from gateway.provider import Provider
from gateway.routing import Target

log = logging.getLogger("finetune_gateway.pool")

_Key = tuple[type[Provider], object, bool]

# Request-chosen instances kept at once: enough for the distinct header credentials and
# custom hosts real callers use, few enough that each holds little.
REQUEST_CHOSEN_MAX = 256
# Configured instances come from the config's virtual keys, named configs and provider
# tables, so their number is the config's; the bound only guards against surprises.
CONFIGURED_MAX = 4096


class _Part:
    """One bounded LRU of instances."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.instances: OrderedDict[_Key, Provider] = OrderedDict()


class ProviderPool:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        max_size: int = REQUEST_CHOSEN_MAX,
        max_configured: int = CONFIGURED_MAX,
    ) -> None:
        self._http = http
        self._request_chosen = _Part(max_size)
        self._configured = _Part(max_configured)
        self._in_use: dict[int, int] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def use(self, target: Target) -> _InUse:
        """``async with pool.use(target) as provider``: the instance, held for the block."""
        return _InUse(self, self._get(target))

    def _acquire(self, provider: Provider) -> None:
        self._in_use[id(provider)] = self._in_use.get(id(provider), 0) + 1

    def _release(self, provider: Provider) -> None:
        left = self._in_use[id(provider)] - 1
        if left:
            self._in_use[id(provider)] = left
        else:
            del self._in_use[id(provider)]

    def _get(self, target: Target) -> Provider:
        part = self._request_chosen if target.request_chosen else self._configured
        key: _Key = (target.provider, target.settings, target.caller_credentials)
        provider = part.instances.get(key)
        if provider is not None:
            part.instances.move_to_end(key)
            return provider
        provider = target.provider(
            target.settings, self._http, caller_credentials=target.caller_credentials
        )
        part.instances[key] = provider
        self._evict(part, keep=key)
        return provider

    def _evict(self, part: _Part, keep: _Key) -> None:
        """Drop the least recently used idle instances while the part is over its bound.

        Held or busy ones are passed over, so the part may stay over its bound for a
        while; the next insertion tries again.
        """
        excess = len(part.instances) - part.max_size
        if excess <= 0:
            return
        for key, provider in list(part.instances.items()):
            if excess == 0:
                break
            if key == keep or id(provider) in self._in_use or _busy(provider):
                continue
            del part.instances[key]
            self._close_later(provider)
            excess -= 1

    def _close_later(self, provider: Provider) -> None:
        task = asyncio.get_running_loop().create_task(_close(provider))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def closing(self) -> int:
        """Evicted instances whose close is still running (for tests and metrics)."""
        return len(self._closing)

    async def close(self) -> None:
        providers = [
            *self._request_chosen.instances.values(),
            *self._configured.instances.values(),
        ]
        self._request_chosen.instances.clear()
        self._configured.instances.clear()
        for provider in providers:
            await _close(provider)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _busy(provider: Provider) -> bool:
    try:
        return provider.busy()
    except Exception:  # a plugin's broken hook must not break requests; keep it
        log.exception("busy() of a %s provider failed", provider.slug)
        return True


async def _close(provider: Provider) -> None:
    try:
        await provider.close()
    except Exception:  # in the background, nobody else would see it
        log.exception("closing an evicted %s provider failed", provider.slug)


class _InUse:
    """The context manager ``use`` returns: a class, not a generator, as it runs on every
    request."""

    __slots__ = ("_pool", "_provider")

    def __init__(self, pool: ProviderPool, provider: Provider) -> None:
        self._pool = pool
        self._provider = provider

    async def __aenter__(self) -> Provider:
        self._pool._acquire(self._provider)
        return self._provider

    async def __aexit__(self, *exc: object) -> None:
        self._pool._release(self._provider)
