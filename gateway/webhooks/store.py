"""Webhook endpoints, watched jobs, events and their deliveries, in one SQLite database.

An event is written in the same transaction as the job's move to an end state, with one
delivery row per endpoint that wants it, and only if the job had not ended before: a
job's end is announced once, however many processes watch it. Deliveries are claimed
with a lease (``lease_until``): a process that dies mid-delivery leaves its claim to
expire, and another process (or itself, restarted) delivers the event with the same id.

SQLite runs on one thread of its own, so a query never blocks the event loop, in WAL
mode with a busy timeout, so processes on one file share it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, url TEXT NOT NULL,
    event_types TEXT NOT NULL, secret TEXT NOT NULL, old_secret TEXT, old_until INTEGER,
    hint TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_jobs (
    job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, route TEXT NOT NULL,
    status TEXT NOT NULL, ended INTEGER NOT NULL DEFAULT 0,
    next_check REAL NOT NULL, failures INTEGER NOT NULL DEFAULT 0, lease_until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_jobs_due ON webhook_jobs (ended, next_check);
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, owner TEXT NOT NULL, body BLOB NOT NULL,
    ended_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_id TEXT NOT NULL, endpoint_id TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, lease_until REAL NOT NULL,
    first_at REAL NOT NULL, last_status INTEGER, last_error TEXT,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_at);
-- Deleting an endpoint deletes its deliveries: without this, a scan of them all.
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id);
"""

END_EVENTS = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}


class EndpointRow(msgspec.Struct, frozen=True):
    id: str
    owner: str
    name: str
    url: str
    event_types: list[str]
    secret: str  # sealed
    old_secret: str | None  # sealed, honoured until old_until
    old_until: int | None
    hint: str
    created_at: int
    updated_at: int


class EventBody(msgspec.Struct, frozen=True):
    class Data(msgspec.Struct, frozen=True):
        id: str

    id: str
    type: str
    created_at: int
    data: Data
    object: str = "event"


@dataclass(frozen=True, slots=True)
class Claimed:
    event_id: str
    endpoint_id: str
    attempts: int
    first_at: float
    body: bytes
    # The claim's lease end, as written: the fence a write-back is held to. A later claim
    # (the lease expired) writes a later one, so a stale process's write matches nothing.
    lease_until: float


@dataclass(frozen=True, slots=True)
class DueJob:
    job_id: str
    owner: str
    route: str
    failures: int


# The endpoints outside the table (the config's) that want an event: (owner, type) -> ids.
Also = Callable[[str, str], Iterable[str]]


def _no_others(owner: str, event_type: str) -> Iterable[str]:
    return ()


def wanting(rows: Iterable[tuple[str, str]], event_type: str, also: Iterable[str]) -> list[str]:
    """The endpoints a new event goes to: the table's that want its type, then ``also``."""
    return [id_ for id_, types in rows if event_type in msgspec.json.decode(types)] + [*also]


_ENDPOINT_COLUMNS = (
    "id, owner, name, url, event_types, secret, old_secret, old_until, hint, created_at, updated_at"
)


def _endpoint(row: tuple[Any, ...]) -> EndpointRow:
    values = list(row)
    values[4] = msgspec.json.decode(values[4])
    return EndpointRow(*values)


