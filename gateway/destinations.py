"""Where a credential from the config may be sent: only where the config says.

A virtual key's credentials (or a ``[providers.<slug>]`` table's) travel to the
provider's own API, to the endpoints the config set, and to the ``custom_hosts`` the
same table lists. A destination a request chose (``x-portkey-custom-host``, an inline
config's ``custom_host`` or ``base_url``, a managed-mode override) may only receive the
credentials that request brought itself: otherwise any caller could read the config's
secrets with a listener of its own. Destinations are the settings typed ``Url`` or
``Host`` (``gateway.fields``); nothing is guessed from values.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.errors import BadRequest
from gateway.fields import has_control_or_space, kinds, origin_of
from gateway.provider import ProviderSettings


def check_bound(
    configured: ProviderSettings,
    final: ProviderSettings,
    custom_hosts: tuple[str, ...],
    *,
    param_of: Callable[[str], str],
) -> None:
    """Refuse ``final`` where it sends ``configured``'s credentials somewhere new.

    Every URL or host setting that differs from the configured one must be an origin
    (scheme, host, port) that ``custom_hosts`` lists; a changed host setting (an Azure
    resource name) is never allowed, as no list names it.
    """
    listed = {origin_of(host) for host in custom_hosts}
    for name, kind in kinds(type(final)).items():
        if kind not in ("url", "host"):
            continue
        value = getattr(final, name)
        if not value or value == getattr(configured, name):
            continue
        if kind == "url" and isinstance(value, str) and origin_of(value) in listed:
            continue
        raise not_bound(name, param_of(name))


def keeps_config_secrets(configured: ProviderSettings, final: ProviderSettings) -> bool:
    """True when ``final`` still holds a secret that came from ``configured``."""
    return any(
        getattr(configured, name) is not None and getattr(final, name) == getattr(configured, name)
        for name, kind in kinds(type(final)).items()
        if kind == "secret"
    )


def not_bound(setting: str, param: str) -> BadRequest:
    return BadRequest(
        f"'{param}' would send the credentials of this gateway's config to a destination "
        f"the config does not name for them ({setting}); list it in the virtual key's "
        "custom_hosts, or send credentials of your own",
        param=param,
        code="custom_host_not_allowed_for_virtual_key",
    )


def invalid_url(param: str) -> BadRequest:
    return BadRequest(
        f"'{param}' holds a control character or white space, which no URL or host may",
        param=param,
        code="invalid_url",
    )


def refuse_controls(value: str, param: str) -> None:
    if has_control_or_space(value):
        raise invalid_url(param)
