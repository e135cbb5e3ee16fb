"""Managed mode in real ``finetune-gateway serve`` processes: the README's default run, and
two processes sharing the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from plugins.bedrock.tests.conftest import (  # noqa: F401 - fixtures
    ACCESS_KEY,
    BUCKET,
    PREFIX,
    REGION,
    ROLE_ARN,
    SECRET_KEY,
    moto_job,
    moto_url,
    s3,
)
from plugins.portkey.tests.managed import CHAT, MANAGED, NOVA, jsonl, target, wait_for
from plugins.portkey.tests.test_records import postgres_dsn, postgres_schema
from tests.support.serve import free_port

ROOT = Path(__file__).resolve().parents[3]
KEY = "gw-managed-serve-key-0001"


class Served:
    """One ``finetune-gateway serve`` process, stopped with SIGTERM at the end."""

    def __init__(self, config: Path, cwd: Path) -> None:
        self.port = free_port()
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config),
             "--port", str(self.port)],
            cwd=cwd, env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return
            except OSError:
                assert self.process.poll() is None, self.stop()
                assert time.monotonic() < deadline, "serve did not answer /health"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=api_key, max_retries=0, default_headers=MANAGED
        )

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=20)
        return stderr


def test_managed_default_run_needs_no_database_server_or_cloud(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    served = Served(tmp_path / "config.toml", tmp_path)
    try:
        client = served.client("any-key")  # the example config has no gateway keys
        data = jsonl(CHAT)
        file_id = client.files.create(file=("t.jsonl", data), purpose="fine-tune").id
        assert [f.id for f in client.files.list()] == [file_id]
        assert client.files.content(file_id).read() == data
        assert client.files.delete(file_id).deleted
        assert client.files.list().data == []
        assert (tmp_path / "finetune-gateway-data" / "gateway.sqlite3").is_file()
    finally:
        stderr = served.stop()
    assert served.process.returncode == 0 and "Traceback" not in stderr, stderr


@pytest.fixture
def postgres() -> Iterator[str]:
    schema = f"ftgw_{uuid.uuid4().hex[:12]}"
    asyncio.run(postgres_schema(schema))
    yield postgres_dsn(schema)
    asyncio.run(postgres_schema(schema, drop=True))


def bedrock_target_toml(endpoint: str) -> str:
    """The gateway key and the Bedrock virtual key (on moto at ``endpoint``), as TOML."""
    return f"""
[gateway_keys.team]
key = "{KEY}"

[virtual_keys.bedrock-main]
provider = "bedrock"
aws_access_key_id = "{ACCESS_KEY}"
aws_secret_access_key = "{SECRET_KEY}"
aws_region = "{REGION}"
aws_s3_bucket = "{BUCKET}"
aws_s3_prefix = "{PREFIX}"
aws_role_arn = "{ROLE_ARN}"
endpoint_url = "{endpoint}"
"""


def shared_config(path: Path, moto: str, database: str) -> Path:
    """Both processes: one PostgreSQL, one object store (S3 on moto), one Bedrock target."""
    path.write_text(
        bedrock_target_toml(moto)
        + f"""
[providers.portkey]
database = "{database}"
store = "s3://{BUCKET}/managed-store/"
store_endpoint_url = "{moto}"
store_aws_region = "{REGION}"
store_aws_access_key_id = "{ACCESS_KEY}"
store_aws_secret_access_key = "{SECRET_KEY}"
"""
    )
    return path


def test_managed_two_processes_share_one_postgresql_and_one_store(
    moto_url: str,  # noqa: F811
    s3: Any,  # noqa: F811
    postgres: str,
    tmp_path: Path,
) -> None:
    config = shared_config(tmp_path / "config.toml", moto_url, postgres)
    first, second = Served(config, tmp_path), Served(config, tmp_path)
    try:
        one, two = first.client(), second.client()
        file_id = one.files.create(file=("t.jsonl", jsonl(CHAT)), purpose="fine-tune").id
        assert two.files.retrieve(file_id).id == file_id
        job = one.fine_tuning.jobs.create(
            model=NOVA,
            training_file=file_id,
            metadata={"which": "first"},
            extra_body=target("bedrock-main"),
        )
        other = two.fine_tuning.jobs.create(
            model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
        )
        assert [j.id for j in two.fine_tuning.jobs.list()] == [other.id, job.id]

        def created(client: openai.OpenAI, job_id: str) -> bool:
            events = client.fine_tuning.jobs.list_events(job_id).data
            return any(e.message.startswith("Created bedrock") for e in events)

        assert wait_for(lambda: created(two, job.id), bool)
        assert wait_for(lambda: created(one, other.id), bool)
        # Both processes refresh the same job at once while it ends upstream.
        upstream_jobs = _direct(first).fine_tuning.jobs.list()
        [upstream] = [j for j in upstream_jobs if (j.metadata or {}).get("which") == "first"]
        moto_job(upstream.id).status = "Completed"
        with ThreadPoolExecutor(8) as pool:
            seen = list(
                pool.map(
                    lambda client: client.fine_tuning.jobs.retrieve(job.id).status,
                    [one, two] * 10,
                )
            )
        assert set(seen) == {"succeeded"}
        assert one.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
        # Cancelled through the process that did not create it.
        cancelled = one.fine_tuning.jobs.cancel(other.id)
        assert cancelled.status == "cancelled"
        assert two.fine_tuning.jobs.retrieve(other.id).status == "cancelled"
    finally:
        stderr = first.stop() + second.stop()
    assert "Traceback" not in stderr, stderr


def _direct(served: Served) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=served.url + "/v1",
        api_key=KEY,
        max_retries=0,
        default_headers={"x-portkey-virtual-key": "bedrock-main"},
    )
