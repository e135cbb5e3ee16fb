"""Webhooks under a burst (issue 19, part 3): a benchmark, not a timed test.

    .venv/bin/python bench/webhooks.py [--jobs 1000] [--poll-seconds 5] [--timeout 300] [--no-write]

Starts ``finetune-gateway serve`` (its own process, one worker, SQLite) in front of five
kinds of jobs, every fake in this process on 127.0.0.1: the OpenAI fake, Azure OpenAI's
(v1), Bedrock on moto, Vertex on its fake Google and fake-gcs-server, and managed mode
staging onto the OpenAI fake. It creates ``--jobs`` jobs through the gateway, lets the
watcher see them running, then ends them all at once upstream and waits until a local
receiver has every event. Each event must arrive exactly once (one ``webhook-id`` per
job, verified with the openai SDK's ``webhooks.unwrap``); the figures are the time from
each job's end upstream to its delivery (p50, p99) and the gateway's peak RSS (VmHWM).
Writes its section of docs/benchmarks.md (``--no-write`` leaves the page alone). Bounded
by ``--timeout`` and stops by itself; on a shortfall it says so and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
import sections
from aiohttp import web
from common import cpu_seconds, free_port, load_average, machine, status_kib, wait_healthy

from gateway.registry import Registry
from gateway.testing.live import ServerThread
from gateway.webhooks.signing import new_secret
from plugins.azure.tests.conftest import AZURE_KEY
from plugins.azure.tests.fakes.azure_v1 import FakeAzureV1State
from plugins.azure.tests.fakes.azure_v1 import make_app as make_azure_app
from plugins.bedrock.tests.conftest import bedrock_config, fresh_moto, moto_job, moto_running
from plugins.portkey.tests.managed import CHAT, GEMINI, NOVA, jsonl, target, wait_for
from plugins.vertex.tests.conftest import fake_gcs_running, new_rsa_key, vertex_stack
from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, base_config
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_openai_app
from tests.support.serve import toml_of

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
# Shares of the jobs: (virtual key, fraction); managed mode takes what is left.
SHARES = (("openai-main", 0.25), ("azure-v1", 0.20), ("bedrock-main", 0.20), ("vertex-main", 0.15))


class Receiver:
    """Records each delivery with the time it arrived; answers 200."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            self.got.append((time.time(), dict(request.headers), body))
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app


def config(args: argparse.Namespace, urls: dict[str, str], vertex_key: dict[str, Any],
           receiver: str, tmp: Path) -> dict[str, Any]:  # fmt: skip
    raw = base_config(urls["openai"])
    raw.pop("configs")
    raw["server"] = {"access_log": False}  # a log line per poll is not what is measured
    keys = raw["virtual_keys"]
    keys["azure-v1"] = {"provider": "azure-openai", "resource_name": "contoso",
                        "custom_host": urls["azure"], "api_key": AZURE_KEY}  # fmt: skip
    keys["bedrock-main"] = bedrock_config(urls["moto"])["virtual_keys"]["bedrock-main"]
    keys["vertex-main"] = vertex_key
    raw["providers"] = {"portkey": {"data_dir": str(tmp / "managed")}}
    raw["webhooks"] = {
        # Left out, the database is managed mode's (data_dir/gateway.sqlite3).
        "allow_http": True,
        "poll_seconds": args.poll_seconds,
        "tick_seconds": 0.2,
        "endpoints": {"bench": {"url": receiver, "secret_env": SECRET_ENV}},
    }
    return raw


