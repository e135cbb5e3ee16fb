"""A gateway in managed mode with two targets: Bedrock on moto and Vertex on its stand-ins.

Built on the Bedrock and Vertex plugins' own test fixtures (moto; fake-gcs-server and
the fake Google), so the targets are exactly what those plugins are tested against.
Tests talk to it through the official OpenAI SDK with ``x-portkey-provider: portkey``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from gateway.app import make_app
from gateway.config import parse_config
from gateway.testing.live import ServerThread
from plugins.bedrock.tests.conftest import (
    ACCESS_KEY,
    BUCKET,
    PREFIX,
    REGION,
    SECRET_KEY,
    bedrock_config,
)
from plugins.vertex.tests.conftest import VertexStack
from tests.conftest import GATEWAY_KEY, OTHER_GATEWAY_KEY

NOVA = "amazon.nova-micro-v1:0:128k"
GEMINI = "gemini-2.5-flash"
MANAGED = {"x-portkey-provider": "portkey"}

CHAT = [
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    },
]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def managed_config(
    moto_url: str,
    vertex: VertexStack,
    data_dir: Path,
    database: str | None = None,
    store: str = "local",
) -> dict[str, Any]:
    raw = vertex.config()
    bedrock_main = bedrock_config(moto_url)["virtual_keys"]["bedrock-main"]
    # A bucket it may stage to that does not exist: how a staging failure is provoked.
    bedrock_main["allowed_s3_uris"] = [*bedrock_main["allowed_s3_uris"], "s3://no-such-bucket/"]
    raw["virtual_keys"]["bedrock-main"] = bedrock_main
    portkey: dict[str, Any] = {"data_dir": str(data_dir)}
    if database is not None:
        portkey["database"] = database
    if store == "s3":  # the Bedrock bucket on moto, under a prefix of its own
        portkey.update(
            store=f"s3://{BUCKET}/managed-store/",
            store_endpoint_url=moto_url,
            store_aws_region=REGION,
            store_aws_access_key_id=ACCESS_KEY,
            store_aws_secret_access_key=SECRET_KEY,
        )
    raw["providers"] = {"portkey": portkey}
    return raw


def target(virtual_key: str, **options: str) -> dict[str, Any]:
    """``extra_body`` naming a job's target, as PortkeyFinetuneJob does."""
    return {"portkey_options": {"x-portkey-virtual-key": virtual_key, **options}}


@dataclass
class Managed:
    vertex: VertexStack
    moto_url: str
    s3: Any
    raw_config: dict[str, Any]
    gateway_url: str = ""
    clients: list[openai.OpenAI] = field(default_factory=list)
    # The gateways' own server thread: stopping it stops them and nothing else.
    servers: ServerThread = field(default_factory=ServerThread)

    def client(self, api_key: str = GATEWAY_KEY, *, base_url: str | None = None) -> openai.OpenAI:
        made = openai.OpenAI(
            base_url=base_url or self.gateway_url,
            api_key=api_key,
            max_retries=0,
            default_headers=MANAGED,
        )
        self.clients.append(made)
        return made

    def other_client(self) -> openai.OpenAI:
        return self.client(OTHER_GATEWAY_KEY)

    def start_gateway(self) -> str:
        """Another gateway on the same config (and so the same records and store)."""
        config = parse_config(copy.deepcopy(self.raw_config), self.vertex.registry, {})
        return self.servers.serve(make_app(config, self.vertex.registry)) + "/v1"

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.servers.close()

    def upload(self, client: openai.OpenAI, data: bytes = b"", name: str = "train.jsonl") -> str:
        return client.files.create(file=(name, data or jsonl(CHAT)), purpose="fine-tune").id

    def s3_keys(self) -> list[str]:
        answer = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
        return sorted(item["Key"] for item in answer.get("Contents", []))


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], *, timeout: float = 30.0) -> Any:
    """Poll ``read`` until ``done`` holds (staging runs in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def staged(job: Any) -> bool:
    return job.status != "validating_files"
