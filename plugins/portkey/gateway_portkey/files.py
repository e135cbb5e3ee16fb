"""Managed mode's files: the bytes in the gateway's store, the record in its database.

An upload is checked line by line as it streams into the store (``gateway.jsonl``): a
file no provider could train on is refused with its line numbers, and nothing of it is
kept. The record is written only once the bytes are safely stored, so a record always
has its bytes; a file still in use by a job that has not ended cannot be deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from gateway import jsonl
from gateway.errors import Conflict, NotFound
from gateway.models import FileDeleted, FileObject, Page
from gateway.provider import Download, FileUpload, PageQuery
from gateway.training import check_openai_line
from gateway_portkey.records import FileRecord, JobRecord, Records, new_id, now_ns
from gateway_portkey.store import Store

# Refreshes a job from its target (so a job that has ended there stops holding a file).
Refresh = Callable[[JobRecord], Awaitable[JobRecord]]


class ManagedFiles:
    def __init__(self, records: Records, store: Store) -> None:
        self.records = records
        self.store = store

    async def upload(self, owner: str, upload: FileUpload) -> FileObject:
        upload.require_fine_tuning_only("portkey")
        file_id = new_id("file-")
        checked = jsonl.checked(upload.chunks, check_openai_line, param="file")
        size = await self.store.write(file_id, checked)
        record = FileRecord(
            id=file_id,
            owner=owner,
            filename=upload.filename,
            purpose=upload.purpose,
            bytes=size,
            created_ns=now_ns(),
        )
        try:
            await self.records.insert_file(record)
        except BaseException:
            await self.store.delete(file_id)  # bytes without a record would never be found
            raise
        return record.to_object()

    async def get(self, owner: str, file_id: str, *, param: str = "file_id") -> FileRecord:
        record = await self.records.get_file(owner, file_id)
        if record is None:
            raise NotFound(f"No file found with id '{file_id}'", param=param)
        return record

    async def list(self, owner: str, query: PageQuery) -> Page[FileObject]:
        after = await self.get(owner, query.after, param="after") if query.after else None
        rows = await self.records.list_files(
            owner,
            after=after,
            limit=query.limit + 1,
            newest_first=query.order != "asc",
            purpose=query.purpose,
        )
        return Page(
            data=[r.to_object() for r in rows[: query.limit]], has_more=len(rows) > query.limit
        )

    async def content(self, owner: str, file_id: str) -> Download:
        record = await self.get(owner, file_id)
        chunks = self.store.read(file_id)
        # Open it now, so a missing object is a 404 rather than a cut-off 200.
        first = await anext(chunks, b"")

        async def all_chunks() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk

        async def release() -> None:
            await chunks.aclose()

        return Download(
            chunks=all_chunks(),
            size=record.bytes,
            content_type="application/jsonl",
            release=release,
        )

    async def delete(self, owner: str, file_id: str, refresh: Refresh) -> FileDeleted:
        await self.get(owner, file_id)
        for job in await self.records.jobs_using_file(owner, file_id):
            job = await refresh(job)
            if not job.ended:
                raise Conflict(
                    f"File '{file_id}' is used by fine-tuning job '{job.id}', which is "
                    f"{job.status}: delete it once the job has ended, or cancel the job",
                    param="file_id",
                    code="file_in_use",
                )
        deleted = await self.records.delete_file(owner, file_id)
        if deleted:
            await self.store.delete(file_id)
        return FileDeleted(id=file_id, deleted=deleted)
