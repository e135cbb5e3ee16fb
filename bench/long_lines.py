"""Memory under long training-file lines (issue 21, finding 7): a benchmark, not a test.

    .venv/bin/python bench/long_lines.py [--size-mib 60] [--uploads 4] [--max-line-mib 64]

Starts the gateway on a local managed-mode store and sends ``--uploads`` concurrent
uploads of one single-line training file of ``--size-mib`` MiB, then prints the
gateway's RSS before and at its peak, and each upload's status. Run it with the
defaults (lines over the 32 MiB maximum are refused at once) and with
``--max-line-mib 64`` (the lines are taken, and the line budget bounds how many are held
at once). Everything is on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RssSampler, free_port, gateway_command, rss_mib, running, wait_healthy

MiB = 1024 * 1024


def config(workdir: Path, max_line: int) -> Path:
    path = workdir / "gateway.toml"
    path.write_text(
        f"""
[server]
access_log = false
[limits]
max_line_bytes = {max_line}
[providers.portkey]
data_dir = "{workdir / "managed"}"
"""
    )
    return path


def one_line(size: int) -> bytes:
    filler = "x" * (size - 100)
    messages = [{"role": "user", "content": filler}, {"role": "assistant", "content": "ok"}]
    return json.dumps({"messages": messages}).encode() + b"\n"


async def upload(url: str, body: bytes) -> int:
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", body, filename="one-line.jsonl")
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout, headers={"x-portkey-provider": "portkey"}) as http,
        http.post(f"{url}/v1/files", data=form) as response,
    ):
        await response.read()
        return response.status


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=60)
    parser.add_argument("--uploads", type=int, default=4)
    parser.add_argument("--max-line-mib", type=int, default=32)
    args = parser.parse_args()
    body = one_line(args.size_mib * MiB)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        command = gateway_command(config(Path(tmp), args.max_line_mib * MiB), port)
        with running(command) as process:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url + "/health", process)
            before = rss_mib(process.pid)
            with RssSampler([process.pid]) as sampler:
                statuses = await asyncio.gather(*(upload(url, body) for _ in range(args.uploads)))
            print(
                f"{args.uploads} x {args.size_mib} MiB single-line uploads, "
                f"max_line_bytes {args.max_line_mib} MiB: statuses {sorted(statuses)}, "
                f"RSS {before:.0f} MiB before, {sampler.peak:.0f} MiB peak "
                f"(+{sampler.peak - before:.0f} MiB)"
            )


if __name__ == "__main__":
    asyncio.run(main())
