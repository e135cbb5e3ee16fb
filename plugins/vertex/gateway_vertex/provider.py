"""The Vertex AI provider: Gemini tuning jobs, with training files staged on Cloud Storage.

The I/O lives here; the mapping in ``transform`` (jobs) and ``formats`` (training lines),
the storage layout in ``staging``, GCS calls in ``gcs``, tokens in ``auth``. Vertex pages
its job list by token; ``gateway.paging.TokenPager`` turns that into OpenAI's
``after=<id>`` with a true ``has_more``. Pausing is refused (Vertex cannot pause a
tuning job, and cancelling in its place would end the job for good).

Retries follow the request's policy (``gateway.retry``). Vertex has no idempotent create:
a create is retried only when the client sent an ``Idempotency-Key``, and then as a whole,
each attempt first looking for a job labelled with that key (best effort: a job made by
an attempt whose answer was lost is found, unless Vertex lists it only later).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import msgspec

from gateway.answers import decode_answer, mapping
from gateway.errors import BadRequest, NotFound, NotSupported
from gateway.models import (
    Checkpoint,
    FileDeleted,
    FileObject,
    FineTuningJob,
    JobEvent,
    Page,
)
from gateway.paging import TokenPager, page_of
from gateway.provider import (
    Download,
    FileUpload,
    JobRequest,
    PageQuery,
    Provider,
    ProviderSettings,
)
from gateway.resources import require_uri_allowed
from gateway.retry import with_retries
from gateway.upstream import request
from gateway_vertex import allowed, staging, transform, wire
from gateway_vertex.errors import google_error, retryable_failure
from gateway_vertex.formats import PREFERENCE_KINDS
from gateway_vertex.settings import (
    SERVICE_ACCOUNT_HEADER,
    VertexSettings,
    service_account_info,
    settings_from_headers,
)

if TYPE_CHECKING:
    from gateway_vertex.gcs import Gcs

SERVICE = "Vertex AI"
_ERROR_BODY_LIMIT = 64 * 1024
_GS_URI = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]/[^\x00-\x1f]+")
_job_decoder = msgspec.json.Decoder(wire.TuningJob)
_list_decoder = msgspec.json.Decoder(wire.ListTuningJobsResponse)


def decode_job(raw: bytes) -> wire.TuningJob:
    return decode_answer(raw, _job_decoder, provider=SERVICE, what="tuning job")


def decode_list(raw: bytes) -> wire.ListTuningJobsResponse:
    return decode_answer(raw, _list_decoder, provider=SERVICE, what="list of tuning jobs")


class VertexProvider(Provider):
    slug: ClassVar[str] = "vertex-ai"
    aliases: ClassVar[tuple[str, ...]] = ("vertex",)
    Settings: ClassVar[type[ProviderSettings]] = VertexSettings
    credential_headers: ClassVar[frozenset[str]] = frozenset({SERVICE_ACCOUNT_HEADER})

    settings: VertexSettings

    @classmethod
    def check_overrides(
        cls, original: ProviderSettings, overridden: ProviderSettings, *, param: str
    ) -> None:
        assert isinstance(original, VertexSettings) and isinstance(overridden, VertexSettings)
        allowed.check_bucket_override(original, overridden, param=param)

    @classmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> VertexSettings:
        return settings_from_headers(headers)

    def __init__(
        self, settings: Any, http: aiohttp.ClientSession, *, caller_credentials: bool = False
    ) -> None:
        super().__init__(settings, http, caller_credentials=caller_credentials)
        # Imported here, not at the top: gcloud-aio-auth and -storage take a noticeable
        # share of startup time and memory, which every gateway would pay, Vertex
        # configured or not.
        from gateway_vertex.auth import Credentials
        from gateway_vertex.gcs import Gcs

        s: VertexSettings = settings
        info = service_account_info(s, from_request=caller_credentials)
        self.credentials = Credentials(
            http,
            key=s.vertex_service_account_json,
            info=info,
            caller_credentials=caller_credentials,
        )
        project = s.vertex_project_id or self.credentials.project_id
        if not project:
            raise BadRequest(
                "No Vertex AI project: set vertex_project_id (header "
                "'x-portkey-vertex-project-id'), or use a key file with a project_id",
                param="x-portkey-vertex-project-id",
                code="missing_project",
            )
        self.project: str = project
        self.jobs_url = (
            f"{s.base_url()}/v1/projects/{project}/locations/{s.vertex_region}/tuningJobs"
        )
        bucket = s.vertex_storage_bucket_name
        self.gcs = (
            Gcs(http, self.credentials, bucket=bucket, endpoint_url=s.storage_endpoint_url)
            if bucket
            else None
        )
        self.layout = staging.Layout(bucket, s.prefix) if bucket else None
        self._job_pagers: dict[str, TokenPager[FineTuningJob]] = {}
        self._file_pager = TokenPager(self._fetch_files, lambda f: f.id, page_size=1000)

    async def close(self) -> None:
        await self.credentials.close()

    # ---- Vertex AI calls -------------------------------------------------------------
    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> bytes:
        headers = await self.credentials.headers()
        data = None
        if body is not None:
            data = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        async with request(
            self.http,
            method,
            url,
            provider=SERVICE,
            headers=headers,
            data=data,
            params=params,
            idempotent=idempotent,
        ) as response:
            if response.status >= 400:
                raise google_error(
                    response.status,
                    await response.content.read(_ERROR_BODY_LIMIT),
                    service=SERVICE,
                    caller_credentials=self.caller_credentials,
                    secrets=self.credentials.secrets,
                    retry_after=response.headers.get("Retry-After"),
                )
            return await response.read()

    async def _get_job(self, job_id: str) -> wire.TuningJob:
        url = f"{self.jobs_url}/{transform.native_job_id(job_id)}"
        try:
            return decode_job(await self._call("GET", url))
        except NotFound:
            raise NotFound(f"No fine-tuning job found with id '{job_id}'") from None

    def _job(self, job: wire.TuningJob) -> FineTuningJob:
        file_id_of = self.layout.file_id_of_uri if self.layout else (lambda uri: uri)
        with mapping(SERVICE, "tuning job"):
            return transform.to_openai(job, file_id_of=file_id_of, organization=self.project)

    # ---- jobs ------------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> FineTuningJob:
        spec = request.spec
        method = transform.method_of(spec)
        training = await self._dataset_uri(spec.training_file, "training_file", method)
        validation = (
            await self._dataset_uri(spec.validation_file, "validation_file", method)
            if spec.validation_file
            else None
        )
        body = transform.create_body(spec, request.body, training, validation)
        if not request.idempotency_key:
            return await self._create(body)  # never retried: it could make two jobs
        label = transform.idempotency_label(request.idempotency_key)
        labels = {**(body.labels or {}), transform.IDEMPOTENCY_LABEL: label}
        labelled = msgspec.structs.replace(body, labels=labels)

        async def attempt() -> FineTuningJob:
            earlier = await self._created_with(label)
            return earlier if earlier is not None else await self._create(labelled)

        return await with_retries(attempt, idempotent=True, failure_of=retryable_failure)

    async def _create(self, body: wire.TuningJobCreate) -> FineTuningJob:
        raw = await self._call("POST", self.jobs_url, body=body)
        return self._job(decode_job(raw))

    async def _created_with(self, label: str) -> FineTuningJob | None:
        """The job an earlier create with the same Idempotency-Key made, if any.

        Best effort: two retries racing each other can still both create.
        """
        params = {"pageSize": "1", "filter": f'labels.{transform.IDEMPOTENCY_LABEL}="{label}"'}
        listed = decode_list(await self._call("GET", self.jobs_url, params=params))
        return self._job(listed.tuning_jobs[0]) if listed.tuning_jobs else None

    async def _dataset_uri(self, ref: str, param: str, method: transform.MethodType) -> str:
        """The ``gs://`` URI Vertex trains on, for a file id or a URI given as is."""
        if ref.startswith("gs://"):
            if not _GS_URI.fullmatch(ref):
                raise BadRequest(f"'{ref}' is not a gs://bucket/object URI", param=param)
            if not self.caller_credentials:
                # Vertex reads it as the config's project: only where the config allows.
                require_uri_allowed(ref, allowed.gcs_uris(self.settings), "gs", param=param)
            return ref  # the caller's own object: used as it is, in Vertex's format
        gcs, layout = self._storage(param)
        missing = BadRequest(f"No file found with id '{ref}'", param=param, code="file_not_found")
        try:
            uid = layout.uid_of(ref)
        except NotFound:
            raise missing from None
        found = await gcs.get(layout.original(uid))
        kind = staging.format_of(found) if found else None
        if kind is None:
            raise missing
        if (method == "dpo") != (kind in PREFERENCE_KINDS):
            holds = "preference (DPO)" if kind in PREFERENCE_KINDS else "supervised (chat)"
            raise BadRequest(
                f"File '{ref}' holds {holds} examples, which a {method} job cannot use",
                param=param,
                code="invalid_training_file",
            )
        converted = kind in ("openai-chat", "openai-preference")
        return gcs.uri(layout.converted(uid) if converted else layout.original(uid))

    async def list_jobs(self, query: PageQuery) -> Page[FineTuningJob]:
        filter_ = _label_filter(query.metadata)
        if filter_ is None:
            return Page(data=[], has_more=False)
        page, has_more = await self._job_pager(filter_).page(query)
        return Page(data=page, has_more=has_more)

    def _job_pager(self, filter_: str) -> TokenPager[FineTuningJob]:
        pager = self._job_pagers.get(filter_)
        if pager is None:
            if len(self._job_pagers) >= 16:  # one per filter in use: bounded
                self._job_pagers.pop(next(iter(self._job_pagers)))

            async def fetch(token: str | None, size: int) -> tuple[list[FineTuningJob], str | None]:
                params = {"pageSize": str(size)}
                if token:
                    params["pageToken"] = token
                if filter_:
                    params["filter"] = filter_
                listed = decode_list(await self._call("GET", self.jobs_url, params=params))
                return [self._job(j) for j in listed.tuning_jobs], listed.next_page_token or None

            pager = self._job_pagers[filter_] = TokenPager(fetch, lambda j: j.id, page_size=100)
        return pager

    async def retrieve_job(self, job_id: str) -> FineTuningJob:
        return self._job(await self._get_job(job_id))

    async def cancel_job(self, job_id: str) -> FineTuningJob:
        url = f"{self.jobs_url}/{transform.native_job_id(job_id)}:cancel"
        try:
            # Answers {}: fetch the job after it. Cancelling twice is cancelling once.
            await self._call("POST", url, body={}, idempotent=True)
        except NotFound:
            raise NotFound(f"No fine-tuning job found with id '{job_id}'") from None
        return await self.retrieve_job(job_id)

    async def pause_job(self, job_id: str) -> FineTuningJob:
        raise NotSupported(self.slug, "pausing fine-tuning jobs", _NO_PAUSE)

    async def resume_job(self, job_id: str) -> FineTuningJob:
        raise NotSupported(self.slug, "resuming fine-tuning jobs", _NO_PAUSE)

    async def list_events(self, job_id: str, query: PageQuery) -> Page[JobEvent]:
        job = await self._get_job(job_id)
        with mapping(SERVICE, "tuning job"):
            events = transform.events(job)
        page, has_more = page_of(events, query, lambda e: e.id)
        return Page(data=page, has_more=has_more)

    async def list_checkpoints(self, job_id: str, query: PageQuery) -> Page[Checkpoint]:
        job = await self._get_job(job_id)
        with mapping(SERVICE, "tuning job"):
            checkpoints = transform.checkpoints(job)
        page, has_more = page_of(checkpoints, query, lambda c: c.id)
        return Page(data=page, has_more=has_more)

    # ---- files -----------------------------------------------------------------------
    def _storage(self, param: str | None = None) -> tuple[Gcs, staging.Layout]:
        if self.gcs is None or self.layout is None:
            raise BadRequest(
                "No Cloud Storage bucket for Vertex AI files: set vertex_storage_bucket_name "
                "in the virtual key or send 'x-portkey-vertex-storage-bucket-name'",
                param=param or "x-portkey-vertex-storage-bucket-name",
                code="missing_storage_bucket",
            )
        return self.gcs, self.layout

    async def upload_file(self, upload: FileUpload) -> FileObject:
        upload.require_fine_tuning_only(self.slug)
        gcs, layout = self._storage()
        return await staging.stage(gcs, layout, upload)

    async def _fetch_files(
        self, token: str | None, size: int
    ) -> tuple[list[FileObject], str | None]:
        gcs, layout = self._storage()
        listed = await gcs.list(layout.originals, token, size)
        files = [f for f in map(layout.file_object, listed.items) if f is not None]
        return files, listed.next_page_token or None

    async def list_files(self, query: PageQuery) -> Page[FileObject]:
        self._storage()
        if query.purpose not in (None, "fine-tune"):
            return Page(data=[], has_more=False)
        if query.order == "asc":
            # The bucket lists newest first; oldest first needs the whole listing.
            every: list[FileObject] = []
            token: str | None = None
            while True:
                files, token = await self._fetch_files(token, 1000)
                every.extend(files)
                if token is None:
                    break
            page, has_more = page_of(every[::-1], query, lambda f: f.id)
        else:
            page, has_more = await self._file_pager.page(query)
        return Page(data=page, has_more=has_more)

    async def _original(self, file_id: str) -> tuple[FileObject, str]:
        gcs, layout = self._storage()
        name = layout.original(layout.uid_of(file_id))
        found = await gcs.get(name)
        public = layout.file_object(found) if found else None
        if public is None:
            raise NotFound(f"No file found with id '{file_id}'")
        return public, name

    async def retrieve_file(self, file_id: str) -> FileObject:
        return (await self._original(file_id))[0]

    async def file_content(self, file_id: str) -> Download:
        gcs, _ = self._storage()
        return await gcs.download((await self._original(file_id))[1])

    async def delete_file(self, file_id: str) -> FileDeleted:
        gcs, layout = self._storage()
        _, name = await self._original(file_id)
        # The original last: while it exists the file is listed, so a failure in
        # between leaves a file that can be deleted again rather than an orphan.
        await gcs.delete(layout.converted(layout.uid_of(file_id)), missing_ok=True)
        await gcs.delete(name, missing_ok=True)
        return FileDeleted(id=file_id, deleted=True)


_NO_PAUSE = "Vertex AI tuning jobs cannot be paused (cancelling would end the job for good)"


def _label_filter(metadata: dict[str, str] | None) -> str | None:
    """OpenAI's ``metadata[k]=v`` filter as Vertex's list filter on labels.

    "" for no filter; None when no job can match (a pair no Vertex label could hold).
    """
    if metadata is None:
        return ""
    if not metadata:
        raise NotSupported(
            "vertex-ai", "listing jobs without metadata ('metadata=null')",
            "filter on a metadata key instead",
        )  # fmt: skip
    for key, value in metadata.items():
        if not re.fullmatch(r"[\w-]{1,64}", key) or not re.fullmatch(r"[\w-]{0,64}", value):
            return None
    return " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(metadata.items()))
