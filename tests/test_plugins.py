"""Provider plugins as a user installs them: real distributions, found by entry point.

The throwaway distributions below are built as wheels in a temporary directory and
pip-installed into the running environment once for the module (and uninstalled after
it, even when a test fails), so the registry, the ``finetune-gateway plugins`` CLI and a
live gateway find them exactly the way they find a third-party plugin from PyPI.

The wheels are written directly (a wheel is a zip with a ``.dist-info`` folder) rather
than built by setuptools: the setuptools that ``python -m venv`` ships (65.x) cannot build
a wheel without the separate ``wheel`` package, which the test extras do not install, and
``--no-build-isolation --no-index`` has no way to fetch it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from gateway.config import ConfigError, load_config
from gateway.registry import ENTRY_POINT_GROUP, Registry
from gateway.testing.live import ServerThread
from tests.conftest import (
    OTHER_GATEWAY_KEY,
    TRAINING_JSONL,
    UPSTREAM_KEY,
    Stack,
    base_config,
)
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import make_app as make_fake_openai
from tests.support.openai_shape import REQUIRED_JOB_FIELDS

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ThrowawayDist:
    name: str
    version: str
    modules: dict[str, str]  # path inside the wheel -> Python source
    entry_points: dict[str, str]  # entry point name (the slug) -> "module:attribute"

    @property
    def module_names(self) -> set[str]:
        return {path.split("/")[0].removesuffix(".py") for path in self.modules}


ECHO = ThrowawayDist(
    name="finetune-gateway-echo-test",
    version="1.2.3",
    modules={
        "ftg_echo_test.py": """
            from gateway.models import FineTuningJob
            from gateway.provider import Provider, ProviderSettings


            class EchoSettings(ProviderSettings, frozen=True, kw_only=True):
                model: str = "echo-default"


            class EchoProvider(Provider):
                slug = "echo-test"
                Settings = EchoSettings

                @classmethod
                def settings_from_headers(cls, headers):
                    return EchoSettings()

                async def retrieve_job(self, job_id):
                    return FineTuningJob(
                        id=job_id,
                        model=self.settings.model,
                        created_at=1700000000,
                        status="running",
                        training_file="file-echo",
                    )
        """,
    },
    entry_points={"echo-test": "ftg_echo_test:EchoProvider"},
)

BROKEN = ThrowawayDist(
    name="finetune-gateway-broken-test",
    version="0.0.7",
    modules={
        "ftg_broken_test/__init__.py": "",
        "ftg_broken_test/needs_sdk.py": """
            import ftg_not_installed_sdk  # the plugin's own dependency, missing

            from gateway.provider import Provider


            class NeedsSdkProvider(Provider):
                slug = "broken-import"
        """,
        "ftg_broken_test/not_a_class.py": """
            def make_provider():
                return None
        """,
        "ftg_broken_test/wrong_slug.py": """
            from gateway.provider import Provider, ProviderSettings


            class WrongSlugProvider(Provider):
                slug = "something-else"
                Settings = ProviderSettings

                @classmethod
                def settings_from_headers(cls, headers):
                    return ProviderSettings()
        """,
    },
    entry_points={
        "broken-import": "ftg_broken_test.needs_sdk:NeedsSdkProvider",
        "broken-type": "ftg_broken_test.not_a_class:make_provider",
        "broken-slug": "ftg_broken_test.wrong_slug:WrongSlugProvider",
    },
)

# A second, otherwise valid plugin that claims the slug ECHO already provides.
TWIN = ThrowawayDist(
    name="finetune-gateway-echo-twin",
    version="0.0.1",
    modules={
        "ftg_echo_twin.py": """
            from gateway.provider import Provider, ProviderSettings


            class TwinProvider(Provider):
                slug = "echo-test"
                Settings = ProviderSettings

                @classmethod
                def settings_from_headers(cls, headers):
                    return ProviderSettings()
        """,
    },
    entry_points={"echo-test": "ftg_echo_twin:TwinProvider"},
)

THROWAWAY = (ECHO, BROKEN, TWIN)

BROKEN_ERRORS = {
    "broken-import": "ModuleNotFoundError: No module named 'ftg_not_installed_sdk'",
    "broken-type": (
        "TypeError: ftg_broken_test.not_a_class:make_provider is not a subclass of "
        "gateway.provider.Provider"
    ),
    "broken-slug": (
        "TypeError: ftg_broken_test.wrong_slug:WrongSlugProvider.slug is 'something-else', "
        "but the entry point is named 'broken-slug': they must match"
    ),
}
TWIN_ERROR = "slug 'echo-test' is already provided by finetune-gateway-echo-test"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _build_wheel(dist: ThrowawayDist, out: Path) -> Path:
    stem = f"{dist.name.replace('-', '_')}-{dist.version}"
    info = f"{stem}.dist-info"
    entry_points = "".join(f"{name} = {value}\n" for name, value in dist.entry_points.items())
    files = {path: textwrap.dedent(source).lstrip() for path, source in dist.modules.items()}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {dist.name}\nVersion: {dist.version}\n"
        "Summary: throwaway plugin built by tests/test_plugins.py\n"
    )
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests/test_plugins.py\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = f"[{ENTRY_POINT_GROUP}]\n{entry_points}"
    wheel = out / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        record = []
        for path, text in files.items():
            zf.writestr(path, text.encode())
            record.append(_record_line(path, text.encode()))
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"pip {args[0]} failed:\n{done.stdout}\n{done.stderr}"


def _forget_throwaway_modules() -> None:
    names = set().union(*(dist.module_names for dist in THROWAWAY))
    for module in list(sys.modules):
        if module.split(".")[0] in names:
            del sys.modules[module]


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The throwaway distributions, installed with one pip call and removed with one."""
    out = tmp_path_factory.mktemp("plugin-wheels")
    wheels = [str(_build_wheel(dist, out)) for dist in THROWAWAY]
    try:
        _pip("install", "--no-deps", "--no-index", *wheels)
        importlib.invalidate_caches()
        yield
    finally:
        _pip("uninstall", "-y", *(dist.name for dist in THROWAWAY))
        importlib.invalidate_caches()
        _forget_throwaway_modules()


