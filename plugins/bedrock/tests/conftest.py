"""Fixtures: moto (S3 and Bedrock on one loopback endpoint) and a gateway in front of it.

One moto server serves the whole session; each test starts from an empty moto (its
reset API) with a fresh bucket. The gateway runs on a ``ServerThread`` with a config
whose default virtual key is a Bedrock key pointing at moto, so the plain OpenAI SDK
with only ``base_url`` and ``api_key`` reaches Bedrock, as a user's program would.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import openai
import pytest
import requests
from moto.bedrock.models import ModelCustomizationJob, bedrock_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer

from gateway.app import make_app
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from gateway.testing.target import ConformanceTarget
from gateway_bedrock.transform import job_name_of
from tests.conftest import GATEWAY_KEY, base_config
from tests.support.fault_proxy import FaultProxy
from tests.support.fault_proxy import make_app as make_fault_proxy

REGION = "us-east-1"
BUCKET = "ft-gateway-staging"
PREFIX = "gw/"
ROLE_ARN = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/bedrock-fine-tuning"
OTHER_ROLE_ARN = "arn:aws:iam::123456789012:role/other"
ACCESS_KEY = "AKIAGATEWAYTEST0001"
SECRET_KEY = "gateway-secret-key-do-not-leak-0123456789"


@contextlib.contextmanager
def moto_running() -> Iterator[str]:
    """moto on 127.0.0.1 (S3 and Bedrock), in this process: its URL (also for bench/)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_running() as url:
        yield url


@pytest.fixture
def s3(moto_url: str) -> Any:
    """A fresh moto with the staging bucket; a boto3 client to look inside it."""
    return fresh_moto(moto_url)


def fresh_moto(moto_url: str) -> Any:
    """moto emptied, with the staging bucket made; a boto3 client to look inside it."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=BUCKET)
    return client


def bedrock_config(moto_url: str) -> dict[str, Any]:
    raw = copy.deepcopy(base_config("http://127.0.0.1:9/v1"))
    raw["virtual_keys"]["bedrock-main"] = {
        "provider": "bedrock",
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_region": REGION,
        "aws_s3_bucket": BUCKET,
        "aws_s3_prefix": PREFIX,
        "aws_role_arn": ROLE_ARN,
        "endpoint_url": moto_url,
        # What a request may name with these credentials besides the staging prefix.
        "allowed_role_arns": [OTHER_ROLE_ARN],
        "allowed_s3_uris": [f"s3://{BUCKET}/datasets/", f"s3://{BUCKET}/results/"],
    }
    raw["gateway_keys"]["search-team"]["default_virtual_key"] = "bedrock-main"
    return raw


@dataclass
class Gateway:
    url: str
    moto_url: str
    s3: Any
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, **kwargs: Any) -> openai.OpenAI:
        made = openai.OpenAI(base_url=self.url, api_key=GATEWAY_KEY, max_retries=0, **kwargs)
        self.clients.append(made)
        return made

    def keys(self, under: str = "") -> list[str]:
        answer = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=under)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def read(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return body

    def open_multipart_uploads(self) -> list[str]:
        answer = self.s3.list_multipart_uploads(Bucket=BUCKET)
        return [upload["Key"] for upload in answer.get("Uploads", [])]


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def gateway(moto_url: str, s3: Any, registry: Registry) -> Iterator[Gateway]:
    servers = ServerThread()
    config = parse_config(bedrock_config(moto_url), registry, {})
    built = Gateway(servers.serve(make_app(config, registry)) + "/v1", moto_url, s3)
    yield built
    for client in built.clients:
        client.close()
    servers.close()


def moto_job(public_id: str) -> ModelCustomizationJob:
    """The job behind a gateway job id, in moto's backend: tests drive its lifecycle here."""
    jobs = bedrock_backends[DEFAULT_ACCOUNT_ID][REGION].model_customization_jobs
    job: ModelCustomizationJob = jobs[job_name_of(public_id)]
    return job


