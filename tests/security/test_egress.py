"""The egress policy (``gateway.egress``): no connection reaches an address the config did
not allow, by any client, whoever chose the host.

A fake internal service on 127.0.0.2 records every hit; no config here allows it, so
every hit would be a finding.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.abc import ResolveResult
from aiohttp.test_utils import TestServer

from gateway import egress, resolver
from gateway.app import make_app
from gateway.config import parse_config
from gateway.egress import EgressRefused
from gateway.http1 import Http1Pool
from gateway.registry import Registry
from tests.security.conftest import Recorder


def _port(recorder: Recorder) -> int:
    return int(recorder.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("host", "address", "allowed"),
    [
        ("api.example.com", "93.184.215.14", True),  # public
        ("api.example.com", "127.0.0.2", False),  # loopback
        ("api.example.com", "169.254.169.254", False),  # cloud metadata (link-local)
        ("api.example.com", "10.1.2.3", False),
        ("api.example.com", "172.16.0.1", False),
        ("api.example.com", "192.168.1.1", False),
        ("api.example.com", "100.64.0.1", False),  # CGNAT
        ("api.example.com", "fd00::1", False),  # unique local
        ("api.example.com", "fe80::1", False),
        ("api.example.com", "::ffff:127.0.0.2", False),  # IPv4-mapped: judged as the IPv4
        ("api.example.com", "0.0.0.0", False),
        ("api.example.com", "224.0.0.1", False),
        ("api.example.com", "10.9.9.9", True),  # in allow_networks
        ("internal.corp", "10.0.0.7", True),  # a name of the config's own: trusted
        ("127.0.0.5", "127.0.0.5", True),  # a literal IP of the config's own
        ("127.0.0.6", "127.0.0.6", False),
    ],
)
def test_egress_policy_allows_public_listed_and_the_configs_own(
    host: str, address: str, allowed: bool
) -> None:
    policy = egress.policy(["10.9.0.0/16"], ["internal.corp", "127.0.0.5"])
    checked = ipaddress.ip_address(address)
    if allowed:
        policy.check(host, [checked])
    else:
        with pytest.raises(EgressRefused) as refused:
            policy.check(host, [checked])
        assert refused.value.status == 502 and refused.value.code == "egress_refused"
        assert host in refused.value.message and str(checked) in refused.value.message


def test_egress_policy_of_a_config_trusts_its_own_url_hosts(registry: Registry) -> None:
    raw: dict[str, Any] = {
        "egress": {"allow_networks": ["192.168.7.0/24"]},
        "routing": {"custom_host_allowlist": ["10.2.0.0/16", "listed.example"]},
        "virtual_keys": {
            "local": {"provider": "openai", "api_key": "sk-x", "base_url": "http://127.0.0.9:1/v1"},
            "named": {"provider": "openai", "api_key": "sk-x", "base_url": "http://fake.corp/v1"},
            "bound": {
                "provider": "openai",
                "api_key": "sk-x",
                "custom_hosts": ["http://127.0.0.11:8080", "https://proxy.corp"],
            },
        },
        "providers": {"openai": {"custom_hosts": ["http://127.0.0.12:9000"]}},
    }
    policy = egress.policy_of(parse_config(raw, registry, {}))
    loopback = ipaddress.ip_address("127.0.0.9")
    policy.check("127.0.0.9", [loopback])
    policy.check("fake.corp", [ipaddress.ip_address("10.200.0.1")])
    policy.check("a.example", [ipaddress.ip_address("192.168.7.7")])
    policy.check("a.example", [ipaddress.ip_address("10.2.3.4")])
    # a virtual key's (or [providers] table's) custom_hosts are the config's choice too
    policy.check("127.0.0.11", [ipaddress.ip_address("127.0.0.11")])
    policy.check("proxy.corp", [ipaddress.ip_address("10.3.3.3")])
    policy.check("127.0.0.12", [ipaddress.ip_address("127.0.0.12")])
    with pytest.raises(EgressRefused):  # a request-chosen name is not trusted by name
        policy.check("listed.example", [ipaddress.ip_address("127.0.0.3")])


async def test_guarded_connector_checks_literal_ip_hosts(internal: Recorder) -> None:
    connector = egress.connector(egress.policy())
    async with aiohttp.ClientSession(connector=connector) as http:
        with pytest.raises(EgressRefused):
            await http.get(f"{internal.url}/v1/files")
        with pytest.raises(EgressRefused):  # the IPv4-mapped spelling of the same address
            await http.get(f"http://[::ffff:127.0.0.2]:{_port(internal)}/v1/files")
    assert internal.hits == []


async def test_guarded_connector_connects_to_an_allowed_network(internal: Recorder) -> None:
    connector = egress.connector(egress.policy(["127.0.0.2/32"]))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"{internal.url}/v1/files") as answer,
    ):
        assert answer.status == 200
    assert len(internal.hits) == 1


async def test_lean_client_refuses_an_internal_address(internal: Recorder) -> None:
    pool = Http1Pool(egress=egress.policy())
    with pytest.raises(EgressRefused):
        await pool.request("GET", f"{internal.url}/v1/files", headers={})
    await pool.close()
    assert internal.hits == []


async def test_aiobotocore_client_never_connects_to_a_refused_endpoint(
    internal: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
    from aiobotocore.httpsession import AIOHTTPSession  # type: ignore[import-untyped]
    from aiobotocore.session import get_session  # type: ignore[import-untyped]

    monkeypatch.setattr(egress, "_installed", [egress.policy()])
    config = AioConfig(http_session_cls=egress.aiobotocore_session_class(AIOHTTPSession))
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=internal.url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=config,
    ) as s3:
        with pytest.raises(EgressRefused) as refused:  # itself, not botocore's wrapper
            await s3.list_objects_v2(Bucket="b")
    assert refused.value.code == "egress_refused"
    assert internal.hits == []


class _RebindingResolver:
    """DNS that answers 127.0.0.2 for ``rebind.example`` at connection time."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = "127.0.0.2" if host == "rebind.example" else "127.0.0.1"
        return [
            {"hostname": host, "host": address, "port": port, "family": socket.AF_INET}
            | {"proto": 0, "flags": 0}  # type: ignore[typeddict-item]
        ]

    async def close(self) -> None:
        pass


