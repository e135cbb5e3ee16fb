"""The Azure OpenAI provider: the I/O for both of Azure's fine-tuning APIs.

On the v1 API (OpenAI's schema) this is a faithful proxy, as the OpenAI plugin is:
answers go back as Azure's bytes (``msgspec.Raw``) and create bodies keep every field
the client sent except the gateway's own. On the dated API, answers are decoded and
rebuilt by ``transform``; what the dated API lacks (pause, resume, ``method`` other than supervised,
``metadata``, the jobs-list metadata filter, upload options) is a clear 400, and its
files list, which does not page, is paged here. Uploads and downloads stream on both.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import aiohttp
import msgspec

from gateway.errors import BadRequest, NotSupported
from gateway.models import (
    GATEWAY_ONLY_JOB_FIELDS,
    Checkpoint,
    FileDeleted,
    FileObject,
    FineTuningJob,
    JobEvent,
    Page,
)
from gateway.paging import openai_list_params
from gateway.provider import (
    Download,
    FileUpload,
    JobRequest,
    Json,
    PageQuery,
    Provider,
    ProviderSettings,
)
from gateway.step_metrics import EventLog
from gateway.upstream import UpstreamResponse, call_json, download, raise_for_openai_status
from gateway_azure import transform as tf
from gateway_azure.errors import parse_error
from gateway_azure.results import MAX_EVENTS, merged_log, results_block
from gateway_azure.settings import AzureSettings, Surface, settings_from_headers

T = TypeVar("T")
_LOGS_KEPT = 64  # finished jobs whose events and results file are held (bounded rows each)


class AzureOpenAIProvider(Provider):
    slug: ClassVar[str] = "azure-openai"
    aliases: ClassVar[tuple[str, ...]] = ("azure",)
    Settings: ClassVar[type[ProviderSettings]] = AzureSettings
    credential_headers: ClassVar[frozenset[str]] = frozenset(
        {"authorization", "api-key", "x-portkey-azure-ad-token"}
    )

    settings: AzureSettings

    def __init__(
        self, settings: Any, http: aiohttp.ClientSession, *, caller_credentials: bool = False
    ) -> None:
        super().__init__(settings, http, caller_credentials=caller_credentials)
        self.surface = Surface.of(self.settings.api_version)
        # Succeeded jobs' events with their results file's steps: read once, as they
        # never change again.
        self._logs: OrderedDict[str, EventLog] = OrderedDict()

    @classmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> AzureSettings:
        return settings_from_headers(headers)

    # ---- plumbing ------------------------------------------------------------------
    def _url(self, path: str) -> str:
        s = self.settings
        if s.custom_host:
            # Host (and any proxy prefix) only: a custom host given as Portkey's Azure base
            # URL (ending in /openai) or as the SDK's v1 base_url (/openai/v1) is taken
            # without that tail, which is added back below for the API in use.
            base = s.custom_host.rstrip("/")
            for tail in ("/openai/v1", "/openai"):
                if base.endswith(tail):
                    base = base[: -len(tail)]
                    break
        elif s.resource_name:
            base = f"https://{s.resource_name}.openai.azure.com"
        else:
            raise BadRequest(
                "No Azure OpenAI resource: set resource_name in the virtual key, or send "
                "'x-portkey-azure-resource-name'",
                param="x-portkey-azure-resource-name",
                code="missing_azure_resource",
            )
        return f"{base}/openai{'/v1' if self.surface.v1 else ''}{path}"

    def _headers(self) -> dict[str, str]:
        s = self.settings
        if s.ad_token:
            return {"Authorization": f"Bearer {s.ad_token}"}
        return {"api-key": s.api_key or ""}

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        form: aiohttp.MultipartWriter | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> msgspec.Raw:
        """One call answered with JSON; ``body`` is sent as JSON, ``form`` as multipart.

        ``idempotent``: whether a POST may be retried (see ``gateway.upstream.send``).
        """
        return await call_json(
            self.http,
            method,
            self._url(path),
            provider=self.slug,
            check=self._raise_for_status,
            headers={**self._headers(), **(headers or {})},
            params={**(params or {}), **self.surface.params()},
            body=body,
            form=form,
            idempotent=idempotent,
        )

    async def _dated(self, method: str, path: str, type_: type[T], what: str, **kwargs: Any) -> T:
        raw = await self._call(method, path, **kwargs)
        return tf.decode(raw, type_, what)

    async def _raise_for_status(self, response: UpstreamResponse) -> None:
        await raise_for_openai_status(
            response,
            provider=self.slug,
            caller_credentials=self.caller_credentials,
            secrets=(self.settings.api_key, self.settings.ad_token),
            parse=parse_error,
        )

    def _dated_lacks(self, operation: str) -> NotSupported:
        return NotSupported(
            self.slug,
            operation,
            f"Azure OpenAI API version {self.surface.api_version} has no such operation; "
            "use a virtual key with api_version 'v1'",
        )

    # ---- jobs ----------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> Json[FineTuningJob]:
        if self.surface.v1:
            body = {k: v for k, v in request.body.items() if k not in GATEWAY_ONLY_JOB_FIELDS}
            key = request.idempotency_key
            extra = {"Idempotency-Key": key} if key else None
            # Retried only with the client's Idempotency-Key (as on OpenAI); the dated
            # API takes no key, so its creates are never retried.
            return await self._call(
                "POST", "/fine_tuning/jobs", body=body, headers=extra, idempotent=bool(key)
            )
        version = self.surface.api_version or ""
        dated_body = tf.dated_job_body(request.spec, request.body, version)
        job = await self._dated(
            "POST", "/fine_tuning/jobs", tf.AzureJob, "fine-tuning job", body=dated_body
        )
        return tf.job_from_azure(job)

    async def list_jobs(self, query: PageQuery) -> Json[Page[FineTuningJob]]:
        if self.surface.v1:
            return await self._call("GET", "/fine_tuning/jobs", params=openai_list_params(query))
        if query.metadata is not None:
            raise BadRequest(
                f"Azure OpenAI API version {self.surface.api_version} cannot filter jobs by "
                "metadata; use a virtual key with api_version 'v1'",
                param="metadata",
                code="unsupported_parameter",
            )
        listed = await self._dated(
            "GET",
            "/fine_tuning/jobs",
            tf.AzureList[tf.AzureJob],
            "job list",
            params=_dated_params(query),
        )
        return Page(data=[tf.job_from_azure(j) for j in listed.data], has_more=listed.has_more)

    async def retrieve_job(self, job_id: str) -> Json[FineTuningJob]:
        if self.surface.v1:
            return await self._call("GET", f"/fine_tuning/jobs/{job_id}")
        job = await self._dated(
            "GET", f"/fine_tuning/jobs/{job_id}", tf.AzureJob, "fine-tuning job"
        )
        return tf.job_from_azure(job)

    async def cancel_job(self, job_id: str) -> Json[FineTuningJob]:
        path = f"/fine_tuning/jobs/{job_id}/cancel"
        if self.surface.v1:
            return await self._call("POST", path, idempotent=True)
        job = await self._dated("POST", path, tf.AzureJob, "fine-tuning job", idempotent=True)
        return tf.job_from_azure(job)

    async def pause_job(self, job_id: str) -> msgspec.Raw:
        if not self.surface.v1:  # never another operation in its place (cancel)
            raise self._dated_lacks("pausing fine-tuning jobs")
        return await self._call("POST", f"/fine_tuning/jobs/{job_id}/pause", idempotent=True)

    async def resume_job(self, job_id: str) -> msgspec.Raw:
        if not self.surface.v1:
            raise self._dated_lacks("resuming fine-tuning jobs")
        return await self._call("POST", f"/fine_tuning/jobs/{job_id}/resume", idempotent=True)

    async def list_events(self, job_id: str, query: PageQuery) -> Json[Page[JobEvent]]:
        path = f"/fine_tuning/jobs/{job_id}/events"
        if self.surface.v1:
            return await self._call("GET", path, params=openai_list_params(query))
        log = await self._finished_log(job_id)
        if log is not None:
            chosen, has_more = log.page(query)
            return Page(data=chosen, has_more=has_more)
        listed = await self._dated(
            "GET", path, tf.AzureList[tf.AzureEvent], "event list", params=_dated_params(query)
        )
        return Page(data=[tf.event_from_azure(e) for e in listed.data], has_more=listed.has_more)

    async def _finished_log(self, job_id: str) -> EventLog | None:
        """For a succeeded job with a result file: all its events and the file's steps,
        read once and kept. None for any other job, whose events are paged upstream."""
        if (kept := self._logs.get(job_id)) is not None:
            self._logs.move_to_end(job_id)
            return kept
        job = await self._dated(
            "GET", f"/fine_tuning/jobs/{job_id}", tf.AzureJob, "fine-tuning job"
        )
        if job.status != "succeeded" or not job.result_files:
            return None
        block = None
        for file_id in job.result_files:
            file = await self._dated("GET", f"/files/{file_id}", tf.AzureFile, "file")
            block = await results_block(job_id, file_id, file.created_at, self.file_content)
            if block is not None:
                break
        events: list[JobEvent] = []
        after: str | None = None
        path = f"/fine_tuning/jobs/{job_id}/events"
        while len(events) < MAX_EVENTS:
            page = PageQuery(limit=100, after=after)
            listed = await self._dated(
                "GET", path, tf.AzureList[tf.AzureEvent], "event list", params=_dated_params(page)
            )
            events += [tf.event_from_azure(e) for e in listed.data]
            if not listed.has_more or not listed.data:
                break
            after = listed.data[-1].id
        log = merged_log(events, block)
        self._logs[job_id] = log
        while len(self._logs) > _LOGS_KEPT:
            self._logs.popitem(last=False)
        return log

    async def list_checkpoints(self, job_id: str, query: PageQuery) -> Json[Page[Checkpoint]]:
        path = f"/fine_tuning/jobs/{job_id}/checkpoints"
        if self.surface.v1:
            return await self._call("GET", path, params=openai_list_params(query))
        listed = await self._dated(
            "GET",
            path,
            tf.AzureList[tf.AzureCheckpoint],
            "checkpoint list",
            params=_dated_params(query),
        )
        data = [tf.checkpoint_from_azure(c) for c in listed.data]
        return Page(data=data, has_more=listed.has_more)

    # ---- files ---------------------------------------------------------------------
    async def upload_file(self, upload: FileUpload) -> Json[FileObject]:
        if not self.surface.v1 and upload.extra_fields:
            name = upload.extra_fields[0][0]
            raise BadRequest(
                f"Azure OpenAI API version {self.surface.api_version} does not accept "
                f"'{name}' on uploads; use a virtual key with api_version 'v1' for it",
                param=name,
                code="unsupported_parameter",
            )
        with aiohttp.MultipartWriter("form-data") as form:
            form.append(upload.purpose).set_content_disposition("form-data", name="purpose")
            for name, value in upload.extra_fields:
                form.append(value).set_content_disposition("form-data", name=name)
            # Streamed as it arrives: the file is never held whole in memory.
            file_part = aiohttp.payload.AsyncIterablePayload(
                upload.chunks, content_type=upload.content_type
            )
            file_part.set_content_disposition("form-data", name="file", filename=upload.filename)
            form.append_payload(file_part)
        if self.surface.v1:
            return await self._call("POST", "/files", form=form)
        return tf.file_from_azure(
            await self._dated("POST", "/files", tf.AzureFile, "file", form=form)
        )

    async def list_files(self, query: PageQuery) -> Json[Page[FileObject]]:
        if self.surface.v1:
            return await self._call("GET", "/files", params=openai_list_params(query))
        # The dated list takes no after/limit/order and answers every file at once.
        params = {"purpose": query.purpose} if query.purpose else None
        listed = await self._dated(
            "GET", "/files", tf.AzureList[tf.AzureFile], "file list", params=params
        )
        files = [tf.file_from_azure(f) for f in listed.data]
        page, has_more = tf.page_files(
            files, limit=query.limit, after=query.after, order=query.order
        )
        return Page(data=page, has_more=has_more)

    async def retrieve_file(self, file_id: str) -> Json[FileObject]:
        if self.surface.v1:
            return await self._call("GET", f"/files/{file_id}")
        return tf.file_from_azure(
            await self._dated("GET", f"/files/{file_id}", tf.AzureFile, "file")
        )

    async def file_content(self, file_id: str) -> Download:
        return await download(
            self.http,
            self._url(f"/files/{file_id}/content"),
            provider=self.slug,
            check=self._raise_for_status,
            headers=self._headers(),
            params=self.surface.params(),
        )

    async def delete_file(self, file_id: str) -> Json[FileDeleted]:
        if self.surface.v1:
            return await self._call("DELETE", f"/files/{file_id}")
        deleted = await self._dated("DELETE", f"/files/{file_id}", tf.AzureFileDelete, "deletion")
        return tf.deleted_from_azure(deleted)


def _dated_params(query: PageQuery) -> dict[str, str]:
    """The dated API's list parameters: ``after`` and ``limit``, nothing else."""
    params = {"limit": str(query.limit)}
    if query.after is not None:
        params["after"] = query.after
    return params
