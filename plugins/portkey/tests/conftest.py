"""Fixtures: S3 (moto) and GCS (fake-gcs-server) stand-ins on loopback, one each per session.

Each test gets its own prefix in the one bucket of each, so tests never see each
other's objects and the servers need no reset (nor does this file reset anything:
moto's state is shared by every moto server in the process, bedrock's too). The
settings name every credential explicitly and the AWS environment is emptied, so
nothing on the machine (a profile, a real key, an endpoint variable) is ever used.

The helpers at the end look inside the stand-ins directly, not through the stores.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import openai
import pytest

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.kit import KIT_GATEWAY_KEY, kit_config
from gateway.testing.live import ServerThread
from gateway.testing.target import ConformanceTarget
from gateway_portkey.settings import ManagedSettings
from plugins.bedrock.tests.conftest import moto_url  # noqa: F401 - a fixture, shared
from plugins.vertex.tests.conftest import BUCKET as GCS_BUCKET
from plugins.vertex.tests.conftest import fake_gcs  # noqa: F401 - a fixture, shared
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_fake_openai

AWS_REGION = "us-east-1"
S3_BUCKET = "ftgw-managed"
AWS_ACCESS_KEY = "AKIAMANAGEDSTORE0001"
AWS_SECRET_KEY = "managed-store-secret-do-not-leak-0123456789"


# ---- S3 (moto) -------------------------------------------------------------------------
def s3_client(moto_url: str) -> Any:  # noqa: F811 - the fixture's value
    """A boto3 client for looking inside moto (the stores under test use aiobotocore)."""
    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=AWS_REGION,
        aws_access_key_id=AWS_ACCESS_KEY,
        aws_secret_access_key=AWS_SECRET_KEY,
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS setting from the machine: no variables, no config or credentials file."""
    for name in [
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE",
    ]:  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_settings(moto_url: str, aws_env: None) -> ManagedSettings:  # noqa: F811
    """A store in moto's bucket under a prefix of this test's own.

    The bucket is made for each test, not once: moto's state is per process, shared by
    every moto server in it, so another fixture's reset (bedrock's ``s3``) empties it.
    """
    client = s3_client(moto_url)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=S3_BUCKET)
    return ManagedSettings(
        store=f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex[:12]}/",
        store_aws_access_key_id=AWS_ACCESS_KEY,
        store_aws_secret_access_key=AWS_SECRET_KEY,
        store_aws_region=AWS_REGION,
        store_endpoint_url=moto_url,
    )


def s3_leftovers(moto_url: str, location: str) -> list[str]:  # noqa: F811
    """Objects and open multipart uploads under an ``s3://`` location, as moto has them."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    client = s3_client(moto_url)
    objects = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [f"object {o['Key']}" for o in objects] + [
        f"upload {u['Key']}" for u in uploads if u["Key"].startswith(prefix)
    ]


# ---- GCS (fake-gcs-server) -------------------------------------------------------------
@pytest.fixture(scope="session")
def gcs_url(fake_gcs: str) -> str:  # noqa: F811 - the fixture's value
    """fake-gcs-server as the Vertex plugin's tests run it: one per session, its bucket
    made; each store test writes under a prefix of its own."""
    return fake_gcs


@pytest.fixture
def gcs_settings(gcs_url: str, monkeypatch: pytest.MonkeyPatch) -> ManagedSettings:
    """A store in fake-gcs-server's bucket under a prefix of this test's own."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_url)
    return ManagedSettings(store=f"gs://{GCS_BUCKET}/t-{uuid.uuid4().hex[:12]}/")


def gcs_leftovers(gcs_url: str, location: str) -> list[str]:
    """Objects under a ``gs://`` location, as fake-gcs-server has them."""
    bucket, _, prefix = location.removeprefix("gs://").partition("/")
    query = urllib.parse.urlencode({"prefix": prefix})
    with urllib.request.urlopen(f"{gcs_url}/storage/v1/b/{bucket}/o?{query}", timeout=10) as r:
        items = json.load(r).get("items", [])
    return [f"object {item['name']}" for item in items]


def local_leftovers(root: Path) -> list[str]:
    """Every file under a local store's directory, ``.incoming/`` included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---- the plugin kit's conformance suite (test_managed_conformance.py) -------------------
# Managed mode on its local store, training on the project's OpenAI fake: the fastest
# target, and one that has every operation, so nothing of managed mode's own is skipped.
TARGET_KEY = "sk-managed-target-0123456789abcdef"
TARGET = "openai-target"
STAGED_WITHIN = 10.0  # seconds; staging a two-line file onto a local fake takes far less


@dataclass
class _Sibling:
    """A second gateway on the kit's own config: same records, same store, same owner."""

    url: str = ""
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self) -> openai.OpenAI:
        made = openai.OpenAI(base_url=self.url, api_key=KIT_GATEWAY_KEY, max_retries=0)
        self.clients.append(made)
        return made


def _created_upstream(fake: FakeOpenAIState, job_id: str) -> str:
    """The target's id for a managed job, once staging has created it there.

    Managed mode creates the target's job with its own job id as the Idempotency-Key.
    """
    deadline = time.monotonic() + STAGED_WITHIN
    while job_id not in fake.idempotent_jobs:
        if time.monotonic() > deadline:
            raise AssertionError(f"managed job {job_id} was not created on its target")
        time.sleep(0.02)
    return fake.idempotent_jobs[job_id]


@pytest.fixture
def conformance_target(
    gateway_servers: ServerThread, tmp_path: Path
) -> Iterator[ConformanceTarget]:
    fake = FakeOpenAIState(api_keys={TARGET_KEY})
    fake_url = gateway_servers.serve(make_fake_openai(fake)) + "/v1"
    sibling = _Sibling()

    def seed_file(content: bytes) -> str:
        # Through a gateway, as the files are the gateway's own: the kit's gateway
        # shares its records and store, so it finds the file for the same gateway key.
        client = sibling.client()
        return client.files.create(file=("train.jsonl", content), purpose="fine-tune").id

    def set_status(job_id: str, status: str) -> None:
        fake.set_status(_created_upstream(fake, job_id), status)

    def add_metrics(job_id: str, step: int, train_loss: float) -> None:
        fake.add_metrics(_created_upstream(fake, job_id), step, train_loss)

    def fail_next(status: int, headers: Mapping[str, str]) -> None:
        # Staging calls the target too: let every job finish it, so the fault meets the
        # suite's probe (a retrieve, which managed mode forwards to the target).
        for job in sibling.client().fine_tuning.jobs.list(limit=100):
            if job.status == "validating_files":
                _created_upstream(fake, job.id)
        fake.fail_next(status, headers=dict(headers))

    target = ConformanceTarget(
        virtual_key={"provider": "portkey", "data_dir": str(tmp_path / "managed")},
        seed_file=seed_file,
        set_status=set_status,
        fail_next=fail_next,
        secrets=[TARGET_KEY],
        config={
            "virtual_keys": {
                TARGET: {"provider": "openai", "api_key": TARGET_KEY, "base_url": fake_url}
            }
        },
        create_body={"portkey_options": {"x-portkey-virtual-key": TARGET}},
        # Managed mode lists jobs from its records; a target's failure there is logged and
        # the record shown, so it is a retrieve that carries the target's error back.
        fault_probe="retrieve",
        add_metrics=add_metrics,
    )
    registry = Registry.discover()
    config = parse_config(kit_config(target), registry, {})
    sibling.url = gateway_servers.serve(make_app(config, registry)) + "/v1"
    yield target
    for client in sibling.clients:
        client.close()
