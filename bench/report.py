"""docs/benchmarks.md from the suite's results: the machine, the commands, the table, plots."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sections
from overhead import PERCENTILES, OverheadRun
from uploads import UPLOAD_NOTES, Upload

MIB_TO_MB = 1.048576


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None

    def cells(self) -> str:
        verdict = {True: "met", False: "**missed**", None: ""}[self.met]
        return f"| {self.figure} | {self.value} | {self.target} | {verdict} |"


def median_of(runs: Sequence[OverheadRun], pick: Callable[[OverheadRun], float]) -> float:
    return statistics.median(pick(run) for run in runs)


def overhead_rows(runs: Sequence[OverheadRun]) -> list[Row]:
    rows: list[Row] = []
    for call in ("retrieve", "create"):
        direct = median_of(runs, lambda r, c=call: r.latency[f"{c} direct"].latency_ms["p50"])
        through = median_of(runs, lambda r, c=call: r.latency[f"{c} gateway"].latency_ms["p50"])
        added = median_of(
            runs,
            lambda r, c=call: (
                r.latency[f"{c} gateway"].latency_ms["p50"]
                - r.latency[f"{c} direct"].latency_ms["p50"]
            ),
        )
        p99 = {
            where: median_of(
                runs, lambda r, c=call, w=where: r.latency[f"{c} {w}"].latency_ms["p99"]
            )
            for where in ("direct", "gateway")
        }
        rows += [
            Row(f"{call}, c=1: p50 direct / through the gateway",
                f"{direct:.3f} / {through:.3f} ms"),
            Row(f"{call}, c=1: p99 direct / through the gateway",
                f"{p99['direct']:.3f} / {p99['gateway']:.3f} ms"),
            Row(f"{call}, c=1: added p50 (gateway - direct, same run)", f"{added:.3f} ms",
                "<= 0.3 ms", added <= 0.3),
        ]  # fmt: skip
    direct = median_of(runs, lambda r: r.throughput["direct"].rps)
    rows.append(Row("retrieve, c=64: req/s direct to nginx", f"{direct:,.0f}"))
    for workers in ("1 worker", "2 workers"):
        rps = median_of(runs, lambda r, w=workers: r.throughput[f"gateway, {w}"].rps)
        share = median_of(
            runs,
            lambda r, w=workers: r.throughput[f"gateway, {w}"].rps / r.throughput["direct"].rps,
        )
        target, met = ("", None) if workers == "1 worker" else (">= 12% of direct", share >= 0.12)
        rows.append(
            Row(f"retrieve, c=64: req/s through the gateway, {workers}",
                f"{rps:,.0f} ({share:.1%} of direct)", target, met)
        )  # fmt: skip
    rows += routing_rows(runs)
    idle = median_of(runs, lambda r: max(r.idle_rss_mib.values()) * MIB_TO_MB)
    loaded = median_of(runs, lambda r: max(r.loaded_rss_mib.values()) * MIB_TO_MB)
    startup = statistics.median(s for run in runs for s in run.startup_s)
    peer_startups = [s for run in runs for s in run.peer_startup_s]
    rows += [
        Row("RSS idle, largest worker", f"{idle:.0f} MB", "<= 60 MB per worker", idle <= 60),
        Row("RSS under the c=64 load, largest worker", f"{loaded:.0f} MB"),
        Row("startup: exec to first 200 from /health (config.example.toml)",
            f"{startup:.3f} s", "<= 0.3 s", startup <= 0.3),
    ]  # fmt: skip
    if peer_startups:
        peer = statistics.median(peer_startups)
        rows.append(
            Row(f"startup of {_peer_name(runs)}: exec to first 200 from /",
                f"{peer:.3f} s (ours {startup / peer:.2f}x its)", "ours no slower",
                startup <= peer)
        )  # fmt: skip
    return rows


HEADERS = "headers + custom host, 1 worker"
LOGGED = "headers + custom host, access log on, 1 worker"
EXAMPLE_2 = "config.example.toml, 2 workers"
PEER = "portkey, headers + custom host"


def _peer_name(runs: Sequence[OverheadRun]) -> str:
    return f"Portkey's gateway {runs[0].peer}" if runs and runs[0].peer else "Portkey's gateway"


def routing_rows(runs: Sequence[OverheadRun]) -> list[Row]:
    """Header routing (what most Portkey users send), the access log's cost, the peer."""
    if not runs or HEADERS not in runs[0].throughput:
        return []
    vk = median_of(runs, lambda r: r.throughput["gateway, 1 worker"].rps)
    headers = median_of(runs, lambda r: r.throughput[HEADERS].rps)
    logged = median_of(runs, lambda r: r.throughput[LOGGED].rps)
    of_vk = median_of(
        runs, lambda r: r.throughput[HEADERS].rps / r.throughput["gateway, 1 worker"].rps
    )
    log_cost = median_of(runs, lambda r: 1 - r.throughput[LOGGED].rps / r.throughput[HEADERS].rps)
    share = median_of(runs, lambda r: r.logged_share)
    example = median_of(runs, lambda r: r.throughput[EXAMPLE_2].rps)

    def cpu(name: str) -> str:
        """The serving processes' CPU per request (robust where req/s is noisy)."""
        found = [run.throughput[name].cpu_us for run in runs if run.throughput[name].cpu_us]
        return f"; {statistics.median(found):.0f} µs CPU/request" if found else ""

    rows = [
        Row("retrieve, c=64: req/s, virtual key (gateway key), 1 worker, best of turns",
            f"{vk:,.0f}{cpu('gateway, 1 worker')}"),
        Row("retrieve, c=64: req/s, x-portkey-provider + Authorization + custom host, "
            "1 worker, access log off",
            f"{headers:,.0f} ({of_vk:.1%} of the virtual key's{cpu(HEADERS)})",
            ">= 90% of the virtual key's", of_vk >= 0.9),
        Row("... the same with the access log on (to a file)",
            f"{logged:,.0f} (costs {log_cost:.1%}{cpu(LOGGED)})", "log costs <= 5%",
            log_cost <= 0.05),
        Row("... access-log lines written per request answered", f"{share:.4f}",
            ">= 1 (every line)", share >= 1),
        Row("retrieve, c=64: req/s, config.example.toml path (headers, custom host, "
            "access log on), 2 workers", f"{example:,.0f}{cpu(EXAMPLE_2)}"),
    ]  # fmt: skip
    if all(PEER in run.throughput for run in runs):
        peer = median_of(runs, lambda r: r.throughput[PEER].rps)
        times = median_of(runs, lambda r: r.throughput[EXAMPLE_2].rps / r.throughput[PEER].rps)
        rows += [
            Row(f"retrieve, c=64: req/s, {_peer_name(runs)} (one node process), same headers",
                f"{peer:,.0f} (ours with 2 workers: {times:.2f}x{cpu(PEER)})",
                "ours >= 3x", times >= 3),
        ]  # fmt: skip
    else:
        rows.append(Row("Portkey's gateway", "not installed: not measured"))
    return rows


