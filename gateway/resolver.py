"""Host names a request may name, resolved and held to the allow-list (``gateway.addresses``).

Twice. When the request arrives (``check_resolved_name``): a 400 naming the header or
config field, before any work is done. And on every connection the gateway's shared
HTTP client opens to a listed name (``GuardedResolver``), so a name whose DNS answer
changes in between (DNS rebinding: public when checked, 127.0.0.1 when connecting)
cannot slip an internal address through. The second check covers every connection to a
listed name, whoever named it, so neither aiohttp's DNS cache nor a kept-alive
connection can hand a request an address that was never checked. Names that are not
listed (the config file's own hosts, api.openai.com) are resolved as aiohttp always
does, with no extra lookup. Every connection, listed or not, is then held to the egress
policy (``gateway.egress``), which refuses internal addresses the config did not allow.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from gateway.addresses import AllowList, IPAddress, parse_address, resolved_refusal
from gateway.egress import EgressRefused
from gateway.errors import BadRequest

log = logging.getLogger("finetune_gateway.routing")


async def resolve_name(host: str, timeout: float) -> list[IPAddress]:
    """Every address ``host`` resolves to; OSError (TimeoutError too) when it does not."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    addresses = [parse_address(str(info[4][0])) for info in infos]
    return [address for address in addresses if address is not None]


async def check_resolved_name(
    host: str, allowlist: AllowList, *, timeout: float, param: str
) -> None:
    """Refuse a listed name that does not resolve, or resolves to an address not allowed."""
    try:
        addresses = await resolve_name(host, timeout)
    except TimeoutError:
        raise _unresolvable(host, f"within {timeout:g} s", param) from None
    except OSError:  # socket.gaierror: no such name, no DNS server, ...
        raise _unresolvable(host, "in DNS", param) from None
    if not addresses:
        raise _unresolvable(host, "to any address", param)
    refused = resolved_refusal(addresses, allowlist)
    if refused is not None:
        raise refusal(host, *refused, param=param)


def _unresolvable(host: str, how: str, param: str) -> BadRequest:
    return BadRequest(
        f"Custom host '{host}' could not be resolved {how}",
        param=param,
        code="custom_host_unresolvable",
    )


def refusal(host: str, address: IPAddress, reason: str, *, param: str | None) -> BadRequest:
    return BadRequest(
        f"Custom host '{host}' resolves to {address}, {reason}, which this gateway's "
        "allow-list does not include (routing.custom_host_allowlist)",
        param=param,
        code="custom_host_not_allowed",
    )


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing to connect to a listed name's disallowed addresses.

    Installed on the shared upstream session. The refusal is raised as the egress
    policy's 502 ``egress_refused`` (``gateway.egress``; not an OSError, which aiohttp
    would turn into a connection error, and retry).
    Lookups of listed names are bounded by ``timeout``, as the first check's are.
    """

    def __init__(
        self, allowlist: AllowList, timeout: float, inner: AbstractResolver | None = None
    ) -> None:
        self._allowlist = allowlist
        self._timeout = timeout
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not self._allowlist.lists_name(host):
            return await self._inner.resolve(host, port, family)
        async with asyncio.timeout(self._timeout):
            results = await self._inner.resolve(host, port, family)
        # Only what was checked is handed on (a resolver answers with numeric hosts).
        checked = [(r, a) for r in results if (a := parse_address(r["host"])) is not None]
        refused = resolved_refusal([address for _, address in checked], self._allowlist)
        if refused is not None:
            address, reason = refused
            # Checked when the request came in, so the answer changed since: worth a look.
            log.warning("refused to connect to %s: it now resolves to %s, %s", host, *refused)
            raise EgressRefused(host, address, reason)
        return [result for result, _ in checked]

    async def close(self) -> None:
        await self._inner.close()
