"""Large uploads through the gateway: MB/s, the gateway's CPU time, and its memory.

A 1 GB OpenAI-format chat JSONL (generated once, kept in the work directory) goes
through ``POST /v1/files`` of a gateway started here, streamed from disk by aiohttp:
- Bedrock on moto: the upload checks every line into an S3 multipart upload, then the
  job create converts the file (S3 -> Amazon Nova's format -> S3);
- Vertex on fake-gcs-server, and on the protocol sink: one pass checks, converts to
  Gemini's format and writes both copies with GCS resumable uploads;
- managed mode (``x-portkey-provider: portkey``), when its plugin is installed.
Throughput is the file's size over wall time; ``gateway-bound`` is its size over the
gateway's CPU seconds: the rate if the store and the client cost nothing.

``bench/run.py`` runs these with the rest of the suite; alone, they write only their
section of docs/benchmarks.md (``uploads``), optionally beside an earlier run's figures:

    .venv/bin/python bench/uploads.py [--only bedrock] [--size-mb 1024] [--before OLD.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import stores
from common import (
    GATEWAY_KEY,
    MB,
    ROOT,
    RssSampler,
    add_output_arguments,
    cpu_seconds,
    free_port,
    gateway_command,
    load_average,
    rss_mib,
    running,
    wait_healthy,
)

WORDS = (
    "order", "refund", "shipping", "account", "password", "invoice", "delivery", "tracking",
    "warranty", "return", "the", "a", "to", "of", "and", "in", "is", "for", "on", "with", "your",
    "you", "we", "can", "please", "thank", "help", "item", "days", "support", "customer",
    "payment", "card", "address", "update", "cancel", "subscription", "plan",
)  # fmt: skip
NOVA = "amazon.nova-micro-v1:0:128k"
UPLOAD_NOTES = [
    "Bedrock: the upload checks each line and, in the same pass, writes the file's copy in "
    "Nova's conversation format (`gateway_bedrock/staging.py`), which the job create then "
    "finds staged; other formats still convert at job create. Plain-text chat lines are "
    "decoded once with their texts kept as JSON literals (`fastlines.py`). Parts carry S3's "
    "CRC32, which S3 checks, instead of a SHA-256 of every payload.",
    "Where the Bedrock run's gateway CPU goes (py-spy at 40 Hz, `--nonblocking`, share of "
    "samples, main at 1a8c769 -> now): line check and conversion 32% -> 40%, event loop and "
    "sockets 26% -> 29%, rechunking into parts 12% -> 9%, line splitting 8% -> 8%, payload "
    "SHA-256 11% -> CRC32 7%, other S3 client work 9% -> 5%; 810 -> 339 samples in all.",
    "Bedrock's peak RSS: about 80 MB is there before any data (the idle gateway, 48 MB, "
    "then aiobotocore and its S3 client); the two writers (original and copy) hold one "
    "5 MiB part in flight each and one filling, about 21 MB, so the target holds by little.",
]


@dataclass
class Upload:
    target: str
    megabytes: float
    seconds: float
    gateway_cpu_s: float
    idle_rss_mib: float
    peak_rss_mib: float
    rss_series: list[tuple[float, float]] = field(default_factory=list)
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds

    @property
    def gateway_bound_mb_per_s(self) -> float:
        return self.megabytes / self.gateway_cpu_s


def generate(path: Path, size_mb: int) -> None:
    """Support-bot chat lines: a system prompt, 1-3 exchanges, about 1.5 KB each."""
    if path.exists() and path.stat().st_size >= size_mb * MB:
        return
    rng = random.Random(7)
    written = 0
    with path.open("wb") as out:
        while written < size_mb * MB:
            batch = []
            for _ in range(1000):
                messages = [{"role": "system", "content": _sentence(rng, 25)}]
                for _ in range(rng.choice((1, 1, 2, 3))):
                    messages.append(
                        {"role": "user", "content": _sentence(rng, rng.randint(10, 60))}
                    )
                    messages.append(
                        {"role": "assistant", "content": _sentence(rng, rng.randint(40, 200))}
                    )
                batch.append(json.dumps({"messages": messages}))
            data = ("\n".join(batch) + "\n").encode()
            out.write(data)
            written += len(data)


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


async def _post_file(url: str, path: Path, headers: dict[str, str]) -> tuple[dict[str, str], float]:
    async def body() -> AsyncIterator[bytes]:
        with path.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, 1024 * 1024):
                yield chunk

    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", body(), filename="train.jsonl", content_type="application/jsonl")
    timeout = aiohttp.ClientTimeout(total=None, sock_read=3600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = time.perf_counter()
        async with http.post(f"{url}/v1/files", data=form, headers=headers) as response:
            answer = await response.json()
    if response.status != 200:
        raise SystemExit(f"upload failed: {response.status} {answer}")
    return answer, time.perf_counter() - started


async def _create_job(url: str, file_id: str) -> float:
    body = {"model": NOVA, "training_file": file_id, "suffix": "bench"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=3600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        async with http.post(f"{url}/v1/fine_tuning/jobs", json=body, headers=headers) as answer:
            if answer.status != 200:
                raise SystemExit(f"job create failed: {answer.status} {await answer.text()}")
    return time.perf_counter() - started


@contextmanager
def _gateway(workdir: Path, target_key: str) -> Iterator[tuple[str, int]]:
    config = workdir / "uploads.toml"
    # A target's virtual key is every request's default; managed mode names none.
    default = 'default_virtual_key = "target"' if "[virtual_keys.target]" in target_key else ""
    config.write_text(
        f"""
