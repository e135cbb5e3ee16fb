"""Fixtures: a fake Together AI upstream and a gateway in front, on real sockets; and
the plugin kit's ``conformance_target`` (public contract and ``gateway.testing`` only)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from gateway.testing.target import ConformanceTarget
from plugins.together.tests.fakes.together import FakeTogetherState
from plugins.together.tests.fakes.together import make_app as make_fake_app
from tests.conftest import GATEWAY_KEY

TOGETHER_KEY = "tgp_v1_0123456789abcdef0123456789abcdef"
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
# OpenAI's statuses as Together's workers set them (the plugin maps them back).
TOGETHER_STATUS = {
    "validating_files": "pending",
    "queued": "queued",
    "running": "running",
    "succeeded": "completed",
    "failed": "error",
    "cancelled": "cancelled",
}


@dataclass
class TogetherStack:
    servers: ServerThread
    fake: FakeTogetherState
    fake_url: str
    gateway_url: str = ""
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, headers: dict[str, str] | None = None) -> openai.OpenAI:
        made = openai.OpenAI(
            base_url=self.gateway_url,
            api_key=GATEWAY_KEY,
            max_retries=0,
            default_headers=headers or {},
        )
        self.clients.append(made)
        return made


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def together(registry: Registry) -> Iterator[TogetherStack]:
    servers = ServerThread()
    fake = FakeTogetherState(api_key=TOGETHER_KEY)
    stack = TogetherStack(servers, fake, servers.serve(make_fake_app(fake)))
    raw: dict[str, Any] = {
        "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0, "retry": {"attempts": 1}},
        "routing": {"custom_host_allowlist": ["127.0.0.0/8"]},
        "gateway_keys": {"team": {"key": GATEWAY_KEY, "default_virtual_key": "together"}},
        "virtual_keys": {
            "together": {
                "provider": "together-ai",
                "api_key": TOGETHER_KEY,
                "custom_host": stack.fake_url + "/v1",
            }
        },
    }
    config = parse_config(copy.deepcopy(raw), registry, {})
    stack.gateway_url = servers.serve(make_app(config, registry)) + "/v1"
    yield stack
    for client in stack.clients:
        client.close()
    servers.close()


@pytest.fixture
def conformance_target(gateway_servers: ServerThread) -> ConformanceTarget:
    fake = FakeTogetherState(api_key=TOGETHER_KEY)
    url = gateway_servers.serve(make_fake_app(fake))
    return ConformanceTarget(
        virtual_key={
            "provider": "together-ai",
            "api_key": TOGETHER_KEY,
            "custom_host": url + "/v1",
        },
        seed_file=lambda content: fake.add_file("train.jsonl", content),
        set_status=lambda job_id, status: fake.set_status(job_id, TOGETHER_STATUS[status]),
        fail_next=lambda status, headers: fake.fail_next(status, dict(headers)),
        secrets=[TOGETHER_KEY],
        # Together has no pause or resume; its create takes no idempotency key.
        lacks=frozenset({"pause", "resume", "idempotency"}),
        model=LLAMA,
        add_metrics=fake.add_metrics,
    )
