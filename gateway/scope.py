"""What core tells a provider about the call it is serving: who calls, and the other targets.

Most providers need neither. A provider that works on behalf of the gateway's callers
(managed mode, which owns files and jobs and runs them on other providers) reads the
caller's gateway key from here, and opens the provider behind a virtual key through
here rather than importing another plugin: the registry, the config and the instance
pool stay core's.

The scope is a context variable set by core for each provider call. A task started
from inside the call (``asyncio.create_task``) copies it, so background work keeps the
caller and can still open targets after the request has been answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import msgspec

from gateway.errors import InternalError
from gateway.fields import field_defaults
from gateway.provider import Provider, ProviderSettings


class OpenTarget(Protocol):
    def __call__(
        self, virtual_key: str, overrides: Mapping[str, str], *, param: str
    ) -> AbstractAsyncContextManager[Provider]: ...


@dataclass(frozen=True, slots=True)
class CallScope:
    # The name of the caller's gateway key; None on an open gateway (no keys configured).
    owner: str | None
    # The provider behind a virtual key of the config, with some settings replaced (see
    # ``with_overrides``); a 400 naming ``param`` when no such virtual key exists.
    open_target: OpenTarget


_scope: ContextVar[CallScope | None] = ContextVar("finetune_gateway_call_scope", default=None)


def current_scope() -> CallScope:
    scope = _scope.get()
    if scope is None:  # a provider method called outside core: a programming error
        raise InternalError("No call scope: provider called outside the gateway's handlers")
    return scope


@asynccontextmanager
async def entered(scope: CallScope) -> AsyncIterator[CallScope]:
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def with_overrides(settings: ProviderSettings, overrides: Mapping[str, str]) -> ProviderSettings:
    """``settings`` with the fields named in ``overrides`` replaced; others are ignored.

    Overrides are named as Portkey's headers are (``x-portkey-aws-s3-bucket`` is the
    field ``aws_s3_bucket``), so one set of options can be given for any target: a
    Vertex bucket name means nothing to Bedrock and is left out there.
    """
    fields = field_defaults(type(settings))
    changes: dict[str, str] = {}
    for header, value in overrides.items():
        name = header.lower().removeprefix("x-portkey-").replace("-", "_")
        if name in fields and value:
            changes[name] = value
    return msgspec.structs.replace(settings, **changes) if changes else settings
