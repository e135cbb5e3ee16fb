"""Bedrock staging at scale: upload throughput, conversion throughput, the gateway's peak RSS.

    .venv/bin/python bench/bedrock_upload.py [--size-mb 1024] [--workdir /tmp/ftg-bench]

Generates an OpenAI-format chat JSONL of ``--size-mb`` (kept in ``--workdir`` and reused
on later runs), starts moto (S3 and Bedrock) and ``finetune-gateway serve`` as separate
processes on 127.0.0.1, then through the official OpenAI SDK: uploads the file (streamed
into an S3 multipart upload, every line checked) and creates an Amazon Nova job, which
converts the file to bedrock-conversation-2024 and stages it in S3. Reports MB/s for
both and the gateway process's peak RSS (VmHWM). A figure to read, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import openai

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GATEWAY_KEY = "gw-bench-key-0123456789"
BUCKET = "ftg-bench-staging"
MB = 1_000_000
WORDS = [
    *("order", "refund", "shipping", "account", "password", "invoice", "delivery", "tracking"),
    *("warranty", "return", "the", "a", "to", "of", "and", "in", "is", "for", "on", "with"),
    *("your", "you", "we", "can", "please", "thank", "help", "item", "days", "support"),
    *("customer", "payment", "card", "address", "update", "cancel", "subscription", "plan"),
]


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def generate(path: Path, size_mb: int) -> None:
    """Chat lines like a support-bot dataset: a system prompt, 1-3 exchanges, ~1.5 KB each."""
    if path.exists() and path.stat().st_size >= size_mb * MB:
        return
    rng = random.Random(7)
    target = size_mb * MB
    written = 0
    with path.open("wb") as out:
        while written < target:
            batch = []
            for _ in range(1000):
                messages = [{"role": "system", "content": sentence(rng, 25)}]
                for _ in range(rng.choice((1, 1, 2, 3))):
                    messages.append({"role": "user", "content": sentence(rng, rng.randint(10, 60))})
                    messages.append(
                        {"role": "assistant", "content": sentence(rng, rng.randint(40, 200))}
                    )
                batch.append(json.dumps({"messages": messages}))
            data = ("\n".join(batch) + "\n").encode()
            out.write(data)
            written += len(data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited with {process.returncode}") from None
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer in {timeout}s")


class RssSampler:
    """The process's resident set, sampled from /proc every 20 ms, with its high-water mark."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kb = max(self.peak_kb, self.status("VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def config_toml(moto_url: str) -> str:
    return f"""
[server]
access_log = false

[gateway_keys.bench]
key = "{GATEWAY_KEY}"
default_virtual_key = "bedrock"

[virtual_keys.bedrock]
provider = "bedrock"
aws_access_key_id = "AKIABENCH000000000"
aws_secret_access_key = "bench-secret"
aws_region = "us-east-1"
aws_s3_bucket = "{BUCKET}"
aws_role_arn = "arn:aws:iam::123456789012:role/bench"
endpoint_url = "{moto_url}"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ftg-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"train-{args.size_mb}mb.jsonl"
    started = time.perf_counter()
    generate(data, args.size_mb)
    size = data.stat().st_size
    print(
        f"training file: {data} ({size / MB:.0f} MB, made in {time.perf_counter() - started:.0f} s)"
    )

    processes: list[subprocess.Popen[bytes]] = []
    try:
        moto_port = free_port()
        moto = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(moto)
        moto_url = f"http://127.0.0.1:{moto_port}"
        wait_for(f"{moto_url}/moto-api/", moto)
        boto3.client(
            "s3",
            endpoint_url=moto_url,
            region_name="us-east-1",
            aws_access_key_id="a",
            aws_secret_access_key="b",
        ).create_bucket(Bucket=BUCKET)

        config = args.workdir / "bench.toml"
        config.write_text(config_toml(moto_url))
        port = free_port()
        gateway = subprocess.Popen(
            [str(BIN / "finetune-gateway"), "serve", "--config", str(config), "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(gateway)
        wait_for(f"http://127.0.0.1:{port}/health", gateway)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=1800
        )
        with RssSampler(gateway.pid) as rss:
            idle_kb = rss.status("VmRSS")
            cpu = [rss.cpu_seconds()]
            with data.open("rb") as handle:
                started = time.perf_counter()
                uploaded = client.files.create(file=(data.name, handle), purpose="fine-tune")
                upload_s = time.perf_counter() - started
            cpu.append(rss.cpu_seconds())
            assert uploaded.bytes == size, (uploaded.bytes, size)
            started = time.perf_counter()
            job = client.fine_tuning.jobs.create(
                model="amazon.nova-micro-v1:0:128k", training_file=uploaded.id, suffix="bench"
            )
            convert_s = time.perf_counter() - started
            cpu.append(rss.cpu_seconds())
            hwm_kb = rss.status("VmHWM")
        client.close()
        print(f"job: {job.id} ({job.status})")
        # Gateway CPU seconds next to wall time: how much of the time is the gateway's own.
        upload_cpu, convert_cpu = cpu[1] - cpu[0], cpu[2] - cpu[1]
        print(
            f"upload:     {size / MB / upload_s:7.1f} MB/s  ({upload_s:.1f} s, "
            f"gateway CPU {upload_cpu:.1f} s, lines checked)"
        )
        print(
            f"conversion: {size / MB / convert_s:7.1f} MB/s  ({convert_s:.1f} s, "
            f"gateway CPU {convert_cpu:.1f} s, S3 -> Nova -> S3)"
        )
        peak_kb = max(hwm_kb, rss.peak_kb)
        print(f"gateway RSS: idle {idle_kb / 1024:.0f} MiB, peak {peak_kb / 1024:.0f} MiB")
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
