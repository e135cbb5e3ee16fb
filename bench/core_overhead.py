"""What the gateway costs: startup time, idle RSS, and the latency it adds to a retrieve.

    .venv/bin/python bench/core_overhead.py [--requests 2000] [--startups 5]

Runs the fake OpenAI upstream from the tests and ``finetune-gateway serve`` as separate
processes on 127.0.0.1, then measures (a) the time from starting ``serve`` to its first
200 from ``/health``, (b) the server's RSS when idle, (c) retrieve latency at
concurrency 1, direct to the fake and through the gateway, in the same run.
A figure to read, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_KEY = "sk-bench-upstream"
GATEWAY_KEY = "gw-bench-key-0123456789"

FAKE_SERVER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from aiohttp import web
from tests.fakes.openai_upstream import FakeOpenAIState, make_app
web.run_app(make_app(FakeOpenAIState(api_keys={{{UPSTREAM_KEY!r}}})),
            host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> float:
    """Seconds until ``url`` first answers 200, polling every millisecond."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"server exited with {process.returncode}") from None
            time.sleep(0.001)
    raise SystemExit(f"{url} not healthy after {timeout}s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_gateway(config: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_healthy(f"http://127.0.0.1:{port}/health", process)
    return process, time.perf_counter() - started


async def latencies(url: str, headers: dict[str, str], count: int) -> list[float]:
    timings: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(count + 50):
            started = time.perf_counter()
            async with http.get(url) as response:
                await response.read()
                assert response.status == 200, response.status
            if i >= 50:  # the first requests warm connections and caches
                timings.append(time.perf_counter() - started)
    return timings


async def seed_job(upstream: str) -> str:
    headers = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        form = aiohttp.FormData()
        form.add_field("purpose", "fine-tune")
        form.add_field("file", b'{"messages": []}\n', filename="t.jsonl")
        async with http.post(f"{upstream}/v1/files", data=form) as response:
            file_id = (await response.json())["id"]
        body = {"model": "gpt-4o-mini", "training_file": file_id}
        async with http.post(f"{upstream}/v1/fine_tuning/jobs", json=body) as response:
            return str((await response.json())["id"])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--startups", type=int, default=5)
    args = parser.parse_args()

    upstream_port, gateway_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    fake = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(upstream_port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", upstream_port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("fake upstream did not start") from None
                time.sleep(0.01)
        job_id = asyncio.run(seed_job(upstream_url))
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "bench.toml"
            config.write_text(
                "[server]\naccess_log = false\n"
                f'[virtual_keys.main]\nprovider = "openai"\napi_key = "{UPSTREAM_KEY}"\n'
                f'base_url = "{upstream_url}/v1"\n'
                f'[gateway_keys.bench]\nkey = "{GATEWAY_KEY}"\ndefault_virtual_key = "main"\n'
            )
            startups = []
            for _ in range(args.startups):
                process, seconds = start_gateway(config, gateway_port)
                startups.append(seconds)
                process.terminate()
                process.wait()
            gateway, _ = start_gateway(config, gateway_port)
            try:
                time.sleep(0.5)
                idle_rss = rss_mib(gateway.pid)
                path = f"/v1/fine_tuning/jobs/{job_id}"
                direct = asyncio.run(
                    latencies(
                        upstream_url + path,
                        {"Authorization": f"Bearer {UPSTREAM_KEY}"},
                        args.requests,
                    )
                )
                through = asyncio.run(
                    latencies(
                        f"http://127.0.0.1:{gateway_port}{path}",
                        {"Authorization": f"Bearer {GATEWAY_KEY}"},
                        args.requests,
                    )
                )
                loaded_rss = rss_mib(gateway.pid)
            finally:
                gateway.terminate()
                gateway.wait()
    finally:
        fake.terminate()
        fake.wait()

    ms = 1000
    report = {
        "startup_to_first_health_200_s": {
            "median": round(statistics.median(startups), 3),
            "max": round(max(startups), 3),
        },
        "idle_rss_mib": round(idle_rss, 1),
        "rss_after_latency_run_mib": round(loaded_rss, 1),
        "retrieve_direct_ms": {
            "p50": round(statistics.median(direct) * ms, 3),
            "p99": round(percentile(direct, 99) * ms, 3),
        },
        "retrieve_through_gateway_ms": {
            "p50": round(statistics.median(through) * ms, 3),
            "p99": round(percentile(through, 99) * ms, 3),
        },
        "retrieve_p50_added_ms": round(
            (statistics.median(through) - statistics.median(direct)) * ms, 3
        ),
        "requests_each": args.requests,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