def create_jobs(root: str, count: int, fakes: dict[str, Any]) -> dict[str, list[str]]:
    """``count`` jobs through the gateway, spread by SHARES; their ids by virtual key."""
    made: dict[str, list[str]] = {}
    data = jsonl(CHAT)
    left = count
    for virtual_key, share in SHARES:
        n = int(count * share)
        left -= n
        client = openai.OpenAI(base_url=root + "/v1", api_key=GATEWAY_KEY, max_retries=0,
                               default_headers={"x-portkey-virtual-key": virtual_key})  # fmt: skip
        if virtual_key == "openai-main":
            file_id = fakes["openai"].add_file("train.jsonl", data, "fine-tune")["id"]
        elif virtual_key == "azure-v1":
            file_id = fakes["azure"].service.add_file("train.jsonl", data, "fine-tune")["id"]
        else:  # staged to S3 on moto, or to GCS, by the gateway
            file_id = client.files.create(file=("train.jsonl", data), purpose="fine-tune").id
        model = {"bedrock-main": NOVA, "vertex-main": GEMINI}.get(virtual_key, "gpt-4o-mini")
        made[virtual_key] = [
            client.fine_tuning.jobs.create(model=model, training_file=file_id).id for _ in range(n)
        ]
        client.close()
    managed = openai.OpenAI(base_url=root + "/v1", api_key=GATEWAY_KEY, max_retries=0,
                            default_headers={"x-portkey-provider": "portkey"})  # fmt: skip
    file_id = managed.files.create(file=("train.jsonl", data), purpose="fine-tune").id
    made["managed"] = [
        managed.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=file_id, extra_body=target("openai-main")
        ).id
        for _ in range(left)
    ]
    managed.close()
    # Managed jobs stage in the background: each is an OpenAI fake job once staged.
    expected = len(made["openai-main"]) + left
    staged = wait_for(lambda: len(fakes["openai"].jobs), lambda n: n == expected, timeout=300)
    if staged != expected:
        raise SystemExit(f"only {staged - len(made['openai-main'])} of {left} managed jobs staged")
    return made


def end_all(made: dict[str, list[str]], fakes: dict[str, Any]) -> dict[str, float]:
    """Every job ended upstream, back to back: the time each one's end was set."""
    ended: dict[str, float] = {}
    direct = set(made["openai-main"])
    for job_id in made["openai-main"]:
        fakes["openai"].set_status(job_id, "succeeded")
        ended[job_id] = time.time()
    for job_id in made["azure-v1"]:
        fakes["azure"].service.set_status(job_id, "succeeded")
        ended[job_id] = time.time()
    for job_id in made["bedrock-main"]:
        moto_job(job_id).status = "Completed"
        ended[job_id] = time.time()
    for job_id in made["vertex-main"]:
        fakes["vertex"].google.set_state(fakes["vertex"].native(job_id), "JOB_STATE_SUCCEEDED")
        ended[job_id] = time.time()
    # A managed job ends when the job it staged does; which upstream job is whose is not
    # looked up, so each is timed from the last of them to end (earlier by < the burst).
    for job_id in [j for j in fakes["openai"].jobs if j not in direct]:
        fakes["openai"].set_status(job_id, "succeeded")
    for job_id in made["managed"]:
        ended[job_id] = time.time()
    return ended


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="for every delivery")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    secret = new_secret()
    receiver = Receiver()
    servers = ServerThread()
    with tempfile.TemporaryDirectory() as tmp_name, moto_running() as moto_url, \
            fake_gcs_running() as gcs_url:  # fmt: skip
        tmp = Path(tmp_name)
        fresh_moto(moto_url)
        vertex = vertex_stack(servers, gcs_url, new_rsa_key(), Registry.discover(), tmp)
        fakes: dict[str, Any] = {
            "openai": FakeOpenAIState(api_keys={UPSTREAM_KEY}),
            "azure": FakeAzureV1State(api_keys={AZURE_KEY}),
            "vertex": vertex,
        }
        urls = {
            "openai": servers.serve(make_openai_app(fakes["openai"])) + "/v1",
            "azure": servers.serve(make_azure_app(fakes["azure"])),
            "moto": moto_url,
        }
        hook_url = servers.serve(receiver.app()) + "/hook"
        path = tmp / "gateway.toml"
        raw = config(args, urls, vertex.vertex_key(), hook_url, tmp)
        path.write_text(toml_of(raw))
        port = free_port()
        env = {**os.environ, SECRET_ENV: secret}
        log = (tmp / "gateway.log").open("wb")
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port",
             str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            root = f"http://127.0.0.1:{port}"
            wait_healthy(root + "/health", gateway)  # type: ignore[arg-type]
            load = load_average()
            started = time.perf_counter()
            made = create_jobs(root, args.jobs, fakes)
            print(f"created {args.jobs} jobs through the gateway in "
                  f"{time.perf_counter() - started:.1f} s: "
                  + ", ".join(f"{k} {len(v)}" for k, v in made.items()))  # fmt: skip
            time.sleep(args.poll_seconds * 2)  # every job seen running at least once
            if receiver.got:
                raise SystemExit(f"{len(receiver.got)} deliveries before any job ended")
            rss_before = status_kib(gateway.pid, "VmRSS") / 1024
            cpu_before = cpu_seconds(gateway.pid)
            ended = end_all(made, fakes)
            burst = max(ended.values()) - min(ended.values())
            done = wait_for(lambda: len(receiver.got), lambda n: n >= args.jobs,
                            timeout=args.timeout)  # fmt: skip
            last = max((at for at, _, _ in receiver.got), default=time.time())
            time.sleep(args.poll_seconds * 2)  # time for a second copy, were one coming
            cpu = cpu_seconds(gateway.pid) - cpu_before
            peak = status_kib(gateway.pid, "VmHWM") / 1024
            with urllib.request.urlopen(root + "/metrics") as answer:
                metrics = answer.read().decode()
        finally:
            gateway.terminate()
            gateway.wait(30)
            log.close()
            servers.close()
        delivered = [m for m in metrics.splitlines() if m.startswith(
            "finetune_gateway_webhook_deliveries_total ")]  # fmt: skip
        if done < args.jobs:
            print((tmp / "gateway.log").read_text()[-4000:], file=sys.stderr)
            print(f"only {done} of {args.jobs} events delivered in {args.timeout} s")
            return 1
    verify = openai.OpenAI(api_key="unused", webhook_secret=secret).webhooks
    latency: list[float] = []
    per_job: Counter[str] = Counter()
    ids: Counter[str] = Counter()
    for at, headers, body in receiver.got:
        event = verify.unwrap(body, headers)
        job_id = json.loads(body)["data"]["id"]
        per_job[job_id] += 1
        ids[event.id] += 1
        latency.append(at - ended[job_id])
    once = set(per_job) == set(ended) and max(per_job.values()) == 1 and max(ids.values()) == 1
    figures = {
        "jobs": args.jobs,
        "split": ", ".join(f"{k} {len(v)}" for k, v in made.items()),
        "deliveries": len(receiver.got),
        "once": once,
        "p50": percentile(latency, 0.5),
        "p99": percentile(latency, 0.99),
        "max": max(latency),
        "all_in": last - min(ended.values()),
        "burst": burst,
        "cpu": cpu,
        "rss_before": rss_before,
        "peak": peak,
        "metrics": delivered[0].split()[-1] if delivered else "?",
        "load": load,
        "poll": args.poll_seconds,
    }
    print(json.dumps(figures, indent=1))
    if not once:
        print("NOT exactly once: " + str([j for j, n in per_job.items() if n != 1][:10]))
        return 1
    if not args.no_write:
        sections.replace(args.out, "webhooks", report(figures))
        print(f"wrote the webhooks section of {args.out}")
    return 0


