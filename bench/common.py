"""What every part of the suite shares: processes on loopback, RSS sampling, the machine."""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GATEWAY_KEY = "gw-bench-key-0123456789"
MB = 1_000_000


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a benchmark keeps its generated inputs and writes its page."""
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ftg-bench",
        help="where the training file is generated and kept",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "docs")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> float:
    """Seconds until ``url`` first answers 200, polling every millisecond."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited with {process.returncode}") from None
            time.sleep(0.001)
    raise SystemExit(f"{url} not healthy after {timeout}s")


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{process.args} did not listen on {port}") from None
            time.sleep(0.01)


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running(command: Sequence[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """A process for the block, its output discarded unless redirected; always stopped."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    process = subprocess.Popen(list(command), **kwargs)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        stop(process)


def gateway_command(config: Path, port: int, workers: int = 1) -> list[str]:
    return [
        str(BIN / "finetune-gateway"), "serve", "--config", str(config),
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a multi-worker gateway's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """RSS of some processes every ``interval`` seconds: the series (for plots) and peaks."""

    def __init__(self, pids: Sequence[int], interval: float = 0.05) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.series: list[tuple[float, float]] = []  # (seconds since start, MiB, summed)
        self.peak_each: dict[int, float] = dict.fromkeys(self.pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            each = {pid: rss_mib(pid) for pid in self.pids}
            for pid, mib in each.items():
                self.peak_each[pid] = max(self.peak_each[pid], mib)
            self.series.append((time.perf_counter() - self._started, sum(each.values())))
            self._stop.wait(self.interval)

    @property
    def peak(self) -> float:
        """The highest RSS of any one process, including VmHWM between samples."""
        hwm = max((status_kib(pid, "VmHWM") / 1024 for pid in self.pids), default=0.0)
        return max(hwm, *self.peak_each.values())

    def __enter__(self) -> RssSampler:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    import aiohttp

    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (uvloop not installed)"
    return {
        "CPU": f"{os.cpu_count()} x {cpu}",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "event loop": loop,
        "nginx": _version(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": _version(["wrk", "-v"]).split(" [")[0],
    }


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return (
        (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else ""
    )


def load_average() -> float:
    return os.getloadavg()[0]
