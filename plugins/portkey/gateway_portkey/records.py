"""File and job records, and every query managed mode runs on them.

Lists are newest first by creation time, then id, and page with ``after=<id>``: the
cursor is looked up, so it stays correct whatever was created or deleted since. A job
record changes only through ``update_job``, which compares versions, so two gateway
processes refreshing the same job cannot write over each other's newer answer.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec

from gateway.models import FileObject, FineTuningJob
from gateway_portkey.db import Database, Row

ENDED = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    # Lower-case hex: safe in every upstream's names, labels and request tokens.
    return prefix + secrets.token_hex(12)


def now_ns() -> int:
    return time.time_ns()


class FileRecord(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    created_ns: int

    def to_object(self) -> FileObject:
        return FileObject(
            id=self.id,
            bytes=self.bytes,
            created_at=self.created_ns // 1_000_000_000,
            filename=self.filename,
            purpose=self.purpose,
            status="processed",
        )


_FILE_COLUMNS = "id, owner, filename, purpose, bytes, created_ns"


def _file(row: Row) -> FileRecord:
    return FileRecord(
        id=row[0], owner=row[1], filename=row[2], purpose=row[3], bytes=row[4], created_ns=row[5]
    )


class JobRecord(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    created_ns: int
    updated_ns: int
    version: int
    status: str
    virtual_key: str
    provider: str
    upstream_id: str | None
    training_file: str
    validation_file: str | None
    idempotency_key: str | None
    request_digest: str
    request: dict[str, Any]  # the create body as the client sent it
    job: FineTuningJob  # what the gateway answers, kept current by refreshes
    staged: dict[str, str]  # gateway file id -> the target's copy of it
    heartbeat_ns: int | None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def staging(self) -> bool:
        return self.upstream_id is None and not self.ended


_JOB_COLUMNS = (
    "id, owner, created_ns, updated_ns, version, status, virtual_key, provider, upstream_id, "
    "training_file, validation_file, idempotency_key, request_digest, request, job, staged, "
    "heartbeat_ns"
)
_job_decoder = msgspec.json.Decoder(FineTuningJob)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])


def _job(row: Row) -> JobRecord:
    return JobRecord(
        id=row[0],
        owner=row[1],
        created_ns=row[2],
        updated_ns=row[3],
        version=row[4],
        status=row[5],
        virtual_key=row[6],
        provider=row[7],
        upstream_id=row[8],
        training_file=row[9],
        validation_file=row[10],
        idempotency_key=row[11],
        request_digest=row[12],
        request=_dict_decoder.decode(row[13]),
        job=_job_decoder.decode(row[14]),
        staged=_dict_decoder.decode(row[15]),
        heartbeat_ns=row[16],
    )


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Event(msgspec.Struct, kw_only=True):
    id: str
    created_ns: int
    level: str
    message: str


class Records:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- files -----------------------------------------------------------------------
    async def insert_file(self, record: FileRecord) -> None:
        await self.db.execute(
            f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            record.id,
            record.owner,
            record.filename,
            record.purpose,
            record.bytes,
            record.created_ns,
        )

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        row = await self.db.fetchone(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ? AND owner = ?", file_id, owner
        )
        return None if row is None else _file(row)

    async def list_files(
        self,
        owner: str,
        *,
        after: FileRecord | None,
        limit: int,
        newest_first: bool,
        purpose: str | None,
    ) -> list[FileRecord]:
        where, args = ["owner = ?"], list[Any]([owner])
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            op = "<" if newest_first else ">"
            where.append(f"(created_ns {op} ? OR (created_ns = ? AND id {op} ?))")
            args += [after.created_ns, after.created_ns, after.id]
        direction = "DESC" if newest_first else "ASC"
        rows = await self.db.fetch(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY created_ns {direction}, id {direction} LIMIT ?",
            *args,
            limit,
        )
        return [_file(row) for row in rows]

    async def delete_file(self, owner: str, file_id: str) -> bool:
        changed = await self.db.execute(
            "DELETE FROM files WHERE id = ? AND owner = ?", file_id, owner
        )
        return changed > 0

    # ---- jobs ------------------------------------------------------------------------
    async def insert_job(self, record: JobRecord) -> JobRecord:
        """Insert ``record``; if its idempotency key was used already, the job it made."""
        inserted = await self.db.execute(
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING id",
            *self._job_values(record),
        )
        if not inserted:
            assert record.idempotency_key is not None  # the only unique column besides id
            row = await self.db.fetchone(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?",
                record.owner,
                record.idempotency_key,
            )
            assert row is not None  # jobs are never deleted
            return _job(row)
        for key, value in (record.job.metadata or {}).items():
            await self.db.execute(
                "INSERT INTO job_metadata (job_id, key, value) VALUES (?, ?, ?)",
                record.id,
                key,
                value,
            )
        return record

    @staticmethod
    def _job_values(record: JobRecord) -> list[Any]:
        return [
            record.id,
            record.owner,
            record.created_ns,
            record.updated_ns,
            record.version,
            record.status,
            record.virtual_key,
            record.provider,
            record.upstream_id,
            record.training_file,
            record.validation_file,
            record.idempotency_key,
            record.request_digest,
            _json(record.request),
            _json(record.job),
            _json(record.staged),
            record.heartbeat_ns,
        ]

    async def get_job(self, owner: str | None, job_id: str) -> JobRecord | None:
        """The job; ``owner`` None reads any owner's (for the gateway's own sweeps)."""
        if owner is None:
            row = await self.db.fetchone(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", job_id)
        else:
            row = await self.db.fetchone(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ? AND owner = ?", job_id, owner
            )
        return None if row is None else _job(row)

    async def list_jobs(
        self,
        owner: str,
        *,
        after: JobRecord | None,
        limit: int,
        metadata: dict[str, str] | None,
    ) -> list[JobRecord]:
        where, args = ["owner = ?"], list[Any]([owner])
        if after is not None:
            where.append("(created_ns < ? OR (created_ns = ? AND id < ?))")
            args += [after.created_ns, after.created_ns, after.id]
        if metadata == {}:  # metadata=null: jobs created without any
            where.append("NOT EXISTS (SELECT 1 FROM job_metadata m WHERE m.job_id = jobs.id)")
        for key, value in (metadata or {}).items():
            where.append(
                "EXISTS (SELECT 1 FROM job_metadata m WHERE m.job_id = jobs.id "
                "AND m.key = ? AND m.value = ?)"
            )
            args += [key, value]
        rows = await self.db.fetch(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY created_ns DESC, id DESC LIMIT ?",
            *args,
            limit,
        )
        return [_job(row) for row in rows]

    async def update_job(self, record: JobRecord) -> JobRecord | None:
        """Write ``record`` over the version it was read at; None if someone was first.

        An ended job is never written again: its last answer stands.
        """
        updated = msgspec.structs.replace(
            record, version=record.version + 1, updated_ns=now_ns(), status=record.job.status
        )
        changed = await self.db.execute(
            "UPDATE jobs SET updated_ns = ?, version = ?, status = ?, upstream_id = ?, job = ?, "
            "staged = ?, heartbeat_ns = ? WHERE id = ? AND version = ? "
            "AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            updated.updated_ns,
            updated.version,
            updated.status,
            updated.upstream_id,
            _json(updated.job),
            _json(updated.staged),
            updated.heartbeat_ns,
            record.id,
            record.version,
        )
        return updated if changed else None

    async def set_upstream(self, job_id: str, upstream_id: str) -> None:
        """Name the upstream job, whatever the record's state: a job cancelled while it
        was being created still has to say which upstream job it made."""
        await self.db.execute("UPDATE jobs SET upstream_id = ? WHERE id = ?", upstream_id, job_id)

    async def touch(self, job_id: str, heartbeat_ns: int) -> None:
        """The staging process is alive (it does not bump the version: nothing changed)."""
        await self.db.execute(
            "UPDATE jobs SET heartbeat_ns = ? WHERE id = ? AND upstream_id IS NULL",
            heartbeat_ns,
            job_id,
        )

    async def jobs_using_file(self, owner: str, file_id: str) -> list[JobRecord]:
        rows = await self.db.fetch(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? "
            "AND (training_file = ? OR validation_file = ?) "
            "AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            owner,
            file_id,
            file_id,
        )
        return [_job(row) for row in rows]

    async def stale_staging(self, heartbeat_before_ns: int) -> list[JobRecord]:
        rows = await self.db.fetch(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE upstream_id IS NULL "
            "AND status NOT IN ('succeeded', 'failed', 'cancelled') AND heartbeat_ns < ?",
            heartbeat_before_ns,
        )
        return [_job(row) for row in rows]

    # ---- the gateway's own events ------------------------------------------------------
    async def add_event(self, job_id: str, level: str, message: str) -> None:
        await self.db.execute(
            "INSERT INTO job_events (id, job_id, created_ns, level, message) "
            "VALUES (?, ?, ?, ?, ?)",
            new_id("ftevent-"),
            job_id,
            now_ns(),
            level,
            message,
        )

    async def list_events(self, job_id: str, *, after: str | None, limit: int) -> list[Event]:
        where, args = ["job_id = ?"], [job_id]
        if after is not None:
            where.append("(created_ns, id) < (SELECT created_ns, id FROM job_events WHERE id = ?)")
            args.append(after)
        rows = await self.db.fetch(
            f"SELECT id, created_ns, level, message FROM job_events WHERE {' AND '.join(where)} "
            "ORDER BY created_ns DESC, id DESC LIMIT ?",
            *args,
            limit,
        )
        return [Event(id=r[0], created_ns=r[1], level=r[2], message=r[3]) for r in rows]

    async def has_event(self, job_id: str, event_id: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM job_events WHERE id = ? AND job_id = ?", event_id, job_id
        )
        return row is not None
