"""The Fireworks AI provider: the I/O for supervised fine-tuning jobs and datasets.

Jobs map to ``/v1/accounts/{account}/supervisedFineTuningJobs`` and files to datasets
(see ``transform`` for the fields). What Fireworks' SFT API lacks is a 400 naming it,
never another operation: there is no cancel (only DELETE, which removes the job and its
record: the gateway does not send it for a cancel), no pause, no events, no checkpoints,
no file content. ``resume`` is Fireworks' ``:resume``.

An upload is Fireworks' dataset flow: the lines are converted (``formats``) into a
temporary file on disk, so memory does not grow with the file and a bad line is a 400
before anything exists at Fireworks; then create the dataset, get its signed upload URL
for the exact size, PUT the bytes there, and ``:validateUpload``. A failure after the
dataset was made deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import IO, Any, ClassVar, TypeVar

import aiohttp
import msgspec
import yarl

from gateway.errors import BadRequest, Conflict, NotSupported, UpstreamError
from gateway.jsonl import converted
from gateway.models import FileDeleted, FileObject, FineTuningJob, Page
from gateway.paging import TokenPager
from gateway.provider import FileUpload, JobRequest, PageQuery, Provider, ProviderSettings
from gateway.upstream import UpstreamResponse, call_json, raise_for_openai_status, send
from gateway_fireworks import transform as tf
from gateway_fireworks import wire
from gateway_fireworks.formats import to_fireworks_line
from gateway_fireworks.settings import FireworksSettings, settings_from_headers

T = TypeVar("T")
_CHUNK = 256 * 1024
_PAGE = 200  # Fireworks' largest pageSize
_SIZES_KEPT = 1024  # sizes of datasets this instance uploaded (Fireworks keeps none)


class FireworksProvider(Provider):
    slug: ClassVar[str] = "fireworks-ai"
    aliases: ClassVar[tuple[str, ...]] = ("fireworks",)
    Settings: ClassVar[type[ProviderSettings]] = FireworksSettings
    credential_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})

    settings: FireworksSettings

    def __init__(
        self, settings: Any, http: aiohttp.ClientSession, *, caller_credentials: bool = False
    ) -> None:
        super().__init__(settings, http, caller_credentials=caller_credentials)
        self._jobs = TokenPager(self._fetch_jobs, lambda job: job.id, page_size=_PAGE)
        self._files = TokenPager(self._fetch_files, lambda file: file.id, page_size=_PAGE)
        self._sizes: dict[str, int] = {}

    @classmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> FireworksSettings:
        return settings_from_headers(headers)

    # ---- plumbing ------------------------------------------------------------------
    def _base(self) -> str:
        return (self.settings.custom_host or self.settings.base_url).rstrip("/")

    def _url(self, path: str) -> str:
        return f"{self._base()}/v1/accounts/{self.settings.account_id}{path}"

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[T],
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> T:
        raw = await call_json(
            self.http,
            method,
            self._url(path),
            provider=self.slug,
            check=self._raise_for_status,
            headers={
                "Authorization": f"Bearer {self.settings.api_key}",
                "Accept": "application/json",
            },
            params=params,
            body=body,
            idempotent=idempotent,
        )
        return tf.decode(raw, type_, what)

    async def _raise_for_status(self, response: UpstreamResponse) -> None:
        await raise_for_openai_status(
            response,
            provider=self.slug,
            caller_credentials=self.caller_credentials,
            secrets=(self.settings.api_key,),
            parse=tf.parse_error,
        )

    # ---- jobs ----------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> FineTuningJob:
        body = tf.job_body(request.spec, request.body, self.settings.account_id)
        params = None
        if request.idempotency_key and tf.RESOURCE_ID.fullmatch(request.idempotency_key):
            # Fireworks refuses a second job with the same id: a retry cannot make two.
            params = {"supervisedFineTuningJobId": request.idempotency_key}
        try:
            job = await self._call(
                "POST",
                "/supervisedFineTuningJobs",
                wire.Job,
                "fine-tuning job",
                body=body,
                params=params,
                idempotent=params is not None,
            )
        except Conflict:
            if request.idempotency_key is None or params is None:
                raise
            # The key is the job's id, so Fireworks' 409 means this key already made its
            # job: OpenAI answers a repeated key with that job, not an error.
            return await self.retrieve_job(request.idempotency_key)
        return tf.job_from_fireworks(job)

    async def _fetch_jobs(
        self, token: str | None, size: int
    ) -> tuple[list[FineTuningJob], str | None]:
        # Newest first, as OpenAI lists; Fireworks' default order is by name.
        params = {"pageSize": str(size), "orderBy": "createTime desc"}
        if token:
            params["pageToken"] = token
        listed = await self._call(
            "GET", "/supervisedFineTuningJobs", wire.JobList, "job list", params=params
        )
        jobs = [tf.job_from_fireworks(j) for j in listed.supervised_fine_tuning_jobs]
        return jobs, listed.next_page_token or None

    async def list_jobs(self, query: PageQuery) -> Page[FineTuningJob]:
        if query.metadata is not None:
            raise self._unsupported_param("metadata", "filtering jobs by metadata")
        chosen, has_more = await self._jobs.page(query)
        return Page(data=chosen, has_more=has_more)

    async def retrieve_job(self, job_id: str) -> FineTuningJob:
        path = f"/supervisedFineTuningJobs/{tf.resource_id(job_id, 'fine-tuning job')}"
        return tf.job_from_fireworks(await self._call("GET", path, wire.Job, "fine-tuning job"))

    async def cancel_job(self, job_id: str) -> FineTuningJob:
        raise NotSupported(
            self.slug,
            "cancelling fine-tuning jobs",
            "Fireworks' supervised fine-tuning API has no cancel; its only way to stop a job "
            "is DELETE, which also deletes the job, so the gateway never sends it for a cancel",
        )

    async def resume_job(self, job_id: str) -> FineTuningJob:
        path = f"/supervisedFineTuningJobs/{tf.resource_id(job_id, 'fine-tuning job')}:resume"
        job = await self._call("POST", path, wire.Job, "fine-tuning job", body={}, idempotent=True)
        return tf.job_from_fireworks(job)

    def _unsupported_param(self, param: str, operation: str) -> BadRequest:
        return BadRequest(
            f"The '{self.slug}' provider does not support {operation}",
            param=param,
            code="unsupported_parameter",
        )

    # ---- files (datasets) ----------------------------------------------------------
    async def upload_file(self, upload: FileUpload) -> FileObject:
        upload.require_fine_tuning_only(self.slug)
        with tempfile.TemporaryFile() as spool:
            size = await _spool(converted(upload.chunks, to_fireworks_line, param="file"), spool)
            dataset_id = "file-" + secrets.token_hex(12)
            await self._call(
                "POST",
                "/datasets",
                wire.Dataset,
                "dataset",
                body={
                    "datasetId": dataset_id,
                    "dataset": {"displayName": upload.filename[:200], "userUploaded": {}},
                },
                # Fireworks refuses a second dataset with this id: safe to repeat.
                idempotent=True,
            )
            try:
                await self._fill(dataset_id, spool, size)
            except BaseException:
                await self._forget(dataset_id)
                raise
        self._remember_size(dataset_id, size)
        return await self.retrieve_file(dataset_id)

    async def _fill(self, dataset_id: str, spool: IO[bytes], size: int) -> None:
        filename = f"{dataset_id}.jsonl"
        endpoint = await self._call(
            "POST",
            f"/datasets/{dataset_id}:getUploadEndpoint",
            wire.UploadEndpoint,
            "upload endpoint",
            # int64 as a JSON string, as the SDK and the docs type it.
            body={"filenameToSize": {filename: str(size)}},
            idempotent=True,
        )
        url = endpoint.filename_to_signed_urls.get(filename)
        if url is None:
            raise UpstreamError(
                f"{self.slug} answered no upload URL for '{filename}'",
                code="upstream_bad_response",
            )
        self._check_signed_url(url)
        spool.seek(0)
        response = await send(
            self.http,
            "PUT",
            url,
            provider=self.slug,
            # No Authorization: the signed URL carries its own; the API key stays here.
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "x-goog-content-length-range": f"{size},{size}",
            },
            data=_read_back(spool),
        )
        try:
            if response.status >= 400:
                text = (await response.content.read(500)).decode("utf-8", "replace")
                raise UpstreamError(
                    f"{self.slug}'s storage refused the dataset upload ({response.status}): "
                    f"{text.strip() or response.reason}",
                    code="upstream_upload_failed",
                )
        finally:
            response.release()
        await self._call(
            "POST",
            f"/datasets/{dataset_id}:validateUpload",
            msgspec.Raw,
            "validation",
            body={},
            idempotent=True,
        )

    def _check_signed_url(self, url: str) -> None:
        """The upload URL is the upstream's to choose: only Cloud Storage over https, or
        the configured custom host's origin (a proxy, or a test's fake)."""
        target = yarl.URL(url)
        host = (target.host or "").lower()
        google = target.scheme == "https" and (
            host == "storage.googleapis.com" or host.endswith(".storage.googleapis.com")
        )
        custom = self.settings.custom_host
        same = custom is not None and target.origin() == yarl.URL(custom).origin()
        if not (google or same):
            raise UpstreamError(
                f"{self.slug} answered an upload URL outside Cloud Storage "
                f"({target.scheme}://{host}); the gateway does not send data there",
                code="upstream_bad_response",
            )

    async def _forget(self, dataset_id: str) -> None:
        with contextlib.suppress(Exception):
            await self._call("DELETE", f"/datasets/{dataset_id}", msgspec.Raw, "deletion")

    def _remember_size(self, dataset_id: str, size: int) -> None:
        self._sizes[dataset_id] = size
        while len(self._sizes) > _SIZES_KEPT:
            self._sizes.pop(next(iter(self._sizes)))

    def _file(self, dataset: wire.Dataset) -> FileObject:
        return tf.file_from_dataset(dataset, self._sizes.get(tf.last_segment(dataset.name), 0))

    async def _fetch_files(
        self, token: str | None, size: int
    ) -> tuple[list[FileObject], str | None]:
        params = {"pageSize": str(size)}
        if token:
            params["pageToken"] = token
        listed = await self._call(
            "GET", "/datasets", wire.DatasetList, "dataset list", params=params
        )
        return [self._file(d) for d in listed.datasets], listed.next_page_token or None

    async def list_files(self, query: PageQuery) -> Page[FileObject]:
        if query.purpose not in (None, "fine-tune"):
            return Page(data=[], has_more=False)  # Fireworks keeps fine-tuning data only
        chosen, has_more = await self._files.page(query)
        return Page(data=chosen, has_more=has_more)

    async def retrieve_file(self, file_id: str) -> FileObject:
        path = f"/datasets/{tf.resource_id(file_id, 'file')}"
        return self._file(await self._call("GET", path, wire.Dataset, "dataset"))

    async def delete_file(self, file_id: str) -> FileDeleted:
        path = f"/datasets/{tf.resource_id(file_id, 'file')}"
        await self._call("DELETE", path, msgspec.Raw, "deletion")
        self._sizes.pop(file_id, None)
        return FileDeleted(id=file_id, deleted=True)


async def _spool(chunks: AsyncIterator[bytes], spool: IO[bytes]) -> int:
    size = 0
    async for chunk in chunks:
        await asyncio.to_thread(spool.write, chunk)
        size += len(chunk)
    return size


async def _read_back(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(spool.read, _CHUNK):
        yield chunk
