"""Webhook endpoints set in the config file (``[webhooks.endpoints.NAME]``).

They belong to no gateway key, so the endpoints API neither lists nor edits them; they
are the operator's: a URL, a signing secret by reference to the environment
(``secret_env``), the event types wanted and whose jobs (``gateway_keys``). The address
rules are the API's (``url_problem``): https unless ``allow_http``, a host and no
credentials; a literal IP is held to the egress policy when the config is loaded, and
every address at every delivery, after DNS (the deliverer's connector).

This module imports nothing of ``gateway.config``, which calls it while decoding.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import yarl

from gateway.addresses import effective_address, parse_address
from gateway.egress import EgressPolicy, EgressRefused
from gateway.webhooks.signing import PREFIX
from gateway.webhooks.store import END_EVENTS

EVENT_TYPES = tuple(END_EVENTS.values())
# Their deliveries' endpoint id: never an API endpoint's (``we_...``), so the API never
# finds one, and ``webhook-deliveries`` shows which table it was.
ID_PREFIX = "config:"
# Standard Webhooks' secrets are 24 to 64 random bytes; OpenAI's are 32.
MIN_SECRET_BYTES = 24


class EndpointTable(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    # The name of the environment variable holding the signing secret, never the secret.
    secret_env: str
    event_types: list[str] = msgspec.field(default_factory=lambda: list(EVENT_TYPES))
    # Names of [gateway_keys] tables whose jobs it hears of; absent: every key's.
    gateway_keys: list[str] | None = None


@dataclass(frozen=True, slots=True)
class ConfigEndpoint:
    name: str
    url: str
    secret: str = field(repr=False)  # tracebacks and logs print endpoints: never it
    event_types: frozenset[str]
    gateway_keys: frozenset[str] | None  # None: every gateway key's jobs

    @property
    def id(self) -> str:
        return ID_PREFIX + self.name

    def wants(self, owner: str, event_type: str) -> bool:
        whose = self.gateway_keys is None or owner in self.gateway_keys
        return whose and event_type in self.event_types


def url_problem(raw: str, allow_http: bool) -> str | None:
    """What is wrong with a receiver URL's shape, or None (its address is checked apart)."""
    try:
        url = yarl.URL(raw)
    except (ValueError, TypeError):
        return f"'{raw}' is not a URL"
    schemes = ("https", "http") if allow_http else ("https",)
    if url.scheme not in schemes:
        hint = "" if allow_http else " (plain http needs [webhooks] allow_http)"
        return f"A webhook URL must use {' or '.join(schemes)}{hint}"
    if not url.host or url.user is not None or url.password is not None or url.fragment:
        return "A webhook URL needs a host, and no credentials or fragment"
    return None


def refusal(host: str, exc: EgressRefused) -> str:
    return (
        f"Webhook host '{host}' resolves to {effective_address(exc.address)}, an address "
        "this gateway's egress policy does not allow ([egress] allow_networks)"
    )


def _secret_problem(value: str | None) -> str | None:
    if value is None:
        return "is not set"
    encoded = value.removeprefix(PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not value.startswith(PREFIX) or len(key) < MIN_SECRET_BYTES:
        # Never the value, nor a part of it: only what it should be.
        return (
            f"does not hold a signing secret: it must be '{PREFIX}' followed by the "
            f"base64 of at least {MIN_SECRET_BYTES} random bytes"
        )
    return None


def endpoints_of(
    tables: Mapping[str, EndpointTable],
    env: Mapping[str, str],
    gateway_keys: set[str],
    allow_http: bool,
    problems: list[str],
) -> tuple[ConfigEndpoint, ...]:
    """The ``[webhooks.endpoints.NAME]`` tables, checked; each problem named by its path."""
    found: list[ConfigEndpoint] = []
    for name, table in tables.items():
        path = f"webhooks.endpoints.{name}"
        before = len(problems)
        shape = url_problem(table.url, allow_http)
        if shape is not None:
            problems.append(f"{path}.url: {shape}")
        secret = env.get(table.secret_env)
        wrong = _secret_problem(secret)
        if wrong is not None:
            problems.append(f"{path}.secret_env: environment variable {table.secret_env!r} {wrong}")
        unknown = [t for t in table.event_types if t not in EVENT_TYPES]
        if unknown or not table.event_types:
            what = f"unsupported event types {unknown}" if unknown else "no event types"
            problems.append(
                f"{path}.event_types: {what}; the gateway sends {', '.join(EVENT_TYPES)}"
            )
        for key in table.gateway_keys or ():
            if key not in gateway_keys:
                problems.append(f"{path}.gateway_keys: no gateway key named {key!r}")
        if not gateway_keys:
            problems.append(
                f"{path}: the gateway watches the jobs made with a gateway key, and this "
                "config has none ([gateway_keys.NAME])"
            )
        if len(problems) == before and secret is not None:
            whose = None if table.gateway_keys is None else frozenset(table.gateway_keys)
            found.append(
                ConfigEndpoint(name, table.url, secret, frozenset(table.event_types), whose)
            )
    return tuple(found)


def address_problems(endpoints: tuple[ConfigEndpoint, ...], policy: EgressPolicy) -> list[str]:
    """The endpoints whose host is a literal IP the egress policy refuses. A name is
    resolved at each delivery instead: what it points at may change."""
    problems = []
    for endpoint in endpoints:
        host = yarl.URL(endpoint.url).host or ""
        literal = parse_address(host)
        if literal is None:
            continue
        try:
            policy.check(host, [literal])
        except EgressRefused as exc:
            problems.append(f"webhooks.endpoints.{endpoint.name}.url: {refusal(host, exc)}")
    return problems


def shared_database(sources: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The database webhooks default to: the one the providers' settings (by their path
    in the config: ``providers.portkey``, ``virtual_keys.managed``) keep records in,
    if they name exactly one; else None and, when they name several, the problem."""
    found: dict[str, list[str]] = {}
    for path, settings in sources.items():
        database = settings.records_database()
        if database is not None:
            found.setdefault(database, []).append(path)
    if len(found) <= 1:
        return next(iter(found), None), None
    # Paths only: a DSN may carry a password.
    places = "; ".join(", ".join(paths) for paths in found.values())
    return None, (
        "webhooks.database: not set, and managed mode keeps its records in more than one "
        f"database ({places}): set the one the webhooks' records go to"
    )
