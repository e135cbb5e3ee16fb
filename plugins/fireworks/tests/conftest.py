"""Fixtures: a fake Fireworks upstream and a gateway in front of it, on real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from plugins.fireworks.tests.fakes.fireworks import FakeFireworksState
from plugins.fireworks.tests.fakes.fireworks import make_app as make_fake
from tests.conftest import GATEWAY_KEY

FW_KEY = "fw-key-0123456789abcdef0123456789"
ACCOUNT = "acme-labs"


@dataclass
class FireworksStack:
    fake: FakeFireworksState
    fake_url: str
    gateway_url: str
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, headers: dict[str, str] | None = None, **kwargs: Any) -> openai.OpenAI:
        made = openai.OpenAI(
            base_url=self.gateway_url,
            api_key=kwargs.pop("api_key", GATEWAY_KEY),
            max_retries=0,
            default_headers=headers or {},
            **kwargs,
        )
        self.clients.append(made)
        return made


def fireworks_config(fake_url: str) -> dict[str, Any]:
    return {
        "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0, "retry": {"attempts": 1}},
        "routing": {"accept_header_credentials": True, "custom_host_allowlist": ["127.0.0.0/8"]},
        "gateway_keys": {"team": {"key": GATEWAY_KEY, "default_virtual_key": "fireworks"}},
        "virtual_keys": {
            "fireworks": {
                "provider": "fireworks-ai",
                "api_key": FW_KEY,
                "account_id": ACCOUNT,
                "custom_host": fake_url,
            }
        },
    }


@pytest.fixture
def fireworks() -> Iterator[FireworksStack]:
    servers = ServerThread()
    fake = FakeFireworksState(api_key=FW_KEY, account=ACCOUNT)
    fake.base_url = servers.serve(make_fake(fake))
    registry = Registry.discover()
    config = parse_config(fireworks_config(fake.base_url), registry, {})
    stack = FireworksStack(fake, fake.base_url, servers.serve(make_app(config, registry)) + "/v1")
    yield stack
    for client in stack.clients:
        client.close()
    servers.close()
