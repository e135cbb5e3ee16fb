"""One egress policy, applied to every connection the gateway opens, whoever opens it.

The config's author is trusted; callers and upstream answers are not. So an address is
allowed when it is public (outside ``gateway.addresses.SPECIAL_RANGES``) or inside a
network the config allows:

- ``[egress] allow_networks`` (CIDRs or addresses);
- the networks and addresses of ``routing.custom_host_allowlist``;
- the hosts of the config's own URL and host settings (every virtual key's, named
  config's and ``[providers.<slug>]``'s) and of their ``custom_hosts`` lists: a literal
  IP allows that address, a name is trusted, that is connections to that *name* may go
  wherever it resolves.

Loopback, link-local (the cloud metadata address), private, CGNAT, unique-local,
unspecified, multicast and reserved addresses are refused otherwise; an IPv4-mapped
IPv6 address is judged as its IPv4 address.

The check sits where names become addresses: ``GuardedConnector._resolve_host`` for
aiohttp (literal IP hosts, which skip the resolver, included), ``gateway.http1`` for the
lean client, and aiobotocore's HTTP session (``aiobotocore_session_class``). Each
connects only to the addresses it checked, with no second lookup, so a DNS answer that
changes in between (rebinding) cannot slip an internal address through.

Plugins that open their own sessions take ``connector()``: it applies the policy app
startup installed (``install``), the one policy of the process's config.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import ResolveResult

from gateway.addresses import (
    AllowList,
    IPAddress,
    allow_list,
    normal_name,
    parse_address,
    resolved_refusal,
)
from gateway.errors import GatewayError
from gateway.fields import fields_of_kind, origin_of

if TYPE_CHECKING:
    from aiohttp.tracing import Trace

    from gateway.config import Config


class EgressRefused(GatewayError):
    """A connection the egress policy refuses: a 502, as the upstream cannot be reached.

    Not an OSError: aiohttp and botocore would turn that into a connection error, and
    retry it as one.
    """

    status = 502
    type = "server_error"

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        super().__init__(
            f"Refused to connect to '{host}' at {address}, {reason}, which this gateway's "
            "egress policy does not allow ([egress] allow_networks)",
            code="egress_refused",
        )
        self.host = host
        self.address = address


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where the gateway may connect: the networks allowed, and the names trusted."""

    allowed: AllowList

    def check(self, host: str, addresses: Sequence[IPAddress]) -> None:
        """Raise ``EgressRefused`` unless ``host`` may be reached at every one of ``addresses``."""
        if parse_address(host) is None and self.allowed.lists_name(host):
            return  # a name from the config: its author chose where it points
        refused = resolved_refusal(addresses, self.allowed)
        if refused is not None:
            raise EgressRefused(host, *refused)

    def checked(self, host: str, results: Sequence[ResolveResult]) -> list[ResolveResult]:
        """The resolver's results, each checked (only what was checked is handed on)."""
        addresses: list[IPAddress] = []
        kept: list[ResolveResult] = []
        for result in results:
            address = parse_address(result["host"])
            if address is not None:
                addresses.append(address)
                kept.append(result)
        self.check(host, addresses)
        return kept


def policy(allow_networks: Iterable[str] = (), trusted_hosts: Iterable[str] = ()) -> EgressPolicy:
    """A policy from networks/addresses and trusted host names (or literal IPs)."""
    return EgressPolicy(_allow_list(tuple(allow_networks) + tuple(trusted_hosts)))


def _allow_list(entries: tuple[str, ...]) -> AllowList:
    return allow_list(tuple(entry.removeprefix("[").removesuffix("]") for entry in entries))


def policy_of(config: Config) -> EgressPolicy:
    """The config's egress policy (see the module's rules)."""
    # The allow-list's names are the callers' to name, not trusted: only its networks.
    listed = allow_list(config.routing.custom_host_allowlist).networks
    return policy(
        [*config.egress.allow_networks, *(str(network) for network in listed)],
        _config_hosts(config),
    )


def _config_hosts(config: Config) -> list[str]:
    settings = [
        *(vk.settings for vk in config.virtual_keys.values()),
        *(named.settings for named in config.configs.values()),
        *config.provider_defaults.values(),
    ]
    values = [value for one in settings for _, value in fields_of_kind(one, "url", "host")]
    # The custom hosts a virtual key (or a [providers] table) lists are the config's
    # choice too: a request may name them, and nothing else, with the config's credentials.
    values += [host for vk in config.virtual_keys.values() for host in vk.custom_hosts]
    values += [host for hosts in config.provider_custom_hosts.values() for host in hosts]
    hosts: list[str] = []
    for value in values:
        origin = origin_of(value) if "://" in value else None
        hosts.append(origin[1] if origin is not None else normal_name(value.split(":")[0]))
    return [host for host in hosts if host]


# The process's policy, installed at app startup: plugins building their own clients
# (aiobotocore, a GCS session) apply it through ``connector()``. Until then nothing but
# public addresses is allowed: a missing install fails closed.
_installed: list[EgressPolicy] = [policy()]


def install(new: EgressPolicy) -> EgressPolicy:
    """Make ``new`` the process's policy; the one it replaces is returned."""
    before, _installed[0] = _installed[0], new
    return before


def current_policy() -> EgressPolicy:
    return _installed[0]


class GuardedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, checking every address before connecting to it.

    ``_resolve_host`` is where aiohttp turns a host into the addresses it connects to,
    literal IPs included (they never reach the resolver), and DNS cache hits too.
    ``egress`` None: the policy installed at the time of each connection.
    """

    def __init__(self, *args: Any, egress: EgressPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._egress = egress

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        results = await super()._resolve_host(host, port, traces)
        egress = self._egress if self._egress is not None else current_policy()
        return egress.checked(host, results)


def connector(egress: EgressPolicy | None = None, **kwargs: Any) -> GuardedConnector:
    """A connector for a plugin's own ``aiohttp.ClientSession`` (made in a running loop)."""
    return GuardedConnector(egress=egress, **kwargs)


@functools.cache
def aiobotocore_session_class(base: type) -> type:
    """``base`` (aiobotocore's ``AIOHTTPSession`` or a subclass) with the installed policy
    on its connections: for ``AioConfig(http_session_cls=...)``.

    aiobotocore wraps any exception a request raises in botocore's ``HTTPClientError``
    (which its retries then repeat); a refusal is unwrapped and raised as itself, which
    botocore passes on untouched.
    """
    from aiobotocore import httpsession  # type: ignore[import-untyped]
    from botocore.exceptions import HTTPClientError  # type: ignore[import-untyped]

    guarded_connector = type(
        "GuardedProxySSLConnector", (GuardedConnector, httpsession._ProxySSLTCPConnector), {}
    )

    class GuardedHTTPSession(base):  # type: ignore[misc]  # untyped base
        async def _create_connector(self, proxy_url: Any) -> Any:
            made = await super()._create_connector(proxy_url)
            # aiobotocore builds its connector in one place with its own arguments; the
            # same connector, with the check, is had by swapping its class (no state added
            # but ``_egress``).
            made.__class__ = guarded_connector
            made._egress = None
            return made

        async def send(self, request: Any) -> Any:
            try:
                return await super().send(request)
            except HTTPClientError as exc:
                inner = exc.kwargs.get("error")
                if isinstance(inner, EgressRefused):
                    raise inner from None
                raise

    return GuardedHTTPSession
