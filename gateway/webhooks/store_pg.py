"""The webhooks' store on PostgreSQL, for several gateway processes (``Store``'s twin).

Work is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease: two processes never claim
the same delivery or job at once, and a claim whose process died expires. asyncpg is
imported only when a ``postgresql://`` database is configured (the ``postgresql`` extra
of finetune-gateway-portkey installs it).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.errors import InternalError
from gateway.webhooks.store import (
    _ENDPOINT_COLUMNS,
    _SCHEMA,
    END_EVENTS,
    Also,
    Claimed,
    DueJob,
    EndpointRow,
    EventBody,
    Store,
    _endpoint,
    _no_others,
    _values,
    wanting,
)

_PG_SCHEMA = (
    _SCHEMA.replace("BLOB", "BYTEA")
    .replace("REAL", "DOUBLE PRECISION")
    .replace("INTEGER", "BIGINT")
)


class PgStore:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: Any = None

    async def _db(self) -> Any:
        if self._pool is None:
            try:
                import asyncpg  # type: ignore[import-untyped]
            except ImportError:
                raise InternalError(
                    "[webhooks] database is PostgreSQL, but asyncpg is not installed"
                ) from None
            pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock(1919)")
                try:
                    await conn.execute(_PG_SCHEMA)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(1919)")
            self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def add_endpoint(self, row: EndpointRow) -> None:
        pool = await self._db()
        await pool.execute(
            f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}, seq) VALUES ($1, $2, $3, $4, "
            "$5, $6, $7, $8, $9, $10, $11, (SELECT COALESCE(MAX(seq), 0) + 1 FROM "
            "webhook_endpoints))",
            *_values(row),
        )

    async def endpoint(self, owner: str, endpoint_id: str) -> EndpointRow | None:
        pool = await self._db()
        row = await pool.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND owner = $2",
            endpoint_id, owner,
        )  # fmt: skip
        return None if row is None else _endpoint(tuple(row))

    async def endpoint_by_id(self, endpoint_id: str) -> EndpointRow | None:
        pool = await self._db()
        row = await pool.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1", endpoint_id
        )
        return None if row is None else _endpoint(tuple(row))

    async def endpoints(self, owner: str, after: str | None, limit: int) -> list[EndpointRow]:
        pool = await self._db()
        bound = 1 << 62
        if after is not None:
            found = await pool.fetchval(
                "SELECT seq FROM webhook_endpoints WHERE id = $1 AND owner = $2", after, owner
            )
            bound = found if found is not None else bound
        rows = await pool.fetch(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE owner = $1 AND seq < $2 "
            "ORDER BY seq DESC LIMIT $3",
            owner, bound, limit,
        )  # fmt: skip
        return [_endpoint(tuple(row)) for row in rows]

    async def replace_endpoint(self, row: EndpointRow) -> None:
        pool = await self._db()
        await pool.execute(
            "UPDATE webhook_endpoints SET name = $1, url = $2, event_types = $3, secret = $4, "
            "old_secret = $5, old_until = $6, hint = $7, updated_at = $8 "
            "WHERE id = $9 AND owner = $10",
            row.name, row.url, msgspec.json.encode(row.event_types).decode(), row.secret,
            row.old_secret, row.old_until, row.hint, row.updated_at, row.id, row.owner,
        )  # fmt: skip

    async def delete_endpoint(self, owner: str, endpoint_id: str) -> bool:
        pool = await self._db()
        async with pool.acquire() as conn, conn.transaction():
            gone = await conn.execute(
                "DELETE FROM webhook_endpoints WHERE id = $1 AND owner = $2", endpoint_id, owner
            )
            if gone == "DELETE 0":
                return False
            await conn.execute(
                "UPDATE webhook_deliveries SET state = 'dropped' "
                "WHERE endpoint_id = $1 AND state = 'pending'",
                endpoint_id,
            )
            return True

    async def watch_job(self, job_id: str, owner: str, route: str, status: str) -> None:
        pool = await self._db()
        await pool.execute(
            "INSERT INTO webhook_jobs (job_id, owner, route, status, next_check, lease_until) "
            "VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (job_id) DO NOTHING",
            job_id, owner, route, status, time.time(),
        )  # fmt: skip

    async def claim_jobs(self, limit: int, lease: float) -> list[DueJob]:
        pool = await self._db()
        now = time.time()
        rows = await pool.fetch(
            "UPDATE webhook_jobs SET lease_until = $1 WHERE job_id IN (SELECT job_id FROM "
            "webhook_jobs WHERE ended = 0 AND next_check <= $2 AND lease_until <= $2 "
            "ORDER BY next_check LIMIT $3 FOR UPDATE SKIP LOCKED) "
            "RETURNING job_id, owner, route, failures",
            now + lease, now, limit,
        )  # fmt: skip
        return [DueJob(*row) for row in rows]

    async def job_seen(self, job_id: str, status: str, next_check: float, failures: int) -> None:
        pool = await self._db()
        await pool.execute(
            "UPDATE webhook_jobs SET status = $1, next_check = $2, failures = $3, "
            "lease_until = 0 WHERE job_id = $4 AND ended = 0",
            status, next_check, failures, job_id,
        )  # fmt: skip

    async def job_ended(
        self, job_id: str, status: str, event_id: str, created_at: int, also: Also = _no_others
    ) -> bool:
        event_type = END_EVENTS[status]
        now = time.time()
        pool = await self._db()
        async with pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "UPDATE webhook_jobs SET status = $1, ended = 1, lease_until = 0 "
                "WHERE job_id = $2 AND ended = 0 RETURNING owner",
                status, job_id,
            )  # fmt: skip
            if owner is None:
                return False
            body = msgspec.json.encode(
                EventBody(event_id, event_type, created_at, EventBody.Data(job_id))
            )
            await conn.execute(
                "INSERT INTO webhook_events (id, type, owner, body, ended_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                event_id, event_type, owner, body, now,
            )  # fmt: skip
            rows = await conn.fetch(
                "SELECT id, event_types FROM webhook_endpoints WHERE owner = $1", owner
            )
            for endpoint_id in wanting(map(tuple, rows), event_type, also(owner, event_type)):
                await conn.execute(
                    "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, next_at, "
                    "lease_until, first_at) VALUES ($1, $2, 'pending', $3, 0, $3)",
                    event_id, endpoint_id, now,
                )  # fmt: skip
            return True

    async def claim_deliveries(self, limit: int, lease: float) -> list[Claimed]:
        pool = await self._db()
        now = time.time()
        until = now + lease
        rows = await pool.fetch(
            "WITH due AS (SELECT event_id, endpoint_id FROM webhook_deliveries WHERE state = "
            "'pending' AND next_at <= $2 AND lease_until <= $2 ORDER BY next_at LIMIT $3 "
            "FOR UPDATE SKIP LOCKED) UPDATE webhook_deliveries d SET lease_until = $1 FROM due "
            "WHERE d.event_id = due.event_id AND d.endpoint_id = due.endpoint_id "
            "RETURNING d.event_id, d.endpoint_id, d.attempts, d.first_at, "
            "(SELECT body FROM webhook_events e WHERE e.id = d.event_id)",
            until, now, limit,
        )  # fmt: skip
        return [Claimed(r[0], r[1], r[2], r[3], bytes(r[4]), until) for r in rows]

    async def delivery_done(
        self, claimed: Claimed, state: str, status: int | None, error: str | None, next_at: float
    ) -> bool:
        pool = await self._db()
        done: str = await pool.execute(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_at = $2, "
            "lease_until = 0, last_status = $3, last_error = $4 "
            "WHERE event_id = $5 AND endpoint_id = $6 AND state = 'pending' "
            "AND lease_until = $7",
            state, next_at, status, error, claimed.event_id, claimed.endpoint_id,
            claimed.lease_until,
        )  # fmt: skip
        return done != "UPDATE 0"

    async def deliveries(self, state: str | None = None) -> list[tuple[Any, ...]]:
        pool = await self._db()
        sql = (
            "SELECT event_id, endpoint_id, state, attempts, last_status, last_error "
            "FROM webhook_deliveries"
        )
        if state is None:
            rows = await pool.fetch(sql + " ORDER BY first_at")
        else:
            rows = await pool.fetch(sql + " WHERE state = $1 ORDER BY first_at", state)
        return [tuple(row) for row in rows]


def open_store(database: str) -> Store | PgStore:
    """The store a ``[webhooks] database`` names: PostgreSQL for a DSN, else a SQLite
    file (``sqlite:///`` allowed, as managed mode's ``database`` allows it)."""
    if database.startswith(("postgresql://", "postgres://")):
        return PgStore(database)
    return Store(database.removeprefix("sqlite:///"))
