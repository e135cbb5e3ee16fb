"""The managed-mode schema, as numbered migrations: append, never edit a released one.

Plain SQL that SQLite and PostgreSQL both take. Times are nanoseconds since the epoch
(BIGINT), for ordering; JSON columns are TEXT. ``owner`` is the gateway key's name, or
'' on an open gateway, so it can take part in unique constraints.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE files (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes BIGINT NOT NULL,
            created_ns BIGINT NOT NULL
        )""",
        "CREATE INDEX files_by_owner ON files (owner, created_ns, id)",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            created_ns BIGINT NOT NULL,
            updated_ns BIGINT NOT NULL,
            version BIGINT NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            virtual_key TEXT NOT NULL,
            provider TEXT NOT NULL,
            upstream_id TEXT,
            training_file TEXT NOT NULL,
            validation_file TEXT,
            idempotency_key TEXT,
            request_digest TEXT NOT NULL,
            request TEXT NOT NULL,
            job TEXT NOT NULL,
            staged TEXT NOT NULL DEFAULT '{}',
            heartbeat_ns BIGINT,
            UNIQUE (owner, idempotency_key)
        )""",
        "CREATE INDEX jobs_by_owner ON jobs (owner, created_ns, id)",
        "CREATE INDEX jobs_by_training_file ON jobs (training_file)",
        "CREATE INDEX jobs_by_validation_file ON jobs (validation_file)",
        """CREATE TABLE job_metadata (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (job_id, key)
        )""",
        "CREATE INDEX job_metadata_by_pair ON job_metadata (key, value)",
        """CREATE TABLE job_events (
            id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            created_ns BIGINT NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL
        )""",
        "CREATE INDEX job_events_by_job ON job_events (job_id, created_ns, id)",
    ],
]
