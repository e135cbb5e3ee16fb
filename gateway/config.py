"""The TOML config, decoded into msgspec Structs, with every problem named by its path.

Secrets are given by reference to the environment, ``{ "$env" = "NAME" }`` or a string
containing ``${NAME}``, so the file itself can be committed. Decoding goes entry by
entry, so ``check-config`` reports every problem at once (``virtual_keys.prod.api_key:
Expected `str`, got `int```), not just the first.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from gateway import egress
from gateway.fields import Url, origin_of
from gateway.line_budget import HELD_PER_BYTE
from gateway.provider import Provider, ProviderSettings
from gateway.registry import Registry
from gateway.retry import POLICY_KEYS, CallPolicy, overlay
from gateway.webhooks.configured import (
    ConfigEndpoint,
    EndpointTable,
    address_problems,
    endpoints_of,
    shared_database,
)

T = TypeVar("T")

MiB = 1024 * 1024


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


Seconds = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]


class ServerConfig(_Section, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8787
    access_log: bool = True
    # On SIGTERM, how long requests in flight (uploads included) get to finish before
    # they are cancelled and their multipart uploads aborted. Below Kubernetes' default
    # 30 s before SIGKILL, so the aborts still run.
    shutdown_grace: Seconds = 20.0


class LimitsConfig(_Section, kw_only=True):
    # JSON bodies (create job) are small; a large one is a mistake or an attack.
    max_json_body_bytes: int = 1 * MiB
    # Arrays and objects nested deeper in a JSON body or inline config: a 400.
    max_json_depth: Annotated[int, msgspec.Meta(ge=2, le=256)] = 32
    # Uploads stream, so this bounds disk and upstream use, not the gateway's memory.
    max_upload_bytes: int = 8 * 1024 * MiB
    # Longest training-file line, and the bytes of unfinished lines a process holds at once
    # (see gateway/line_budget.py): over the first is a 400, the second spent a 429.
    max_line_bytes: Count = 32 * MiB
    line_buffer_budget_bytes: Count = 256 * MiB
    # Content-Encoding (gzip, ...) on uploads; off: a 415. On, decoded bytes are counted.
    accept_compressed_uploads: bool = False
    # The request line and each header field (name and value); aiohttp's own default.
    max_header_bytes: Count = 8190
    max_header_count: Count = 128
    # Uploads being received at once, per process; one more is a 429 with Retry-After.
    max_concurrent_uploads: Count = 32
    # Of those, the most one caller (a gateway key; an address on an open gateway) holds.
    max_concurrent_uploads_per_key: Count = 8
    # After the grace period, an upload whose average rate falls below this is a 408
    # (0: no floor); the grace covers a slow start (TLS, a provider's first answer).
    min_upload_bytes_per_second: Annotated[int, msgspec.Meta(ge=0)] = 16 * 1024
    upload_rate_grace_seconds: Seconds = 10.0
    # A connection must deliver a request's complete headers within this many seconds of
    # opening, or of the end of its previous request (so it also closes idle keep-alive
    # connections): a client trickling headers in (slowloris) is cut off.
    client_header_timeout: Seconds = 60.0
    # Longest pause between two pieces of a request body; a stalled body is a 408.
    client_body_timeout: Seconds = 60.0


# ``[upstream]`` is the default call policy (timeouts, ``[upstream.retry]``); a virtual key
# or named config overrides any of its keys (``retry``, ``connect_timeout``, ...).
UpstreamConfig = CallPolicy


class RoutingConfig(_Section, kw_only=True):
    # Whether provider credentials may come in request headers (Authorization with a
    # provider key, x-portkey-aws-*, an inline x-portkey-config with an api_key, ...).
    accept_header_credentials: bool = False
    # Hosts a request may name in x-portkey-custom-host: host names, IP addresses or
    # CIDR networks. Empty means no custom hosts.
    custom_host_allowlist: list[str] = []


class EgressConfig(_Section, kw_only=True):
    # Private, loopback and link-local networks (CIDRs or addresses) the gateway may
    # connect to, beyond the hosts of the config's own URL settings (``gateway.egress``).
    allow_networks: list[str] = []


class GatewayKeyConfig(_Section, kw_only=True):
    key: str
    # Virtual key used when a request names no provider, virtual key or config, so the
    # plain OpenAI SDK with only base_url and api_key set works.
    default_virtual_key: str | None = None
    # The virtual keys this gateway key may use, by any route (headers, inline and named
    # configs, managed mode's portkey_options); absent: every one.
    virtual_keys: list[str] | None = None


class RouteConfig(_Section, kw_only=True):
    """A named config (``[configs.NAME]``), shaped like Portkey's ``x-portkey-config``."""

    virtual_key: str | None = None
    provider: str | None = None
    custom_host: Url | None = None


