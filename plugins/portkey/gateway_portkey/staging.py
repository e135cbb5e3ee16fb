"""Running a managed job on its target: stage the files there, then create the job.

This runs in the background after create has answered (the job is
``validating_files`` meanwhile), through the target's own plugin: its ``upload_file``
checks and converts the file as it would for a direct upload, and its ``create_job``
makes the upstream job with the managed job's id as the idempotency key, so a retried
create never makes a second one.

Whatever goes wrong, the job ends ``failed`` with the reason, and the copies already
staged on the target are deleted: nothing is left upstream that no job uses. A process
that dies while staging stops renewing its heartbeat; whoever next reads the job
(another process, or this one restarted) finds the heartbeat stale, fails it and
deletes what it had staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import msgspec

from gateway.errors import GatewayError
from gateway.models import FileObject, FineTuningJob, JobCreate, JobError
from gateway.provider import FileUpload, JobRequest, Provider
from gateway.scope import CallScope
from gateway_portkey.records import JobRecord, Records, now_ns
from gateway_portkey.store import Store

log = logging.getLogger("finetune_gateway.portkey")

T = TypeVar("T")

TARGET_PARAM = "portkey_options.x-portkey-virtual-key"


def decoded(value: Any, type_: type[T]) -> T:
    """A provider's answer as a Struct, whether it was modelled or the upstream's bytes."""
    if isinstance(value, msgspec.Raw):
        return msgspec.json.decode(value, type=type_)
    checked: T = msgspec.convert(value, type_, from_attributes=True)  # a Struct as it is
    return checked


def view_of(record: JobRecord, upstream: FineTuningJob) -> FineTuningJob:
    """The target's job as the gateway shows it: the gateway's id, files and metadata."""
    return msgspec.structs.replace(
        upstream,
        id=record.id,
        created_at=record.job.created_at,
        training_file=record.training_file,
        validation_file=record.validation_file,
        metadata=record.job.metadata,
    )


_BUCKET_OPTIONS = ("x-portkey-aws-s3-bucket", "x-portkey-vertex-storage-bucket-name")
PORTKEY_OPTIONS = ("x-portkey-virtual-key", *_BUCKET_OPTIONS)


def open_target(scope: CallScope, record: JobRecord) -> AbstractAsyncContextManager[Provider]:
    """The job's target, with the bucket options its create body gave."""
    options = record.request.get("portkey_options") or {}
    # Only the options PortkeyFinetuneJob defines: a request may pick another bucket of
    # the target's account, never its credentials, key files or endpoints.
    overrides = {k: v for k in _BUCKET_OPTIONS if isinstance(v := options.get(k), str)}
    return scope.open_target(record.virtual_key, overrides, param=TARGET_PARAM)


def failed(record: JobRecord, error: JobError) -> JobRecord:
    job = msgspec.structs.replace(
        record.job, status="failed", error=error, finished_at=now_ns() // 1_000_000_000
    )
    return msgspec.structs.replace(record, job=job)


def error_of(exc: BaseException) -> JobError:
    if isinstance(exc, GatewayError):
        return JobError(code=exc.code or "staging_failed", message=exc.message, param=exc.param)
    return JobError(
        code="staging_failed",
        message=f"The gateway failed to stage this job ({type(exc).__name__})",
        param=None,
    )


