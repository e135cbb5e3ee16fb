"""Which provider, with which settings, serves a request (Portkey's headers).

Order of precedence, as in Portkey: ``x-portkey-config`` (a named config or inline
JSON), then ``x-portkey-virtual-key``, then ``x-portkey-provider`` with credentials in
headers (over the config's ``[providers.<slug>]`` settings, if any), then the gateway
key's ``default_virtual_key``. Credentials that come from the
request are refused where the config does not accept them, and a request-supplied
custom host must be on the config's allow-list: the gateway must never become a way to
reach internal addresses.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from yarl import URL

from gateway.addresses import allow_list, parse_address
from gateway.config import Config, GatewayKey, VirtualKey
from gateway.destinations import check_bound, invalid_url, keeps_config_secrets, refuse_controls
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.fields import bad_destination_field, field_defaults, fields_of_kind, kinds
from gateway.json_depth import decode_bounded
from gateway.provider import Provider, ProviderSettings, bearer_token
from gateway.registry import Registry
from gateway.resolver import check_resolved_name
from gateway.retry import INLINE_POLICY_KEYS, CallPolicy, inline_overlay

# Portkey config keys that select a target; every other key is a provider setting.
_ROUTE_KEYS = frozenset({"provider", "virtual_key", "custom_host"})
# Portkey config features this gateway does not implement; refused, never ignored.
_UNSUPPORTED_CONFIG_KEYS = frozenset({"strategy", "targets", "cache", "override_params"})


@dataclass(frozen=True, slots=True)
class Target:
    provider: type[Provider]
    settings: ProviderSettings
    # True when the provider's credentials came from the request rather than the config:
    # an upstream 401 is then the caller's to see, not a gateway misconfiguration.
    caller_credentials: bool
    virtual_key: str | None = None
    gateway_key: str | None = None  # the gateway key's name, for logs and ownership
    # Retries and timeouts of its upstream calls; None for the config's [upstream].
    policy: CallPolicy | None = None
    # True when any setting came from the request (provider headers, an inline config's
    # settings, a custom host) rather than from the config file alone: such instances
    # are many and short-lived, and are pooled apart from the configured ones.
    request_chosen: bool = False


def authenticate(headers: Mapping[str, str], config: Config) -> GatewayKey | None:
    """The caller's gateway key; None where the config has none (an open gateway)."""
    if not config.gateway_keys:
        return None
    candidates = [headers.get("x-portkey-api-key", ""), bearer_token(headers)]
    for candidate in candidates:
        key = _match_gateway_key(candidate, config)
        if key is not None:
            return key
    raise Unauthorized(
        "Missing or invalid gateway key: send it as 'Authorization: Bearer <key>' "
        "or in the 'x-portkey-api-key' header",
        code="invalid_api_key",
    )


def resolve_target(
    headers: Mapping[str, str],
    config: Config,
    registry: Registry,
    gateway_key: GatewayKey | None,
) -> Target:
    gk_name = gateway_key.name if gateway_key else None
    target: Target
    if raw := headers.get("x-portkey-config"):
        target = _from_portkey_config(raw, config, registry, gateway_key)
    elif name := headers.get("x-portkey-virtual-key"):
        target = _from_virtual_key(name, config, gateway_key, "x-portkey-virtual-key")
    elif slug := headers.get("x-portkey-provider"):
        provider = registry.get(slug)
        provider_headers = _without_gateway_credentials(headers, config)
        present = sorted(h for h in provider.credential_headers if provider_headers.get(h))
        if present and not config.routing.accept_header_credentials:
            raise _header_credentials_refused(present[0])
        from_headers = provider.settings_from_headers(provider_headers)
        _check_request_urls(from_headers, config.routing.custom_host_allowlist, _header_of)
        defaults = config.provider_defaults.get(provider.slug)
        settings = from_headers if defaults is None else _overlay(defaults, from_headers)
        if defaults is not None and keeps_config_secrets(defaults, settings):
            hosts = config.provider_custom_hosts.get(provider.slug, ())
            check_bound(defaults, settings, hosts, param_of=_header_of)
        request_chosen = settings is not defaults
        target = Target(provider, settings, True, None, gk_name, request_chosen=request_chosen)
    elif gateway_key is not None and gateway_key.default_virtual_key:
        target = _from_virtual_key(gateway_key.default_virtual_key, config, gateway_key, None)
    else:
        raise BadRequest(
            "No provider chosen: send 'x-portkey-provider', 'x-portkey-virtual-key' or "
            "'x-portkey-config', or give your gateway key a default_virtual_key",
            param="x-portkey-provider",
            code="missing_provider",
        )
    if host := headers.get("x-portkey-custom-host"):
        target = _with_custom_host(target, host, config, "x-portkey-custom-host")
    return target