@pytest.fixture(scope="module")
def plugin_registry(installed_plugins: None) -> Registry:
    # Not the session's ``registry`` fixture: that one must not see these plugins.
    return Registry.discover()


@pytest.fixture(scope="module")
def plugins_cli(installed_plugins: None) -> subprocess.CompletedProcess[str]:
    """``finetune-gateway plugins``, run once as a user would, with the plugins installed."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


@pytest.fixture
def plugin_stack(servers: ServerThread, plugin_registry: Registry) -> Stack:
    """The usual fake OpenAI and gateway, plus a virtual key for the echo plugin."""
    upstream = FakeOpenAIState(api_keys={UPSTREAM_KEY})
    upstream_url = servers.serve(make_fake_openai(upstream)) + "/v1"
    stack = Stack(servers, upstream, upstream_url, "", plugin_registry)
    config = base_config(upstream_url)
    config["virtual_keys"]["echo-main"] = {"provider": "echo-test", "model": "echo-from-config"}
    stack.gateway_url = stack.start_gateway(config)
    return stack


def _cli_lines_for(cli: subprocess.CompletedProcess[str], name: str) -> list[str]:
    return [line for line in cli.stdout.splitlines() if line.split()[:1] == [name]]


# ---- a working third-party plugin -------------------------------------------------------


def test_registry_discovers_third_party_plugin_with_distribution_and_version(
    plugin_registry: Registry,
) -> None:
    loaded = {p.slug: p for p in plugin_registry.loaded}
    assert "echo-test" in loaded, f"not found; broken: {plugin_registry.broken}"
    echo = loaded["echo-test"]
    assert (echo.distribution, echo.version) == ("finetune-gateway-echo-test", "1.2.3")
    assert echo.provider.__module__ == "ftg_echo_test"
    assert plugin_registry.get("echo-test") is echo.provider
    assert "echo-test" in plugin_registry.names()


def test_cli_plugins_lists_third_party_plugin_with_distribution_and_version(
    plugins_cli: subprocess.CompletedProcess[str],
) -> None:
    assert plugins_cli.returncode == 0, plugins_cli.stderr
    echo_lines = [line.split() for line in _cli_lines_for(plugins_cli, "echo-test")]
    assert ["echo-test", "finetune-gateway-echo-test", "1.2.3"] in echo_lines, plugins_cli.stdout


def test_gateway_routes_virtual_key_to_third_party_plugin(plugin_stack: Stack) -> None:
    client = plugin_stack.client(default_headers={"x-portkey-virtual-key": "echo-main"})

    job = client.fine_tuning.jobs.retrieve("ftjob-echo-42")
    assert job.id == "ftjob-echo-42"
    assert job.model == "echo-from-config", "the virtual key's settings reach the plugin"
    assert job.status == "running"
    assert job.error is None and job.finished_at is None

    raw = client.fine_tuning.jobs.with_raw_response.retrieve("ftjob-echo-42")
    body = json.loads(raw.text)
    missing = REQUIRED_JOB_FIELDS - body.keys()
    assert not missing, f"fields OpenAI requires are missing: {sorted(missing)}"
    assert body["object"] == "fine_tuning.job"
    assert body["error"] is None and body["finished_at"] is None
    assert plugin_stack.upstream.requests == [], "nothing went to the OpenAI upstream"


def test_gateway_unimplemented_plugin_operation_answers_400_naming_provider_and_operation(
    plugin_stack: Stack,
) -> None:
    client = plugin_stack.client(default_headers={"x-portkey-virtual-key": "echo-main"})
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.pause("ftjob-echo-42")
    assert refused.value.status_code == 400
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_operation"
    assert error["message"] == "The 'echo-test' provider does not support pausing fine-tuning jobs"
    assert plugin_stack.upstream.requests == [], "never falls through to another provider"


# ---- broken plugins ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BROKEN_ERRORS))
def test_registry_keeps_broken_plugin_with_its_error(plugin_registry: Registry, name: str) -> None:
    broken = {b.name: b for b in plugin_registry.broken}
    assert name in broken, f"{name} should be reported broken; loaded: {plugin_registry.names()}"
    assert (broken[name].distribution, broken[name].version) == (
        "finetune-gateway-broken-test",
        "0.0.7",
    )
    assert broken[name].error == BROKEN_ERRORS[name]
    assert name not in plugin_registry.names()


def test_cli_plugins_lists_broken_plugins_as_failed_and_exits_0(
    plugins_cli: subprocess.CompletedProcess[str],
) -> None:
    assert plugins_cli.returncode == 0, plugins_cli.stderr
    for name, error in BROKEN_ERRORS.items():
        lines = _cli_lines_for(plugins_cli, name)
        assert len(lines) == 1, plugins_cli.stdout
        assert "finetune-gateway-broken-test 0.0.7" in lines[0]
        assert lines[0].endswith(f"FAILED: {error}"), lines[0]
    # The working plugins are still listed alongside the broken ones.
    openai_lines = [line.split() for line in _cli_lines_for(plugins_cli, "openai")]
    assert openai_lines and openai_lines[0][1] == "finetune-gateway-openai", plugins_cli.stdout


def test_gateway_with_broken_plugins_installed_still_serves_openai(plugin_stack: Stack) -> None:
    client = plugin_stack.client()  # the gateway key's default virtual key is openai-main
    uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini")
    assert client.fine_tuning.jobs.retrieve(job.id).training_file == uploaded.id
    assert job.id in plugin_stack.upstream.jobs


@pytest.mark.parametrize("name", sorted(BROKEN_ERRORS))
def test_config_virtual_key_naming_broken_provider_is_refused(
    plugin_registry: Registry, tmp_path: Path, name: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[virtual_keys.legacy]\nprovider = "{name}"\n\n'
        '[virtual_keys.main]\nprovider = "openai"\napi_key = "sk-x"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path, plugin_registry, env={})
    assert refused.value.problems == [
        f"virtual_keys.legacy.provider: Provider '{name}' is installed "
        f"(finetune-gateway-broken-test) but failed to load: {BROKEN_ERRORS[name]}"
    ]


def test_gateway_portkey_provider_header_naming_broken_plugin_answers_400(
    plugin_stack: Stack,
) -> None:
    client = plugin_stack.client(
        api_key=OTHER_GATEWAY_KEY, default_headers={"x-portkey-provider": "broken-import"}
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.list()
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "provider_unavailable"
    assert error["param"] == "x-portkey-provider"
    assert error["message"] == (
        "Provider 'broken-import' is installed (finetune-gateway-broken-test) but failed to "
        f"load: {BROKEN_ERRORS['broken-import']}"
    )
    assert plugin_stack.upstream.requests == []


# ---- the built-in plugin, and slugs claimed twice ---------------------------------------


def test_registry_finds_builtin_openai_plugin_through_entry_point() -> None:
    from gateway_openai import OpenAIProvider

    (entry,) = [
        ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "openai"
    ]
    assert entry.value == "gateway_openai:OpenAIProvider"
    assert entry.dist is not None and entry.dist.metadata["Name"] == "finetune-gateway-openai"

    loaded = {p.slug: p for p in Registry.discover().loaded}
    assert loaded["openai"].distribution == "finetune-gateway-openai"
    assert loaded["openai"].version == importlib.metadata.version("finetune-gateway-openai")
    assert loaded["openai"].provider is OpenAIProvider


def test_registry_duplicate_slug_reports_second_plugin_broken_first_keeps_working(
    plugin_registry: Registry, plugins_cli: subprocess.CompletedProcess[str]
) -> None:
    echo = [p for p in plugin_registry.loaded if p.slug == "echo-test"]
    assert [p.distribution for p in echo] == ["finetune-gateway-echo-test"]
    assert plugin_registry.get("echo-test").__module__ == "ftg_echo_test"

    twins = [b for b in plugin_registry.broken if b.distribution == "finetune-gateway-echo-twin"]
    assert [(b.name, b.error) for b in twins] == [("echo-test", TWIN_ERROR)]

    # The same verdict on every discovery, and in the CLI.
    again = Registry.discover()
    assert [p.distribution for p in again.loaded if p.slug == "echo-test"] == [
        "finetune-gateway-echo-test"
    ]
    twin_lines = [line for line in _cli_lines_for(plugins_cli, "echo-test") if "echo-twin" in line]
    assert len(twin_lines) == 1 and twin_lines[0].endswith(f"FAILED: {TWIN_ERROR}"), (
        plugins_cli.stdout
    )


def test_gateway_duplicate_slug_routes_to_first_plugin(plugin_stack: Stack) -> None:
    client = plugin_stack.client(
        api_key=OTHER_GATEWAY_KEY, default_headers={"x-portkey-provider": "echo-test"}
    )
    job = client.fine_tuning.jobs.retrieve("ftjob-1")
    assert job.model == "echo-default", "served by finetune-gateway-echo-test, not the twin"
