"""The one contract a provider plugin implements.

A plugin is a distribution that registers a ``Provider`` subclass under the entry point
group ``finetune_gateway.providers``; the entry point's name is the provider's slug.
Built-in providers are found exactly the same way. Core decodes and validates the
request, picks the provider and its settings, and calls one method; the provider does
the upstream I/O and answers with the OpenAI objects in ``gateway.models`` (or, when it
needs no mapping, with the upstream's own JSON bytes as ``msgspec.Raw``).

Any operation left unimplemented answers a clear 400 naming the provider and the
operation (``NotSupported``); it never falls through to another operation.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

import aiohttp
import msgspec

from gateway.errors import BadRequest, NotSupported, Unauthorized
from gateway.fields import Url
from gateway.models import (
    Checkpoint,
    FileDeleted,
    FileObject,
    FineTuningJob,
    JobCreate,
    JobEvent,
    Page,
)

T = TypeVar("T")
# A provider answers with a modelled object or, when no mapping is needed, the upstream's
# JSON as it came (already OpenAI-shaped), which the gateway sends on without re-encoding.
Json: TypeAlias = T | msgspec.Raw


class ProviderSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every provider's ``Settings``: what a virtual key or request headers give it.

    Frozen, so equal settings share one provider instance. ``custom_host`` is set by core
    from an allow-listed ``x-portkey-custom-host`` (or a config's ``custom_host``); a
    provider uses it in place of its upstream's base URL.

    Declare URL, host and secret settings with ``gateway.fields``' types (``Url``,
    ``Host``, ``Secret``): core checks and guards them by type.
    """

    custom_host: Url | None = None

    def records_database(self) -> str | None:
        """The database this provider keeps its own records in (a SQLite path or a
        ``postgresql://`` DSN), if it keeps any: the webhooks' records default to the
        same one (managed mode's, so one database serves both, as replicas need)."""
        return None


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer ...`` header; "" when there is none."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer_key(headers: Mapping[str, str], service: str) -> str:
    """A provider's API key from ``Authorization: Bearer``, for ``settings_from_headers``
    (core has already removed the header when it carried the gateway's own key); a 401
    saying how to send one when there is none."""
    token = bearer_token(headers)
    if not token:
        raise Unauthorized(
            f"No {service} API key in the request: send 'Authorization: Bearer <{service} "
            "key>' or use a virtual key",
            code="missing_provider_credentials",
        )
    return token


@dataclass(frozen=True, slots=True)
class PageQuery:
    """``after``/``limit`` plus the list filters OpenAI defines; unused ones are None."""

    limit: int
    after: str | None = None
    order: Literal["asc", "desc"] | None = None
    purpose: str | None = None
    # ``metadata[k]=v`` filters on jobs; an empty dict is ``metadata=null`` (jobs without).
    metadata: dict[str, str] | None = None


@dataclass(slots=True)
class JobRequest:
    """A create-job body: validated into ``spec``, and kept whole in ``body``.

    ``body`` holds every field the client sent, including those the gateway does not
    model, so a provider with OpenAI's schema forwards them unchanged.
    """

    spec: JobCreate
    body: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(slots=True)
class FileUpload:
    """A file being uploaded, streamed: ``chunks`` yields the bytes once, in order."""

    filename: str
    purpose: str
    chunks: AsyncIterator[bytes]
    content_type: str = "application/octet-stream"
    # Other form fields the client sent (for example ``expires_after[seconds]``).
    extra_fields: list[tuple[str, str]] = field(default_factory=list)

    def require_fine_tuning_only(self, provider: str) -> None:
        """For providers that keep files only to train on, in stores with no expiry:
        any other purpose, or a field such as ``expires_after``, is a 400 rather than
        something silently ignored."""
        if self.purpose != "fine-tune":
            raise BadRequest(
                f"The '{provider}' provider stores only fine-tuning files "
                f"(purpose 'fine-tune'), not '{self.purpose}'",
                param="purpose",
                code="unsupported_purpose",
            )
        if self.extra_fields:
            name = self.extra_fields[0][0]
            raise BadRequest(
                f"'{name}' is not supported for files of the '{provider}' provider",
                param=name,
                code="unsupported",
            )


