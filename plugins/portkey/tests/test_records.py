"""Records on both databases: SQLite in a temporary directory, the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.models import FineTuningJob
from gateway_portkey.db import Database, open_database
from gateway_portkey.records import FileRecord, JobRecord, Records, new_id, now_ns

# The machine's PostgreSQL (trust auth, database "test"); each test gets its own schema.
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


async def postgres_schema(name: str, *, drop: bool = False) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(POSTGRES)
    try:
        statement = f"DROP SCHEMA {name} CASCADE" if drop else f"CREATE SCHEMA {name}"
        await connection.execute(statement)
    finally:
        await connection.close()


def postgres_dsn(schema: str) -> str:
    # asyncpg passes unknown DSN parameters on as server settings.
    return f"{POSTGRES}?search_path={schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "records.sqlite3")
        return
    schema = f"ftgw_{uuid.uuid4().hex[:12]}"
    await postgres_schema(schema)
    yield postgres_dsn(schema)
    await postgres_schema(schema, drop=True)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[Database]:
    opened = await open_database(dsn)
    yield opened
    await opened.close()


def job_record(owner: str = "team", *, key: str | None = None, digest: str = "d") -> JobRecord:
    job_id = new_id("ftjob-")
    now = now_ns()
    return JobRecord(
        id=job_id,
        owner=owner,
        created_ns=now,
        updated_ns=now,
        version=0,
        status="validating_files",
        virtual_key="bedrock-main",
        provider="bedrock",
        upstream_id=None,
        training_file="file-1",
        validation_file=None,
        idempotency_key=key,
        request_digest=digest,
        request={"model": "m", "training_file": "file-1"},
        job=FineTuningJob(
            id=job_id,
            model="m",
            created_at=now // 10**9,
            status="validating_files",
            training_file="file-1",
        ),
        staged={},
        heartbeat_ns=now,
    )


async def test_records_schema_opens_twice_without_migrating_again(dsn: str) -> None:
    first = await open_database(dsn)
    await Records(first).insert_file(
        FileRecord(id="file-a", owner="t", filename="a", purpose="fine-tune", bytes=1, created_ns=1)
    )
    await first.close()
    second = await open_database(dsn)
    try:
        assert await Records(second).get_file("t", "file-a") is not None
        rows = await second.fetch("SELECT version FROM schema_version")
        assert rows == [(1,)]
    finally:
        await second.close()


async def test_records_two_openers_at_once_migrate_once(dsn: str) -> None:
    both = await asyncio.gather(open_database(dsn), open_database(dsn))
    try:
        assert await both[0].fetch("SELECT version FROM schema_version") == [(1,)]
    finally:
        for opened in both:
            await opened.close()


async def test_records_files_page_newest_first_per_owner(db: Database) -> None:
    records = Records(db)
    for n in range(5):
        await records.insert_file(
            FileRecord(
                id=f"file-{n}", owner="t", filename="f", purpose="fine-tune", bytes=n,
                created_ns=1000 + n,
            )
        )  # fmt: skip
    await records.insert_file(
        FileRecord(id="file-x", owner="other", filename="f", purpose="fine-tune", bytes=0,
                   created_ns=2000)
    )  # fmt: skip
    first = await records.list_files("t", after=None, limit=2, newest_first=True, purpose=None)
    assert [f.id for f in first] == ["file-4", "file-3"]
    rest = await records.list_files("t", after=first[-1], limit=10, newest_first=True, purpose=None)
    assert [f.id for f in rest] == ["file-2", "file-1", "file-0"]
    oldest = await records.list_files("t", after=None, limit=1, newest_first=False, purpose=None)
    assert [f.id for f in oldest] == ["file-0"]


async def test_records_idempotency_key_returns_the_first_job(db: Database) -> None:
    records = Records(db)
    first = await records.insert_job(job_record(key="k1"))
    again = await records.insert_job(job_record(key="k1"))
    other_owner = await records.insert_job(job_record("someone-else", key="k1"))
    assert again.id == first.id
    assert other_owner.id != first.id
    assert len(await records.list_jobs("team", after=None, limit=10, metadata=None)) == 1


async def test_records_update_compares_versions(db: Database) -> None:
    records = Records(db)
    record = await records.insert_job(job_record())
    running = FineTuningJob(
        id=record.id, model="m", created_at=1, status="running", training_file="file-1"
    )
    first = await records.update_job(JobRecord(**{**_fields(record), "job": running}))
    stale = await records.update_job(JobRecord(**{**_fields(record), "job": running}))
    assert first is not None and first.version == 1 and first.status == "running"
    assert stale is None  # read at version 0, which is gone


async def test_records_an_ended_job_is_never_written_again(db: Database) -> None:
    records = Records(db)
    record = await records.insert_job(job_record())
    done = FineTuningJob(
        id=record.id, model="m", created_at=1, status="succeeded", training_file="file-1"
    )
    ended = await records.update_job(JobRecord(**{**_fields(record), "job": done}))
    assert ended is not None
    running = FineTuningJob(
        id=record.id, model="m", created_at=1, status="running", training_file="file-1"
    )
    assert await records.update_job(JobRecord(**{**_fields(ended), "job": running})) is None
    kept = await records.get_job("team", record.id)
    assert kept is not None and kept.status == "succeeded"


async def test_records_concurrent_updates_leave_one_consistent_row(db: Database) -> None:
    records = Records(db)
    record = await records.insert_job(job_record())

    async def refresh(status: str) -> JobRecord | None:
        job = FineTuningJob(
            id=record.id,
            model="m",
            created_at=1,
            status=status,
            training_file="file-1",  # type: ignore[arg-type]
        )
        return await records.update_job(JobRecord(**{**_fields(record), "job": job}))

    results = await asyncio.gather(*(refresh("running") for _ in range(10)))
    assert sum(r is not None for r in results) == 1
    kept = await records.get_job("team", record.id)
    assert kept is not None and kept.version == 1 and kept.job.status == "running"


def _fields(record: JobRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__struct_fields__}
