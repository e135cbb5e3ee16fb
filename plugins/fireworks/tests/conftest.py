"""Fixtures: a fake Fireworks upstream and a gateway in front of it, on real sockets; and
the plugin kit's ``conformance_target`` (public contract and ``gateway.testing`` only)."""

from __future__ import annotations

import secrets
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
from plugins.fireworks.tests.fakes.fireworks import FakeFireworksState
from plugins.fireworks.tests.fakes.fireworks import make_app as make_fake
from tests.conftest import GATEWAY_KEY

FW_KEY = "fw-key-0123456789abcdef0123456789"
ACCOUNT = "acme-labs"
# OpenAI's statuses as Fireworks' job states (the plugin maps them back).
FIREWORKS_STATE = {
    "validating_files": "JOB_STATE_VALIDATING",
    "queued": "JOB_STATE_PENDING",
    "running": "JOB_STATE_RUNNING",
    "succeeded": "JOB_STATE_COMPLETED",
    "failed": "JOB_STATE_FAILED",
    "cancelled": "JOB_STATE_CANCELLED",
}


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


@pytest.fixture
def conformance_target(gateway_servers: ServerThread) -> ConformanceTarget:
    fake = FakeFireworksState(api_key=FW_KEY, account=ACCOUNT)
    fake.base_url = gateway_servers.serve(make_fake(fake))

    def seed_file(content: bytes) -> str:
        dataset_id = "file-" + secrets.token_hex(12)
        fake.add_dataset(dataset_id, content)
        return dataset_id

    return ConformanceTarget(
        virtual_key={
            "provider": "fireworks-ai",
            "api_key": FW_KEY,
            "account_id": ACCOUNT,
            "custom_host": fake.base_url,
        },
        seed_file=seed_file,
        set_status=lambda job_id, status: fake.set_state(job_id, FIREWORKS_STATE[status]),
        fail_next=lambda status, headers: fake.fail_next(status, dict(headers)),
        secrets=[FW_KEY],
        # Fireworks' SFT API has no cancel (only DELETE), pause, events, checkpoints or
        # per-step metrics, and the dataset download's shape is not in any source read.
        lacks=frozenset({"cancel", "pause", "events", "checkpoints", "metrics", "file_content"}),
        model="llama-v3p1-8b-instruct",
        # The job states Fireworks' own pause leaves: resume is Fireworks' :resume.
        pause_upstream=lambda job_id: fake.set_state(job_id, "JOB_STATE_PAUSED"),
    )
