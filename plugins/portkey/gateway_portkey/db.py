"""The records' database: SQLite by default, PostgreSQL for several gateway processes.

Both speak the same small interface (``fetch``, ``fetchone``, ``execute``) over SQL
written once, with ``?`` placeholders and only what both dialects share (``ON CONFLICT
... DO NOTHING``, ``RETURNING``). PostgreSQL's ``$1`` placeholders are produced here.

SQLite runs on one thread of its own, so a query never blocks the event loop, in WAL
mode with a busy timeout, so other processes on the same file read while one writes.
The schema is created or migrated when the database is opened, under a lock, so two
processes starting at once do not both migrate.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import BadRequest
from gateway_portkey.schema import MIGRATIONS

Row = tuple[Any, ...]


class Database(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchone(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def close(self) -> None: ...


async def open_database(dsn: str) -> Database:
    """The database a DSN names (``postgresql://...`` or a SQLite file path), migrated."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.open(dsn)
    return await SqliteDatabase.open(Path(dsn.removeprefix("sqlite:///")))


class SqliteDatabase:
    def __init__(self, connection: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._connection = connection
        self._thread = thread

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: each statement is its own transaction unless one is begun.
            connection = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            _use_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            _migrate_sqlite(connection)
            return connection

        loop = asyncio.get_running_loop()
        connection = await loop.run_in_executor(thread, connect)
        return cls(connection, thread)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        loop = asyncio.get_running_loop()

        def run() -> list[Row]:
            return self._connection.execute(sql, args).fetchall()

        return await loop.run_in_executor(self._thread, run)

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> int:
        loop = asyncio.get_running_loop()

        def run() -> int:
            cursor = self._connection.execute(sql, args)
            # With RETURNING, SQLite counts the rows only as they are read.
            return len(cursor.fetchall()) if "RETURNING" in sql else cursor.rowcount

        return await loop.run_in_executor(self._thread, run)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._connection.close)
        self._thread.shutdown(wait=True)


def _use_wal(connection: sqlite3.Connection) -> None:
    """WAL mode, which the file keeps once set. Switching needs the file to itself and
    does not wait on the busy timeout, so a process starting while another migrates
    tries again for a while."""
    for _ in range(300):
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.1)
    raise sqlite3.OperationalError(f"database stayed locked: cannot switch {connection} to WAL")


def _migrate_sqlite(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")  # one migrating process at a time
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


_PLACEHOLDER = re.compile(r"\?")
# An arbitrary constant: the advisory lock every gateway process takes to migrate.
_MIGRATION_LOCK = 0x46_54_47_57


class PostgresDatabase:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._translated: dict[str, str] = {}

    @classmethod
    async def open(cls, dsn: str) -> PostgresDatabase:
        try:
            import asyncpg  # type: ignore[import-untyped]
        except ImportError:
            raise BadRequest(
                "Managed mode is configured with a PostgreSQL database, but asyncpg is not "
                "installed: pip install 'finetune-gateway-portkey[postgresql]'",
                code="provider_unavailable",
            ) from None
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            current = await connection.fetchval("SELECT max(version) FROM schema_version") or 0
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    await connection.execute(statement)
                await connection.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)", version
                )
        return cls(pool)

    def _sql(self, sql: str) -> str:
        translated = self._translated.get(sql)
        if translated is None:
            counter = iter(range(1, 1 << 16))
            translated = _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)
            self._translated[sql] = translated
        return translated

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows = await self._pool.fetch(self._sql(sql), *args)
        return [tuple(row) for row in rows]

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        row = await self._pool.fetchrow(self._sql(sql), *args)
        return None if row is None else tuple(row)

    async def execute(self, sql: str, *args: Any) -> int:
        if "RETURNING" in sql:
            return len(await self.fetch(sql, *args))
        status: str = await self._pool.execute(self._sql(sql), *args)
        # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word.
        last = status.rpartition(" ")[2]
        return int(last) if last.isdigit() else 0

    async def close(self) -> None:
        await self._pool.close()
