"""A gateway built in front of a plugin's fake upstream, and the SDK clients to reach it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import openai

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from gateway.testing.target import ConformanceTarget

KIT_GATEWAY_KEY = "gw-conformance-kit-0123456789"
VIRTUAL_KEY = "under-test"


def kit_config(target: ConformanceTarget) -> dict[str, Any]:
    """The gateway config the suite runs on, as the TOML file would decode."""
    config: dict[str, Any] = {
        # One attempt: the suite checks how one upstream answer is mapped.
        "upstream": {"connect_timeout": 2.0, "read_timeout": 10.0, "retry": {"attempts": 1}},
        "routing": {"custom_host_allowlist": ["127.0.0.0/8"]},
        "gateway_keys": {"kit": {"key": KIT_GATEWAY_KEY, "default_virtual_key": VIRTUAL_KEY}},
        "virtual_keys": {VIRTUAL_KEY: dict(target.virtual_key)},
    }
    for name, value in target.config.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **copy.deepcopy(value)}
        else:
            config[name] = copy.deepcopy(value)
    return config


@dataclass
class KitGateway:
    target: ConformanceTarget
    servers: ServerThread
    url: str
    log_lines: list[str]
    clients: list[openai.OpenAI] = field(default_factory=list)

    @classmethod
    def start(
        cls, target: ConformanceTarget, servers: ServerThread, log_lines: list[str]
    ) -> KitGateway:
        registry = Registry.discover()
        config = parse_config(kit_config(target), registry, {})
        url = servers.serve(make_app(config, registry)) + "/v1"
        return cls(target, servers, url, log_lines)

    def client(self, **kwargs: Any) -> openai.OpenAI:
        made = openai.OpenAI(
            base_url=self.url, api_key=KIT_GATEWAY_KEY, max_retries=0, timeout=20, **kwargs
        )
        self.clients.append(made)
        return made

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.url, api_key=KIT_GATEWAY_KEY, max_retries=0, timeout=20
        )

    def close(self) -> None:
        for client in self.clients:
            client.close()