@pytest.fixture
def status_details(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto leaves out ``statusDetails``; answer with a job's ``status_details`` when set.

    Real Bedrock reports each step (validation, data processing, training) this way.
    """
    original = ModelCustomizationJob.to_dict

    def to_dict(self: ModelCustomizationJob) -> dict[str, Any]:
        answer: dict[str, Any] = original(self)
        details = getattr(self, "status_details", None)
        if details:
            answer["statusDetails"] = details
        return answer

    monkeypatch.setattr(ModelCustomizationJob, "to_dict", to_dict)


# The plugin kit's conformance suite (test_bedrock_conformance.py): Bedrock and S3 on
# moto, behind a fault proxy so the suite can make Bedrock fail as AWS does.
# AWS names the failure by error type (botocore reads X-Amzn-ErrorType), not by status.
AWS_ERROR_TYPES = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    409: "ConflictException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# moto's job statuses for OpenAI's; `succeeded` leaves moto's output model as the result.
MOTO_STATUS = {
    "validating_files": "InProgress",
    "queued": "InProgress",
    "running": "InProgress",
    "succeeded": "Completed",
    "failed": "Failed",
    "cancelled": "Stopped",
}
NOVA = "amazon.nova-micro-v1:0:128k"


@pytest.fixture
def conformance_target(gateway: Gateway, gateway_servers: ServerThread) -> ConformanceTarget:
    proxy = FaultProxy(target=gateway.moto_url)
    proxy.url = gateway_servers.serve(make_fault_proxy(proxy))
    virtual_key = bedrock_config(proxy.url)["virtual_keys"]["bedrock-main"]

    def seed_file(content: bytes) -> str:
        # Uploaded through the `gateway` fixture's gateway: the same bucket and prefix as
        # the kit's virtual key, so the kit's gateway finds it under the same id.
        uploaded = gateway.client().files.create(file=("train.jsonl", content), purpose="fine-tune")
        return uploaded.id

    def set_status(job_id: str, status: str) -> None:
        job = moto_job(job_id)
        job.status = MOTO_STATUS[status]
        if status == "failed":
            job.failure_message = "Training data has invalid records"

    def fail_next(status: int, headers: Mapping[str, str]) -> None:
        error_type = AWS_ERROR_TYPES.get(status, "InternalServerException")
        proxy.add(
            lambda seen: True,
            "answer",
            status=status,
            body=json.dumps({"message": f"Bedrock answered {error_type}"}).encode(),
            headers={**headers, "x-amzn-ErrorType": error_type, "Content-Type": "application/json"},
        )

    steps: dict[str, list[str]] = {}

    def add_metrics(job_id: str, step: int, train_loss: float) -> None:
        # Bedrock writes a job's per-step metrics file when the job ends (there is no
        # per-step API), so the job ends here with the steps so far in its file.
        job = moto_job(job_id)
        rows = steps.setdefault(job_id, ["step_number,epoch_number,training_loss,perplexity"])
        rows.append(f"{step},0,{train_loss},1.0")
        output = job.output_data_config["s3Uri"].removeprefix(f"s3://{BUCKET}/").rstrip("/")
        folder = f"{output}/model-customization-job-{job.job_arn.rsplit('/', 1)[-1]}/"
        key = folder + "training_artifacts/step_wise_training_metrics.csv"
        gateway.s3.put_object(Bucket=BUCKET, Key=key, Body="\n".join(rows).encode() + b"\n")
        job.status = "Completed"

    return ConformanceTarget(
        virtual_key=virtual_key,
        seed_file=seed_file,
        set_status=set_status,
        fail_next=fail_next,
        secrets=[SECRET_KEY],
        # Bedrock has no pause or resume (nor checkpoints the API lists: an empty list).
        lacks=frozenset({"pause", "resume"}),
        model=NOVA,
        add_metrics=add_metrics,
    )
