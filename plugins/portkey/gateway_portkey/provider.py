"""Managed mode (``x-portkey-provider: portkey``): upload once, fine-tune anywhere.

The gateway owns the files and the jobs. Files go to its own store; jobs run on the
provider behind the virtual key their create body names (``portkey_options``),
reached through core's call scope, never by importing that provider's plugin. Every
file and job belongs to the gateway key that made it: another key gets a 404.

The database and store open on first use (and the schema is migrated then), so a
gateway that never uses managed mode pays nothing for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from gateway.models import Checkpoint, FileDeleted, FileObject, FineTuningJob, JobEvent, Page
from gateway.provider import Download, FileUpload, JobRequest, PageQuery, Provider
from gateway.scope import CallScope, current_scope
from gateway_portkey.db import open_database
from gateway_portkey.files import ManagedFiles
from gateway_portkey.jobs import ManagedJobs
from gateway_portkey.records import Records
from gateway_portkey.settings import ManagedSettings
from gateway_portkey.staging import Stager
from gateway_portkey.store import open_store

log = logging.getLogger("finetune_gateway.portkey")


class ManagedProvider(Provider):
    slug = "portkey"
    Settings = ManagedSettings
    request_settings = False  # where records and bytes live is the config's to say

    @classmethod
    def settings_from_headers(cls, headers: Mapping[str, str]) -> ManagedSettings:
        # Where records and bytes live is the config's to say ([providers.portkey]),
        # never a request's.
        return ManagedSettings()

    def __init__(
        self, settings: Any, http: aiohttp.ClientSession, *, caller_credentials: bool = False
    ) -> None:
        super().__init__(settings, http, caller_credentials=caller_credentials)
        self._opening = asyncio.Lock()
        self._parts: tuple[ManagedFiles, ManagedJobs, Stager] | None = None
        self._closers: list[Any] = []

    async def _open(self) -> tuple[ManagedFiles, ManagedJobs, Stager]:
        async with self._opening:
            if self._parts is None:
                settings: ManagedSettings = self.settings
                db = await open_database(settings.database_dsn())
                store = open_store(settings)
                records = Records(db)
                files = ManagedFiles(records, store)
                stager = Stager(records, store, settings.staging_lease_seconds)
                jobs = ManagedJobs(records, files, stager)
                swept = await jobs.sweep_interrupted(current_scope())
                if swept:
                    log.warning("%d job(s) were left staging by a stopped gateway: failed", swept)
                self._closers = [stager, store, db]
                self._parts = (files, jobs, stager)
            return self._parts

    def busy(self) -> bool:
        # Closing would cancel the jobs being staged (they would end staging_interrupted),
        # so the pool keeps this instance while any is.
        return self._parts is not None and self._parts[2].staging

    async def close(self) -> None:
        for part in self._closers:
            await part.close()
        self._closers = []
        self._parts = None

    async def _files(self) -> tuple[ManagedFiles, str]:
        files, _, _ = await self._open()
        return files, _owner(current_scope())

    async def _jobs(self) -> tuple[ManagedJobs, str, CallScope]:
        _, jobs, _ = await self._open()
        scope = current_scope()
        return jobs, _owner(scope), scope

    # ---- files ---------------------------------------------------------------------
    async def upload_file(self, upload: FileUpload) -> FileObject:
        files, owner = await self._files()
        return await files.upload(owner, upload)

    async def list_files(self, query: PageQuery) -> Page[FileObject]:
        files, owner = await self._files()
        return await files.list(owner, query)

    async def retrieve_file(self, file_id: str) -> FileObject:
        files, owner = await self._files()
        return (await files.get(owner, file_id)).to_object()

    async def file_content(self, file_id: str) -> Download:
        files, owner = await self._files()
        return await files.content(owner, file_id)

    async def delete_file(self, file_id: str) -> FileDeleted:
        jobs, owner, scope = await self._jobs()
        return await jobs.files.delete(owner, file_id, lambda job: jobs.refresh(scope, job))

    # ---- jobs ----------------------------------------------------------------------
    async def create_job(self, request: JobRequest) -> FineTuningJob:
        jobs, owner, scope = await self._jobs()
        return await jobs.create(owner, scope, request)

    async def list_jobs(self, query: PageQuery) -> Page[FineTuningJob]:
        jobs, owner, scope = await self._jobs()
        return await jobs.list(owner, scope, query)

    async def retrieve_job(self, job_id: str) -> FineTuningJob:
        jobs, owner, scope = await self._jobs()
        return await jobs.retrieve(owner, scope, job_id)

    async def cancel_job(self, job_id: str) -> FineTuningJob:
        jobs, owner, scope = await self._jobs()
        return await jobs.cancel(owner, scope, job_id)

    async def pause_job(self, job_id: str) -> FineTuningJob:
        jobs, owner, scope = await self._jobs()
        return await jobs.pause(owner, scope, job_id)

    async def resume_job(self, job_id: str) -> FineTuningJob:
        jobs, owner, scope = await self._jobs()
        return await jobs.resume(owner, scope, job_id)

    async def list_events(self, job_id: str, query: PageQuery) -> Page[JobEvent]:
        jobs, owner, scope = await self._jobs()
        return await jobs.events(owner, scope, job_id, query)

    async def list_checkpoints(self, job_id: str, query: PageQuery) -> Page[Checkpoint]:
        jobs, owner, scope = await self._jobs()
        return await jobs.checkpoints(owner, scope, job_id, query)


def _owner(scope: CallScope) -> str:
    return scope.owner or ""  # '' is an open gateway's one owner