def _header_of(setting: str) -> str:
    return "x-portkey-" + setting.replace("_", "-")


def _check_request_urls(
    settings: ProviderSettings, allowlist: list[str], param_of: Callable[[str], str]
) -> None:
    """Hold every URL a request put in a provider's settings to the custom-host allow-list.

    Settings from an inline config or provider headers can carry URLs of their own
    (OpenAI's ``base_url``, an AWS ``endpoint_url``); left unchecked, any of them would
    let a caller aim the gateway at an internal address. Which settings are URLs is
    declared by their type (``gateway.fields``), and no URL or host may hold a control
    character or white space: clients strip or split on them, so the host checked would
    not be the host called.
    """
    bad = bad_destination_field(settings)
    if bad is not None:
        raise invalid_url(param_of(bad))
    defaults = field_defaults(type(settings))
    for name, value in fields_of_kind(settings, "url"):
        if name != "custom_host" and value != defaults[name]:  # the default: its real API
            check_custom_host(value, allowlist, param_of(name))


def _overlay(defaults: ProviderSettings, given: ProviderSettings) -> ProviderSettings:
    """The config's ``[providers.<slug>]`` settings, with those a request gave on top."""
    changed = {
        name: getattr(given, name)
        for name, default in field_defaults(type(given)).items()
        if getattr(given, name) != default
    }
    return msgspec.structs.replace(defaults, **changed) if changed else defaults


def check_custom_host(url: str, allowlist: list[str], param: str) -> None:
    """Refuse a request-supplied base URL whose host is not on the allow-list.

    An IP address must fall in a listed network; a name must be listed as it is, and
    every address it resolves to must be allowed too (``gateway.addresses`` has the
    rules). Routing is synchronous and DNS is not, so a listed name is noted here and
    resolved by ``resolve_checked_target`` once routing is done. Odd spellings of
    addresses (``2130706433``, ``0x7f000001``, ``127.1``, ``127.0.0.1.``) are names
    that nobody lists, so they are refused.
    """
    refuse_controls(url, param)
    try:
        parsed = URL(url)
    except ValueError:
        parsed = URL()
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.user is not None:
        raise BadRequest(
            f"'{param}' must be an http(s) URL with a host and no user info",
            param=param,
            code="invalid_custom_host",
        )
    host = parsed.raw_host or ""  # as the HTTP client will resolve it (IDNA-encoded)
    if not _host_allowed(host, allowlist):
        raise BadRequest(
            f"Custom host '{host}' is not on this gateway's allow-list "
            "(routing.custom_host_allowlist)",
            param=param,
            code="custom_host_not_allowed",
        )
    names = _names_to_resolve.get()
    if names is not None and parse_address(host) is None:
        names.append((host, param))


def _host_allowed(host: str, allowlist: list[str]) -> bool:
    listed = allow_list(allowlist)
    address = parse_address(host)
    return listed.lists_name(host) if address is None else listed.lists_address(address)


# The names ``check_custom_host`` let through, with the param that gave each, for the
# request being routed; None outside ``resolve_checked_target`` and ``check_overrides``.
_names_to_resolve: ContextVar[list[tuple[str, str]] | None] = ContextVar(
    "names_to_resolve", default=None
)


