"""The config file: the shipped example, error reporting, secrets by reference, the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from gateway.config import (
    Config,
    ConfigError,
    GatewayKeyConfig,
    LimitsConfig,
    RouteConfig,
    RoutingConfig,
    ServerConfig,
    UpstreamConfig,
    load_config,
)
from gateway.errors import BadRequest
from gateway.registry import Registry
from gateway.routing import check_custom_host

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
CUSTOM_HOST_HEADER = "x-portkey-custom-host"
SECRET = "sk-secret-value-123"

# One of each mistake; every one must be reported, each under its own path.
BAD_CONFIG = """
[server]
prot = 8080

[routing]
custom_host_allowlist = ["127.0.0.0/8", "not a host!"]

[gateway_keys.team]
key = "gw-team-key-0123456789"
default_virtual_key = "no-such-key"

[gateway_keys.short]
key = "gw-short"

[virtual_keys.prod]
provider = "openai"
api_key = 5

[virtual_keys.other]
provider = "no-such-provider"

[virtual_keys.from-env]
provider = "openai"
api_key = { "$env" = "NOT_SET_ANYWHERE" }

[configs.both]
virtual_key = "prod"
provider = "openai"
"""
BAD_CONFIG_PATHS = [
    "server.prot: unknown setting",
    "routing.custom_host_allowlist[1]:",
    "gateway_keys.team.default_virtual_key:",
    "gateway_keys.short.key:",
    "virtual_keys.prod.api_key:",
    "virtual_keys.other.provider:",
    "virtual_keys.from-env.api_key: environment variable 'NOT_SET_ANYWHERE' is not set",
    "configs.both:",
]


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, registry: Registry, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, registry, env={} if env is None else env)
    return info.value.problems


def uncomment_examples(text: str) -> str:
    """The example file with its commented ``[gateway_keys.*]``-style blocks made active.

    A block starts at a line ``# [gateway_keys.NAME]`` (or virtual_keys, configs) and runs
    over the following comment lines up to a blank line or a ``# ----`` heading; in it,
    one leading ``#`` (and the space after it) is removed, so ``# # note`` stays a comment.
    """
    out: list[str] = []
    in_example = False
    for line in text.splitlines():
        if re.match(r"# \[(gateway_keys|virtual_keys|configs)\.", line):
            in_example = True
        elif not line.startswith("#") or line.startswith("# ---"):
            in_example = False
        out.append(line.removeprefix("#").removeprefix(" ") if in_example else line)
    return "\n".join(out) + "\n"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


# ---- the shipped example ---------------------------------------------------------------


def test_example_config_decodes_with_an_empty_environment(registry: Registry) -> None:
    config = load_config(EXAMPLE, registry, env={})

    assert (config.server.host, config.server.port) == ("127.0.0.1", 8787)
    assert config.routing.accept_header_credentials is True
    assert config.gateway_keys == ()
    assert config.virtual_keys == {}
    assert config.configs == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/v1",
        "http://localhost:9",
        "http://[::1]:9/v1",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://example.com/",
        "http://0x7f000001/",
    ],
)
def test_example_config_refuses_every_custom_host(registry: Registry, url: str) -> None:
    allowlist = load_config(EXAMPLE, registry, env={}).routing.custom_host_allowlist

    with pytest.raises(BadRequest) as info:
        check_custom_host(url, allowlist, CUSTOM_HOST_HEADER)
    assert info.value.param == CUSTOM_HOST_HEADER
    assert info.value.code == "custom_host_not_allowed"


def test_example_config_gives_the_defaults_it_says_it_gives(registry: Registry) -> None:
    # The file's header: "every setting, with its default" (routing deliberately differs).
    config = load_config(EXAMPLE, registry, env={})

    assert config.server == ServerConfig()
    assert config.limits == LimitsConfig()
    assert config.upstream == UpstreamConfig()


@pytest.mark.parametrize(
    "section",
    [ServerConfig, LimitsConfig, UpstreamConfig, RoutingConfig, GatewayKeyConfig, RouteConfig],
)
def test_example_config_documents_every_core_setting(section: type[msgspec.Struct]) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")

    undocumented = [
        name
        for name in section.__struct_fields__
        if not re.search(rf"^(# )?{re.escape(name)} *=", text, re.M)
    ]
    assert undocumented == [], f"{section.__name__} settings missing from {EXAMPLE.name}"


def test_example_config_documents_every_openai_setting(registry: Registry) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    fields = registry.get("openai").Settings.__struct_fields__

    undocumented = [n for n in fields if not re.search(rf"^(# )?{n} *=", text, re.M)]
    assert {"api_key", "base_url", "organization", "project", "custom_host"} <= set(fields)
    assert undocumented == []


def test_example_config_commented_examples_are_valid(tmp_path: Path, registry: Registry) -> None:
    text = uncomment_examples(EXAMPLE.read_text(encoding="utf-8"))
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    names |= set(re.findall(r'"\$env"\s*=\s*"([^"]+)"', text))
    env = {name: f"value-of-{name}-0123456789" for name in names}

    config = load_config(write(tmp_path, text), registry, env=env)

    # Every example block became an entry: none was skipped by the uncommenting.
    for section in ("gateway_keys", "virtual_keys", "configs"):
        headers = re.findall(rf"^\[{section}\.", text, re.M)
        assert headers, f"no [{section}.*] example in {EXAMPLE.name}"
        assert len(getattr(config, section)) == len(headers)
    assert names, "the examples should show secrets given by reference"
    for key in config.gateway_keys:
        assert key.key in env.values()
    # Every secret an example shows is given by reference, never written in the file.
    secret_fields = {"api_key", "ad_token", "aws_secret_access_key", "aws_session_token"}
    shown = 0
    for vk in config.virtual_keys.values():
        for name in secret_fields & set(vk.settings.__struct_fields__):
            value = getattr(vk.settings, name)
            if value is not None:
                shown += 1
                assert value in env.values(), f"{vk.name}.{name}"
    assert shown >= 3


# ---- problems, each with its path, all at once -----------------------------------------


def test_load_config_reports_every_problem_with_its_path(
    tmp_path: Path, registry: Registry
) -> None:
    problems = problems_of(write(tmp_path, BAD_CONFIG), registry)

    for expected in BAD_CONFIG_PATHS:
        matching = [p for p in problems if p.startswith(expected)]
        assert len(matching) == 1, f"{expected!r} in {problems}"
    assert len(problems) == len(BAD_CONFIG_PATHS), problems


def test_load_config_names_the_wrong_type(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, '[virtual_keys.prod]\nprovider = "openai"\napi_key = 5\n')

    assert problems_of(path, registry) == [
        "virtual_keys.prod.api_key: Expected `str | null`, got `int`"
    ]


def test_load_config_names_the_unknown_provider_and_the_known_ones(
    tmp_path: Path, registry: Registry
) -> None:
    path = write(tmp_path, '[virtual_keys.x]\nprovider = "no-such-provider"\n')

    [problem] = problems_of(path, registry)
    assert problem.startswith("virtual_keys.x.provider: Unknown provider 'no-such-provider'")
    assert "openai" in problem


def test_load_config_reports_an_unset_variable_once(tmp_path: Path, registry: Registry) -> None:
    # The value left empty would also fail its own checks (type, length): not reported again.
    path = write(
        tmp_path,
        '[gateway_keys.a]\nkey = { "$env" = "UNSET_A" }\n[gateway_keys.b]\nkey = "${UNSET_B}"\n',
    )

    assert problems_of(path, registry) == [
        "gateway_keys.a.key: environment variable 'UNSET_A' is not set",
        "gateway_keys.b.key: environment variable 'UNSET_B' is not set",
    ]


def test_load_config_reports_a_mistake_in_one_section_with_those_in_others(
    tmp_path: Path, registry: Registry
) -> None:
    path = write(tmp_path, "server = 5\nsurprise = 1\n[upstream]\nread_timeout = 'long'\n")
    assert problems_of(path, registry) == [
        "server: Expected `object`, got `int`",
        "surprise: unknown setting",
        "upstream.read_timeout: Expected `float`, got `str`",
    ]


def test_load_config_reports_invalid_toml_with_its_line(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "[server]\nport = = 8787\n")

    [problem] = problems_of(path, registry)
    assert problem.startswith(f"{path}: not valid TOML")
    assert "line 2" in problem


def test_load_config_reports_an_unreadable_path(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "missing.toml"

    assert problems_of(path, registry) == [f"{path}: cannot read: No such file or directory"]


def test_load_config_reports_a_file_that_is_not_text(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe[server]\n")

    [problem] = problems_of(path, registry)
    assert problem.startswith(f"{path}: not UTF-8")


# ---- secrets by reference --------------------------------------------------------------


def test_load_config_resolves_secrets_from_the_environment(
    tmp_path: Path, registry: Registry
) -> None:
    path = write(
        tmp_path,
        """
