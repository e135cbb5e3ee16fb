"""The benchmark suite: every figure in one run, written to docs/benchmarks.md.

    make bench                  # installs nginx-light, wrk and the bench extra, then:
    .venv/bin/python bench/run.py [--runs 3] [--seconds 5] [--size-mb 1024] [--quick]

Parts (each in its own module): ``overhead`` (nginx + wrk: latency at concurrency 1,
requests per second at concurrency 64 with 1 and 2 workers, RSS idle and under load,
startup time), ``uploads`` (a 1 GB JSONL through the gateway with conversion, to S3 on
moto, to GCS on fake-gcs-server and on a protocol sink, and through managed mode when
installed), ``report`` (the table and the plots). Everything runs on 127.0.0.1, every
load is bounded in time, and every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead
import report
import uploads
from common import add_output_arguments, load_average, machine

NOTES = [
    "Latency and throughput: nginx answers every `/v1/fine_tuning/...` path with one "
    "fixed job, so the gateway's cost is the difference between the two runs. The virtual-key "
    "gateway runs with `access_log = false`.",
    "Header routing: `x-portkey-provider: openai`, `Authorization: Bearer sk-...` and "
    "`x-portkey-custom-host: http://127.0.0.1:<nginx>/v1`, on `config.example.toml` as "
    'shipped but for `custom_host_allowlist = ["127.0.0.1/32"]` (the example lists no '
    "custom host), with its access log on (stderr to a file, as a deployment's collector "
    "takes it) and off. The 1-worker virtual-key and header cases run side by side and "
    "take turns, as do the 2-worker example path and the peer; each keeps its best turn.",
    "Access log on: serve formats each line without a LogRecord or Formatter and writes "
    "them in batches (`gateway.middleware.AccessLogWriter`); a line costs about 3.5 µs "
    "timed alone, and py-spy puts the whole of `_log_access` at about 4% of a loaded "
    "worker's samples, its writes at 0.1%. Against the same gateway with the log off, "
    "taking turns, the measured cost moves between about 0% and 15% from run to run here "
    "(two identical gateways measured so differ by up to 10% in one turn), so the figure "
    "is the median of the runs' ratios; the CPU per request beside it is steadier.",
    "Header routing coming out ahead of the virtual-key case is within this machine's "
    "noise: with the routing cache both resolve their target in a few µs (py-spy: the "
    "gateway-key check is 1% of the virtual-key case's samples).",
    "Peer: Portkey's open-source gateway (`@portkey-ai/gateway`, pinned in "
    "`bench/portkey-peer`), started as its CLI does (`build/start-server.js --port=N "
    "--headless`) on 127.0.0.1 (a preload binds it there: its CLI takes no host), output "
    "to a file, routed with the same headers to the same nginx. It is one node process "
    "(its CLI has no workers option); its startup is timed to the first 200 from `/`.",
    "Added p50 is the median over runs of (gateway p50 - direct p50) within one run.",
    "RSS is in MB (10^6 bytes), sampled from /proc every 50 ms plus the kernel's "
    "high-water mark. A multi-worker gateway's workers share the parent's pages until "
    "written, so their RSS overstates the memory they add together.",
    "Uploads: the file's size over wall time, client (aiohttp, streaming from disk) and "
    "store sharing the cores with the gateway. moto and fake-gcs-server are slow "
    "stand-ins (fake-gcs-server copies the whole object on every chunk), so "
    "`gateway-bound` gives the size over the gateway's own CPU seconds, and the GCS "
    "protocol sink (which checks every chunk and keeps nothing) shows the rate when the "
    "store keeps up.",
    "`/metrics` is per worker process: a scrape reaches one worker "
    "(`finetune_gateway_worker_info` names it).",
    "Startup (exec to the first 200 from `/health`, on config.example.toml) is mostly "
    "importing aiohttp and the plugins with it (about 0.2 s here); aiohttp's verifying TLS "
    "context loads the system CA store at import (about 0.02-0.035 s), the one that "
    "verifies nothing no longer does, and the collector stays off until serve freezes "
    "what it loaded. Workers forked by `--workers` skip all of it.",
    "Upload memory: the Bedrock plugin's AWS SDK (aiobotocore with its S3 and Bedrock "
    "clients) holds about 30 MB before any data; S3 parts are 5 MiB, two in flight (one "
    "each for a Bedrock upload's original and its conversation copy). "
    "Vertex writes two objects (the original and the Gemini copy) in 8 MiB GCS chunks, "
    "one in flight per object while the next fills, which is what keeps a distant store "
    "busy.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="overhead runs (median reported)")
    parser.add_argument("--seconds", type=float, default=5, help="length of each wrk run")
    parser.add_argument("--startups", type=int, default=7, help="startups timed per run")
    parser.add_argument("--size-mb", type=int, default=1024, help="upload size (MB)")
    parser.add_argument("--skip-uploads", action="store_true")
    parser.add_argument(
        "--skip-fake-gcs", action="store_true", help="leave out fake-gcs-server (minutes per GB)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run of 2 s, 100 MB uploads: a smoke test"
    )
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.startups, args.size_mb = 1, 2, 3, 100
    args.workdir.mkdir(parents=True, exist_ok=True)
    if load_average() > 0.5:
        print(f"note: load average {load_average():.2f}: figures will be noisy")

    started = time.perf_counter()
    runs = []
    for index in range(args.runs):
        print(f"overhead run {index + 1}/{args.runs} (load {load_average():.2f})", flush=True)
        runs.append(overhead.run_once(seconds=args.seconds, startups=args.startups))
    found_uploads = []
    if not args.skip_uploads:
        print(f"uploads of {args.size_mb} MB", flush=True)
        found_uploads = uploads.run_all(args.size_mb, args.workdir, args.skip_fake_gcs)
    notes = list(NOTES)
    if runs and runs[0].peer is None:
        notes.append(
            "Portkey's gateway: not measured here (not installed: `make bench` installs it "
            "with npm into bench/portkey-peer/node_modules; node and npm are needed)."
        )
    if not any(u.target.startswith("managed") for u in found_uploads):
        notes.append("Managed mode: not measured here (managed mode not installed).")
    command = "make bench" + (
        f"  # bench/run.py {shlex.join(sys.argv[1:])}" if sys.argv[1:] else ""
    )
    report.write(
        args.out, machine=machine(), command=command, runs=runs, uploads=found_uploads,
        notes=notes,
    )  # fmt: skip
    raw = {
        "overhead": [asdict(run) for run in runs],
        "uploads": [{**asdict(u), "rss_series": None} for u in found_uploads],
    }
    (args.out / "benchmarks.json").write_text(json.dumps(raw, indent=1) + "\n")
    for row in report.overhead_rows(runs) + report.upload_rows(found_uploads):
        print(f"{row.figure:<66} {row.value:<32} {row.target}")
    print(f"wrote {args.out / 'benchmarks.md'} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
