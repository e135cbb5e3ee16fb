"""The Together AI provider: the I/O for its fine-tunes and files (``transform`` maps).

Together's lists (fine-tunes, events, checkpoints, files) answer everything at once, so
they are paged here OpenAI's way (``after`` = the last id seen, ``limit``, a true
``has_more``). Events are listed newest first with the job's per-step metrics from
``GET /fine-tunes/{id}/metrics`` as OpenAI metrics events. Uploads go the way Together's
SDK sends them (not the spec's ``/files/upload``): ``POST /files`` answered with a
redirect to a signed URL, the converted lines streamed there by ``PUT``, then ``POST
/files/{id}/preprocess``; a failed upload deletes the file it created.
"""

from __future__ import annotations

import contextlib
import math
from array import array
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from gateway.answers import decode_answer
from gateway.errors import BadRequest, UpstreamError
from gateway.fields import Secret, Url
from gateway.jsonl import converted
from gateway.models import Checkpoint, FileDeleted, FileObject, FineTuningJob, JobEvent, Page
from gateway.paging import page_of
from gateway.provider import (
    Download,
    FileUpload,
    JobRequest,
    Json,
    PageQuery,
    Provider,
    ProviderSettings,
    bearer_key,
)
from gateway.step_metrics import EventLog, MetricsBlock, StepMetrics
from gateway.upstream import UpstreamResponse, call_json, download, raise_for_openai_status, send
from gateway_together import transform as tf

T = TypeVar("T")
DEFAULT_BASE_URL = "https://api.together.ai/v1"
_METRIC_KEYS = tuple(tf.METRIC_NAMES.values())


class TogetherSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_key: Secret
    base_url: Url = DEFAULT_BASE_URL


