"""The OpenAI plugin's conformance target: the project's spec-true OpenAI fake."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gateway.testing.live import ServerThread
from gateway.testing.target import ConformanceTarget
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_fake_openai

UPSTREAM_KEY = "sk-conformance-upstream-0123456789"


@pytest.fixture
def conformance_target(gateway_servers: ServerThread) -> ConformanceTarget:
    fake = FakeOpenAIState(api_keys={UPSTREAM_KEY})
    url = gateway_servers.serve(make_fake_openai(fake)) + "/v1"

    def seed_file(content: bytes) -> str:
        return str(fake.add_file("train.jsonl", content)["id"])

    def fail_next(status: int, headers: Mapping[str, str]) -> None:
        fake.fail_next(status, headers=dict(headers))

    return ConformanceTarget(
        virtual_key={"provider": "openai", "api_key": UPSTREAM_KEY, "base_url": url},
        seed_file=seed_file,
        set_status=lambda job_id, status: fake.set_status(job_id, status) and None,
        fail_next=fail_next,
        secrets=[UPSTREAM_KEY],
        add_metrics=lambda job_id, step, loss: fake.add_metrics(job_id, step, loss) and None,
    )
