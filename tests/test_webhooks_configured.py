"""Webhook endpoints set in the config file (``[webhooks.endpoints.NAME]``): events for
the jobs of the gateway keys they name, of the types they want, signed with the secret
their environment variable holds; refused at startup when that variable is not one."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.app import make_app
from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config
from gateway.registry import Registry
from gateway.webhooks.signing import new_secret
from tests.conftest import OTHER_GATEWAY_KEY, Stack
from tests.support.serve import toml_of
from tests.support.webhook_receiver import Receiver
from tests.test_config import EXAMPLE, run_cli, uncomment_examples
from tests.test_webhooks import _job, hooks_config


def _with_endpoints(stack: Stack, database: Path, **endpoints: dict[str, Any]) -> dict[str, Any]:
    raw = hooks_config(stack.upstream_url, database)
    raw["webhooks"]["endpoints"] = endpoints
    return raw


def _start(stack: Stack, raw: dict[str, Any], env: dict[str, str]) -> str:
    config = parse_config(raw, stack.registry, env)
    return stack.servers.serve(make_app(config, stack.registry)) + "/v1"


def _ids(got: list[Any]) -> list[tuple[str, str]]:
    return sorted((json.loads(d.body)["data"]["id"], json.loads(d.body)["type"]) for d in got)


def test_webhook_config_endpoints_get_the_events_of_their_keys_and_types(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything, failures = Receiver(), Receiver()
    env = {"HOOK_ALL": new_secret(), "HOOK_FAILED": new_secret()}
    raw = _with_endpoints(
        stack,
        tmp_path / "h.db",
        all={"url": stack.servers.serve(everything.app()) + "/hook", "secret_env": "HOOK_ALL"},
        failed={
            "url": stack.servers.serve(failures.app()) + "/hook",
            "secret_env": "HOOK_FAILED",
            "event_types": ["fine_tuning.job.failed"],
            "gateway_keys": ["no-default"],
        },
    )
    # No FINETUNE_GATEWAY_WEBHOOK_KEY: the config's secrets are the environment's, unsealed.
    url = _start(stack, raw, env)
    mine, theirs = stack.client(base_url=url), stack.client(OTHER_GATEWAY_KEY, base_url=url)
    my_failed, their_failed, their_done = _job(mine), _job(theirs), _job(theirs)
    stack.upstream.set_status(my_failed, "failed")
    stack.upstream.set_status(their_failed, "failed")
    stack.upstream.set_status(their_done, "succeeded")

    got = everything.wait_for(lambda got: len(got) >= 3)
    assert _ids(got) == sorted([
        (my_failed, "fine_tuning.job.failed"),
        (their_failed, "fine_tuning.job.failed"),
        (their_done, "fine_tuning.job.succeeded"),
    ])  # fmt: skip
    [only] = failures.wait_for(lambda got: len(got) >= 1)
    event = openai.OpenAI(api_key="x", webhook_secret=env["HOOK_FAILED"]).webhooks.unwrap(
        only.body, only.headers
    )
    assert event.type == "fine_tuning.job.failed" and event.data.id == their_failed
    verify = openai.OpenAI(api_key="x", webhook_secret=env["HOOK_ALL"]).webhooks
    assert {verify.unwrap(d.body, d.headers).id for d in got} == {
        d.headers["webhook-id"] for d in got
    }
    with pytest.raises(openai.InvalidWebhookSignatureError):  # each has its own secret
        verify.unwrap(only.body, only.headers)
    time.sleep(0.4)
    assert (len(everything.received), len(failures.received)) == (3, 1), "each once"

    # Nobody's through the API: not listed, not found, not editable.
    for client in (mine, theirs):
        assert list(client.webhooks.list()) == []
        with pytest.raises(openai.NotFoundError):
            client.webhooks.retrieve("config:all")
        with pytest.raises(openai.NotFoundError):
            client.webhooks.delete("config:failed")
    metrics = mine._client.get(url.removesuffix("/v1") + "/metrics").text
    assert "finetune_gateway_webhook_deliveries_total 4" in metrics
    assert "finetune_gateway_webhook_events_emitted_total 3" in metrics

    raw.pop("configs")
    path = tmp_path / "gateway.toml"
    path.write_text(toml_of(raw))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["webhook-deliveries", "--config", str(path), "--state", "delivered"]) == 0
    out = capsys.readouterr().out
    assert out.count("config:all") == 3 and out.count("config:failed") == 1
    assert env["HOOK_ALL"] not in out


def _problems(raw: dict[str, Any], env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, Registry.discover(), env)
    return refused.value.problems


def _one(**table: Any) -> dict[str, Any]:
    raw = hooks_config("http://127.0.0.1:9/v1", Path("unused.db"))
    raw["webhooks"]["endpoints"] = {"ci": {"url": "http://127.0.0.1:9/hook", **table}}
    return raw


SHORT = "whsec_" + base64.b64encode(b"x" * 23).decode()


@pytest.mark.parametrize(
    ("table", "env", "expected"),
    [
        ({"secret_env": "HOOK"}, {}, "webhooks.endpoints.ci.secret_env: environment variable "
         "'HOOK' is not set"),
        ({"secret_env": "HOOK"}, {"HOOK": SHORT}, "'HOOK' does not hold a signing secret"),
        ({"secret_env": "HOOK"}, {"HOOK": "not-a-whsec-secret-at-all-0123456789"},
         "'HOOK' does not hold a signing secret"),
        ({"secret_env": "HOOK"}, {"HOOK": "whsec_!!!!" + "A" * 40}, "does not hold"),
        ({"secret_env": "S", "event_types": ["batch.completed"]}, {"S": new_secret()},
         "webhooks.endpoints.ci.event_types: unsupported event types ['batch.completed']"),
        ({"secret_env": "S", "gateway_keys": ["nobody"]}, {"S": new_secret()},
         "webhooks.endpoints.ci.gateway_keys: no gateway key named 'nobody'"),
        ({"secret_env": "S", "url": "ftp://x.test/h"}, {"S": new_secret()},
         "webhooks.endpoints.ci.url: A webhook URL must use https or http"),
        ({"secret_env": "S", "url": "https://10.1.2.3/h"}, {"S": new_secret()},
         "webhooks.endpoints.ci.url: Webhook host '10.1.2.3' resolves to 10.1.2.3"),
        ({"secret_env": "S", "secret": "whsec_x"}, {"S": new_secret()},
         "webhooks.endpoints.ci.secret: unknown setting"),
        ({}, {}, "webhooks.endpoints.ci: Object missing required field `secret_env`"),
    ],
)  # fmt: skip
def test_webhook_config_endpoint_problems_name_the_table(
    table: dict[str, Any], env: dict[str, str], expected: str
) -> None:
    problems = _problems(_one(**table), env)
    assert any(expected in p for p in problems), problems
    for value in env.values():
        assert not any(value in p for p in problems), "a secret is never shown"


def test_webhook_config_endpoint_needs_https_unless_allow_http() -> None:
    raw = _one(secret_env="S")
    raw["webhooks"]["allow_http"] = False
    [problem] = _problems(raw, {"S": new_secret()})
    assert problem.startswith("webhooks.endpoints.ci.url: A webhook URL must use https")


def test_serve_refuses_a_config_endpoint_whose_secret_variable_is_bad(tmp_path: Path) -> None:
    raw = _one(secret_env="HOOK_SECRET")
    raw.pop("configs")
    path = tmp_path / "gateway.toml"
    path.write_text(toml_of(raw))
    bad = "whsec_" + base64.b64encode(b"s3cr3t-but-too-short").decode()

    result = run_cli("serve", "--config", str(path), "--port", "9", env={"HOOK_SECRET": bad})

    assert result.returncode != 0
    assert "webhooks.endpoints.ci.secret_env" in result.stderr
    assert "HOOK_SECRET" in result.stderr
    assert bad not in result.stdout + result.stderr
    assert bad.removeprefix("whsec_") not in result.stdout + result.stderr


def test_example_config_webhooks_block_is_valid(tmp_path: Path) -> None:
    lines, block = [], False
    for line in uncomment_examples(EXAMPLE.read_text()).splitlines():
        block = line == "# [webhooks]" or (block and line.startswith("#"))
        lines.append(line.removeprefix("#").removeprefix(" ") if block else line)
    text = "\n".join(lines)
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    names |= set(re.findall(r'"\$env"\s*=\s*"([^"]+)"', text))
    env = {name: f"value-of-{name}-0123456789" for name in names}
    env["OPS_WEBHOOK_SECRET"] = new_secret()
    path = tmp_path / "example.toml"
    path.write_text(text)

    config = load_config(path, Registry.discover(), env=env)

    [ops] = config.webhook_endpoints
    assert config.webhooks.database == "webhooks.sqlite3"
    assert (ops.name, ops.secret, ops.event_types) == (
        "ops", env["OPS_WEBHOOK_SECRET"], {"fine_tuning.job.failed"},
    )  # fmt: skip
    assert ops.gateway_keys == {"search-team"}