class TogetherProvider(Provider):
    slug: ClassVar[str] = tf.SLUG
    aliases: ClassVar[tuple[str, ...]] = ("together",)
    Settings: ClassVar[type[ProviderSettings]] = TogetherSettings
    credential_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})

    settings: TogetherSettings

    @classmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> TogetherSettings:
        return TogetherSettings(api_key=bearer_key(headers, "Together AI"))

    # ---- plumbing ------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return (self.settings.custom_host or self.settings.base_url).rstrip("/") + path

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}"}

    async def _check(self, response: UpstreamResponse) -> None:
        await raise_for_openai_status(
            response,
            provider=self.slug,
            caller_credentials=self.caller_credentials,
            secrets=(self.settings.api_key,),
        )

    async def _get(self, method: str, path: str, type_: type[T], what: str, **kwargs: Any) -> T:
        raw = await call_json(
            self.http,
            method,
            self._url(path),
            provider=self.slug,
            check=self._check,
            headers=self._headers(),
            **kwargs,
        )
        return decode_answer(raw, type_, provider=self.slug, what=what)

    # ---- jobs ----------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> Json[FineTuningJob]:
        max_rank = None
        if tf.needs_rank(request.body):
            limits = await self._get(
                "GET",
                "/fine-tunes/models/limits",
                tf.TogetherModelLimits,
                "model limits",
                params={"model_name": request.spec.model},
            )
            if limits.lora_training is None:
                raise BadRequest(
                    f"Together AI does not offer LoRA fine-tuning of '{request.spec.model}'; "
                    "send 'lora': false for full fine-tuning",
                    param="lora",
                    code="unsupported_parameter",
                )
            max_rank = limits.lora_training.max_rank
        body = tf.job_body(request.spec, request.body, max_rank)
        job = await self._get("POST", "/fine-tunes", tf.TogetherJob, "fine-tuning job", body=body)
        return tf.job_from_together(job)

    async def list_jobs(self, query: PageQuery) -> Json[Page[FineTuningJob]]:
        if query.metadata is not None:
            raise BadRequest(
                "Together AI fine-tunes have no metadata to filter on",
                param="metadata",
                code="unsupported_parameter",
            )
        listed = await self._get("GET", "/fine-tunes", tf.TogetherJobList, "job list")
        jobs = sorted(
            (tf.job_from_together(j) for j in listed.data),
            key=lambda j: (j.created_at, j.id),
            reverse=True,
        )
        chosen, has_more = page_of(jobs, query, lambda j: j.id)
        return Page(data=chosen, has_more=has_more)

    async def retrieve_job(self, job_id: str) -> Json[FineTuningJob]:
        native = tf.native_id(job_id, "fine-tuning job")
        job = await self._get("GET", f"/fine-tunes/{native}", tf.TogetherJob, "fine-tuning job")
        return tf.job_from_together(job)

    async def cancel_job(self, job_id: str) -> Json[FineTuningJob]:
        native = tf.native_id(job_id, "fine-tuning job")
        job = await self._get(
            "POST", f"/fine-tunes/{native}/cancel", tf.TogetherJob, "fine-tuning job",
            idempotent=True,
        )  # fmt: skip
        return tf.job_from_together(job)

    async def pause_job(self, job_id: str) -> Json[FineTuningJob]:
        raise self._unsupported("pausing fine-tuning jobs")

    async def resume_job(self, job_id: str) -> Json[FineTuningJob]:
        raise self._unsupported("resuming fine-tuning jobs")

    async def list_events(self, job_id: str, query: PageQuery) -> Json[Page[JobEvent]]:
        native = tf.native_id(job_id, "fine-tuning job")
        listed = await self._get(
            "GET", f"/fine-tunes/{native}/events", tf.TogetherEvents, "event list"
        )
        events = [tf.event_from_together(native, i, e) for i, e in enumerate(listed.data)]
        metrics = await self._get(
            "GET", f"/fine-tunes/{native}/metrics", tf.TogetherMetrics, "metrics"
        )
        block_time = max((e.created_at for e in events), default=0)
        steps = _step_metrics(metrics)
        blocks = [MetricsBlock.of(steps, block_time, native, "metrics")] if len(steps) else []
        chosen, has_more = EventLog(events, blocks).page(query)
        return Page(data=chosen, has_more=has_more)

    async def list_checkpoints(self, job_id: str, query: PageQuery) -> Json[Page[Checkpoint]]:
        native = tf.native_id(job_id, "fine-tuning job")
        listed = await self._get(
            "GET", f"/fine-tunes/{native}/checkpoints", tf.TogetherCheckpoints, "checkpoints"
        )
        found = sorted(
            (tf.checkpoint_from_together(native, c) for c in listed.data),
            key=lambda c: c.step_number,
            reverse=True,
        )
        chosen, has_more = page_of(found, query, lambda c: c.id)
        return Page(data=chosen, has_more=has_more)

    # ---- files ---------------------------------------------------------------------
    async def upload_file(self, upload: FileUpload) -> Json[FileObject]:
        upload.require_fine_tuning_only(self.slug)
        params = {"purpose": "fine-tune", "file_name": upload.filename, "file_type": "jsonl"}
        response = await send(
            self.http,
            "POST",
            self._url("/files"),
            provider=self.slug,
            params=params,
            headers=self._headers(),
            allow_redirects=False,
        )
        try:
            await self._check(response)
            location = response.headers.get("Location", "")
            file_id = response.headers.get("X-Together-File-Id", "")
        finally:
            response.release()
        if urlsplit(location).scheme not in ("http", "https") or not tf.ID_SHAPE.fullmatch(file_id):
            raise UpstreamError(
                f"{self.slug} answered an upload without a usable signed URL and file id",
                code="upstream_bad_response",
            )
        failed: list[BaseException] = []

        async def chunks() -> AsyncIterator[bytes]:
            # aiohttp reports an error raised while it sends a body as a lost connection:
            # the bad-lines 400 is kept here and raised instead.
            try:
                async for chunk in converted(upload.chunks, tf.convert_line, param="file"):
                    yield chunk
            except BaseException as exc:
                failed.append(exc)
                raise

        try:
            # The signed URL carries its own authorisation: the Together key is not sent.
            try:
                put = await send(
                    self.http, "PUT", location, provider=self.slug, data=chunks(),
                    headers={"Content-Type": "application/octet-stream"},
                )  # fmt: skip
            except Exception:
                if failed:
                    raise failed[0] from None
                raise
            try:
                await self._check(put)
            finally:
                put.release()
            await call_json(
                self.http, "POST", self._url(f"/files/{file_id}/preprocess"),
                provider=self.slug, check=self._check, headers=self._headers(),
            )  # fmt: skip
        except BaseException:
            await self._forget(file_id)
            raise
        file = await self._get("GET", f"/files/{file_id}", tf.TogetherFile, "file")
        return tf.file_from_together(file)

    async def _forget(self, file_id: str) -> None:
        """Best effort: the file a failed upload created is deleted, not left behind."""
        with contextlib.suppress(Exception):  # the upload's own error is the one reported
            await self._get("DELETE", f"/files/{file_id}", tf.TogetherFileDeleted, "deletion")

    async def list_files(self, query: PageQuery) -> Json[Page[FileObject]]:
        listed = await self._get("GET", "/files", tf.TogetherFileList, "file list")
        files = [tf.file_from_together(f) for f in listed.data]
        if query.purpose is not None:
            files = [f for f in files if f.purpose == query.purpose]
        files.sort(key=lambda f: (f.created_at, f.id), reverse=query.order != "asc")
        chosen, has_more = page_of(files, query, lambda f: f.id)
        return Page(data=chosen, has_more=has_more)

    async def retrieve_file(self, file_id: str) -> Json[FileObject]:
        native = tf.native_id(file_id, "file")
        file = await self._get("GET", f"/files/{native}", tf.TogetherFile, "file")
        return tf.file_from_together(file)

    async def file_content(self, file_id: str) -> Download:
        native = tf.native_id(file_id, "file")
        return await download(
            self.http,
            self._url(f"/files/{native}/content"),
            provider=self.slug,
            check=self._check,
            headers=self._headers(),
        )

    async def delete_file(self, file_id: str) -> Json[FileDeleted]:
        native = tf.native_id(file_id, "file")
        deleted = await self._get("DELETE", f"/files/{native}", tf.TogetherFileDeleted, "deletion")
        return tf.deleted_from_together(deleted)


def _step_metrics(answer: tf.TogetherMetrics) -> StepMetrics:
    """Together's metric rows as OpenAI's keys; a row without a whole step is skipped."""
    steps = StepMetrics(keys=_METRIC_KEYS, steps=array("q"), values=array("d"))
    for row in answer.metrics:
        step = row.get("train/global_step")
        if not isinstance(step, int | float) or not math.isfinite(step) or step != int(step):
            steps.skipped += 1
            continue
        values = []
        for name in tf.METRIC_NAMES:
            value = row.get(name)
            ok = isinstance(value, int | float) and math.isfinite(value)
            values.append(float(value) if ok and value is not None else math.nan)
        steps.steps.append(int(step))
        steps.values.extend(values)
    return steps
