"""Which addresses a request may make the gateway connect to: pure checks, no I/O.

The allow-list (``routing.custom_host_allowlist``) holds host names, IP addresses and
CIDR networks. The rules, applied by ``gateway.routing`` before a request goes out and
by ``gateway.resolver`` on every connection to a listed name:

- an IP address written in a URL must fall in a listed network;
- a host name must be listed as it is, and every address it resolves to must be
  allowed: either an ordinary public address, or one in a listed network;
- an address in a special-use range (``SPECIAL_RANGES``: loopback, private,
  link-local with the cloud metadata address 169.254.169.254, CGNAT, multicast,
  reserved, ...) is allowed only by a listed network that lies inside that range.
  Listing ``0.0.0.0/0`` allows every public IPv4 address, never 127.0.0.1 or
  169.254.169.254; listing ``127.0.0.0/8`` or ``169.254.169.254/32`` allows those;
- an IPv6 address that stands for an IPv4 one (IPv4-mapped ``::ffff:127.0.0.1``,
  IPv4-compatible ``::127.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is judged
  as that IPv4 address, which is where the packets end up.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ranges(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), what) for net, what in pairs)


# IANA's special-purpose registries, the most specific first: the first range holding
# an address names it in refusals and bounds the listed networks that may allow it.
SPECIAL_RANGES: tuple[tuple[IPNetwork, str], ...] = _ranges(
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (CGNAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (the cloud metadata range)"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),  # 255.255.255.255 (broadcast) included
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001::/23", "an IETF protocol address (Teredo, ...)"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("fc00::/7", "a unique local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
    # Everything outside 2000::/3, IPv6's global unicast space, is reserved.
    ("::/3", "a reserved address"),
    ("4000::/2", "a reserved address"),
    ("8000::/1", "a reserved address"),
)

_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class AllowList:
    """``routing.custom_host_allowlist``, parsed: the names and the networks it lists."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def lists_name(self, host: str) -> bool:
        return normal_name(host) in self.names

    def lists_address(self, address: IPAddress) -> bool:
        """Whether a listed network allows ``address`` (see the module's rules)."""
        target = effective_address(address)
        special = special_range(target)
        for network in self.networks:
            if network.version != target.version or target not in network:
                continue
            if special is None or network.subnet_of(special[0]):  # type: ignore[arg-type]
                return True
        return False


def allow_list(entries: Sequence[str]) -> AllowList:
    """The config's list of entries, parsed (once: the config's list does not change)."""
    return _parse(tuple(entries))


@functools.lru_cache(maxsize=16)
def _parse(entries: tuple[str, ...]) -> AllowList:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(normal_name(entry))
    return AllowList(frozenset(names), tuple(networks))


def normal_name(host: str) -> str:
    """A host name as the allow-list compares it: lower case, without the root's dot."""
    return host.lower().rstrip(".")


def parse_address(host: str) -> IPAddress | None:
    """The IP address ``host`` spells in a URL (``[::1]`` too), or None for a name.

    Only the standard spellings are addresses; ``2130706433`` or ``0x7f000001`` are
    names here, which nobody lists (and which resolve to where they point, if listed).
    """
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def effective_address(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for, where it embeds one; else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    last32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return last32
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # "::" and "::1" are IPv6's own
        return last32
    return address


def special_range(address: IPAddress) -> tuple[IPNetwork, str] | None:
    """The special-use range ``address`` falls in, and what it is; None for public."""
    target = effective_address(address)
    for network, what in SPECIAL_RANGES:
        if network.version == target.version and target in network:
            return network, what
    return None


def address_refusal(address: IPAddress, allowlist: AllowList) -> str | None:
    """Why a host name may not resolve to ``address``; None when it may."""
    special = special_range(address)
    if special is None or allowlist.lists_address(address):
        return None
    return special[1]


def resolved_refusal(
    addresses: Sequence[IPAddress], allowlist: AllowList
) -> tuple[IPAddress, str] | None:
    """The first of a name's addresses that is not allowed, and why; None if all are."""
    for address in addresses:
        reason = address_refusal(address, allowlist)
        if reason is not None:
            return address, reason
    return None