async def test_a_request_chosen_host_rebinding_to_an_internal_address_is_a_502(
    registry: Registry, tmp_path: Path, internal: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowed by name at request time (public then), 127.0.0.2 when connecting."""

    async def public(host: str, timeout: float) -> list[Any]:
        return [ipaddress.ip_address("93.184.215.14")]

    monkeypatch.setattr(resolver, "resolve_name", public)
    monkeypatch.setattr(resolver, "DefaultResolver", _RebindingResolver)
    raw: dict[str, Any] = {
        "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0, "retry": {"attempts": 1}},
        "routing": {"accept_header_credentials": True, "custom_host_allowlist": ["rebind.example"]},
    }
    server = TestServer(make_app(parse_config(raw, registry, {}), registry))
    await server.start_server()
    client = openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")),
        api_key="sk-caller",
        max_retries=0,
        default_headers={
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://rebind.example:{_port(internal)}/v1",
        },
    )
    try:
        with pytest.raises(openai.InternalServerError) as failed:
            await client.fine_tuning.jobs.list()
        assert failed.value.status_code == 502
        assert failed.value.code == "egress_refused"
        assert "127.0.0.2" in failed.value.message
    finally:
        await client.close()
        await server.close()
    assert internal.hits == []


def _dns_rebinding_to(real: Any, name: str, address: str) -> Any:
    """``getaddrinfo`` where ``name`` answers ``address``; other names as before."""

    async def getaddrinfo(host: str, port: Any, **kwargs: Any) -> Any:
        if host.rstrip(".").lower() != name:
            return await real(host, port, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    return getaddrinfo


@pytest.mark.parametrize(
    "path", ["/v1/fine_tuning/jobs", "/v1/files"], ids=["bedrock client", "s3 client"]
)
async def test_bedrock_custom_host_is_checked_by_the_aws_sdk_on_connecting(
    registry: Registry, internal: Recorder, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The AWS SDK opens its own connections: a request-chosen Bedrock (and S3) endpoint
    that was public when the request was checked and is 127.0.0.2 when the SDK connects
    is never reached (the SDK's connector holds the policy too). Listing jobs goes
    through the Bedrock client, listing files through the S3 one."""
    name = "bedrock.rebind.test"

    async def public(host: str, timeout: float) -> list[Any]:
        return [ipaddress.ip_address("93.184.215.14")]

    monkeypatch.setattr(resolver, "resolve_name", public)  # the request-time check
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", _dns_rebinding_to(loop.getaddrinfo, name, "127.0.0.2"))
    raw: dict[str, Any] = {
        "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0, "retry": {"attempts": 1}},
        "routing": {"accept_header_credentials": True, "custom_host_allowlist": [name]},
    }
    server = TestServer(make_app(parse_config(raw, registry, {}), registry))
    await server.start_server()
    headers = {
        "x-portkey-provider": "bedrock",
        "x-portkey-aws-access-key-id": "AKIDEXAMPLE",
        "x-portkey-aws-secret-access-key": "caller-secret",
        "x-portkey-aws-region": "us-east-1",
        "x-portkey-aws-s3-bucket": "staging",
        "x-portkey-custom-host": f"http://{name}:{_port(internal)}",
    }
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.make_url(path), headers=headers) as answer,
        ):
            body = await answer.json()
    finally:
        await server.close()
    assert answer.status == 502, body
    assert body["error"]["code"] == "egress_refused"
    assert "127.0.0.2" in body["error"]["message"]
    assert internal.hits == []
