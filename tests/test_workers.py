"""``serve --workers N``: N processes on one port, stopped together, none left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prometheus import scrape, value
from tests.support.serve import free_port

ROOT = Path(__file__).resolve().parent.parent


def _serve(port: int, workers: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            "config.example.toml",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


def _worker_of(url: str) -> tuple[int, int]:
    """(worker index, pid) of the worker that answered a scrape on a new connection."""
    _, samples = scrape(url)
    [info] = [s for s in samples if s.name == "finetune_gateway_worker_info"]
    return int(info.labels["worker"]), int(info.labels["pid"])


def _workers_seen(url: str, process: subprocess.Popen[str], want: int) -> dict[int, int]:
    """Scrape until ``want`` distinct workers answered: worker index -> pid."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while len(seen) < want:
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        try:
            index, pid = _worker_of(url)
            seen[index] = pid
        except (urllib.error.URLError, ConnectionError):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
    return seen


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, waiting for its parent to collect it


def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not all(_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not _gone(p)]}"
        time.sleep(0.05)


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_two_workers_answer_on_one_port_and_stop_with_the_parent(
    port: int, stop: signal.Signals
) -> None:
    process = _serve(port, 2)
    try:
        url = f"http://127.0.0.1:{port}"
        seen = _workers_seen(url, process, 2)
        assert sorted(seen) == [0, 1] and len(set(seen.values())) == 2
        assert process.pid not in seen.values()  # the parent supervises, workers serve
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    _wait_gone(list(seen.values()))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_worker_that_dies_is_replaced(port: int) -> None:
    process = _serve(port, 2)
    try:
        url = f"http://127.0.0.1:{port}"
        seen = _workers_seen(url, process, 2)
        time.sleep(1.1)  # past the startup window, in which a death stops everything
        os.kill(seen[0], signal.SIGKILL)
        _wait_gone([seen[0]])
        deadline = time.monotonic() + 20
        while True:
            again = _workers_seen(url, process, 2)
            if again[0] != seen[0]:
                break
            assert time.monotonic() < deadline, "worker 0 was not replaced"
        assert again[1] == seen[1]
        # Every request is answered, whichever socket the kernel picks.
        for _ in range(20):
            _, samples = scrape(url)
            assert value(samples, "finetune_gateway_worker_info") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "worker 0" in stderr and "starting another" in stderr
    _wait_gone(list(again.values()))


def test_workers_die_with_a_killed_parent(port: int) -> None:
    process = _serve(port, 2)
    try:
        seen = _workers_seen(f"http://127.0.0.1:{port}", process, 2)
    finally:
        process.kill()  # SIGKILL: the parent cannot pass anything on
        process.communicate(timeout=10)
    _wait_gone(list(seen.values()))


def test_workers_refuse_a_port_already_in_use(port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        process = _serve(port, 2)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in stderr
