"""The gateway served as ``finetune-gateway serve`` serves it: as its own process, for
what only a process shows (signals, exit codes, stderr), or on a test's server thread
with the same runner (the config's limits on clients)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.app import make_app
from gateway.config import parse_config
from gateway.server import GatewayRunner
from tests.conftest import Stack, base_config

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float) -> tuple[int, str]:
        """The exit code and everything written to stderr, once the process has ended."""
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stderr


def toml_of(raw: dict[str, Any], table: str = "") -> str:
    """A config as the TOML file that decodes to it (tables, strings, numbers, lists)."""
    lines = [f"[{table}]"] if table else []
    tables = []
    for key, value in raw.items():
        if isinstance(value, dict):
            tables.append(toml_of(value, f"{table}.{key}" if table else key))
        else:
            lines.append(f"{key} = {json.dumps(value)}")  # JSON's scalars are TOML's too
    return "\n".join(lines + tables) + "\n"


@contextlib.contextmanager
def serving(config: str | dict[str, Any], tmp_path: Path) -> Iterator[ServeProcess]:
    """Run serve on ``config`` (TOML text, or what it decodes to; the port is chosen
    here) until /health answers; killed at the end if the test has not stopped it."""
    port = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(config if isinstance(config, str) else toml_of(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = ServeProcess(process, port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{served.url}/health", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise AssertionError(f"serve did not start: {served.wait(5)[1]}") from None
                time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        if process.stderr is not None and not process.stderr.closed:
            process.communicate(timeout=10)  # reaps it and closes the pipe


def start_gateway(stack: Stack, **limits: Any) -> str:
    """A gateway with these ``[limits]`` in front of the stack's upstream, on its server
    thread, run as ``serve`` runs it; its base URL (without /v1)."""
    raw = base_config(stack.upstream_url)
    raw["limits"] = limits
    app = make_app(parse_config(raw, stack.registry, {}), stack.registry)
    return stack.servers.serve(app, GatewayRunner)