[server]
access_log = false
[upstream]
# fake-gcs-server takes minutes for the last chunks of a large file.
read_timeout = 3600.0
[gateway_keys.bench]
key = "{GATEWAY_KEY}"
{default}
{target_key}
"""
    )
    port = free_port()
    with running(gateway_command(config, port), cwd=ROOT) as process:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/health", process)
        time.sleep(0.5)
        yield url, process.pid


def _measure(
    target: str, url: str, pid: int, data: Path, *, then_convert: bool = False,
    headers: dict[str, str] | None = None, note: str = "",
) -> Upload:  # fmt: skip
    sent = {"Authorization": f"Bearer {GATEWAY_KEY}", **(headers or {})}
    idle = rss_mib(pid)
    cpu_before = cpu_seconds(pid)
    with RssSampler([pid], interval=0.1) as rss:
        answer, seconds = asyncio.run(_post_file(url, data, sent))
        if then_convert:
            seconds += asyncio.run(_create_job(url, answer["id"]))
    size = data.stat().st_size
    assert int(answer["bytes"]) == size, (answer, size)
    return Upload(
        target, size / MB, seconds, cpu_seconds(pid) - cpu_before, idle, rss.peak,
        rss.series, note,
    )  # fmt: skip


def bedrock_moto(data: Path, workdir: Path) -> Upload:
    with stores.moto() as moto_url, _gateway(workdir, stores.bedrock_key(moto_url)) as (url, pid):
        return _measure(
            "S3 on moto (Bedrock)", url, pid, data, then_convert=True,
            note="upload checks every line; job create converts to Nova's format",
        )  # fmt: skip


def vertex(store: str, data: Path, workdir: Path) -> Upload:
    make_store = stores.fake_gcs if store == "fake-gcs-server" else stores.sink
    where = store if store == "fake-gcs-server" else "the protocol sink"
    with stores.fake_google(workdir) as key_file, make_store() as gcs_url:
        key = stores.vertex_key(gcs_url, key_file)
        with _gateway(workdir, key) as (url, pid):
            return _measure(
                f"GCS on {where} (Vertex)", url, pid, data,
                note="one pass: checks, converts to Gemini's format, writes both copies",
            )  # fmt: skip


def managed(data: Path, workdir: Path) -> Upload | None:
    """The same file into managed mode's own store; None when managed mode is absent."""
    if not any(line.split()[:1] == ["portkey"] for line in stores.installed_plugins().splitlines()):
        print("  managed mode not installed: skipped")
        return None
    # Records and bytes in this run's scratch directory, not where the suite was started.
    where = f'[providers.portkey]\ndata_dir = "{workdir / "managed-data"}"'
    with _gateway(workdir, where) as (url, pid):
        return _measure(
            "managed mode (local store)", url, pid, data,
            headers={"x-portkey-provider": "portkey"},
            note="the gateway's own store (a local directory)",
        )  # fmt: skip


STEPS: dict[str, Callable[[Path, Path], Upload | None]] = {
    "bedrock": lambda d, w: bedrock_moto(d, w),
    "vertex-sink": lambda d, w: vertex("sink", d, w),
    "vertex-fake-gcs": lambda d, w: vertex("fake-gcs-server", d, w),
    "managed": lambda d, w: managed(d, w),
}


def run_all(
    size_mb: int, workdir: Path, skip_fake_gcs: bool, only: list[str] | None = None
) -> list[Upload]:
    data = workdir / f"train-{size_mb}mb.jsonl"
    started = time.perf_counter()
    generate(data, size_mb)
    print(f"  training file {data} ({data.stat().st_size / MB:.0f} MB, "
          f"{time.perf_counter() - started:.0f} s)")  # fmt: skip
    names = only or [n for n in STEPS if not (skip_fake_gcs and n == "vertex-fake-gcs")]
    results = []
    for name in names:
        print(f"  {name} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="ftg-upload-", dir=workdir) as tmp:
            found = STEPS[name](data, Path(tmp))
        if found is not None:
            print(
                f"    {found.mb_per_s:.0f} MB/s, gateway CPU {found.gateway_cpu_s:.1f} s "
                f"({found.gateway_bound_mb_per_s:.0f} MB/s gateway-bound), "
                f"peak RSS {found.peak_rss_mib:.0f} MiB"
            )
            results.append(found)
    return results


def main() -> int:
    import report
    import sections

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="upload size (MB)")
    parser.add_argument("--only", action="append", choices=list(STEPS), help="repeatable")
    parser.add_argument("--skip-fake-gcs", action="store_true", help="minutes per GB")
    parser.add_argument(
        "--before", type=Path, help="an earlier run's uploads JSON (written to --out), shown beside"
    )
    parser.add_argument("--before-label", default="earlier run", help="names that run")
    add_output_arguments(parser)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load = load_average()
    found = run_all(args.size_mb, args.workdir, args.skip_fake_gcs, args.only)
    raw = [{**asdict(u), "rss_series": None} for u in found]
    (args.out / "benchmarks-uploads.json").write_text(json.dumps(raw, indent=1) + "\n")
    before = []
    if args.before is not None:
        before = [Upload(**{**u, "rss_series": []}) for u in json.loads(args.before.read_text())]
    report.plot_upload_memory(found, args.out / "bench-upload-memory.png")
    command = f".venv/bin/python bench/uploads.py {shlex.join(sys.argv[1:])}".rstrip()
    body = report.upload_section(
        found, command=command, load=load, before=before, before_label=args.before_label,
        notes=UPLOAD_NOTES,
    )  # fmt: skip
    sections.replace(args.out / "benchmarks.md", "uploads", body)
    for row in report.upload_rows(found):
        print(f"{row.figure:<66} {row.value:<32} {row.target}")
    print(f"wrote the uploads section of {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
