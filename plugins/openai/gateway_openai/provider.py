"""The OpenAI provider: the gateway's own API is OpenAI's, so this is a faithful proxy.

Nothing is mapped: answers are passed on as the upstream's bytes (``msgspec.Raw``),
which keeps fields OpenAI adds later; create bodies keep every field the client sent
except the gateway's own (Portkey's ``provider_options`` and friends), which OpenAI
would refuse. Uploads stream through as a new multipart body; content streams back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import msgspec

from gateway.fields import Secret, Url
from gateway.models import GATEWAY_ONLY_JOB_FIELDS
from gateway.paging import openai_list_params
from gateway.provider import (
    Download,
    FileUpload,
    JobRequest,
    PageQuery,
    Provider,
    ProviderSettings,
    bearer_key,
)
from gateway.upstream import UpstreamResponse, call_json, download, raise_for_openai_status

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAISettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_key: Secret | None = None
    base_url: Url = DEFAULT_BASE_URL
    organization: str | None = None
    project: str | None = None


class OpenAIProvider(Provider):
    slug: ClassVar[str] = "openai"
    Settings: ClassVar[type[ProviderSettings]] = OpenAISettings
    credential_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})

    settings: OpenAISettings

    @classmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> OpenAISettings:
        return OpenAISettings(
            api_key=bearer_key(headers, "OpenAI"),
            organization=headers.get("openai-organization")
            or headers.get("x-portkey-openai-organization"),
            project=headers.get("openai-project") or headers.get("x-portkey-openai-project"),
        )

    # ---- plumbing ------------------------------------------------------------------
    def _url(self, path: str) -> str:
        base = self.settings.custom_host or self.settings.base_url
        return base.rstrip("/") + path

    def _headers(self) -> dict[str, str]:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        if s.organization:
            headers["OpenAI-Organization"] = s.organization
        if s.project:
            headers["OpenAI-Project"] = s.project
        return headers

    async def _json(
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
            params=params,
            body=body,
            form=form,
            idempotent=idempotent,
        )

    async def _raise_for_status(self, response: UpstreamResponse) -> None:
        await raise_for_openai_status(
            response,
            provider=self.slug,
            caller_credentials=self.caller_credentials,
            secrets=(self.settings.api_key,),
        )

    # ---- jobs ----------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> msgspec.Raw:
        body = {k: v for k, v in request.body.items() if k not in GATEWAY_ONLY_JOB_FIELDS}
        key = request.idempotency_key
        extra = {"Idempotency-Key": key} if key else None
        # Retried only with the client's Idempotency-Key, which OpenAI honours: without
        # it, a retry after a lost answer could make a second job.
        return await self._json(
            "POST", "/fine_tuning/jobs", body=body, headers=extra, idempotent=bool(key)
        )

    async def list_jobs(self, query: PageQuery) -> msgspec.Raw:
        return await self._json("GET", "/fine_tuning/jobs", params=openai_list_params(query))

    async def retrieve_job(self, job_id: str) -> msgspec.Raw:
        return await self._json("GET", f"/fine_tuning/jobs/{job_id}")

    async def cancel_job(self, job_id: str) -> msgspec.Raw:
        return await self._json("POST", f"/fine_tuning/jobs/{job_id}/cancel", idempotent=True)

    async def pause_job(self, job_id: str) -> msgspec.Raw:
        return await self._json("POST", f"/fine_tuning/jobs/{job_id}/pause", idempotent=True)

    async def resume_job(self, job_id: str) -> msgspec.Raw:
        return await self._json("POST", f"/fine_tuning/jobs/{job_id}/resume", idempotent=True)

    async def list_events(self, job_id: str, query: PageQuery) -> msgspec.Raw:
        path = f"/fine_tuning/jobs/{job_id}/events"
        return await self._json("GET", path, params=openai_list_params(query))

    async def list_checkpoints(self, job_id: str, query: PageQuery) -> msgspec.Raw:
        path = f"/fine_tuning/jobs/{job_id}/checkpoints"
        return await self._json("GET", path, params=openai_list_params(query))

    # ---- files ---------------------------------------------------------------------
    async def upload_file(self, upload: FileUpload) -> msgspec.Raw:
        with aiohttp.MultipartWriter("form-data") as form:
            form.append(upload.purpose).set_content_disposition("form-data", name="purpose")
            for name, value in upload.extra_fields:
                form.append(value).set_content_disposition("form-data", name=name)
            file_part = aiohttp.payload.AsyncIterablePayload(
                upload.chunks, content_type=upload.content_type
            )
            file_part.set_content_disposition("form-data", name="file", filename=upload.filename)
            form.append_payload(file_part)
        return await self._json("POST", "/files", form=form)

    async def list_files(self, query: PageQuery) -> msgspec.Raw:
        return await self._json("GET", "/files", params=openai_list_params(query))

    async def retrieve_file(self, file_id: str) -> msgspec.Raw:
        return await self._json("GET", f"/files/{file_id}")

    async def file_content(self, file_id: str) -> Download:
        return await download(
            self.http,
            self._url(f"/files/{file_id}/content"),
            provider=self.slug,
            check=self._raise_for_status,
            headers=self._headers(),
        )

    async def delete_file(self, file_id: str) -> msgspec.Raw:
        return await self._json("DELETE", f"/files/{file_id}")
