"""1,000 requests of mixed kinds in flight at once through a real ``finetune-gateway serve``.

The gateway runs as its own process, in front of the fake OpenAI on a thread of this
one; the requests come from aiohttp on this test's loop, all started before any is
answered. The fake holds each upstream call for a moment, so every client connection is
open at the same time; a sampler counts the gateway's established connections from
/proc/net/tcp, which is what "held" means here. Every answer must have the status its
kind expects, the process must live, and its RSS must grow by less than a stated bound.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, Stack
from tests.support.serve import serving

REQUESTS = 1000
# Each upstream call waits this long at the fake, so the burst overlaps for certain.
UPSTREAM_HOLD = 0.2
RSS_GROWTH_BOUND_MIB = 100
BURST_BOUND_SECONDS = 60
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


def _config(upstream_url: str) -> str:
    return f"""
[server]
access_log = false

[limits]
# All the burst's uploads at once, from one key (the defaults, 32 and 8 per key, would
# answer the rest 429).
max_concurrent_uploads = {REQUESTS}
max_concurrent_uploads_per_key = {REQUESTS}

[gateway_keys.load]
key = "{GATEWAY_KEY}"
default_virtual_key = "openai-main"

[virtual_keys.openai-main]
provider = "openai"
api_key = "sk-test-upstream"
base_url = "{upstream_url}"
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class ConnectionSampler:
    """The most established TCP connections to a local port seen at once."""

    def __init__(self, port: int) -> None:
        self.local = f":{port:04X}"
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.count())

    def count(self) -> int:
        established = 0
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(name).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                # local address, remote address, state (01 = ESTABLISHED)
                if fields[1].endswith(self.local) and fields[3] == "01":
                    established += 1
        return established


Call = Callable[[aiohttp.ClientSession, str], Awaitable[int]]


def _kinds(job_id: str, file_id: str) -> dict[str, tuple[Call, int]]:
    """Each kind of request and the status it must get."""

    async def status(response: aiohttp.ClientResponse, check_envelope: bool = False) -> int:
        body = await response.read()
        if check_envelope:
            assert set((await response.json())["error"]) == {"message", "type", "param", "code"}
        elif response.content_type == "application/json":
            assert body.startswith(b"{")
        return response.status

    async def get(http: aiohttp.ClientSession, url: str) -> int:
        async with http.get(url, headers=AUTH) as response:
            return await status(response)

    async def content(http: aiohttp.ClientSession, url: str) -> int:
        async with http.get(f"{url}/files/{file_id}/content", headers=AUTH) as response:
            assert await response.read() == TRAINING_JSONL
            return response.status

    async def create(http: aiohttp.ClientSession, url: str) -> int:
        body = {"model": "gpt-4o-mini", "training_file": file_id}
        async with http.post(f"{url}/fine_tuning/jobs", json=body, headers=AUTH) as response:
            job = await response.json()
            assert job["status"] == "validating_files", job
            return response.status

    async def upload(http: aiohttp.ClientSession, url: str) -> int:
        form = aiohttp.FormData()
        form.add_field("purpose", "fine-tune")
        form.add_field("file", TRAINING_JSONL, filename="small.jsonl")
        async with http.post(f"{url}/files", data=form, headers=AUTH) as response:
            assert (await response.json())["bytes"] == len(TRAINING_JSONL)
            return response.status

    async def bad_create(http: aiohttp.ClientSession, url: str) -> int:
        body = {"model": "gpt-4o-mini", "training_file": file_id, "suffix": "x" * 65}
        async with http.post(f"{url}/fine_tuning/jobs", json=body, headers=AUTH) as response:
            return await status(response, check_envelope=True)

    async def unknown_job(http: aiohttp.ClientSession, url: str) -> int:
        async with http.get(f"{url}/fine_tuning/jobs/ftjob-missing", headers=AUTH) as response:
            return await status(response, check_envelope=True)

    async def no_key(http: aiohttp.ClientSession, url: str) -> int:
        async with http.get(f"{url}/files") as response:
            return await status(response, check_envelope=True)

    def path(suffix: str) -> Call:
        return lambda http, url: get(http, url + suffix)

    return {
        "list jobs": (path("/fine_tuning/jobs?limit=5"), 200),
        "retrieve job": (path(f"/fine_tuning/jobs/{job_id}"), 200),
        "job events": (path(f"/fine_tuning/jobs/{job_id}/events"), 200),
        "create job": (create, 200),
        "upload file": (upload, 200),
        "list files": (path("/files?limit=5"), 200),
        "retrieve file": (path(f"/files/{file_id}"), 200),
        "file content": (content, 200),
        "bad create (suffix too long)": (bad_create, 400),
        "unknown job": (unknown_job, 404),
        "no gateway key": (no_key, 401),
    }


async def _burst(url: str, kinds: dict[str, tuple[Call, int]], count: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    # No client-side cap: every request gets its own connection at once.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=BURST_BOUND_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        plan = list(itertools.islice(itertools.cycle(kinds.items()), count))

        async def one(kind: str, call: Call, expected: int) -> None:
            try:
                got = await call(http, url)
            except Exception as exc:
                outcomes[f"{kind}: {type(exc).__name__} {exc}"[:200]] += 1
                return
            outcomes[kind if got == expected else f"{kind}: got {got}, want {expected}"] += 1

        await asyncio.gather(*(one(kind, call, expected) for kind, (call, expected) in plan))
    return outcomes


async def test_load_1000_mixed_requests_at_once_no_error_bounded_memory(
    stack: Stack, tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * REQUESTS:  # both ends of every connection are in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4 * REQUESTS, hard), hard))
    file_id = stack.upstream.add_file("train.jsonl", TRAINING_JSONL)["id"]
    with serving(_config(stack.upstream_url), tmp_path) as served:
        url = served.url + "/v1"
        job_id = (
            stack.client(base_url=url)
            .fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
            .id
        )
        kinds = _kinds(job_id, file_id)
        # Warm up: every kind once, so lazy imports and first-use caches are in the baseline.
        warm = await _burst(url, kinds, len(kinds))
        assert set(warm) == set(kinds), warm
        before = _rss_kib(served.process.pid)

        stack.upstream.stall_next(UPSTREAM_HOLD, times=REQUESTS)
        started = time.monotonic()
        upstream_port = int(stack.upstream_url.rsplit(":", 1)[1].split("/")[0])
        with ConnectionSampler(served.port) as sampler, ConnectionSampler(upstream_port) as up:
            outcomes = await _burst(url, kinds, REQUESTS)
        seconds = time.monotonic() - started
        stack.upstream.stalls.clear()
        after = _rss_kib(served.process.pid)

        assert served.process.poll() is None, "the gateway died"
        assert set(outcomes) == set(kinds), outcomes  # every request got its expected status
        assert sum(outcomes.values()) == REQUESTS
        growth_mib = (after - before) / 1024
        print(
            f"{REQUESTS} requests in {seconds:.1f} s; peak connections held by the gateway: "
            f"{sampler.peak}; by it to the upstream: {up.peak}; "
            f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB"
        )
        assert seconds < BURST_BOUND_SECONDS
        assert growth_mib < RSS_GROWTH_BOUND_MIB, (before, after)
        # All of them open at the gateway at once, give or take the ones already answered
        # without an upstream call (the 400s and 401s) before the last ones connected.
        assert sampler.peak >= 0.8 * REQUESTS, sampler.peak
        with urllib.request.urlopen(f"{served.url}/health", timeout=5) as response:
            assert response.status == 200
