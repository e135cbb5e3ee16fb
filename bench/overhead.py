"""What the gateway adds to a call: nginx as a near-free upstream, wrk as the load.

nginx (Debian's nginx-light, one worker, started here on 127.0.0.1) answers every
``/v1/fine_tuning/...`` path with one fixed FineTuningJob, so what a run through the
gateway costs beyond the direct run is the gateway's own work: routing, the OpenAI
provider's call over a kept-alive connection, the answer. wrk measures both in the same
run, one after the other: latency at concurrency 1 (retrieve and create), requests per
second at concurrency 64 (direct, and the gateway with 1 and with 2 workers), while the
gateway's RSS is sampled. Startup is timed from exec to the first 200 from ``/health``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    GATEWAY_KEY,
    ROOT,
    RssSampler,
    children,
    free_port,
    gateway_command,
    rss_mib,
    running,
    stop,
    wait_healthy,
    wait_port,
)

JOB_ID = "ftjob-abc123"
JOB = {
    "object": "fine_tuning.job", "id": JOB_ID, "model": "gpt-4o-mini-2024-07-18",
    "created_at": 1721764800, "finished_at": None, "fine_tuned_model": None,
    "organization_id": "org-bench", "result_files": [], "status": "queued",
    "validation_file": None, "training_file": "file-abc123",
    "hyperparameters": {"n_epochs": "auto", "batch_size": "auto",
                        "learning_rate_multiplier": "auto"},
    "trained_tokens": None, "error": None, "seed": 42, "estimated_finish": None,
    "integrations": [], "metadata": None,
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}}},
}  # fmt: skip
CREATE_BODY = '{"model":"gpt-4o-mini-2024-07-18","training_file":"file-abc123"}'
PERCENTILES = (50, 75, 90, 95, 99, 99.9)

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        location /v1/fine_tuning/ {{
            default_type application/json;
            return 200 '{job}';
        }}
    }}
}}
"""

# Prints one JSON line after the run: request count, errors and latency percentiles (µs).
WRK_SCRIPT = """
local method = os.getenv("BENCH_METHOD")
if method then
    wrk.method = method
    wrk.body = os.getenv("BENCH_BODY")
    wrk.headers["Content-Type"] = "application/json"
end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format('WRK {"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d',
        summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
        e.status))
    for _, p in ipairs({__PERCENTILES__}) do
        io.write(string.format(', "p%s": %d', p, latency:percentile(p)))
    end
    io.write("}\\n")
end
""".replace("__PERCENTILES__", ", ".join(str(p) for p in PERCENTILES))


@dataclass
class Load:
    """One wrk run: requests per second and latency percentiles in milliseconds."""

    rps: float
    latency_ms: dict[str, float]
    errors: int


@dataclass
class OverheadRun:
    latency: dict[str, Load] = field(default_factory=dict)  # "retrieve direct", ...
    throughput: dict[str, Load] = field(default_factory=dict)  # "direct", "1 worker", ...
    idle_rss_mib: dict[str, float] = field(default_factory=dict)  # per worker
    loaded_rss_mib: dict[str, float] = field(default_factory=dict)
    startup_s: list[float] = field(default_factory=list)
    load_average: float = 0.0


def wrk(
    url: str, *, connections: int, seconds: float, script: Path, method: str | None = None
) -> Load:
    env = {"PATH": "/usr/bin:/bin"}
    if method:
        env.update(BENCH_METHOD=method, BENCH_BODY=CREATE_BODY)
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(script), "-H", f"Authorization: Bearer {GATEWAY_KEY}", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {done.stdout}\n{done.stderr}")
    found = json.loads(line[4:])
    latency = {f"p{p}": found[f"p{p}"] / 1000 for p in PERCENTILES}
    return Load(found["requests"] / found["seconds"], latency, found["errors"] + found["non2xx"])


