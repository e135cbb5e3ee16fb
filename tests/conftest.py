"""Fixtures: a fake OpenAI upstream and a gateway in front of it, on real sockets."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import openai
import pytest

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_fake_openai

UPSTREAM_KEY = "sk-test-upstream"
GATEWAY_KEY = "gw-search-team-0123456789"
OTHER_GATEWAY_KEY = "gw-no-default-9876543210"


def base_config(upstream_url: str) -> dict[str, Any]:
    """The gateway config most tests use, as the TOML file would decode."""
    return {
        # One attempt: these tests check how one upstream answer is mapped; retries are
        # tested on their own (tests/test_retries.py).
        "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0, "retry": {"attempts": 1}},
        "routing": {
            "accept_header_credentials": True,
            "custom_host_allowlist": ["127.0.0.0/8"],
        },
        "gateway_keys": {
            "search-team": {"key": GATEWAY_KEY, "default_virtual_key": "openai-main"},
            "no-default": {"key": OTHER_GATEWAY_KEY},
        },
        "virtual_keys": {
            "openai-main": {
                "provider": "openai",
                "api_key": UPSTREAM_KEY,
                "base_url": upstream_url,
            },
            "openai-revoked": {
                "provider": "openai",
                "api_key": "sk-revoked-key-abcdef",
                "base_url": upstream_url,
            },
        },
        "configs": {"prod": {"virtual_key": "openai-main"}},
    }


@dataclass
class Stack:
    """A fake OpenAI and a gateway routing to it; ``client()`` is the user's SDK."""

    servers: ServerThread
    upstream: FakeOpenAIState
    upstream_url: str
    gateway_url: str
    registry: Registry
    clients: list[openai.OpenAI] = field(default_factory=list)  # closed after the test

    def client(
        self, api_key: str = GATEWAY_KEY, *, base_url: str | None = None, **kwargs: Any
    ) -> openai.OpenAI:
        """The SDK pointed at this gateway (or at ``base_url``: another one started here)."""
        made = openai.OpenAI(
            base_url=base_url or self.gateway_url, api_key=api_key, max_retries=0, **kwargs
        )
        self.clients.append(made)
        return made

    def async_client(self, api_key: str = GATEWAY_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.gateway_url, api_key=api_key, max_retries=0, **kwargs
        )

    def start_gateway(self, raw_config: dict[str, Any]) -> str:
        """Another gateway, with another config, in front of the same upstream."""
        config = parse_config(copy.deepcopy(raw_config), self.registry, {})
        return self.servers.serve(make_app(config, self.registry)) + "/v1"


class _AsyncClient(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_AsyncClient)


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[C], C]]:
    """Register an async SDK client to be closed on the test's own loop afterwards."""
    opened: list[_AsyncClient] = []

    def register(client: C) -> C:
        opened.append(client)
        return client

    yield register
    for client in opened:
        await client.close()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def servers() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


@pytest.fixture
def stack(servers: ServerThread, registry: Registry) -> Iterator[Stack]:
    upstream = FakeOpenAIState(api_keys={UPSTREAM_KEY})
    upstream_url = servers.serve(make_fake_openai(upstream)) + "/v1"
    built = Stack(servers, upstream, upstream_url, "", registry)
    built.gateway_url = built.start_gateway(base_config(upstream_url))
    yield built
    for client in built.clients:
        client.close()


TRAINING_LINES = [
    b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
    b'{"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]}',
]
TRAINING_JSONL = b"\n".join(TRAINING_LINES) + b"\n"
