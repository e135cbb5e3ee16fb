"""Where the webhooks' records go: ``[webhooks] database``, or, when the table leaves it
out, managed mode's own database (one database for both, as several replicas need)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.app import make_app
from gateway.config import ConfigError, parse_config
from gateway.registry import Registry
from gateway.webhooks.signing import new_secret
from tests.conftest import TRAINING_JSONL, Stack, base_config
from tests.support.webhook_receiver import Receiver
from tests.test_webhooks import _job, hooks_config

DSN = "postgresql://hooks:pa55word-in-the-dsn@127.0.0.1:5432/records"


def _database(webhooks: dict[str, Any] | None, **managed: dict[str, Any]) -> str | None:
    raw = base_config("http://127.0.0.1:9/v1")
    raw.pop("configs")
    if webhooks is not None:
        raw["webhooks"] = webhooks
    for where, table in managed.items():
        if where == "providers":
            raw["providers"] = {"portkey": table}
        else:
            raw["virtual_keys"][where] = {"provider": "portkey", **table}
    return parse_config(raw, Registry.discover(), {}).webhooks.database


@pytest.mark.parametrize(
    ("webhooks", "managed", "expected"),
    [
        ({}, {"managed": {"data_dir": "/srv/ftgw"}}, "/srv/ftgw/gateway.sqlite3"),
        ({}, {"providers": {"database": DSN}}, DSN),
        ({}, {"providers": {"database": "/srv/r.db"}, "m": {"database": "/srv/r.db"}},
         "/srv/r.db"),
        ({"database": "/srv/hooks.db"}, {"managed": {"data_dir": "/srv/ftgw"}}, "/srv/hooks.db"),
        # No [webhooks] table: webhooks stay off, managed mode or not.
        (None, {"providers": {"database": DSN}}, None),
        ({}, {}, None),
    ],
)  # fmt: skip
def test_webhooks_database_defaults_to_managed_modes(
    webhooks: dict[str, Any] | None, managed: dict[str, Any], expected: str | None
) -> None:
    assert _database(webhooks, **managed) == expected


def test_webhooks_database_left_out_with_two_managed_databases_is_a_problem() -> None:
    with pytest.raises(ConfigError) as refused:
        _database({}, providers={"database": DSN}, managed={"data_dir": "/srv/other"})
    [problem] = refused.value.problems
    assert problem.startswith("webhooks.database: not set")
    assert "providers.portkey" in problem and "virtual_keys.managed" in problem
    assert "pa55word" not in problem, "a DSN's password is never shown"


def test_webhooks_records_share_managed_modes_sqlite_file(stack: Stack, tmp_path: Path) -> None:
    receiver = Receiver()
    secret = new_secret()
    raw = hooks_config(stack.upstream_url, tmp_path / "unused.db")
    del raw["webhooks"]["database"]
    raw["webhooks"]["endpoints"] = {
        "ops": {"url": stack.servers.serve(receiver.app()) + "/hook", "secret_env": "HOOK"}
    }
    raw["virtual_keys"]["managed"] = {"provider": "portkey", "data_dir": str(tmp_path / "data")}
    config = parse_config(raw, stack.registry, {"HOOK": secret})
    url = stack.servers.serve(make_app(config, stack.registry)) + "/v1"
    client = stack.client(base_url=url)
    managed = stack.client(base_url=url, default_headers={"x-portkey-virtual-key": "managed"})
    uploaded = managed.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")

    job_id = _job(client)
    stack.upstream.set_status(job_id, "succeeded")
    [sent] = receiver.wait_for(lambda got: len(got) >= 1)

    assert json.loads(sent.body)["data"]["id"] == job_id
    with sqlite3.connect(tmp_path / "data" / "gateway.sqlite3") as db:
        assert db.execute("SELECT id FROM files").fetchall() == [(uploaded.id,)]
        assert db.execute("SELECT owner FROM webhook_jobs WHERE job_id = ?", (job_id,)).fetchall()
        [(body,)] = db.execute("SELECT body FROM webhook_events").fetchall()
    assert json.loads(body)["id"] == sent.headers["webhook-id"]
    assert not (tmp_path / "unused.db").exists()