@contextmanager
def nginx(workdir: Path) -> Iterator[str]:
    port = free_port()
    conf = workdir / "nginx.conf"
    job = json.dumps(JOB, separators=(",", ":"))
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, job=job))
    with running(["nginx", "-c", str(conf), "-p", str(workdir)]) as process:
        wait_port(port, process)
        yield f"http://127.0.0.1:{port}"


def gateway_config(workdir: Path, upstream: str) -> Path:
    config = workdir / "gateway.toml"
    config.write_text(
        f"""
[server]
# Measured as deployed for throughput: one log line per request costs a write each.
access_log = false
[gateway_keys.bench]
key = "{GATEWAY_KEY}"
default_virtual_key = "nginx"
[virtual_keys.nginx]
provider = "openai"
api_key = "sk-bench-upstream"
base_url = "{upstream}/v1"
"""
    )
    return config


@contextmanager
def gateway(config: Path, workers: int) -> Iterator[tuple[str, list[int]]]:
    """A gateway on a free port: its URL and the pids that serve (the workers)."""
    port = free_port()
    with running(gateway_command(config, port, workers), cwd=ROOT) as process:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/health", process)
        deadline = time.monotonic() + 10
        serving = [process.pid] if workers == 1 else children(process.pid)
        while len(serving) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
            serving = children(process.pid)
        time.sleep(0.5)  # settled: imports done, first requests' allocations made
        yield url, serving


def startup_times(config: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen(
            gateway_command(config, port), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", process)
            times.append(time.perf_counter() - started)
        finally:
            stop(process)
    return times


def run_once(*, seconds: float, startups: int, log: object = print) -> OverheadRun:
    result = OverheadRun()
    with tempfile.TemporaryDirectory(prefix="ftg-bench-") as tmp, nginx(Path(tmp)) as upstream:
        workdir = Path(tmp)
        script = workdir / "report.lua"
        script.write_text(WRK_SCRIPT)
        config = gateway_config(workdir, upstream)
        retrieve = f"/v1/fine_tuning/jobs/{JOB_ID}"
        create = "/v1/fine_tuning/jobs"
        result.load_average = __import__("os").getloadavg()[0]
        with gateway(config, 1) as (url, pids):
            result.idle_rss_mib["1 worker"] = rss_mib(pids[0])
            for name, base in (("direct", upstream), ("gateway", url)):
                result.latency[f"retrieve {name}"] = wrk(
                    base + retrieve, connections=1, seconds=seconds, script=script
                )
                result.latency[f"create {name}"] = wrk(
                    base + create, connections=1, seconds=seconds, script=script, method="POST"
                )
            result.throughput["direct"] = wrk(
                upstream + retrieve, connections=64, seconds=seconds, script=script
            )
            with RssSampler(pids) as rss:
                result.throughput["gateway, 1 worker"] = wrk(
                    url + retrieve, connections=64, seconds=seconds, script=script
                )
            result.loaded_rss_mib["1 worker"] = rss.peak
        with gateway(config, 2) as (url, pids):
            for index, pid in enumerate(pids):
                result.idle_rss_mib[f"2 workers, worker {index}"] = rss_mib(pid)
            with RssSampler(pids) as rss:
                result.throughput["gateway, 2 workers"] = wrk(
                    url + retrieve, connections=64, seconds=seconds, script=script
                )
            for index, pid in enumerate(pids):
                result.loaded_rss_mib[f"2 workers, worker {index}"] = rss.peak_each[pid]
        result.startup_s = startup_times(config, startups)
    for name, load in {**result.latency, **result.throughput}.items():
        if load.errors:
            raise SystemExit(f"{name}: {load.errors} failed requests: figures not valid")
    log(
        "  c1 p50 ms: "
        + ", ".join(f"{k} {v.latency_ms['p50']:.3f}" for k, v in result.latency.items())
    )
    log("  c64 req/s: " + ", ".join(f"{k} {v.rps:.0f}" for k, v in result.throughput.items()))
    log(f"  startup median {statistics.median(result.startup_s):.3f} s")
    return result