async def resolve_checked_target(
    headers: Mapping[str, str],
    config: Config,
    registry: Registry,
    gateway_key: GatewayKey | None,
    cache: RoutingCache | None = None,
) -> Target:
    """``resolve_target``, then every host name the request gave resolved and checked.

    A name must resolve, within the connect timeout, only to addresses the allow-list
    allows, or the request is a 400 naming the header or config field that gave it.
    The HTTP client checks again when it connects (``gateway.resolver``).

    With a ``cache`` (one per app, so per config), a request whose routing headers are
    the same as an earlier one's takes that one's target (``RoutingCache``), and a name
    found allowed is not looked up again for ``RoutingCache.name_ttl`` seconds: the
    connection-time check still holds every connection to it to the allow-list.
    """
    found = cache.get(headers, gateway_key) if cache is not None else None
    if found is not None:
        target, names = found
    else:
        read = _ReadHeaders(headers)
        with _noting_names() as noted:
            target = resolve_target(read, config, registry, gateway_key)
        names = tuple(noted)
        if cache is not None:
            cache.put(read, gateway_key, target, names)
    await _check_names(names, config, cache)
    return target


class _ReadHeaders(Mapping[str, str]):
    """Request headers, noting which were read (case-insensitively) and what they held.

    Routing reads headers by name only (``get``, ``[]``, ``in``); anything that walks
    them all (iteration, ``len``) makes the result depend on every header, so it marks
    the reading as not reusable.
    """

    __slots__ = ("_headers", "reads", "whole")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers
        self.reads: dict[str, str | None] = {}
        self.whole = False  # True once every header was looked at: not cacheable

    def get(self, key: str, default: Any = None) -> Any:
        value = self._headers.get(key)
        self.reads.setdefault(key.lower(), value)
        return default if value is None else value

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        self.whole = True
        return iter(self._headers)

    def __len__(self) -> int:
        self.whole = True
        return len(self._headers)


_CacheKey = tuple[str | None, tuple[str, ...], tuple[str | None, ...]]