class Store:
    def __init__(self, path: str) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="webhook-db")
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def in_transaction() -> T:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._pool, in_transaction)

    async def close(self) -> None:
        def closing() -> None:
            if self._conn is not None:
                self._conn.close()

        await asyncio.get_running_loop().run_in_executor(self._pool, closing)
        self._pool.shutdown(wait=True)

    # Endpoints

    async def add_endpoint(self, row: EndpointRow) -> None:
        def work(db: sqlite3.Connection) -> None:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM webhook_endpoints")
            db.execute(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_values(row), seq.fetchone()[0]),
            )

        await self._run(work)

    async def endpoint(self, owner: str, endpoint_id: str) -> EndpointRow | None:
        def work(db: sqlite3.Connection) -> EndpointRow | None:
            row = db.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ? AND owner = ?",
                (endpoint_id, owner),
            ).fetchone()
            return None if row is None else _endpoint(row)

        return await self._run(work)

    async def endpoint_by_id(self, endpoint_id: str) -> EndpointRow | None:
        def work(db: sqlite3.Connection) -> EndpointRow | None:
            row = db.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?",
                (endpoint_id,),
            ).fetchone()
            return None if row is None else _endpoint(row)

        return await self._run(work)

    async def endpoints(self, owner: str, after: str | None, limit: int) -> list[EndpointRow]:
        """Newest first, as OpenAI lists them; after the endpoint ``after``."""

        def work(db: sqlite3.Connection) -> list[EndpointRow]:
            bound = 1 << 62
            if after is not None:
                found = db.execute(
                    "SELECT seq FROM webhook_endpoints WHERE id = ? AND owner = ?", (after, owner)
                ).fetchone()
                bound = found[0] if found else bound
            rows = db.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE owner = ? AND seq < ? "
                "ORDER BY seq DESC LIMIT ?",
                (owner, bound, limit),
            ).fetchall()
            return [_endpoint(row) for row in rows]

        return await self._run(work)

    async def replace_endpoint(self, row: EndpointRow) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE webhook_endpoints SET name = ?, url = ?, event_types = ?, secret = ?, "
                "old_secret = ?, old_until = ?, hint = ?, updated_at = ? "
                "WHERE id = ? AND owner = ?",
                (
                    row.name,
                    row.url,
                    msgspec.json.encode(row.event_types).decode(),
                    row.secret,
                    row.old_secret,
                    row.old_until,
                    row.hint,
                    row.updated_at,
                    row.id,
                    row.owner,
                ),
            )

        await self._run(work)

    async def delete_endpoint(self, owner: str, endpoint_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            gone = db.execute(
                "DELETE FROM webhook_endpoints WHERE id = ? AND owner = ?", (endpoint_id, owner)
            ).rowcount
            if gone:
                db.execute(
                    "UPDATE webhook_deliveries SET state = 'dropped' "
                    "WHERE endpoint_id = ? AND state = 'pending'",
                    (endpoint_id,),
                )
            return bool(gone)

        return await self._run(work)

    # Jobs and their end

    async def watch_job(self, job_id: str, owner: str, route: str, status: str) -> None:
        now = time.time()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO webhook_jobs (job_id, owner, route, status, next_check, "
                "lease_until) VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (job_id) DO NOTHING",
                (job_id, owner, route, status, now),
            )

        await self._run(work)

    async def claim_jobs(self, limit: int, lease: float) -> list[DueJob]:
        now = time.time()

        def work(db: sqlite3.Connection) -> list[DueJob]:
            rows = db.execute(
                "UPDATE webhook_jobs SET lease_until = ? WHERE job_id IN (SELECT job_id FROM "
                "webhook_jobs WHERE ended = 0 AND next_check <= ? AND lease_until <= ? "
                "ORDER BY next_check LIMIT ?) RETURNING job_id, owner, route, failures",
                (now + lease, now, now, limit),
            ).fetchall()
            return [DueJob(*row) for row in rows]

        return await self._run(work)

    async def job_seen(self, job_id: str, status: str, next_check: float, failures: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE webhook_jobs SET status = ?, next_check = ?, failures = ?, "
                "lease_until = 0 WHERE job_id = ? AND ended = 0",
                (status, next_check, failures, job_id),
            )

        await self._run(work)

    async def job_ended(
        self, job_id: str, status: str, event_id: str, created_at: int, also: Also = _no_others
    ) -> bool:
        """Record the end and its event, with a delivery per endpoint, in one transaction;
        False if the job's end was already recorded (the event exists once). ``also``
        names the endpoints outside the table (the config's) that want it."""
        event_type = END_EVENTS[status]
        now = time.time()

        def work(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "UPDATE webhook_jobs SET status = ?, ended = 1, lease_until = 0 "
                "WHERE job_id = ? AND ended = 0 RETURNING owner",
                (status, job_id),
            ).fetchone()
            if row is None:
                return False
            owner = row[0]
            body = msgspec.json.encode(
                EventBody(event_id, event_type, created_at, EventBody.Data(job_id))
            )
            db.execute(
                "INSERT INTO webhook_events (id, type, owner, body, ended_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (event_id, event_type, owner, body, now),
            )
            rows = db.execute(
                "SELECT id, event_types FROM webhook_endpoints WHERE owner = ?", (owner,)
            ).fetchall()
            for endpoint_id in wanting(rows, event_type, also(owner, event_type)):
                db.execute(
                    "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, "
                    "next_at, lease_until, first_at) VALUES (?, ?, 'pending', ?, 0, ?)",
                    (event_id, endpoint_id, now, now),
                )
            return True

        return await self._run(work)

    # Deliveries

    async def claim_deliveries(self, limit: int, lease: float) -> list[Claimed]:
        now = time.time()
        until = now + lease

        def work(db: sqlite3.Connection) -> list[Claimed]:
            rows = db.execute(
                "UPDATE webhook_deliveries SET lease_until = ? WHERE rowid IN (SELECT rowid "
                "FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ? AND "
                "lease_until <= ? ORDER BY next_at LIMIT ?) "
                "RETURNING event_id, endpoint_id, attempts, first_at",
                (until, now, now, limit),
            ).fetchall()
            claimed = []
            for event_id, endpoint_id, attempts, first_at in rows:
                body = db.execute(
                    "SELECT body FROM webhook_events WHERE id = ?", (event_id,)
                ).fetchone()[0]
                claimed.append(
                    Claimed(event_id, endpoint_id, attempts, first_at, bytes(body), until)
                )
            return claimed

        return await self._run(work)

    async def delivery_done(
        self, claimed: Claimed, state: str, status: int | None, error: str | None, next_at: float
    ) -> bool:
        """``state``: delivered, pending (retry at ``next_at``) or given_up. False, and
        nothing written, if the claim is no longer this one's (its lease expired and the
        delivery was claimed again, or it ended meanwhile)."""

        def work(db: sqlite3.Connection) -> bool:
            return bool(
                db.execute(
                    "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, "
                    "next_at = ?, lease_until = 0, last_status = ?, last_error = ? "
                    "WHERE event_id = ? AND endpoint_id = ? AND state = 'pending' "
                    "AND lease_until = ?",
                    (state, next_at, status, error, claimed.event_id, claimed.endpoint_id,
                     claimed.lease_until),
                ).rowcount
            )  # fmt: skip

        return await self._run(work)

    async def deliveries(self, state: str | None = None) -> list[tuple[Any, ...]]:
        """(event_id, endpoint_id, state, attempts, last_status, last_error), for the CLI."""

        def work(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = (
                "SELECT event_id, endpoint_id, state, attempts, last_status, last_error "
                "FROM webhook_deliveries"
            )
            if state is None:
                return db.execute(sql + " ORDER BY first_at").fetchall()
            return db.execute(sql + " WHERE state = ? ORDER BY first_at", (state,)).fetchall()

        return await self._run(work)


def _values(row: EndpointRow) -> tuple[Any, ...]:
    return (
        row.id,
        row.owner,
        row.name,
        row.url,
        msgspec.json.encode(row.event_types).decode(),
        row.secret,
        row.old_secret,
        row.old_until,
        row.hint,
        row.created_at,
        row.updated_at,
    )
