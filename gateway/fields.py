"""Typed settings fields: which of a provider's settings are URLs, host names or secrets.

A plugin declares what a setting *is* by its type, and core checks by type rather than
by sniffing values: every ``Url`` a request sets is held to the custom-host allow-list,
every ``Url`` and ``Host`` the config sets names a destination the egress policy lets
the gateway reach, and a ``Secret`` from the config is sent only to the destinations
its virtual key names (``gateway.routing``).

Any control character or white space in a URL or host is refused, from any source:
HTTP clients strip or split on them (yarl drops a leading C0 control, as WHATWG says),
so the host that was checked would not be the host that is called.

    class MySettings(ProviderSettings, frozen=True, kw_only=True):
        api_key: Secret | None = None
        base_url: Url = "https://api.example.com/v1"
        region_host: Host | None = None
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Annotated, Literal

import msgspec
import yarl

Kind = Literal["url", "host", "secret"]
_KIND_KEY = "x-setting-kind"
# No C0 control, DEL or white space (Unicode's too: U+0085, U+2028, no-break spaces).
_NO_CONTROLS = r"^[^\s\x00-\x1f\x7f]+$"

# The markers alone, for a field with a pattern of its own:
# ``Annotated[str, Meta(pattern=...), HOST]`` (core still refuses controls and spaces).
URL = msgspec.Meta(extra={_KIND_KEY: "url"})
HOST = msgspec.Meta(extra={_KIND_KEY: "host"})
SECRET = msgspec.Meta(extra={_KIND_KEY: "secret"})

Url = Annotated[str, msgspec.Meta(pattern=_NO_CONTROLS), URL]
Host = Annotated[str, msgspec.Meta(pattern=_NO_CONTROLS), HOST]
Secret = Annotated[str, SECRET]


@functools.cache
def kinds(settings_type: type[msgspec.Struct]) -> dict[str, Kind]:
    """Field name -> kind, for the fields of ``settings_type`` declared with these types."""
    found: dict[str, Kind] = {}
    info = msgspec.inspect.type_info(settings_type)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        kind = _kind_of(field.type)
        if kind is not None:
            found[field.name] = kind
    return found


@functools.cache
def field_defaults(settings_type: type[msgspec.Struct]) -> Mapping[str, object]:
    """Field name -> default (``msgspec.NODEFAULT`` where it has none) of a settings type.

    ``msgspec.structs.fields`` evaluates the type's annotations on every call, which
    costs more than routing a request; a type's fields never change, so once per type.
    """
    return MappingProxyType(
        {field.name: field.default for field in msgspec.structs.fields(settings_type)}
    )


def _kind_of(info: msgspec.inspect.Type) -> Kind | None:
    if isinstance(info, msgspec.inspect.Metadata):
        kind = (info.extra or {}).get(_KIND_KEY)
        return kind if kind in ("url", "host", "secret") else _kind_of(info.type)
    if isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            kind = _kind_of(member)
            if kind is not None:
                return kind
    return None


def fields_of_kind(settings: msgspec.Struct, *wanted: Kind) -> Iterator[tuple[str, str]]:
    """``(name, value)`` of each set field of one of the ``wanted`` kinds."""
    for name, kind in kinds(type(settings)).items():
        value = getattr(settings, name)
        if kind in wanted and isinstance(value, str) and value:
            yield name, value


def has_control_or_space(value: str) -> bool:
    """Whether ``value`` holds what a URL or host setting may not (see the module doc)."""
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


def bad_destination_field(settings: msgspec.Struct) -> str | None:
    """The first URL or host field whose value holds a control character or white space.

    Settings a plugin builds itself (``settings_from_headers``) skip msgspec's checks,
    so core runs this on every settings it is handed, whatever their source.
    """
    for name, value in fields_of_kind(settings, "url", "host"):
        if has_control_or_space(value):
            return name
    return None


Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin | None:
    """``(scheme, host, port)`` of an http(s) URL, as the HTTP client will connect to it;
    None for anything else (another scheme, no host, user info, controls or spaces)."""
    if has_control_or_space(url):
        return None
    try:
        parsed = yarl.URL(url)
    except ValueError:
        return None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host or parsed.user is not None:
        return None
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, parsed.raw_host.lower().rstrip("."), port
