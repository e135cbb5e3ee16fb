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

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    GATEWAY_KEY,
    ROOT,
    RssSampler,
    children,
    cpu_seconds,
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
    requests: int = 0
    # CPU time the serving processes spent per request answered, in µs (0: not sampled).
    cpu_us: float = 0.0


@dataclass
class OverheadRun:
    latency: dict[str, Load] = field(default_factory=dict)  # "retrieve direct", ...
    throughput: dict[str, Load] = field(default_factory=dict)  # "direct", "1 worker", ...
    idle_rss_mib: dict[str, float] = field(default_factory=dict)  # per worker
    loaded_rss_mib: dict[str, float] = field(default_factory=dict)
    startup_s: list[float] = field(default_factory=list)
    load_average: float = 0.0
    # Portkey's open-source gateway, measured in the same run (None: not installed).
    peer_startup_s: list[float] = field(default_factory=list)
    peer: str | None = None
    # Access-log lines written over requests answered, with the access log on (1.0: all).
    logged_share: float = 0.0


# The gateway key, which selects the config's virtual key (its default_virtual_key).
VIRTUAL_KEY_HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
CALLER_KEY = "sk-bench-caller-0123456789"


def header_routing(upstream: str) -> dict[str, str]:
    """What most Portkey users send: a provider, their own key, a custom host."""
    return {
        "x-portkey-provider": "openai",
        "Authorization": f"Bearer {CALLER_KEY}",
        "x-portkey-custom-host": f"{upstream}/v1",
    }


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    script: Path,
    method: str | None = None,
    headers: dict[str, str] | None = None,
) -> Load:
    env = {"PATH": "/usr/bin:/bin"}
    if method:
        env.update(BENCH_METHOD=method, BENCH_BODY=CREATE_BODY)
    sent = VIRTUAL_KEY_HEADERS if headers is None else headers
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
        "-s", str(script), *(a for k, v in sent.items() for a in ("-H", f"{k}: {v}")), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {done.stdout}\n{done.stderr}")
    found = json.loads(line[4:])
    latency = {f"p{p}": found[f"p{p}"] / 1000 for p in PERCENTILES}
    errors = found["errors"] + found["non2xx"]
    return Load(found["requests"] / found["seconds"], latency, errors, found["requests"])


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
[routing]
accept_header_credentials = true
# The custom host of the header-routing case: the nginx on this machine.
custom_host_allowlist = ["127.0.0.1/32"]
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


def example_config(workdir: Path, *, access_log: bool = True) -> Path:
    """``config.example.toml`` as shipped, but for the one entry that lets a request name
    the nginx on 127.0.0.1 as its custom host (the example lists no custom host)."""
    text = (ROOT / "config.example.toml").read_text()
    allow = 'custom_host_allowlist = ["127.0.0.1/32"]'
    text = text.replace("custom_host_allowlist = []", allow, 1)
    if not access_log:
        text = text.replace("access_log = true", "access_log = false", 1)
    if allow not in text or ("access_log = false" in text) == access_log:
        raise SystemExit("config.example.toml changed: update bench/overhead.py")
    config = workdir / ("example.toml" if access_log else "example-no-log.toml")
    config.write_text(text)
    return config


@contextmanager
def gateway(config: Path, workers: int, log: Path | None = None) -> Iterator[tuple[str, list[int]]]:
    """A gateway on a free port: its URL and the pids that serve (the workers).

    ``log``: where its stderr (the access log with it) goes, as a deployment's log file
    or collector would take it; discarded when None.
    """
    port = free_port()
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        process = stack.enter_context(
            running(gateway_command(config, port, workers), cwd=ROOT, stderr=stderr)
        )
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/health", process)
        deadline = time.monotonic() + 10
        serving = [process.pid] if workers == 1 else children(process.pid)
        while len(serving) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
            serving = children(process.pid)
        time.sleep(0.5)  # settled: imports done, first requests' allocations made
        yield url, serving


PEER_DIR = ROOT / "bench" / "portkey-peer"
PEER_SERVER = PEER_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def peer_version() -> str | None:
    """The installed ``@portkey-ai/gateway`` (``make bench`` installs the pinned one)."""
    manifest = PEER_SERVER.parent.parent / "package.json"
    if not manifest.exists() or shutil.which("node") is None:
        return None
    return str(json.loads(manifest.read_text())["version"])


def peer_command(port: int) -> list[str]:
    """Portkey's gateway as its CLI starts it (``npx @portkey-ai/gateway --port=N``), headless,
    held to 127.0.0.1 by a preload (its CLI takes no host)."""
    return [
        "node", "--require", str(PEER_DIR / "loopback.cjs"), str(PEER_SERVER),
        f"--port={port}", "--headless",
    ]  # fmt: skip


# The custom host is nginx on 127.0.0.1, which Portkey allows by default; said explicitly.
PEER_ENV = {"PATH": "/usr/bin:/bin:/usr/local/bin", "TRUSTED_CUSTOM_HOSTS": "127.0.0.1"}


@contextmanager
def peer(log: Path) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    with (
        log.open("ab") as out,
        running(peer_command(port), env=PEER_ENV, stdout=out, stderr=out) as process,
    ):
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/", process)
        time.sleep(0.5)
        yield url, [process.pid]


def startup_times(config: Path, count: int) -> list[float]:
    return _startups(lambda port: gateway_command(config, port), "/health", count)


def peer_startup_times(count: int) -> list[float]:
    return _startups(peer_command, "/", count, env=PEER_ENV)