# The Bedrock upload's own target (issue 16): its CPU, as its stand-in store (moto) is slow.
BEDROCK_GATEWAY_BOUND = 120


def upload_rows(uploads: Sequence[Upload]) -> list[Row]:
    rows = []
    for upload in uploads:
        peak = upload.peak_rss_mib * MIB_TO_MB
        bound = upload.gateway_bound_mb_per_s
        target, met = (
            (f">= {BEDROCK_GATEWAY_BOUND} MB/s", bound >= BEDROCK_GATEWAY_BOUND)
            if "Bedrock" in upload.target
            else ("", None)
        )
        rows += [
            Row(f"1 GB upload with conversion, {upload.target}: throughput",
                f"{upload.mb_per_s:.0f} MB/s ({upload.seconds:.1f} s)", ">= 150 MB/s",
                upload.mb_per_s >= 150),
            Row("... gateway-bound (size / gateway CPU seconds)",
                f"{bound:.0f} MB/s ({upload.gateway_cpu_s:.1f} s CPU)", target, met),
            Row("... peak RSS of the gateway", f"{peak:.0f} MB", "<= 100 MB", peak <= 100),
        ]  # fmt: skip
    return rows


def upload_section(
    uploads: Sequence[Upload],
    *,
    command: str,
    load: float,
    before: Sequence[Upload] = (),
    before_label: str = "earlier run",
    notes: Sequence[str] = (),
) -> str:
    """The ``uploads`` section of docs/benchmarks.md: the figures beside their targets,
    and beside an earlier run's figures for the same targets when given."""
    lines = [
        "## Uploads (`bench/uploads.py`)",
        "",
        f"    {command}",
        "",
        f"Load average (1 min) at the start: {load:.2f}. The notes above on uploads apply.",
        "",
    ]
    earlier = {upload.target: upload_rows([upload]) for upload in before}
    if earlier:
        lines += [
            f"| figure | before ({before_label}) | measured | target | |",
            "|---|---|---|---|---|",
        ]
    else:
        lines += ["| figure | measured | target | |", "|---|---|---|---|"]
    for upload in uploads:
        was = [row.value for row in earlier.get(upload.target, [])]
        for index, row in enumerate(upload_rows([upload])):
            if not earlier:
                lines.append(row.cells())
                continue
            verdict = {True: "met", False: "**missed**", None: ""}[row.met]
            old = was[index] if index < len(was) else ""
            lines.append(f"| {row.figure} | {old} | {row.value} | {row.target} | {verdict} |")
    lines += ["", *(f"- {note}" for note in notes), "", "![upload memory](bench-upload-memory.png)"]
    return "\n".join(lines)