class Stager:
    def __init__(self, records: Records, store: Store, lease_seconds: float = 90.0) -> None:
        self.records = records
        self.store = store
        # A staging job whose heartbeat is older than this has lost its process.
        self.lease_ns = int(lease_seconds * 1_000_000_000)
        self.heartbeat_seconds = lease_seconds / 6
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def staging(self) -> bool:
        """True while any job is being staged in this process."""
        return bool(self._tasks)

    def start(self, record: JobRecord, scope: CallScope) -> None:
        task = asyncio.create_task(self._run(record, scope), name=f"stage {record.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float = 5.0) -> None:
        """Let staging finish for ``grace`` seconds, then stop it (those jobs fail)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self, record: JobRecord, scope: CallScope) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(record.id))
        try:
            async with open_target(scope, record) as target:
                await self._stage_and_create(record, target)
        except BaseException as exc:
            await asyncio.shield(self._fail(record.id, scope, exc))
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, GatewayError):
                log.exception("staging job %s failed", record.id)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            with contextlib.suppress(Exception):  # a missed beat only shortens the lease
                await self.records.touch(job_id, now_ns())

    async def _stage_and_create(self, record: JobRecord, target: Provider) -> None:
        files = [record.training_file]
        if record.validation_file and record.validation_file != record.training_file:
            files.append(record.validation_file)
        for file_id in files:
            if file_id in record.staged:
                continue
            kept = await self.records.get_file(record.owner, file_id)
            if kept is None:
                raise GatewayError(
                    f"File '{file_id}' was deleted before it could be staged", param="training_file"
                )
            uploaded = await target.upload_file(
                FileUpload(
                    filename=kept.filename, purpose="fine-tune", chunks=self.store.read(file_id)
                )
            )
            staged_id = decoded(uploaded, FileObject).id
            record = await self._save(
                record, staged={**record.staged, file_id: staged_id}, target=target
            )
            await self.records.add_event(
                record.id, "info", f"Staged file {file_id} on {target.slug} as {staged_id}"
            )

        spec = msgspec.convert(record.request, JobCreate)
        spec = msgspec.structs.replace(
            spec,
            training_file=record.staged[record.training_file],
            validation_file=record.staged.get(record.validation_file or ""),
            portkey_options=None,
        )
        body = {k: v for k, v in record.request.items() if k != "portkey_options"}
        body["training_file"] = spec.training_file
        if spec.validation_file is not None:
            body["validation_file"] = spec.validation_file
        answer = await target.create_job(
            JobRequest(spec=spec, body=body, idempotency_key=record.id)
        )
        upstream = decoded(answer, FineTuningJob)
        await self.records.set_upstream(record.id, upstream.id)
        saved = await self.records.update_job(
            msgspec.structs.replace(record, upstream_id=upstream.id, job=view_of(record, upstream))
        )
        if saved is None:  # cancelled while the job was being created: cancel it there too
            await target.cancel_job(upstream.id)
            return
        await self.records.add_event(record.id, "info", f"Created {target.slug} job {upstream.id}")

    async def _save(
        self, record: JobRecord, *, staged: dict[str, str], target: Provider
    ) -> JobRecord:
        """Record a staged copy; if the job was cancelled meanwhile, stop here."""
        saved = await self.records.update_job(msgspec.structs.replace(record, staged=staged))
        if saved is not None:
            return saved
        current = await self.records.get_job(None, record.id)
        if current is None or current.ended:
            for staged_id in staged.values():
                with contextlib.suppress(Exception):
                    await target.delete_file(staged_id)
            raise asyncio.CancelledError  # ends the task quietly; the record says why
        return await self._save(current, staged=staged, target=target)

    async def _fail(self, job_id: str, scope: CallScope, exc: BaseException) -> None:
        error = error_of(exc)
        if isinstance(exc, asyncio.CancelledError):
            error = JobError(
                code="staging_interrupted",
                message="The gateway stopped while staging this job; create it again",
                param=None,
            )
        for _ in range(5):
            current = await self.records.get_job(None, job_id)
            if current is None or current.ended:
                break
            if await self.records.update_job(failed(current, error)) is not None:
                await self.records.add_event(job_id, "error", f"Staging failed: {error.message}")
                break
        await self.remove_staged(job_id, scope)

    async def remove_staged(self, job_id: str, scope: CallScope) -> None:
        """Delete the copies a job that never got created staged on its target."""
        current = await self.records.get_job(None, job_id)
        if current is None or not current.staged or current.upstream_id:
            return
        try:
            async with open_target(scope, current) as t:
                for staged_id in current.staged.values():
                    with contextlib.suppress(GatewayError):  # already gone is fine
                        await t.delete_file(staged_id)
        except Exception:
            log.warning("could not delete the files staged for job %s", job_id, exc_info=True)