def _startups(
    command: Callable[[int], list[str]], path: str, count: int, env: dict[str, str] | None = None
) -> list[float]:
    times = []
    for _ in range(count):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen(
            command(port), cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_healthy(f"http://127.0.0.1:{port}{path}", process)
            times.append(time.perf_counter() - started)
        finally:
            stop(process)
    return times


def best_of(
    cases: dict[str, Callable[[], Load]], repeats: int, into: dict[str, Load]
) -> dict[str, int]:
    """Each case ``repeats`` times, taking turns (ABAB...), its best run kept: cases that
    are compared with each other see the same machine, and noise only ever slows a run.
    Returns the requests each case answered over all its runs."""
    answered = dict.fromkeys(cases, 0)
    for _ in range(repeats):
        for name, measure in cases.items():
            load = measure()
            answered[name] += load.requests
            if name not in into or load.rps > into[name].rps:
                into[name] = load
    return answered


def run_once(
    *, seconds: float, startups: int, repeats: int = 2, log: Callable[[str], object] = print
) -> OverheadRun:
    result = OverheadRun()
    result.peer = peer_version()
    with tempfile.TemporaryDirectory(prefix="ftg-bench-") as tmp, nginx(Path(tmp)) as upstream:
        workdir = Path(tmp)
        script = workdir / "report.lua"
        script.write_text(WRK_SCRIPT)
        config = gateway_config(workdir, upstream)
        example = example_config(workdir)
        example_no_log = example_config(workdir, access_log=False)
        headers = header_routing(upstream)
        retrieve = f"/v1/fine_tuning/jobs/{JOB_ID}"
        create = "/v1/fine_tuning/jobs"
        result.load_average = os.getloadavg()[0]

        def load(
            url: str, pids: list[int], sent: dict[str, str] | None = None
        ) -> Callable[[], Load]:
            def measure() -> Load:
                before = sum(cpu_seconds(pid) for pid in pids)
                found = wrk(
                    url + retrieve, connections=64, seconds=seconds, script=script, headers=sent
                )
                spent = sum(cpu_seconds(pid) for pid in pids) - before
                found.cpu_us = spent / max(found.requests, 1) * 1e6
                return found

            return measure

        access_log = workdir / "access.log"
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
            # Three gateways side by side, measured in turns: the virtual key, header
            # routing with a custom host (config.example.toml's path), with its access log.
            with (
                gateway(example_no_log, 1) as (headers_url, headers_pids),
                gateway(example, 1, log=access_log) as (logged_url, logged_pids),
                RssSampler(pids) as rss,
            ):
                logged_before = _lines(access_log)
                answered = best_of(
                    {
                        "gateway, 1 worker": load(url, pids),
                        "headers + custom host, 1 worker": load(headers_url, headers_pids, headers),
                        "headers + custom host, access log on, 1 worker": load(
                            logged_url, logged_pids, headers
                        ),
                    },
                    repeats,
                    result.throughput,
                )
            result.loaded_rss_mib["1 worker"] = rss.peak
        # Stopped, so every line is out: as many as wrk saw answered (a few more, for
        # requests in flight when a wrk run ended).
        logged = answered["headers + custom host, access log on, 1 worker"]
        result.logged_share = (_lines(access_log) - logged_before) / logged
        peers: dict[str, Callable[[], Load]] = {}
        with contextlib.ExitStack() as stack:
            url, pids = stack.enter_context(gateway(config, 2))
            example_url, example_pids = stack.enter_context(
                gateway(example, 2, log=workdir / "access-2.log")
            )
            if result.peer is not None:
                peer_url, peer_pids = stack.enter_context(peer(workdir / "portkey.log"))
                peers["portkey, headers + custom host"] = load(peer_url, peer_pids, headers)
            for index, pid in enumerate(pids):
                result.idle_rss_mib[f"2 workers, worker {index}"] = rss_mib(pid)
            with RssSampler(pids) as rss:
                result.throughput["gateway, 2 workers"] = load(url, pids)()
            for index, pid in enumerate(pids):
                result.loaded_rss_mib[f"2 workers, worker {index}"] = rss.peak_each[pid]
            best_of(
                {
                    "config.example.toml, 2 workers": load(example_url, example_pids, headers),
                    **peers,
                },
                repeats,
                result.throughput,
            )
        result.startup_s = startup_times(example, startups)
        if result.peer is not None:
            result.peer_startup_s = peer_startup_times(startups)
    for name, found in {**result.latency, **result.throughput}.items():
        if found.errors:
            raise SystemExit(f"{name}: {found.errors} failed requests: figures not valid")
    log(
        "  c1 p50 ms: "
        + ", ".join(f"{k} {v.latency_ms['p50']:.3f}" for k, v in result.latency.items())
    )
    log("  c64 req/s: " + ", ".join(f"{k} {v.rps:.0f}" for k, v in result.throughput.items()))
    log(
        "  c64 CPU us/request: "
        + ", ".join(f"{k} {v.cpu_us:.0f}" for k, v in result.throughput.items() if v.cpu_us)
    )
    log(f"  access log lines / requests answered: {result.logged_share:.4f}")
    log(f"  startup median {statistics.median(result.startup_s):.3f} s")
    if result.peer_startup_s:
        log(f"  portkey startup median {statistics.median(result.peer_startup_s):.3f} s")
    return result


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as found:
        return sum(1 for line in found if b" finetune_gateway.access " in line)
