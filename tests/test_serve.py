"""``finetune-gateway serve`` as a user runs it: the README's setup, signals, the pool."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from gateway.pool import ProviderPool
from gateway.provider import Provider, ProviderSettings
from gateway.routing import Target
from tests.support.serve import free_port

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_example_config_with_empty_environment_then_sigterm() -> None:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            "config.example.toml",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "serve did not answer /health"
                time.sleep(0.05)
        assert (status, body) == (200, {"status": "ok"})
        # No gateway key needed; credentials in headers accepted; no provider: a clear 400.
        status, body = _get(f"http://127.0.0.1:{port}/v1/fine_tuning/jobs")
        assert status == 400 and body["error"]["param"] == "x-portkey-provider"
        # No custom host at all, the metadata address least of all.
        status, body = _get(
            f"http://127.0.0.1:{port}/v1/fine_tuning/jobs",
            {
                "x-portkey-provider": "openai",
                "Authorization": "Bearer sk-x",
                "x-portkey-custom-host": "http://169.254.169.254/",
            },
        )
        assert status == 400 and body["error"]["code"] == "custom_host_not_allowed"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    code = process.returncode
    assert code == 0, stderr
    assert f"http://127.0.0.1:{port}" in stderr and "Traceback" not in stderr
    assert stderr.count("finetune_gateway.access") == 3


class _Settings(ProviderSettings, frozen=True, kw_only=True):
    name: str = ""


class _Counting(Provider):
    slug: ClassVar[str] = "counting"
    Settings: ClassVar[type[ProviderSettings]] = _Settings
    closed: ClassVar[list[str]] = []

    @classmethod
    def settings_from_headers(cls, headers: Any) -> ProviderSettings:
        return _Settings()

    async def close(self) -> None:
        self.closed.append(self.settings.name)


def _target(name: str) -> Target:
    return Target(_Counting, _Settings(name=name), caller_credentials=False)


async def test_pool_reuses_equal_settings_and_never_evicts_a_held_instance() -> None:
    _Counting.closed.clear()
    async with aiohttp.ClientSession() as http:
        pool = ProviderPool(http, max_configured=2)
        async with pool.use(_target("a")) as first, pool.use(_target("a")) as again:
            assert first is again
            # Over the bound, but every older instance is held by a request: none goes.
            async with pool.use(_target("b")), pool.use(_target("c")):
                await asyncio.sleep(0)
                assert _Counting.closed == []
        # The next insertion evicts the least recently used idle ones, closed in the
        # background rather than on this request's path.
        async with pool.use(_target("d")):
            for _ in range(10):
                await asyncio.sleep(0)
            assert sorted(_Counting.closed) == ["a", "b"]
        await pool.close()
        assert sorted(_Counting.closed) == ["a", "b", "c", "d"]


def test_loading_every_plugin_imports_no_cloud_sdk() -> None:
    """Startup loads every installed provider; the heavy SDKs wait for first use, so a
    gateway that never calls Bedrock or Vertex does not pay for them in time or memory."""
    probe = (
        "import sys\n"
        "from gateway.registry import Registry\n"
        "registry = Registry.discover()\n"
        "for name in ('openai', 'azure-openai', 'bedrock', 'vertex-ai'):\n"
        "    registry.get(name)\n"
        "sdks = {'aiobotocore', 'boto3', 'botocore'}\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & sdks)\n"
        "heavy += sorted(m for m in sys.modules if m.startswith(('gcloud.aio', 'jwt')))\n"
        "print(' '.join(heavy))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert found.stdout.strip() == ""


def test_serve_refuses_a_network_address_with_no_gateway_keys() -> None:
    # The example config has no gateway keys: anyone reaching the port could use every
    # virtual key, so serve stays on loopback unless told --allow-open.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            "config.example.toml",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "--allow-open" in result.stderr


def test_serve_loads_the_ca_store_into_aiohttp_verifying_context_only() -> None:
    """Startup skips the CA store of aiohttp's context that verifies nothing, not the one
    that verifies, and leaves ssl as it found it."""
    probe = (
        "import ssl\n"
        "from gateway.cli import _no_ca_store_for_unverified_contexts\n"
        "with _no_ca_store_for_unverified_contexts():\n"
        "    from aiohttp import connector\n"
        "verified = connector._SSL_CONTEXT_VERIFIED\n"
        "unverified = connector._SSL_CONTEXT_UNVERIFIED\n"
        "assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname\n"
        "assert unverified.verify_mode == ssl.CERT_NONE\n"
        "assert 'set_default_verify_paths' not in vars(ssl.SSLContext)\n"
        "fresh = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "fresh.check_hostname = False\n"
        "fresh.verify_mode = ssl.CERT_NONE\n"
        "fresh.set_default_verify_paths()\n"
        "print(verified.cert_store_stats()['x509_ca'], unverified.cert_store_stats()['x509_ca'],\n"
        "      fresh.cert_store_stats()['x509_ca'] == ssl.create_default_context()"
        ".cert_store_stats()['x509_ca'])\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    verified, unverified, restored = found.stdout.split()
    assert int(verified) > 0 and int(unverified) == 0 and restored == "True"
