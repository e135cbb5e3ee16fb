"""Provider instances, one per distinct settings, reused across requests.

Credentials sent in headers make many distinct settings, so the pool is bounded: the
least recently used instance is closed when a new one would exceed the bound. Closing
is deferred until no request holds the instance, so an eviction never pulls a client
out from under a request in flight.
"""

from __future__ import annotations

from collections import OrderedDict

import aiohttp

from gateway.provider import Provider
from gateway.routing import Target

_Key = tuple[type[Provider], object, bool]


class ProviderPool:
    def __init__(self, http: aiohttp.ClientSession, max_size: int = 256) -> None:
        self._http = http
        self._max_size = max_size
        self._instances: OrderedDict[_Key, Provider] = OrderedDict()
        self._in_use: dict[int, int] = {}
        self._evicted: dict[int, Provider] = {}

    def use(self, target: Target) -> _InUse:
        """``async with pool.use(target) as provider``: the instance, held for the block."""
        return _InUse(self, self._get(target))

    async def _acquire(self, provider: Provider) -> None:
        self._in_use[id(provider)] = self._in_use.get(id(provider), 0) + 1
        if self._evicted:
            for idle in [p for i, p in self._evicted.items() if i not in self._in_use]:
                del self._evicted[id(idle)]
                await idle.close()

    async def _release(self, provider: Provider) -> None:
        left = self._in_use[id(provider)] - 1
        if left:
            self._in_use[id(provider)] = left
        else:
            del self._in_use[id(provider)]
            evicted = self._evicted.pop(id(provider), None)
            if evicted is not None:
                await evicted.close()

    def _get(self, target: Target) -> Provider:
        key: _Key = (target.provider, target.settings, target.caller_credentials)
        provider = self._instances.get(key)
        if provider is not None:
            self._instances.move_to_end(key)
            return provider
        provider = target.provider(
            target.settings, self._http, caller_credentials=target.caller_credentials
        )
        self._instances[key] = provider
        while len(self._instances) > self._max_size:
            _, old = self._instances.popitem(last=False)
            self._evicted[id(old)] = old
        return provider

    async def close(self) -> None:
        for provider in [*self._instances.values(), *self._evicted.values()]:
            await provider.close()
        self._instances.clear()
        self._evicted.clear()


class _InUse:
    """The context manager ``use`` returns: a class, not a generator, as it runs on every
    request."""

    __slots__ = ("_pool", "_provider")

    def __init__(self, pool: ProviderPool, provider: Provider) -> None:
        self._pool = pool
        self._provider = provider

    async def __aenter__(self) -> Provider:
        await self._pool._acquire(self._provider)
        return self._provider

    async def __aexit__(self, *exc: object) -> None:
        await self._pool._release(self._provider)
