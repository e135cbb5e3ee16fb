"""The Bedrock provider: OpenAI's fine-tuning and files API over Bedrock and S3.

Files live in the configured bucket under the gateway's prefix (see ``s3.py``). A job's
training file is converted at create, when the base model and so its line format are
known, into a staged object written once per format and reused. Jobs map to Bedrock's
model customization jobs (``transform.py``); their events are synthesized from the job
(``events.py``). This module is only the I/O.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar

import aiohttp
import msgspec

from gateway.answers import mapping
from gateway.errors import BadRequest, Conflict, NotFound, NotSupported
from gateway.models import (
    Checkpoint,
    FileDeleted,
    FileObject,
    FineTuningJob,
    JobCreate,
    JobEvent,
    Page,
    ProviderOptions,
)
from gateway.paging import TokenPager
from gateway.provider import (
    Download,
    FileUpload,
    JobRequest,
    PageQuery,
    Provider,
    ProviderSettings,
)
from gateway.step_metrics import EventLog, MetricsBlock
from gateway_bedrock import allowed, transform
from gateway_bedrock.aws import BedrockSettings, Clients, aws_errors, missing_credentials
from gateway_bedrock.events import job_events
from gateway_bedrock.files import FileStore
from gateway_bedrock.metrics import read_metrics
from gateway_bedrock.transform import JobSummary, job_id, job_name_of

T = TypeVar("T")
_HEADER = "x-portkey-aws-"
_CONCURRENT_CALLS = 8  # per listing page: enough to be quick, few enough not to throttle
_FILTERED_PAGERS = 32


# Bedrock statuses after which a job never changes (Stopping still becomes Stopped).
_ENDED = frozenset({"Completed", "Failed", "Stopped"})
_ENDED_KEPT = 4096
# Metrics rows kept for ended jobs, all jobs together (a row is a few numbers).
_METRICS_ROWS_KEPT = 2_000_000


class BedrockProvider(Provider):
    slug: ClassVar[str] = "bedrock"
    Settings: ClassVar[type[BedrockSettings]] = BedrockSettings
    credential_headers: ClassVar[frozenset[str]] = frozenset(
        {f"{_HEADER}access-key-id", f"{_HEADER}secret-access-key", f"{_HEADER}session-token"}
    )

    settings: BedrockSettings

    def __init__(
        self, settings: Any, http: aiohttp.ClientSession, *, caller_credentials: bool = False
    ) -> None:
        super().__init__(settings, http, caller_credentials=caller_credentials)
        self._clients = Clients(settings, caller_credentials=caller_credentials)
        self._files = FileStore(settings, self._clients, self._errors)
        self._jobs: TokenPager[JobSummary] = TokenPager(self._fetch_jobs, _summary_id)
        self._filtered: OrderedDict[frozenset[tuple[str, str]], TokenPager[JobSummary]] = (
            OrderedDict()
        )
        # Jobs that have ended, as last answered: Bedrock never changes them again, and a
        # job list would otherwise cost two calls (Get and ListTags) per job, every time,
        # against Bedrock's low rate limits.
        self._ended: OrderedDict[str, FineTuningJob] = OrderedDict()
        # Their metrics files, read once: Bedrock writes them when the job ends.
        self._metrics: OrderedDict[str, list[MetricsBlock]] = OrderedDict()
        self._metrics_rows = 0

    @classmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> BedrockSettings:
        if not (
            headers.get(f"{_HEADER}access-key-id") and headers.get(f"{_HEADER}secret-access-key")
        ):
            raise missing_credentials()
        fields = {
            f"aws_{name.replace('-', '_')}": headers[_HEADER + name]
            for name in (
                "access-key-id",
                "secret-access-key",
                "session-token",
                "region",
                "role-arn",
                "s3-bucket",
                "s3-prefix",
            )
            if headers.get(_HEADER + name)
        }
        try:
            return msgspec.convert(fields, BedrockSettings)
        except msgspec.ValidationError as exc:
            field = str(exc).rpartition("$.")[2].rstrip("`")
            header = _HEADER + field.removeprefix("aws_").replace("_", "-")
            raise BadRequest(f"Invalid '{header}': {exc}", param=header) from None

    async def close(self) -> None:
        await self._clients.close()

    # ---- plumbing ------------------------------------------------------------------
    def _errors(self, service: str = "Bedrock") -> AbstractContextManager[None]:
        return aws_errors(
            service, caller_credentials=self.caller_credentials, secrets=self.settings.secrets
        )

    async def _bedrock(self, operation: str, **params: Any) -> dict[str, Any]:
        client = await self._clients.bedrock()
        # botocore parses the answer inside the call: a timestamp that is none is a 502.
        with self._errors(), mapping(transform.SERVICE, f"{operation} answer"):
            answer: dict[str, Any] = await getattr(client, operation)(**params)
        return answer

    # ---- jobs ----------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> FineTuningJob:
        spec = request.spec
        transform.check_method(spec)
        family = transform.family_of(spec.model)
        options = spec.provider_options or ProviderOptions()
        hyper = transform.hyper_parameters(spec, family, _extra_hyperparameters(request.body))
        role_arn = spec.role_arn or options.role_arn or self.settings.aws_role_arn
        output_given = spec.output_file or options.output_file
        if not self.caller_credentials:
            self._check_named_resources(spec, options)
        if not role_arn:
            raise BadRequest(
                "Bedrock needs an IAM role to read the training data: give 'role_arn' (or "
                "provider_options.role_arn), or set aws_role_arn in the virtual key",
                param="role_arn",
                code="missing_role_arn",
            )
        token = transform.request_token(request.idempotency_key)
        given_name = spec.job_name or options.job_name
        name = (
            transform.check_job_name(given_name, "job_name")
            if given_name
            else transform.derived_name(spec, token)
        )
        layout = self._files.layout()
        output = output_given or layout.output_uri(name)
        if not output.startswith("s3://"):
            raise BadRequest("'output_file' must be an s3:// URI", param="output_file")
        training = await self._files.staged(
            spec.training_file, family.line_format, spec.model, "training_file"
        )
        validation = (
            await self._files.staged(
                spec.validation_file, family.line_format, spec.model, "validation_file"
            )
            if spec.validation_file
            else None
        )
        body = transform.create_request(
            spec=spec,
            job_name=name,
            role_arn=role_arn,
            training_uri=training,
            validation_uri=validation,
            output_uri=output,
            hyper_parameters=hyper,
            token=token,
        )
        try:
            await self._bedrock("create_model_customization_job", **body)
        except Conflict:
            # A retried create: Bedrock (or moto, which ignores the token) refuses the
            # name the first attempt took. The same token means it is our job.
            if await self._token_of(name) != token:
                raise Conflict(
                    f"A Bedrock job named '{name}' already exists", param="job_name"
                ) from None
        return await self._openai_job(name)

    def _check_named_resources(self, spec: JobCreate, options: ProviderOptions) -> None:
        """With the config's credentials, what the request names must be listed."""
        s = self.settings
        roles = (("role_arn", spec.role_arn), ("provider_options.role_arn", options.role_arn))
        for param, role in roles:
            if role:
                allowed.check_role(s, role, param=param)
        uris = (
            ("training_file", spec.training_file),
            ("validation_file", spec.validation_file),
            ("output_file", spec.output_file),
            ("provider_options.output_file", options.output_file),
        )
        for param, uri in uris:
            if uri and uri.startswith("s3://"):  # anything else is refused as malformed
                allowed.check_uri(s, uri, param=param)

    @classmethod
    def check_overrides(
        cls, original: ProviderSettings, overridden: ProviderSettings, *, param: str
    ) -> None:
        assert isinstance(original, BedrockSettings) and isinstance(overridden, BedrockSettings)
        allowed.check_bucket_override(original, overridden, param=param)

    async def _token_of(self, name: str) -> str | None:
        try:
            return (await self._get(name)).clientRequestToken
        except NotFound:
            return None

    async def retrieve_job(self, job_id: str) -> FineTuningJob:
        return await self._openai_job(job_name_of(job_id))

    async def cancel_job(self, job_id: str) -> FineTuningJob:
        name = job_name_of(job_id)
        # By name: Bedrock takes either, moto only the name.
        await self._not_found_as_job(
            self._bedrock("stop_model_customization_job", jobIdentifier=name), name
        )
        return await self._openai_job(name)

    async def pause_job(self, job_id: str) -> FineTuningJob:
        raise NotSupported(
            self.slug,
            "pausing fine-tuning jobs",
            "a Bedrock job can only be stopped for good (cancel)",
        )

    async def resume_job(self, job_id: str) -> FineTuningJob:
        raise NotSupported(
            self.slug, "resuming fine-tuning jobs", "a stopped Bedrock job cannot be restarted"
        )

    async def list_jobs(self, query: PageQuery) -> Page[FineTuningJob]:
        summaries, has_more = await self._pager(query.metadata).page(query)
        jobs = await _bounded([self._openai_job(s.jobName) for s in summaries])
        return Page(data=jobs, has_more=has_more)

    async def list_events(self, job_id: str, query: PageQuery) -> Page[JobEvent]:
        job = await self._get(job_name_of(job_id))
        with mapping(transform.SERVICE, "customization job"):
            events = job_events(job)
        blocks = await self._metrics_of(job)
        chosen, has_more = EventLog(events, blocks).page(query)
        return Page(data=chosen, has_more=has_more)

    async def _metrics_of(self, job: transform.BedrockJob) -> list[MetricsBlock]:
        """The per-step metrics of an ended job (none before: Bedrock writes them at the
        end), read once and kept, within ``_METRICS_ROWS_KEPT`` rows in all."""
        if job.status not in _ENDED:
            return []
        if (kept := self._metrics.get(job.jobName)) is not None:
            self._metrics.move_to_end(job.jobName)
            return kept
        uri = job.outputDataConfig.s3Uri
        if not self.caller_credentials and uri and not allowed.uri_allowed(self.settings, uri):
            return []  # the config's identity reads only where the virtual key allows
        blocks = await read_metrics(job, self._clients.s3, lambda: self._errors("S3"))
        self._metrics[job.jobName] = blocks
        self._metrics_rows += sum(len(block) for block in blocks)
        while self._metrics_rows > _METRICS_ROWS_KEPT and len(self._metrics) > 1:
            _, dropped = self._metrics.popitem(last=False)
            self._metrics_rows -= sum(len(block) for block in dropped)
        return blocks

    async def list_checkpoints(self, job_id: str, query: PageQuery) -> Page[Checkpoint]:
        await self._get(job_name_of(job_id))  # an unknown job is still a 404
        return Page(data=[], has_more=False)  # Bedrock keeps no intermediate checkpoints

    async def _get(self, name: str) -> transform.BedrockJob:
        answer = await self._not_found_as_job(
            self._bedrock("get_model_customization_job", jobIdentifier=name), name
        )
        return transform.decode_job(answer)

    async def _not_found_as_job(self, call: Awaitable[T], name: str) -> T:
        try:
            return await call
        except NotFound:
            raise NotFound(f"No fine-tuning job found with id '{job_id(name)}'") from None

    async def _tags(self, arn: str) -> dict[str, str]:
        answer = await self._bedrock("list_tags_for_resource", resourceARN=arn)
        return transform.decode_tags(answer)

    async def _openai_job(self, name: str) -> FineTuningJob:
        if (ended := self._ended.get(name)) is not None:
            self._ended.move_to_end(name)
            return ended
        job = await self._get(name)
        tags = await self._tags(job.jobArn)
        with mapping(transform.SERVICE, "customization job"):
            answer = transform.to_openai_job(job, tags=tags, source_of=self._files.source_of)
        if job.status in _ENDED:
            self._ended[name] = answer
            while len(self._ended) > _ENDED_KEPT:
                self._ended.popitem(last=False)
        return answer

    async def _fetch_jobs(
        self, token: str | None, size: int
    ) -> tuple[list[JobSummary], str | None]:
        params: dict[str, Any] = {
            "maxResults": size,
            "sortBy": "CreationTime",
            "sortOrder": "Descending",
        }
        if token:
            params["nextToken"] = token
        answer = await self._bedrock("list_model_customization_jobs", **params)
        return transform.decode_summaries(answer), answer.get("nextToken") or None

    def _pager(self, metadata: dict[str, str] | None) -> TokenPager[JobSummary]:
        """The plain listing, or one per metadata filter (Bedrock cannot filter by tag)."""
        if metadata is None:
            return self._jobs
        key = frozenset(metadata.items())
        pager = self._filtered.pop(key, None)
        if pager is None:
            pager = TokenPager(functools.partial(self._fetch_tagged, metadata), _summary_id)
        self._filtered[key] = pager
        while len(self._filtered) > _FILTERED_PAGERS:
            self._filtered.popitem(last=False)
        return pager

    async def _fetch_tagged(
        self, wanted: dict[str, str], token: str | None, size: int
    ) -> tuple[list[JobSummary], str | None]:
        summaries, next_token = await self._fetch_jobs(token, size)
        tags = await _bounded([self._tags(s.jobArn) for s in summaries])
        kept = [
            summary
            for summary, have in zip(summaries, tags, strict=True)
            if (all(have.get(k) == v for k, v in wanted.items()) if wanted else not have)
        ]
        return kept, next_token

    # ---- files ---------------------------------------------------------------------
    # ---- files ---------------------------------------------------------------------
    async def upload_file(self, upload: FileUpload) -> FileObject:
        return await self._files.upload(upload)

    async def list_files(self, query: PageQuery) -> Page[FileObject]:
        return await self._files.list(query)

    async def retrieve_file(self, file_id: str) -> FileObject:
        return await self._files.retrieve(file_id)

    async def file_content(self, file_id: str) -> Download:
        return await self._files.content(file_id)

    async def delete_file(self, file_id: str) -> FileDeleted:
        return await self._files.delete(file_id)


def _summary_id(summary: JobSummary) -> str:
    return job_id(summary.jobName)


def _extra_hyperparameters(body: Mapping[str, Any]) -> dict[str, object]:
    options = body.get("provider_options")
    extra = options.get("hyper_parameters") if isinstance(options, dict) else None
    if extra is None:
        return {}
    if not (
        isinstance(extra, dict)
        and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in extra.values()
        )
    ):
        raise BadRequest(
            "'provider_options.hyper_parameters' must map Bedrock hyperparameter names to "
            "numbers or strings",
            param="provider_options.hyper_parameters",
        )
    return dict(extra)


async def _bounded(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await ``calls`` a few at a time, in order; the first failure cancels the rest."""
    gate = asyncio.Semaphore(_CONCURRENT_CALLS)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    tasks = [asyncio.ensure_future(one(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        # gather leaves the others running: they would keep calling AWS for an answer
        # nobody reads, after the request has failed.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