[gateway_keys.team]
key = "gw-${GW_SUFFIX}"
default_virtual_key = "prod"

[virtual_keys.prod]
provider = "openai"
api_key = { "$env" = "OPENAI_KEY" }
organization = "org-${ORG}"
project = "${PROJ_A}_${PROJ_B}"

[configs.local]
provider = "openai"
api_key = "${LOCAL_KEY}"
custom_host = "http://127.0.0.1:9000/v1"
""",
    )
    env = {
        "GW_SUFFIX": "team-0123456789",
        "OPENAI_KEY": "sk-from-env-abc",
        "ORG": "acme",
        "PROJ_A": "proj",
        "PROJ_B": "42",
        "LOCAL_KEY": "sk-local-xyz",
    }

    config = load_config(path, registry, env=env)

    assert config.gateway_keys[0].key == "gw-team-0123456789"
    settings = config.virtual_keys["prod"].settings
    assert settings.api_key == "sk-from-env-abc"  # type: ignore[attr-defined]
    assert settings.organization == "org-acme"  # type: ignore[attr-defined]
    assert settings.project == "proj_42"  # type: ignore[attr-defined]
    assert config.configs["local"].settings.api_key == "sk-local-xyz"  # type: ignore[attr-defined]
    assert config.configs["local"].settings.custom_host == "http://127.0.0.1:9000/v1"


def test_load_config_reads_the_process_environment_by_default(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTGW_TEST_OPENAI_KEY", "sk-process-env")
    path = write(
        tmp_path,
        '[virtual_keys.prod]\nprovider = "openai"\napi_key = { "$env" = "FTGW_TEST_OPENAI_KEY" }\n',
    )

    config: Config = load_config(path, registry)

    assert config.virtual_keys["prod"].settings.api_key == "sk-process-env"  # type: ignore[attr-defined]


# ---- the CLI ---------------------------------------------------------------------------


def test_check_config_prints_each_problem_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG, "bad.toml")

    result = run_cli("check-config", str(path))

    assert result.returncode != 0
    lines = result.stdout.splitlines()
    for expected in BAD_CONFIG_PATHS:
        assert len([line for line in lines if line.startswith(expected)]) == 1, result.stdout
    assert f"{len(BAD_CONFIG_PATHS)} problem(s)" in result.stderr


def test_check_config_accepts_the_example() -> None:
    result = run_cli("check-config", str(EXAMPLE))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_check_config_reports_an_unreadable_path(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "missing.toml"))

    assert result.returncode != 0
    assert "cannot read" in result.stdout
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_bad_config_without_starting(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG, "bad.toml")

    result = run_cli("serve", "--config", str(path), "--port", "1")

    assert result.returncode == 2
    for expected in BAD_CONFIG_PATHS:
        assert f"config: {expected}" in result.stderr
    assert "on http://" not in result.stderr + result.stdout


SECRET_CONFIG = """
[server]
port = "${SECRET_FOR_TEST}"

[gateway_keys.team]
key = "${SECRET_FOR_TEST}"
default_virtual_key = 7

[virtual_keys.prod]
provider = "openai"
api_key = { "$env" = "SECRET_FOR_TEST" }
base_url = 5
organization = ["${SECRET_FOR_TEST}"]
"""


@pytest.mark.parametrize("command", [["check-config"], ["serve", "--config"]])
def test_cli_never_prints_a_secret_in_config_problems(tmp_path: Path, command: list[str]) -> None:
    path = write(tmp_path, SECRET_CONFIG, "secret.toml")

    result = run_cli(*command, str(path), env={"SECRET_FOR_TEST": SECRET})

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "server.port" in output
    assert "virtual_keys.prod.base_url" in output
    assert "gateway_keys.team.default_virtual_key" in output
    assert SECRET not in output