class RoutingCache:
    """Targets resolved from headers, reused by requests with the same routing headers.

    Routing is a pure function of the config (one per app, as is this cache), the
    caller's gateway key and the headers it reads. So an entry is keyed by the exact
    values of the headers its resolution read (absent ones included, as absent) and the
    gateway key's name: a request that holds the same values in those headers would be
    routed the same way, step by step, so it gets the same target, and a request that
    differs in any of them (another ``Authorization``, another custom host) misses and
    is resolved afresh. Which headers are read depends on the route (a virtual key
    reads fewer than a provider's headers), so the distinct sets of names read are kept
    too, a few, and each is tried on lookup. Refusals are never cached: they are
    resolved (and refused) again each time. A resolution that walked every header is
    not cached.

    Credentials are part of the keys, as they are of the pool's (``gateway.pool``): held
    in memory only, never logged, and ``repr`` shows counts only. Both parts are bounded
    least-recently-used maps. Host names a request gave are kept with the target and
    checked on every use (``resolve_checked_target``); a name found allowed is taken as
    allowed for ``name_ttl`` seconds (a refusal is never kept). That is safe for as long
    as it lasts because the check that stops rebinding is the connection's: every
    connection to such a name is resolved and checked again as it is made
    (``gateway.resolver.GuardedResolver``), cached or not; this one only turns a name
    that resolves where it may not into a 400 before any work is done.
    """

    def __init__(self, max_size: int = 256, max_name_sets: int = 16, name_ttl: float = 5.0) -> None:
        self.max_size = max_size
        self.max_name_sets = max_name_sets
        self.name_ttl = name_ttl
        self._names_allowed: OrderedDict[str, float] = OrderedDict()  # name -> until
        self._entries: OrderedDict[_CacheKey, tuple[Target, tuple[tuple[str, str], ...]]] = (
            OrderedDict()
        )
        self._name_sets: OrderedDict[tuple[str, ...], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<RoutingCache {len(self._entries)} targets, {len(self._name_sets)} name sets>"

    def get(
        self, headers: Mapping[str, str], gateway_key: GatewayKey | None
    ) -> tuple[Target, tuple[tuple[str, str], ...]] | None:
        gk = gateway_key.name if gateway_key is not None else None
        for names in reversed(self._name_sets):
            key = (gk, names, tuple(headers.get(name) for name in names))
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        return None

    def put(
        self,
        read: _ReadHeaders,
        gateway_key: GatewayKey | None,
        target: Target,
        names: tuple[tuple[str, str], ...],
    ) -> None:
        if read.whole:
            return
        ordered = tuple(sorted(read.reads))
        values = tuple(read.reads[name] for name in ordered)
        gk = gateway_key.name if gateway_key is not None else None
        self._name_sets[ordered] = None
        self._name_sets.move_to_end(ordered)
        while len(self._name_sets) > self.max_name_sets:
            dropped, _ = self._name_sets.popitem(last=False)
            for key in [k for k in self._entries if k[1] == dropped]:
                del self._entries[key]
        self._entries[(gk, ordered, values)] = (target, names)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def name_allowed(self, host: str) -> bool:
        """Whether ``host`` was found allowed less than ``name_ttl`` seconds ago."""
        until = self._names_allowed.get(host)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._names_allowed[host]
        return False

    def note_name_allowed(self, host: str) -> None:
        self._names_allowed[host] = time.monotonic() + self.name_ttl
        self._names_allowed.move_to_end(host)
        while len(self._names_allowed) > self.max_size:
            self._names_allowed.popitem(last=False)


def check_overrides(
    target: Target, overridden: ProviderSettings, config: Config, *, param: str
) -> None:
    """Hold the destinations that overrides put in a virtual key's settings to its own.

    Overrides come from a request (managed mode's ``portkey_options``, named as headers:
    ``x-portkey-custom-host``) while the credentials are the virtual key's: a changed
    URL must be one of its ``custom_hosts``, as any request-chosen host must.
    """
    vk = config.virtual_keys.get(target.virtual_key or "")
    hosts = vk.custom_hosts if vk is not None else ()
    # Named beside the option that chose the target (portkey_options.x-portkey-...).
    prefix = param.rpartition(".")[0] or param
    bad = bad_destination_field(overridden)
    if bad is not None:
        raise invalid_url(f"{prefix}.{_header_of(bad)}")
    check_bound(target.settings, overridden, hosts, param_of=lambda n: f"{prefix}.{_header_of(n)}")


@contextmanager
def _noting_names() -> Iterator[list[tuple[str, str]]]:
    names: list[tuple[str, str]] = []
    token = _names_to_resolve.set(names)
    try:
        yield names
    finally:
        _names_to_resolve.reset(token)


async def _check_names(
    names: Sequence[tuple[str, str]], config: Config, cache: RoutingCache | None = None
) -> None:
    allowlist = allow_list(config.routing.custom_host_allowlist)
    timeout = config.upstream.connect_timeout
    checked: set[str] = set()
    for host, param in names:
        if host in checked or (cache is not None and cache.name_allowed(host)):
            continue
        checked.add(host)
        await check_resolved_name(host, allowlist, timeout=timeout, param=param)
        if cache is not None:
            cache.note_name_allowed(host)


def target_of_virtual_key(
    name: str, config: Config, gateway_key: GatewayKey | None, *, param: str
) -> Target:
    """The target a virtual key of the config names (for providers acting for a caller)."""
    return _from_virtual_key(name, config, gateway_key, param)


def _from_virtual_key(
    name: str, config: Config, gateway_key: GatewayKey | None, param: str | None
) -> Target:
    vk: VirtualKey | None = config.virtual_keys.get(name)
    if vk is None:
        raise BadRequest(
            f"Unknown virtual key '{name}'",
            param=param or "x-portkey-virtual-key",
            code="unknown_virtual_key",
        )
    _check_scope(gateway_key, vk.name, param)
    gk_name = gateway_key.name if gateway_key else None
    return Target(vk.provider, vk.settings, False, vk.name, gk_name, vk.policy)


def _check_scope(gateway_key: GatewayKey | None, virtual_key: str, param: str | None) -> None:
    """A gateway key with a ``virtual_keys`` list uses those only, by every route."""
    if gateway_key is not None and not gateway_key.may_use(virtual_key):
        raise Forbidden(
            f"This gateway key may not use the virtual key '{virtual_key}'",
            param=param or "x-portkey-virtual-key",
            code="virtual_key_not_allowed",
        )


def _from_portkey_config(
    raw: str, config: Config, registry: Registry, gateway_key: GatewayKey | None
) -> Target:
    gk_name = gateway_key.name if gateway_key else None
    named = config.configs.get(raw)
    if named is not None:  # from the config file: resolved and trusted at load time
        if named.virtual_key is not None:
            _check_scope(gateway_key, named.virtual_key, "x-portkey-config")
        return Target(
            named.provider, named.settings, False, named.virtual_key, gk_name, named.policy
        )
    param = "x-portkey-config"
    fields = _inline_config(raw, param, config.limits.max_json_depth)
    policy_fields = {k: fields.pop(k) for k in INLINE_POLICY_KEYS & fields.keys()}
    settings_fields = {k: v for k, v in fields.items() if k not in _ROUTE_KEYS}
    if fields.get("virtual_key"):
        if settings_fields:
            raise BadRequest(
                f"'{param}': give either a virtual_key or provider settings, not both",
                param=f"{param}.{next(iter(settings_fields))}",
                code="invalid_config",
            )
        target = _from_virtual_key(str(fields["virtual_key"]), config, gateway_key, param)
    elif isinstance(fields.get("provider"), str):
        provider = registry.get(fields["provider"])
        if settings_fields and not provider.request_settings:
            raise BadRequest(
                f"The '{provider.slug}' provider takes its settings from the gateway's "
                "config only, never from a request",
                param=f"{param}.{next(iter(settings_fields))}",
                code="invalid_config",
            )
        if settings_fields and not config.routing.accept_header_credentials:
            raise _header_credentials_refused(param)
        destinations = kinds(provider.Settings)
        for name, value in settings_fields.items():
            if destinations.get(name) in ("url", "host") and isinstance(value, str):
                refuse_controls(value, f"{param}.{name}")
        try:
            settings = msgspec.convert(settings_fields, provider.Settings)
        except msgspec.ValidationError as exc:
            raise _config_error(exc, param) from None
        _check_request_urls(
            settings, config.routing.custom_host_allowlist, lambda name: f"{param}.{name}"
        )
        defaults = config.provider_defaults.get(provider.slug)
        if defaults is not None:
            settings = _overlay(defaults, settings)
            if keeps_config_secrets(defaults, settings):
                hosts = config.provider_custom_hosts.get(provider.slug, ())
                check_bound(defaults, settings, hosts, param_of=lambda n: f"{param}.{n}")
        target = Target(provider, settings, True, None, gk_name, request_chosen=True)
    else:
        raise BadRequest(
            f"'{param}' must name a 'provider' or a 'virtual_key'",
            param=param,
            code="invalid_config",
        )
    if policy_fields:
        try:
            policy = inline_overlay(target.policy or config.upstream, policy_fields)
        except msgspec.ValidationError as exc:
            raise _config_error(exc, param) from None
        target = replace(target, policy=policy)
    custom_host = fields.get("custom_host")
    if isinstance(custom_host, str):
        target = _with_custom_host(target, custom_host, config, f"{param}.custom_host")
    return target


def _inline_config(raw: str, param: str, max_depth: int) -> dict[str, Any]:
    """An inline Portkey config: a JSON object using only the features implemented here."""
    try:
        fields = decode_bounded(raw.encode(), max_depth=max_depth, param=param, what=f"'{param}'")
    except msgspec.DecodeError:
        raise BadRequest(
            f"'{param}' is neither the name of a config nor a JSON object",
            param=param,
            code="invalid_config",
        ) from None
    if not isinstance(fields, dict):
        raise BadRequest(f"'{param}' must be a JSON object", param=param, code="invalid_config")
    unsupported = sorted(_UNSUPPORTED_CONFIG_KEYS & fields.keys())
    if unsupported:
        raise BadRequest(
            f"'{param}': '{unsupported[0]}' is not supported by this gateway",
            param=f"{param}.{unsupported[0]}",
            code="unsupported_config",
        )
    return fields


def _config_error(exc: msgspec.ValidationError, param: str) -> BadRequest:
    message, _, where = str(exc).partition(" - at `$")
    return BadRequest(
        f"'{param}': {message}", param=param + where.rstrip("`"), code="invalid_config"
    )


def _with_custom_host(target: Target, host: str, config: Config, param: str) -> Target:
    """The target with a request-chosen custom host, which must be one of the virtual
    key's ``custom_hosts`` when the credentials are the config's (``gateway.destinations``),
    and on the allow-list when they are the request's own."""
    refuse_controls(host, param)
    settings = msgspec.structs.replace(target.settings, custom_host=host.rstrip("/"))
    bound_to = _credential_hosts(target, config)
    if bound_to is None:
        check_custom_host(host, config.routing.custom_host_allowlist, param)
    else:
        check_bound(target.settings, settings, bound_to, param_of=lambda _: param)
    return replace(target, settings=settings, request_chosen=True)


def _credential_hosts(target: Target, config: Config) -> tuple[str, ...] | None:
    """The custom hosts the config lists for the target's credentials; None when it
    carries none of the config's (all of them came with the request)."""
    if not target.caller_credentials:
        vk = config.virtual_keys.get(target.virtual_key or "")
        return vk.custom_hosts if vk is not None else ()
    defaults = config.provider_defaults.get(target.provider.slug)
    if defaults is not None and keeps_config_secrets(defaults, target.settings):
        return config.provider_custom_hosts.get(target.provider.slug, ())
    return None


def _header_credentials_refused(header: str) -> Forbidden:
    return Forbidden(
        f"This gateway does not accept provider credentials in requests ('{header}'); "
        "use a virtual key (routing.accept_header_credentials is off)",
        param=header,
        code="header_credentials_not_allowed",
    )


def _match_gateway_key(candidate: str, config: Config) -> GatewayKey | None:
    """Compare against every key in constant time, so timing tells nothing."""
    found: GatewayKey | None = None
    given = candidate.encode()
    for key in config.gateway_keys:
        if hmac.compare_digest(given, key.key.encode()) and candidate:
            found = key
    return found


def _without_gateway_credentials(headers: Mapping[str, str], config: Config) -> Mapping[str, str]:
    """The headers a provider may read: the gateway's own key is never a provider's."""
    hidden = {"x-portkey-api-key"}
    if _match_gateway_key(bearer_token(headers), config) is not None:
        hidden.add("authorization")
    return _Without(headers, frozenset(hidden))


class _Without(Mapping[str, str]):
    """``headers`` without the (lower-case) names in ``hidden``: a view, not a copy."""

    __slots__ = ("_headers", "_hidden")

    def __init__(self, headers: Mapping[str, str], hidden: frozenset[str]) -> None:
        self._headers = headers
        self._hidden = hidden

    def get(self, key: str, default: Any = None) -> Any:
        if key.lower() in self._hidden:
            return default
        return self._headers.get(key, default)

    def __getitem__(self, key: str) -> str:
        if key.lower() in self._hidden:
            raise KeyError(key)
        return self._headers[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() not in self._hidden and key in self._headers

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._headers if name.lower() not in self._hidden)

    def __len__(self) -> int:
        return sum(1 for _ in self)
