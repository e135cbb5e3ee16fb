"""Finds provider plugins through the ``finetune_gateway.providers`` entry point group.

Loaded once, lazily. Each entry is checked (a ``Provider`` subclass whose ``slug`` is
the entry point's name, no slug or alias claimed twice). A plugin that fails is kept
as a ``BrokenPlugin`` with its error: it is listed by ``finetune-gateway plugins``,
reported when a request or the config names it, and harms nothing else.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from gateway.errors import BadRequest
from gateway.provider import Provider, ProviderSettings

ENTRY_POINT_GROUP = "finetune_gateway.providers"


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    slug: str
    provider: type[Provider]
    distribution: str
    version: str


@dataclass(frozen=True, slots=True)
class BrokenPlugin:
    name: str
    distribution: str
    version: str
    error: str


class Registry:
    """Slug (or alias) -> provider class, from the installed distributions."""

    def __init__(
        self,
        loaded: list[LoadedPlugin],
        broken: list[BrokenPlugin],
    ) -> None:
        self.loaded = loaded
        self.broken = broken
        self._by_name: dict[str, LoadedPlugin] = {}
        for plugin in loaded:
            self._by_name[plugin.slug] = plugin
            for alias in plugin.provider.aliases:
                self._by_name.setdefault(alias, plugin)
        self._broken_by_name = {b.name: b for b in broken}

    @classmethod
    def discover(cls) -> Registry:
        loaded: list[LoadedPlugin] = []
        broken: list[BrokenPlugin] = []
        claimed: dict[str, str] = {}
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_key):
            dist_name, version = _distribution_of(ep)
            try:
                provider = _load_checked(ep)
            except (Exception, SystemExit) as exc:  # a plugin's import can raise anything
                broken.append(BrokenPlugin(ep.name, dist_name, version, _describe(exc)))
                continue
            names = (provider.slug, *provider.aliases)
            taken = [n for n in names if n in claimed]
            if taken:
                error = f"slug {taken[0]!r} is already provided by {claimed[taken[0]]}"
                broken.append(BrokenPlugin(ep.name, dist_name, version, error))
                continue
            claimed.update(dict.fromkeys(names, dist_name))
            loaded.append(LoadedPlugin(provider.slug, provider, dist_name, version))
        return cls(loaded, broken)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> type[Provider]:
        """The provider class for a slug or alias, or a 400 that says what is wrong."""
        plugin = self._by_name.get(name)
        if plugin is not None:
            return plugin.provider
        broken = self._broken_by_name.get(name)
        if broken is not None:
            raise BadRequest(
                f"Provider '{name}' is installed ({broken.distribution}) but failed to load: "
                f"{broken.error}",
                param="x-portkey-provider",
                code="provider_unavailable",
            )
        known = ", ".join(self.names()) or "none installed"
        raise BadRequest(
            f"Unknown provider '{name}'. Known providers: {known}",
            param="x-portkey-provider",
            code="unknown_provider",
        )


def _ep_key(ep: importlib.metadata.EntryPoint) -> tuple[str, str, str]:
    # By distribution too: when two claim one slug, the same one wins on every machine,
    # not whichever the file system happens to list first.
    return ep.name, _distribution_of(ep)[0].lower(), ep.value


def _distribution_of(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"] or "unknown", dist.version


def _load_checked(ep: importlib.metadata.EntryPoint) -> type[Provider]:
    obj = ep.load()
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise TypeError(f"{ep.value} is not a subclass of gateway.provider.Provider")
    if getattr(obj, "slug", None) != ep.name:
        raise TypeError(
            f"{ep.value}.slug is {getattr(obj, 'slug', None)!r}, but the entry point is "
            f"named {ep.name!r}: they must match"
        )
    aliases = getattr(obj, "aliases", ())
    if not (isinstance(aliases, tuple) and all(isinstance(a, str) for a in aliases)):
        raise TypeError(f"{ep.value}.aliases must be a tuple of strings")
    settings = getattr(obj, "Settings", None)
    if not (isinstance(settings, type) and issubclass(settings, ProviderSettings)):
        raise TypeError(f"{ep.value}.Settings is not a subclass of ProviderSettings")
    return obj


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