@dataclass(slots=True)
class Download:
    """File content, streamed; ``release`` frees the upstream connection when done."""

    chunks: AsyncIterator[bytes]
    size: int | None = None
    content_type: str = "application/octet-stream"
    release: Callable[[], Awaitable[None]] | None = None


class Provider(abc.ABC):
    """One upstream fine-tuning service, built once per distinct settings and reused."""

    slug: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type[ProviderSettings]]
    # Request headers that carry credentials: refused where the config does not accept
    # credentials in headers, and never logged.
    credential_headers: ClassVar[frozenset[str]] = frozenset()
    # False for a provider whose settings only the config may give (managed mode's say
    # where the gateway writes): an inline x-portkey-config carrying them is refused.
    request_settings: ClassVar[bool] = True

    def __init__(
        self, settings: Any, http: aiohttp.ClientSession, *, caller_credentials: bool = False
    ) -> None:
        self.settings = settings
        self.http = http
        # True when the credentials came from the request, not the config: an upstream
        # 401 is then the caller's to see, not a gateway misconfiguration (a 502).
        self.caller_credentials = caller_credentials

    @classmethod
    @abc.abstractmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> ProviderSettings:
        """Settings for a request that names the provider directly (``x-portkey-provider``)."""

    @classmethod  # noqa: B027 - optional hook, a no-op by default
    def check_overrides(
        cls, original: ProviderSettings, overridden: ProviderSettings, *, param: str
    ) -> None:
        """Refuse request overrides of a virtual key's settings (managed mode's
        ``portkey_options``) that reach beyond what the config lists, with a GatewayError
        naming the option beside ``param`` (``portkey_options.x-portkey-...``)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what the instance holds (clients, sessions); the shared ``http`` is core's."""

    def busy(self) -> bool:
        """True while the instance runs work of its own beyond the requests holding it
        (managed mode staging jobs): the pool then never evicts and closes it."""
        return False

    def _unsupported(self, operation: str) -> NotSupported:
        return NotSupported(self.slug, operation)

    # ---- jobs ----------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> Json[FineTuningJob]:
        raise self._unsupported("creating fine-tuning jobs")

    async def list_jobs(self, query: PageQuery) -> Json[Page[FineTuningJob]]:
        raise self._unsupported("listing fine-tuning jobs")

    async def retrieve_job(self, job_id: str) -> Json[FineTuningJob]:
        raise self._unsupported("retrieving fine-tuning jobs")

    async def cancel_job(self, job_id: str) -> Json[FineTuningJob]:
        raise self._unsupported("cancelling fine-tuning jobs")

    async def pause_job(self, job_id: str) -> Json[FineTuningJob]:
        raise self._unsupported("pausing fine-tuning jobs")

    async def resume_job(self, job_id: str) -> Json[FineTuningJob]:
        raise self._unsupported("resuming fine-tuning jobs")

    async def list_events(self, job_id: str, query: PageQuery) -> Json[Page[JobEvent]]:
        raise self._unsupported("listing fine-tuning job events")

    async def list_checkpoints(self, job_id: str, query: PageQuery) -> Json[Page[Checkpoint]]:
        raise self._unsupported("listing fine-tuning job checkpoints")

    # ---- files ---------------------------------------------------------------------
    async def upload_file(self, upload: FileUpload) -> Json[FileObject]:
        raise self._unsupported("uploading files")

    async def list_files(self, query: PageQuery) -> Json[Page[FileObject]]:
        raise self._unsupported("listing files")

    async def retrieve_file(self, file_id: str) -> Json[FileObject]:
        raise self._unsupported("retrieving files")

    async def file_content(self, file_id: str) -> Download:
        raise self._unsupported("downloading file content")

    async def delete_file(self, file_id: str) -> Json[FileDeleted]:
        raise self._unsupported("deleting files")