class WebhooksConfig(_Section, kw_only=True):
    """``[webhooks]``: OpenAI's fine-tuning events for the jobs created through the gateway
    (``gateway.webhooks``). Off until there is a database: ``database``, or, when the
    table is present without it, managed mode's (and gateway keys exist: an endpoint
    belongs to the gateway key that made it)."""

    # SQLite file or postgresql:// DSN of endpoints, watched jobs, events and deliveries.
    # Not set: managed mode's database ([providers.portkey] or a portkey virtual key's).
    database: str | None = None
    # Plain http:// receiver URLs (a receiver on this machine); https only otherwise.
    allow_http: bool = False
    # A delivery not answered with a 2xx is retried, backing off exponentially with
    # jitter from first_retry_seconds up to max_retry_seconds, for this long (OpenAI: 72 h).
    retry_for_seconds: Seconds = 72 * 3600.0
    first_retry_seconds: Seconds = 5.0
    max_retry_seconds: Seconds = 3600.0
    # One delivery's whole exchange, connect to status line.
    delivery_timeout: Seconds = 10.0
    # How often a job not ended is looked at; after provider errors (429 included) the
    # wait doubles, up to max_poll_seconds, and a Retry-After is honoured.
    poll_seconds: Seconds = 30.0
    max_poll_seconds: Seconds = 900.0
    # How often the watcher and the deliverer look for due work.
    tick_seconds: Seconds = 1.0
    # ``[webhooks.endpoints.NAME]``: receivers set here, not through the API
    # (``gateway.webhooks.configured``).
    endpoints: dict[str, Any] = {}


