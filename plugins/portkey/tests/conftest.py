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
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from gateway_portkey.settings import ManagedSettings
from plugins.bedrock.tests.conftest import moto_url  # noqa: F401 - a fixture, shared
from plugins.vertex.tests.conftest import BUCKET as GCS_BUCKET
from plugins.vertex.tests.conftest import fake_gcs  # noqa: F401 - a fixture, shared

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
