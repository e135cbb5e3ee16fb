"""Managed jobs: the gateway's own records of jobs that run on the configured providers.

Create checks what it can at once (the target, the files, the idempotency key), writes
the record and answers; the staging runs in the background (``staging.Stager``). Reads
refresh a job from its target and record what they saw, so list, retrieve and delete
agree across every gateway process that shares the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from gateway.errors import BadRequest, Conflict, GatewayError, NotFound
from gateway.models import (
    Checkpoint,
    FineTuningJob,
    Hyperparameters,
    JobError,
    JobEvent,
    Page,
)
from gateway.provider import JobRequest, PageQuery, Provider
from gateway.scope import CallScope
from gateway_portkey.files import ManagedFiles
from gateway_portkey.records import JobRecord, Records, new_id, now_ns
from gateway_portkey.staging import (
    PORTKEY_OPTIONS,
    TARGET_PARAM,
    Stager,
    decoded,
    failed,
    open_target,
    view_of,
)

log = logging.getLogger("finetune_gateway.portkey")

T = TypeVar("T")

# How many jobs of a listed page are refreshed from their targets at once.
_REFRESH_CONCURRENCY = 8


class ManagedJobs:
    def __init__(self, records: Records, files: ManagedFiles, stager: Stager) -> None:
        self.records = records
        self.files = files
        self.stager = stager

    async def create(self, owner: str, scope: CallScope, request: JobRequest) -> FineTuningJob:
        spec = request.spec
        if spec.portkey_options is None:
            raise BadRequest(
                "Managed mode runs the job on a provider of this gateway's config: give "
                "'portkey_options' with 'x-portkey-virtual-key' naming it",
                param="portkey_options",
                code="missing_target",
            )
        virtual_key = spec.portkey_options.virtual_key
        for option in request.body.get("portkey_options") or {}:
            if option not in PORTKEY_OPTIONS:
                raise BadRequest(
                    f"'{option}' is not an option of managed mode: 'portkey_options' takes "
                    f"{', '.join(PORTKEY_OPTIONS)}",
                    param=f"portkey_options.{option}",
                    code="unsupported_option",
                )
        training = await self._file(owner, spec.training_file, "training_file")
        validation = None
        if spec.validation_file is not None:
            validation = await self._file(owner, spec.validation_file, "validation_file")
        digest = _digest(request)
        now = now_ns()
        job_id = new_id("ftjob-")
        record = JobRecord(
            id=job_id,
            owner=owner,
            created_ns=now,
            updated_ns=now,
            version=0,
            status="validating_files",
            virtual_key=virtual_key,
            provider="",
            upstream_id=None,
            training_file=training,
            validation_file=validation,
            idempotency_key=request.idempotency_key,
            request_digest=digest,
            request=request.body,
            job=FineTuningJob(
                id=job_id,
                model=spec.model,
                created_at=now // 1_000_000_000,
                status="validating_files",
                training_file=training,
                validation_file=validation,
                hyperparameters=spec.hyperparameters or Hyperparameters(),
                seed=spec.seed or 0,
                integrations=spec.integrations,
                method=spec.method,
                metadata=spec.metadata,
            ),
            staged={},
            heartbeat_ns=now,
        )
        async with open_target(scope, record) as target:  # a 400 now if there is none
            if target.slug == "portkey":
                raise BadRequest(
                    f"Virtual key '{virtual_key}' is managed mode itself: name a provider's",
                    param=TARGET_PARAM,
                    code="invalid_target",
                )
            record = msgspec.structs.replace(record, provider=target.slug)
        kept = await self.records.insert_job(record)
        if kept.id != record.id:  # the same Idempotency-Key was used before
            if kept.request_digest != digest:
                raise Conflict(
                    "This Idempotency-Key was used for a different request",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            return kept.job
        await self.records.add_event(
            job_id, "info", f"Created; staging files to {record.provider} ({virtual_key})"
        )
        self.stager.start(kept, scope)
        return kept.job

    async def _file(self, owner: str, file_id: str, param: str) -> str:
        try:
            return (await self.files.get(owner, file_id, param=param)).id
        except NotFound:
            raise BadRequest(
                f"No file found with id '{file_id}': upload it to this gateway first",
                param=param,
                code="file_not_found",
            ) from None

    async def get(self, owner: str, job_id: str, *, param: str = "fine_tuning_job_id") -> JobRecord:
        record = await self.records.get_job(owner, job_id)
        if record is None:
            raise NotFound(f"No fine-tuning job found with id '{job_id}'", param=param)
        return record

    async def refresh(self, scope: CallScope, record: JobRecord) -> JobRecord:
        """The job as its target sees it now, recorded; an ended job as it was."""
        if record.ended:
            return record
        if record.staging:
            if (record.heartbeat_ns or 0) < now_ns() - self.stager.lease_ns:
                return await self._fail_interrupted(scope, record)
            return record
        assert record.upstream_id is not None  # not staging
        async with open_target(scope, record) as target:
            upstream = decoded(await target.retrieve_job(record.upstream_id), FineTuningJob)
        return await self._record(record, upstream)

    async def _record(self, record: JobRecord, upstream: FineTuningJob) -> JobRecord:
        saved = await self.records.update_job(
            msgspec.structs.replace(record, job=view_of(record, upstream))
        )
        if saved is not None:
            return saved
        # Another request or process wrote first; its answer is at least as new.
        return await self.get(record.owner, record.id)

    async def _fail_interrupted(self, scope: CallScope, record: JobRecord) -> JobRecord:
        error_message = (
            "The gateway process staging this job stopped before it finished; create it again"
        )
        saved = await self.records.update_job(
            failed(record, _job_error("staging_interrupted", error_message))
        )
        if saved is None:
            return await self.get(record.owner, record.id)
        await self.records.add_event(record.id, "error", error_message)
        # The files it had staged would otherwise stay on the target with no job to use them.
        await self.stager.remove_staged(record.id, scope)
        return saved

    async def retrieve(self, owner: str, scope: CallScope, job_id: str) -> FineTuningJob:
        return (await self.refresh(scope, await self.get(owner, job_id))).job

    async def list(self, owner: str, scope: CallScope, query: PageQuery) -> Page[FineTuningJob]:
        after = await self.get(owner, query.after, param="after") if query.after else None
        rows = await self.records.list_jobs(
            owner, after=after, limit=query.limit + 1, metadata=query.metadata
        )
        page = rows[: query.limit]
        gate = asyncio.Semaphore(_REFRESH_CONCURRENCY)

        async def fresh(record: JobRecord) -> JobRecord:
            async with gate:
                try:
                    return await self.refresh(scope, record)
                except GatewayError as exc:  # one unreachable target does not break the list
                    log.warning("could not refresh job %s: %s", record.id, exc.message)
                    return record

        refreshed = await asyncio.gather(*(fresh(r) for r in page))
        return Page(data=[r.job for r in refreshed], has_more=len(rows) > query.limit)

    async def cancel(self, owner: str, scope: CallScope, job_id: str) -> FineTuningJob:
        record = await self.get(owner, job_id)
        while record.staging:  # not created upstream yet: the stager sees this and stops
            job = msgspec.structs.replace(
                record.job, status="cancelled", finished_at=now_ns() // 1_000_000_000
            )
            saved = await self.records.update_job(msgspec.structs.replace(record, job=job))
            if saved is not None:
                await self.records.add_event(job_id, "info", "Cancelled before the job was created")
                return saved.job
            record = await self.get(owner, job_id)
        return await self._forward(scope, record, lambda t, upstream_id: t.cancel_job(upstream_id))

    async def pause(self, owner: str, scope: CallScope, job_id: str) -> FineTuningJob:
        record = await self.get(owner, job_id)
        return await self._forward(scope, record, lambda t, upstream_id: t.pause_job(upstream_id))

    async def resume(self, owner: str, scope: CallScope, job_id: str) -> FineTuningJob:
        record = await self.get(owner, job_id)
        return await self._forward(scope, record, lambda t, upstream_id: t.resume_job(upstream_id))

    async def _forward(
        self,
        scope: CallScope,
        record: JobRecord,
        call: Callable[[Provider, str], Awaitable[object]],
    ) -> FineTuningJob:
        if record.upstream_id is None:
            raise BadRequest(
                f"Job '{record.id}' is {record.status} and was never created on "
                f"{record.provider or 'its target'}",
                param="fine_tuning_job_id",
                code="job_not_created",
            )
        async with open_target(scope, record) as target:
            upstream = decoded(await call(target, record.upstream_id), FineTuningJob)
        return (await self._record(record, upstream)).job

    async def events(
        self, owner: str, scope: CallScope, job_id: str, query: PageQuery
    ) -> Page[JobEvent]:
        """The target's events, newest first, then the gateway's own (staging) events."""
        record = await self.get(owner, job_id)
        own_after = None
        if query.after and await self.records.has_event(record.id, query.after):
            own_after = query.after
        data: list[JobEvent] = []
        if record.upstream_id is not None and own_after is None:
            async with open_target(scope, record) as target:
                answer = await target.list_events(record.upstream_id, query)
            page = decoded(answer, Page[JobEvent])
            if page.has_more:
                return Page(data=page.data, has_more=True)
            data = list(page.data)
        room = query.limit - len(data)
        own = await self.records.list_events(record.id, after=own_after, limit=room + 1)
        data += [
            JobEvent(
                id=e.id,
                created_at=e.created_ns // 1_000_000_000,
                level=e.level,  # type: ignore[arg-type]  # written by this module only
                message=e.message,
            )
            for e in own[:room]
        ]
        return Page(data=data, has_more=len(own) > room)

    async def checkpoints(
        self, owner: str, scope: CallScope, job_id: str, query: PageQuery
    ) -> Page[Checkpoint]:
        record = await self.get(owner, job_id)
        if record.upstream_id is None:
            return Page(data=[], has_more=False)
        async with open_target(scope, record) as target:
            answer = await target.list_checkpoints(record.upstream_id, query)
        page = decoded(answer, Page[Checkpoint])
        data = [msgspec.structs.replace(c, fine_tuning_job_id=record.id) for c in page.data]
        return Page(data=data, has_more=page.has_more)

    async def sweep_interrupted(self, scope: CallScope) -> int:
        """Fail every job whose staging process has gone; how many there were."""
        stale = await self.records.stale_staging(now_ns() - self.stager.lease_ns)
        for record in stale:
            await self._fail_interrupted(scope, record)
        return len(stale)


def _job_error(code: str, message: str) -> JobError:
    return JobError(code=code, message=message, param=None)


def _digest(request: JobRequest) -> str:
    encoded = msgspec.json.encode(request.body, order="sorted")
    return hashlib.sha256(encoded).hexdigest()
