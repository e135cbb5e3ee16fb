"""Fixtures: fake Azure OpenAI upstreams (v1 and dated) and a gateway in front, on real sockets."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from gateway.testing.target import ConformanceTarget
from plugins.azure.tests.fakes.azure_dated import FakeAzureDatedState
from plugins.azure.tests.fakes.azure_dated import make_app as make_dated_app
from plugins.azure.tests.fakes.azure_v1 import FakeAzureV1State
from plugins.azure.tests.fakes.azure_v1 import make_app as make_v1_app
from tests.conftest import GATEWAY_KEY, OTHER_GATEWAY_KEY

AZURE_KEY = "azkey-0123456789abcdef0123456789ab"
AD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.entra-token-fedcba9876543210"
REVOKED_KEY = "azkey-revoked-99999999999999999999"
DATED = "2024-10-21"


def azure_config(v1_url: str, dated_url: str) -> dict[str, Any]:
    """A gateway config with Azure virtual keys for both surfaces, as the TOML would decode."""

    def vk(url: str, api_version: str | None, **creds: str) -> dict[str, Any]:
        key: dict[str, Any] = {"provider": "azure-openai", "resource_name": "contoso"}
        if api_version is not None:
            key["api_version"] = api_version
        return {**key, "custom_host": url, **(creds or {"api_key": AZURE_KEY})}

    return {
        # One attempt: these tests check how one upstream answer is mapped; retries are
        # tested on their own (tests/test_retries.py).
        "upstream": {"connect_timeout": 2.0, "read_timeout": 5.0, "retry": {"attempts": 1}},
        "routing": {
            "accept_header_credentials": True,
            "custom_host_allowlist": ["127.0.0.0/8"],
        },
        "gateway_keys": {
            "search-team": {"key": GATEWAY_KEY, "default_virtual_key": "azure-v1"},
            "no-default": {"key": OTHER_GATEWAY_KEY},
        },
        "virtual_keys": {
            "azure-v1": vk(v1_url, None),
            "azure-v1-entra": vk(v1_url, "v1", ad_token=AD_TOKEN),
            "azure-dated": {**vk(dated_url, DATED), "provider": "azure"},  # the alias
            "azure-dated-entra": vk(dated_url, DATED, ad_token=AD_TOKEN),
            "azure-dated-revoked": vk(dated_url, DATED, api_key=REVOKED_KEY),
        },
    }


@dataclass
class AzureStack:
    """Both fake Azure surfaces and a gateway routing to them; ``client()`` is the user's SDK."""

    servers: ServerThread
    registry: Registry
    v1: FakeAzureV1State
    dated: FakeAzureDatedState
    v1_url: str
    dated_url: str
    gateway_url: str = ""
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(
        self,
        virtual_key: str | None = None,
        *,
        api_key: str = GATEWAY_KEY,
        headers: dict[str, str] | None = None,
        base_url: str | None = None,
    ) -> openai.OpenAI:
        """The SDK pointed at the gateway (or ``base_url``), choosing ``virtual_key``."""
        default_headers = dict(headers or {})
        if virtual_key is not None:
            default_headers["x-portkey-virtual-key"] = virtual_key
        made = openai.OpenAI(
            base_url=base_url or self.gateway_url,
            api_key=api_key,
            max_retries=0,
            default_headers=default_headers,
        )
        self.clients.append(made)
        return made

    def start_gateway(self, raw_config: dict[str, Any]) -> str:
        config = parse_config(copy.deepcopy(raw_config), self.registry, {})
        return self.servers.serve(make_app(config, self.registry)) + "/v1"


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def azure(registry: Registry) -> Iterator[AzureStack]:
    servers = ServerThread()
    v1 = FakeAzureV1State(api_keys={AZURE_KEY}, ad_tokens={AD_TOKEN})
    dated = FakeAzureDatedState(api_keys={AZURE_KEY}, ad_tokens={AD_TOKEN})
    stack = AzureStack(
        servers,
        registry,
        v1,
        dated,
        servers.serve(make_v1_app(v1)),
        servers.serve(make_dated_app(dated)),
    )
    stack.gateway_url = stack.start_gateway(azure_config(stack.v1_url, stack.dated_url))
    yield stack
    for client in stack.clients:
        client.close()
    servers.close()


# The plugin kit's conformance suite (test_azure_conformance.py) runs on each API.
# OpenAI's statuses as the dated API spells them (its `created` is OpenAI's validating_files).
DATED_STATUS = {"validating_files": "created", "queued": "pending"}
# What the dated API has no operation for (2024-10-21: no /pause, /resume and no
# Idempotency-Key on create); the v1 API is OpenAI's and lacks nothing.
DATED_LACKS = frozenset({"pause", "resume", "idempotency"})


@pytest.fixture(params=["v1", DATED])
def conformance_target(
    request: pytest.FixtureRequest, gateway_servers: ServerThread
) -> ConformanceTarget:
    key = {"provider": "azure-openai", "resource_name": "contoso", "api_key": AZURE_KEY}
    if request.param == "v1":
        v1 = FakeAzureV1State(api_keys={AZURE_KEY})
        url = gateway_servers.serve(make_v1_app(v1))
        return ConformanceTarget(
            virtual_key={**key, "custom_host": url},
            seed_file=lambda content: str(v1.service.add_file("train.jsonl", content)["id"]),
            set_status=lambda job_id, status: v1.service.set_status(job_id, status) and None,
            fail_next=lambda status, headers: v1.service.fail_next(status, headers=dict(headers)),
            secrets=[AZURE_KEY],
            add_metrics=lambda job_id, step, loss: (
                v1.service.add_metrics(job_id, step, loss) and None
            ),
        )
    dated = FakeAzureDatedState(api_keys={AZURE_KEY})
    url = gateway_servers.serve(make_dated_app(dated))

    def fail_next(status: int, headers: Mapping[str, str]) -> None:
        body = {"error": {"code": str(status), "message": f"Azure answered {status}"}}
        dated.fail_next(status, body, dict(headers))

    def add_metrics(job_id: str, step: int, train_loss: float) -> None:
        # A running job's steps come as metrics events on the dated API too (its results
        # file, read once the job succeeds, is test_azure_metrics.py's).
        data = {"step": step, "train_loss": train_loss}
        dated.add_event(job_id, f"Step {step}", type_="metrics", data=data)

    return ConformanceTarget(
        virtual_key={**key, "api_version": DATED, "custom_host": url},
        seed_file=lambda content: str(dated.add_file("train.jsonl", content)["id"]),
        set_status=lambda job_id, status: (
            dated.set_status(job_id, DATED_STATUS.get(status, status)) and None
        ),
        fail_next=fail_next,
        secrets=[AZURE_KEY],
        lacks=DATED_LACKS,
        add_metrics=add_metrics,
    )
