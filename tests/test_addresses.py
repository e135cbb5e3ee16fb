"""The address checker on its own: special ranges, embedded IPv4, spellings; nothing connects.

Name resolution is faked here (the event loop's ``getaddrinfo``), so no test looks
anything up or opens a socket: the metadata address and the private ranges are only
ever compared, never contacted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest

from gateway.addresses import (
    SPECIAL_RANGES,
    address_refusal,
    allow_list,
    effective_address,
    parse_address,
)
from gateway.egress import EgressRefused
from gateway.errors import BadRequest
from gateway.resolver import GuardedResolver, check_resolved_name
from gateway.routing import check_custom_host
from tests.test_ssrf import SPELLINGS

PUBLIC_ONLY = allow_list(["api.example.com", "0.0.0.0/0", "::/0"])
NOTHING = allow_list([])

# Each special-use range, by an address inside it, in every spelling a resolver may answer.
REFUSED = [
    "169.254.169.254",  # AWS, GCP, Azure, OCI instance metadata
    "169.254.170.2",  # ECS task metadata
    "fd00:ec2::254",  # AWS metadata over IPv6
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "0.0.0.0",
    "0.1.2.3",
    "::",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "192.168.255.255",
    "100.64.0.1",
    "100.127.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "192.88.99.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "fc00::1",
    "fdff:ffff::1",
    "fe80::1",
    "fe80::1%eth0",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "100::1",
    "2001::1",  # Teredo
    "2001:db8::1",
    "3fff::1",
    "64:ff9b:1::1",
    "5f00::1",
    "1::1",
    # IPv6 that stands for IPv4: judged as the IPv4 address it carries.
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "0:0:0:0:0:ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::169.254.169.254",
    "64:ff9b::127.0.0.1",  # NAT64
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::192.168.1.1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::",  # 6to4 of 192.168.1.1
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "169.253.255.255",
    "2606:4700::1111",
    "2a00:1450:4001::1",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
]


@pytest.mark.parametrize("text", REFUSED)
def test_address_refusal_refuses_every_special_range_unless_listed(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert address_refusal(address, NOTHING) is not None
    # Even a list that allows every public address leaves the special ranges out.
    assert address_refusal(address, PUBLIC_ONLY) is not None
    assert not PUBLIC_ONLY.lists_address(address)


@pytest.mark.parametrize("text", ALLOWED)
def test_address_refusal_allows_public_addresses_for_a_listed_name(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert address_refusal(address, NOTHING) is None
    assert PUBLIC_ONLY.lists_address(address), "a listed network allows it as a literal"
    assert not NOTHING.lists_address(address), "a literal must be in a listed network"


@pytest.mark.parametrize(
    ("text", "listed", "allowed"),
    [
        ("169.254.169.254", "169.254.169.254/32", True),
        ("169.254.169.254", "169.254.0.0/16", True),
        ("169.254.169.254", "169.0.0.0/8", False),  # wider than the link-local range
        ("127.0.0.1", "127.0.0.0/8", True),
        ("127.0.0.1", "127.0.0.1", True),
        ("::ffff:127.0.0.1", "127.0.0.0/8", True),
        ("64:ff9b::7f00:1", "127.0.0.0/8", True),
        ("2002:7f00:1::", "127.0.0.0/8", True),
        ("127.0.0.1", "0.0.0.0/0", False),
        ("127.0.0.1", "::ffff:0:0/96", False),  # list the IPv4 network itself
        ("10.1.2.3", "10.0.0.0/8", True),
        ("10.1.2.3", "10.1.0.0/16", True),
        ("10.1.2.3", "10.2.0.0/16", False),
        ("10.1.2.3", "8.0.0.0/6", False),
        ("::1", "::1", True),
        ("::1", "::/0", False),
        ("fd00:ec2::254", "fd00::/8", True),
        ("fe80::1%eth0", "fe80::/10", True),
        ("203.0.113.7", "203.0.113.0/24", True),
    ],
)
def test_allow_list_allows_a_special_address_only_by_a_network_inside_its_range(
    text: str, listed: str, allowed: bool
) -> None:
    address = ipaddress.ip_address(text)
    listing = allow_list([listed])
    assert listing.lists_address(address) is allowed
    assert (address_refusal(address, listing) is None) is allowed


@pytest.mark.parametrize(
    ("text", "embedded"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:a9fe:a9fe::", "169.254.169.254"),
        ("::1", "::1"),
        ("::", "::"),
        ("2606:4700::1111", "2606:4700::1111"),
    ],
)
def test_effective_address_is_the_ipv4_address_an_ipv6_one_carries(
    text: str, embedded: str
) -> None:
    assert effective_address(ipaddress.ip_address(text)) == ipaddress.ip_address(embedded)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("0x7f000001", None),
        ("2130706433", None),
        ("017700000001", None),
        ("0177.0.0.1", None),
        ("127.1", None),
        ("127.0.0.1.", None),
        ("localhost", None),
    ],
)
def test_parse_address_takes_only_standard_spellings(host: str, address: str | None) -> None:
    parsed = parse_address(host)
    assert parsed == (None if address is None else ipaddress.ip_address(address))


def test_special_ranges_are_well_formed() -> None:
    networks = [network for network, _ in SPECIAL_RANGES]
    assert len(networks) == len(set(networks))
    # The reserved IPv6 catch-alls plus 2000::/3 cover the whole IPv6 space.
    v6 = [n for n in networks if n.version == 6 and n.prefixlen <= 3]
    covered = sum(n.num_addresses for n in v6) + ipaddress.ip_network("2000::/3").num_addresses
    assert covered == 2**128


# Those sent to a live listener in test_ssrf.py, and those that must never be sent
# anywhere: an address that only a broken check would connect to, off loopback.
LOOPBACK_SPELLINGS = [
    *SPELLINGS,
    "0x7f.0.0.1",
    "127.0.1",
    "[0:0:0:0:0:0:0:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::]",
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "[fe80::1%25eth0]",
    "0xa9fea9fe",
    "2852039166",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_check_custom_host_refuses_every_spelling_the_list_does_not_name(host: str) -> None:
    """The allow-list names a documentation network and a made-up name, nothing else."""
    with pytest.raises(BadRequest) as refused:
        check_custom_host(
            f"http://{host}:8080/v1", ["203.0.113.0/24", "api.example.com"], "x-portkey-custom-host"
        )
    assert refused.value.code == "custom_host_not_allowed"
    assert refused.value.param == "x-portkey-custom-host"


def fake_getaddrinfo(answers: dict[str, list[str] | BaseException]) -> Callable[..., Any]:
    """An event loop ``getaddrinfo`` answering from a table: no lookup, no socket."""

    async def getaddrinfo(host: str, port: Any, **_: Any) -> list[tuple[Any, ...]]:
        answer = answers[host.lower().rstrip(".")]  # as DNS compares names
        if isinstance(answer, BaseException):
            raise answer
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port or 0, 0, 0) if ":" in a else (a, port or 0),
            )
            for a in answer
        ]

    return getaddrinfo


@pytest.mark.parametrize(
    ("answer", "listed", "code"),
    [
        (["169.254.169.254"], [], "custom_host_not_allowed"),
        (["93.184.215.14", "169.254.169.254"], [], "custom_host_not_allowed"),  # any one
        (["10.0.0.5"], [], "custom_host_not_allowed"),
        (["::ffff:10.0.0.5"], [], "custom_host_not_allowed"),
        (["64:ff9b::a9fe:a9fe"], [], "custom_host_not_allowed"),
        (["127.0.0.1", "::1"], ["127.0.0.0/8"], "custom_host_not_allowed"),  # ::1 not listed
        (["93.184.215.14"], [], None),
        (["2606:2800:21f:cb07:6820:80da:af6b:8b2c"], [], None),
        (["169.254.169.254"], ["169.254.169.254/32"], None),
        (["127.0.0.1", "::1"], ["127.0.0.0/8", "::1"], None),
        ([], [], "custom_host_unresolvable"),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            [],
            "custom_host_unresolvable",
        ),
    ],
)
async def test_check_resolved_name_holds_every_address_to_the_list(
    monkeypatch: pytest.MonkeyPatch,
    answer: list[str] | BaseException,
    listed: list[str],
    code: str | None,
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo({"svc.example.com": answer}))
    listing = allow_list(["svc.example.com", *listed])
    check = check_resolved_name("svc.example.com", listing, timeout=1, param="p")
    if code is None:
        await check
        return
    with pytest.raises(BadRequest) as refused:
        await check
    assert (refused.value.code, refused.value.param) == (code, "p")


async def test_check_resolved_name_gives_up_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def stalled(*args: Any, **kwargs: Any) -> list[Any]:
        await asyncio.sleep(30)
        return []

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", stalled)
    started = asyncio.get_running_loop().time()
    with pytest.raises(BadRequest) as refused:
        await check_resolved_name("slow.example.com", NOTHING, timeout=0.2, param="p")
    assert refused.value.code == "custom_host_unresolvable"
    assert "within 0.2 s" in refused.value.message
    assert asyncio.get_running_loop().time() - started < 5


async def test_guarded_resolver_refuses_a_listed_name_and_passes_others_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the HTTP client connects to: a listed name's addresses are checked again."""
    loop = asyncio.get_running_loop()
    answers: dict[str, list[str] | BaseException] = {
        "rebind.example.com": ["127.0.0.1"],
        "ok.example.com": ["93.184.215.14"],
        "internal.corp": ["10.0.0.7"],  # a config file's own host: not listed, not checked
    }
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo(answers))
    listing = allow_list(["rebind.example.com", "ok.example.com"])
    resolver = GuardedResolver(listing, timeout=1)
    with pytest.raises(EgressRefused) as refused:  # at connection time: a 502
        await resolver.resolve("rebind.example.com", 443)
    assert refused.value.code == "egress_refused"
    assert "a loopback address" in refused.value.message
    with pytest.raises(EgressRefused):
        await resolver.resolve("REBIND.example.com.", 443)  # the same name, spelled otherwise
    assert [r["host"] for r in await resolver.resolve("ok.example.com", 443)] == ["93.184.215.14"]
    assert [r["host"] for r in await resolver.resolve("internal.corp", 80)] == ["10.0.0.7"]
    await resolver.close()