def plot_latency(runs: Sequence[OverheadRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name in ("retrieve direct", "retrieve gateway", "create direct", "create gateway"):
        values = [
            median_of(runs, lambda r, n=name, p=p: r.latency[n].latency_ms[f"p{p}"])
            for p in PERCENTILES
        ]
        style = "--" if "direct" in name else "-"
        axes.plot([str(p) for p in PERCENTILES], values, style, marker="o", label=name)
    axes.set_yscale("log")
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_title("Latency at concurrency 1: direct to nginx and through the gateway")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_upload_memory(uploads: Sequence[Upload], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for upload in uploads:
        seconds = [t for t, _ in upload.rss_series]
        megabytes = [mib * MIB_TO_MB for _, mib in upload.rss_series]
        axes.plot(seconds, megabytes, label=upload.target)
    axes.axhline(100, color="grey", linestyle=":", label="target: 100 MB")
    axes.set_xlabel("seconds since the upload started")
    axes.set_ylabel("gateway RSS (MB)")
    axes.set_title("Gateway memory during a 1 GB upload with conversion")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(
    out: Path,
    *,
    machine: dict[str, str],
    command: str,
    runs: Sequence[OverheadRun],
    uploads: Sequence[Upload],
    notes: Sequence[str],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Upload figures have their own section (``upload_section``), which bench/uploads.py
    # also writes when run alone.
    rows = overhead_rows(runs)
    images = []
    if runs:
        plot_latency(runs, out / "bench-latency.png")
        images.append("![latency percentiles](bench-latency.png)")
    if uploads:
        plot_upload_memory(uploads, out / "bench-upload-memory.png")
    loads = ", ".join(f"{run.load_average:.2f}" for run in runs)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand. Figures to read,",
        "not tests: nothing here passes or fails a build.",
        "",
        "## Machine",
        "",
        *(f"- {name}: {value}" for name, value in machine.items()),
        f"- load average (1 min) at the start of each run: {loads or 'n/a'} (other work on",
        "  the machine, when there is any, shows in the tails and in the upload times)",
        "",
        "Load generator (wrk), upstream (nginx, one worker) and gateway share these cores.",
        "",
        "## Command",
        "",
        f"    {command}",
        "",
        f"Latency and throughput: median of {len(runs)} runs; each wrk run lasts the same",
        "time, direct and through the gateway back to back, so the two compare.",
        "",
        "## Figures",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        *(row.cells() for row in rows),
        "",
        *(f"- {note}" for note in notes),
        "",
        *images,
        "",
    ]
    page = out / "benchmarks.md"
    # Figures of the benchmarks that run on their own (bench/dashboard.py, ...) stay.
    owned = sections.kept(page)
    page.write_text("\n".join(lines) + "".join("\n" + section for section in owned))
    if uploads:
        load = runs[0].load_average if runs else 0.0
        body = upload_section(uploads, command=command, load=load, notes=UPLOAD_NOTES)
        sections.replace(page, "uploads", body)