class _FileConfig(_Section, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    egress: EgressConfig = msgspec.field(default_factory=EgressConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)
    gateway_keys: dict[str, Any] = {}
    virtual_keys: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    # ``[providers.<slug>]``: settings for requests that name a provider by its slug
    # (``x-portkey-provider``); settings sent in headers go on top of them.
    providers: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class VirtualKey:
    name: str
    provider: type[Provider]
    settings: ProviderSettings
    policy: CallPolicy | None = None  # retries and timeouts; None for [upstream]'s
    # Custom hosts a request may send this key's credentials to (``custom_hosts``).
    custom_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NamedConfig:
    """A named config resolved at load time: the provider and settings it routes to."""

    name: str
    provider: type[Provider]
    settings: ProviderSettings
    virtual_key: str | None  # the virtual key it names, if it names one
    policy: CallPolicy | None = None  # retries and timeouts; None for [upstream]'s


@dataclass(frozen=True, slots=True)
class GatewayKey:
    name: str
    key: str
    default_virtual_key: str | None
    virtual_keys: frozenset[str] | None = None  # None: every virtual key

    def may_use(self, virtual_key: str) -> bool:
        return self.virtual_keys is None or virtual_key in self.virtual_keys


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    limits: LimitsConfig
    upstream: UpstreamConfig
    routing: RoutingConfig
    gateway_keys: tuple[GatewayKey, ...]
    virtual_keys: dict[str, VirtualKey]
    configs: dict[str, NamedConfig]
    # By the provider's slug (an alias in the file is resolved to it).
    provider_defaults: dict[str, ProviderSettings] = field(default_factory=dict)
    # ``[providers.<slug>] custom_hosts``: where its settings' credentials may go too.
    provider_custom_hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    egress: EgressConfig = field(default_factory=EgressConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    webhook_endpoints: tuple[ConfigEndpoint, ...] = ()

    @classmethod
    def default(cls) -> Config:
        return cls(ServerConfig(), LimitsConfig(), UpstreamConfig(), RoutingConfig(), (), {}, {})


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str | Path, registry: Registry, env: dict[str, str] | None = None) -> Config:
    """Read, resolve and check a config file; ConfigError lists every problem found."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(raw, registry, os.environ if env is None else env)


def parse_config(raw: dict[str, Any], registry: Registry, env: Any) -> Config:
    secret_problems: list[str] = []
    resolved = _resolve_secrets(raw, "", env, secret_problems)
    problems: list[str] = []
    # Section by section, so a mistake in one does not hide those in the others.
    sections: dict[str, Any] = {}
    for key, value in resolved.items():
        part = _convert({key: value}, _FileConfig, "", problems)
        if part is not None:
            sections[key] = getattr(part, key)
    top = _FileConfig(**sections)
    _check_allowlist(top.routing.custom_host_allowlist, problems)
    for i, entry in enumerate(top.egress.allow_networks):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append(f"egress.allow_networks[{i}]: {entry!r} is not a network or address")
    limits = top.limits
    if limits.line_buffer_budget_bytes < HELD_PER_BYTE * limits.max_line_bytes:
        # Else a file whose longest line is allowed could never be taken, even alone.
        problems.append(
            f"limits.line_buffer_budget_bytes: must be at least {HELD_PER_BYTE} times "
            f"limits.max_line_bytes ({HELD_PER_BYTE * limits.max_line_bytes}), what one "
            "line of the longest allowed length holds while it is decoded"
        )

    virtual_keys: dict[str, VirtualKey] = {}
    for name, table in top.virtual_keys.items():
        vk = _virtual_key(name, table, registry, top.upstream, problems)
        if vk is not None:
            virtual_keys[name] = vk

    gateway_keys: list[GatewayKey] = []
    for name, table in top.gateway_keys.items():
        path = f"gateway_keys.{name}"
        gk = _convert(table, GatewayKeyConfig, path, problems)
        if gk is None:
            continue
        if len(gk.key) < 16:
            problems.append(f"{path}.key: a gateway key must be at least 16 characters long")
        if gk.default_virtual_key is not None and gk.default_virtual_key not in top.virtual_keys:
            problems.append(
                f"{path}.default_virtual_key: no virtual key named {gk.default_virtual_key!r}"
            )
        scope = None if gk.virtual_keys is None else frozenset(gk.virtual_keys)
        for listed in gk.virtual_keys or ():
            if listed not in top.virtual_keys:
                problems.append(f"{path}.virtual_keys: no virtual key named {listed!r}")
        if scope is not None and gk.default_virtual_key not in (None, *scope):
            problems.append(f"{path}.default_virtual_key: not among its virtual_keys")
        gateway_keys.append(GatewayKey(name, gk.key, gk.default_virtual_key, scope))
    if len({k.key for k in gateway_keys}) != len(gateway_keys):
        problems.append("gateway_keys: two gateway keys have the same key")

    configs: dict[str, NamedConfig] = {}
    for name, table in top.configs.items():
        named = _named_config(
            name, table, virtual_keys, top.virtual_keys, registry, top.upstream, problems
        )
        if named is not None:
            configs[name] = named

    provider_defaults: dict[str, ProviderSettings] = {}
    provider_custom_hosts: dict[str, tuple[str, ...]] = {}
    for slug, table in top.providers.items():
        path = f"providers.{slug}"
        provider = _provider(registry, slug, path, problems)
        if provider is None:
            continue
        if provider.slug in provider_defaults:
            problems.append(f"{path}: settings for '{provider.slug}' are given twice")
            continue
        fields = dict(table) if isinstance(table, dict) else table
        hosts = _custom_hosts(fields, path, problems)
        settings = _convert(fields, provider.Settings, path, problems)
        if settings is not None:
            provider_defaults[provider.slug] = settings
            provider_custom_hosts[provider.slug] = hosts

    hooks = top.webhooks
    if "webhooks" in resolved and hooks.database is None:
        # Managed mode's database, if the config uses one: one database for both.
        sources = {f"providers.{slug}": one for slug, one in provider_defaults.items()}
        sources |= {f"virtual_keys.{name}": vk.settings for name, vk in virtual_keys.items()}
        sources |= {f"configs.{name}": named.settings for name, named in configs.items()}
        database, ambiguous = shared_database(sources)
        problems += [ambiguous] if ambiguous else []
        hooks = msgspec.structs.replace(hooks, database=database)
    tables: dict[str, EndpointTable] = {}
    for name, table in hooks.endpoints.items():
        converted = _convert(table, EndpointTable, f"webhooks.endpoints.{name}", problems)
        if converted is not None:
            tables[name] = converted
    names = {key.name for key in gateway_keys}
    webhook_endpoints = endpoints_of(tables, env, names, hooks.allow_http, problems)
    if hooks.endpoints and hooks.database is None:
        problems.append(
            "webhooks.endpoints: webhooks need a database to record jobs and deliveries: "
            "[webhooks] database, or managed mode's ([providers.portkey] database)"
        )

    # A value an unset variable left empty fails its own checks too: report it once.
    unset = {p.partition(": ")[0] for p in secret_problems}
    problems = secret_problems + [p for p in problems if p.partition(": ")[0] not in unset]
    if problems:
        raise ConfigError(problems)
    config = Config(
        top.server,
        top.limits,
        top.upstream,
        top.routing,
        tuple(gateway_keys),
        virtual_keys,
        configs,
        provider_defaults,
        provider_custom_hosts=provider_custom_hosts,
        egress=top.egress,
        webhooks=hooks,
        webhook_endpoints=webhook_endpoints,
    )
    # The endpoints' literal addresses against the policy the whole config makes.
    refused = address_problems(webhook_endpoints, egress.policy_of(config))
    if refused:
        raise ConfigError(refused)
    return config


def _virtual_key(
    name: str, table: Any, registry: Registry, upstream: CallPolicy, problems: list[str]
) -> VirtualKey | None:
    path = f"virtual_keys.{name}"
    if not isinstance(table, dict):
        problems.append(f"{path}: expected a table")
        return None
    fields = dict(table)
    policy = _policy(upstream, fields, path, problems)
    slug = fields.pop("provider", None)
    if not isinstance(slug, str):
        problems.append(f"{path}.provider: required, the provider's slug (for example 'openai')")
        return None
    provider = _provider(registry, slug, f"{path}.provider", problems)
    if provider is None:
        return None
    hosts = _custom_hosts(fields, path, problems)
    settings = _convert(fields, provider.Settings, path, problems)
    return None if settings is None else VirtualKey(name, provider, settings, policy, hosts)


def _custom_hosts(fields: Any, path: str, problems: list[str]) -> tuple[str, ...]:
    """Pop and check a table's ``custom_hosts``: http(s) origins its credentials may go to."""
    if not isinstance(fields, dict):
        return ()
    hosts = fields.pop("custom_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        problems.append(f"{path}.custom_hosts: expected a list of URLs")
        return ()
    for i, host in enumerate(hosts):
        if origin_of(host) is None:
            problems.append(
                f"{path}.custom_hosts[{i}]: {host!r} is not an http(s) URL with a host, "
                "no user info and no control characters or spaces"
            )
    return tuple(h.rstrip("/") for h in hosts)


def _named_config(
    name: str,
    table: Any,
    virtual_keys: dict[str, VirtualKey],
    virtual_key_names: dict[str, Any],
    registry: Registry,
    upstream: CallPolicy,
    problems: list[str],
) -> NamedConfig | None:
    path = f"configs.{name}"
    if not isinstance(table, dict):
        problems.append(f"{path}: expected a table")
        return None
    table = dict(table)
    policy_fields = {k: table.pop(k) for k in POLICY_KEYS & table.keys()}
    route_fields = {k: v for k, v in table.items() if k in RouteConfig.__struct_fields__}
    settings = {k: v for k, v in table.items() if k not in RouteConfig.__struct_fields__}
    route = _convert(route_fields, RouteConfig, path, problems)
    if route is None:
        return None
    if (route.virtual_key is None) == (route.provider is None):
        problems.append(f"{path}: give exactly one of 'virtual_key' or 'provider'")
        return None
    custom_host = None if route.custom_host is None else route.custom_host.rstrip("/")
    if route.virtual_key is not None:
        if route.virtual_key not in virtual_key_names:
            problems.append(f"{path}.virtual_key: no virtual key named {route.virtual_key!r}")
        if settings:
            problems.append(
                f"{path}.{next(iter(settings))}: provider settings belong in the virtual key"
            )
        vk = virtual_keys.get(route.virtual_key)
        if vk is None or settings:
            return None  # a broken virtual key reports its own problem
        resolved = vk.settings
        if custom_host is not None:
            resolved = msgspec.structs.replace(resolved, custom_host=custom_host)
        policy = _policy(vk.policy or upstream, policy_fields, path, problems) or vk.policy
        return NamedConfig(name, vk.provider, resolved, vk.name, policy)
    assert route.provider is not None  # exactly one of the two, checked above
    policy = _policy(upstream, policy_fields, path, problems)
    provider = _provider(registry, route.provider, f"{path}.provider", problems)
    if provider is None:
        return None
    if custom_host is not None:
        settings["custom_host"] = custom_host
    converted = _convert(settings, provider.Settings, path, problems)
    return None if converted is None else NamedConfig(name, provider, converted, None, policy)


def _policy(
    base: CallPolicy, table: dict[str, Any], path: str, problems: list[str]
) -> CallPolicy | None:
    """The policy a table's ``retry`` and timeout keys make of ``base`` (taken out of it);
    None when it has none (``base`` then applies)."""
    given = {k: table.pop(k) for k in POLICY_KEYS & table.keys()}
    if not given:
        return None
    try:
        return overlay(base, given)
    except msgspec.ValidationError as exc:
        problems.append(_validation_problem(exc, path))
        return None


def _provider(
    registry: Registry, slug: str, path: str, problems: list[str]
) -> type[Provider] | None:
    try:
        return registry.get(slug)
    except Exception as exc:
        problems.append(f"{path}: {exc}")
        return None


def _convert(value: Any, type_: type[T], path: str, problems: list[str]) -> T | None:
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        problems.append(_validation_problem(exc, path))
        return None


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.S)


def _validation_problem(exc: msgspec.ValidationError, prefix: str) -> str:
    """msgspec's "Expected `str`, got `int` - at `$.a.b`" as "prefix.a.b: Expected ..."."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any string
    message, where = match["msg"], (match["where"] or "")
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        where, message = f"{where}.{unknown[1]}", "unknown setting"
    path = (prefix + where).lstrip(".") or "(top level)"
    return f"{path}: {message}"


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _resolve_secrets(value: Any, path: str, env: Any, problems: list[str]) -> Any:
    """Replace ``{ "$env" = "NAME" }`` and ``${NAME}`` by the environment's values."""
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            name = value["$env"]
            if not isinstance(name, str) or name not in env:
                problems.append(f"{path.lstrip('.')}: environment variable {name!r} is not set")
                return None
            return env[name]
        return {k: _resolve_secrets(v, f"{path}.{k}", env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name not in env:
                problems.append(f"{path.lstrip('.')}: environment variable {name!r} is not set")
                return ""
            return str(env[name])

        return _ENV_REF.sub(substitute, value)
    return value


def _check_allowlist(entries: list[str], problems: list[str]) -> None:
    for i, entry in enumerate(entries):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", entry) or entry.startswith("."):
                problems.append(
                    f"routing.custom_host_allowlist[{i}]: {entry!r} is neither a host name, "
                    "an IP address nor a CIDR network"
                )