def report(f: dict[str, Any]) -> str:
    found = machine()
    return "\n".join(
        [
            "## Webhooks (`bench/webhooks.py`)",
            "",
            f"Run on its own (`.venv/bin/python bench/webhooks.py`) on {found['CPU']}, "
            f"load average {f['load']:.2f} at the start (the machine is shared). One "
            "`finetune-gateway serve` process (one worker; the webhooks' records in managed "
            "mode's SQLite file), every fake in the benchmark's process on 127.0.0.1: "
            f"{f['jobs']} jobs ({f['split']}) created through the gateway, then all ended "
            f"upstream at once (in {f['burst'] * 1000:.0f} ms), one config endpoint "
            f"receiving. `poll_seconds = {f['poll']:g}`: a job's end is seen on its next "
            "look, so about half of that is waiting by design.",
            "",
            "| figure | measured |",
            "|---|---|",
            f"| events delivered (receiver / `deliveries_total`) | {f['deliveries']} / "
            f"{f['metrics']}, {'each exactly once' if f['once'] else '**not exactly once**'} "
            "(one `webhook-id` per job, every signature verified with `webhooks.unwrap`) |",
            f"| job's end upstream to its delivery, p50 | {f['p50']:.2f} s |",
            f"| job's end upstream to its delivery, p99 | {f['p99']:.2f} s "
            f"(max {f['max']:.2f} s) |",
            f"| first end to last delivery | {f['all_in']:.2f} s |",
            f"| gateway CPU from the burst to the last delivery (+ {2 * f['poll']:g} s idle) "
            f"| {f['cpu']:.1f} s |",
            f"| gateway RSS before the burst / peak (VmHWM, whole run) | "
            f"{f['rss_before']:.0f} / {f['peak']:.0f} MiB |",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
