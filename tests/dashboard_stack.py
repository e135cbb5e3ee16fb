"""A gateway in front of four kinds of jobs for the dashboard: the OpenAI fake, the
Azure OpenAI fakes (v1 and dated), and managed mode (a ``portkey`` virtual key) running
on the OpenAI fake; ``seed`` puts jobs in every state on three of them. Shared by the
browser test and bench/dashboard.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from plugins.azure.tests.conftest import AZURE_KEY, DATED
from plugins.azure.tests.fakes.azure_dated import FakeAzureDatedState
from plugins.azure.tests.fakes.azure_dated import make_app as make_dated_app
from plugins.azure.tests.fakes.azure_v1 import FakeAzureV1State
from plugins.azure.tests.fakes.azure_v1 import make_app as make_azure_app
from plugins.portkey.tests.managed import CHAT, jsonl, target, wait_for
from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, base_config
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_openai_app

TEAM_KEY = "gw-other-team-0123456789ab"
XSS_SUFFIX = "<script>window.__xss=1</script>"
XSS_METADATA = '<img src=x onerror="window.__xss=2">'


@dataclass
class Dashboard:
    servers: ServerThread
    openai: FakeOpenAIState
    azure: FakeAzureV1State
    dated: FakeAzureDatedState
    root: str  # the gateway's URL, without /v1

    def client(self, virtual_key: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.root + "/v1",
            api_key=GATEWAY_KEY,
            max_retries=0,
            default_headers={"x-portkey-virtual-key": virtual_key},
        )


def start(servers: ServerThread, registry: Registry, data_dir: Path) -> Dashboard:
    openai_state = FakeOpenAIState(api_keys={UPSTREAM_KEY})
    openai_url = servers.serve(make_openai_app(openai_state)) + "/v1"
    azure_state = FakeAzureV1State(api_keys={AZURE_KEY})
    azure_url = servers.serve(make_azure_app(azure_state))
    dated_state = FakeAzureDatedState(api_keys={AZURE_KEY})
    dated_url = servers.serve(make_dated_app(dated_state))
    raw: dict[str, Any] = copy.deepcopy(base_config(openai_url))
    raw["virtual_keys"]["azure-v1"] = {
        "provider": "azure-openai",
        "resource_name": "contoso",
        "custom_host": azure_url,
        "api_key": AZURE_KEY,
    }
    raw["virtual_keys"]["azure-dated"] = {
        "provider": "azure",
        "resource_name": "contoso",
        "api_version": DATED,
        "custom_host": dated_url,
        "api_key": AZURE_KEY,
    }
    raw["virtual_keys"]["managed"] = {"provider": "portkey", "data_dir": str(data_dir)}
    keys = raw["gateway_keys"]
    keys["search-team"]["virtual_keys"] = ["openai-main", "azure-v1", "azure-dated", "managed"]
    # Another team: its own virtual key only, never the search team's jobs.
    keys["other-team"] = {"key": TEAM_KEY, "virtual_keys": ["openai-revoked"]}
    config = parse_config(raw, registry, {})
    root = servers.serve(make_app(config, registry))
    return Dashboard(servers, openai_state, azure_state, dated_state, root)


def metrics_events(state: FakeOpenAIState, job_id: str, steps: int, every: int = 1) -> None:
    """``steps`` metrics events, as OpenAI's workers send them (losses and accuracies)."""
    for step in range(every, steps + 1, every):
        loss = 2.0 * 0.97**step + 0.05 * ((step * 37) % 11) / 11
        data: dict[str, Any] = {
            "step": step,
            "total_steps": steps,
            "train_loss": round(loss, 4),
            "train_mean_token_accuracy": round(min(0.99, 0.4 + 0.5 * (1 - 0.97**step)), 4),
        }
        if step % 5 == 0:
            data["valid_loss"] = round(loss * 1.1, 4)
            data["valid_mean_token_accuracy"] = round(data["train_mean_token_accuracy"] * 0.95, 4)
        state.add_event(
            job_id, f"Step {step}/{steps}: training loss={loss:.4f}", "info", "metrics", data
        )


def seed(dash: Dashboard, steps: int = 40) -> dict[str, str]:
    """The jobs the browser test looks at, by role; returns their ids."""
    ids: dict[str, str] = {}
    oa = dash.client("openai-main")
    upload = dash.openai.add_file("train.jsonl", jsonl(CHAT), "fine-tune")
    job = oa.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=upload["id"],
        suffix=XSS_SUFFIX,
        metadata={"team": "search", "note": XSS_METADATA},
        hyperparameters={"n_epochs": 3},
    )
    ids["plotted"] = job.id
    dash.openai.set_status(job.id, "running")
    metrics_events(dash.openai, job.id, steps)
    for step in (steps // 2, steps):
        dash.openai.add_checkpoint(
            job.id, step, {"step": float(step), "train_loss": 0.31, "valid_loss": 0.35}
        )
    dash.openai.set_status(job.id, "succeeded", trained_tokens=48_210)

    az = dash.client("azure-v1")
    upload = dash.azure.service.add_file("train.jsonl", jsonl(CHAT), "fine-tune")
    running = az.fine_tuning.jobs.create(
        model="gpt-4.1-mini", training_file=upload["id"], metadata={"run": "nightly"}
    )
    dash.azure.service.set_status(running.id, "running")
    ids["running"] = running.id
    failed = az.fine_tuning.jobs.create(model="gpt-4.1-nano", training_file=upload["id"])
    dash.azure.service.set_status(
        failed.id,
        "failed",
        error={
            "code": "invalid_training_file",
            "message": "Line 3: <b>not</b> JSON",
            "param": None,
        },
    )
    ids["failed"] = failed.id

    managed = dash.client("managed")
    file_id = managed.files.create(file=("train.jsonl", jsonl(CHAT)), purpose="fine-tune").id
    job = managed.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=file_id,
        extra_body=target("openai-main"),
        metadata={"managed": "yes"},
    )
    ids["managed"] = job.id
    # Staged in the background onto openai-main, where its upstream job is listed too.
    wait_for(lambda: len(dash.openai.jobs), lambda count: count == 2)
    upstream_id = next(i for i in dash.openai.jobs if i != ids["plotted"])
    dash.openai.set_status(upstream_id, "queued")
    ids["managed_upstream"] = upstream_id
    for client in (oa, az, managed):
        client.close()
    return ids
