"""A delivery's outcome is fenced on its lease: a process whose claim expired (it stalled
past ``delivery_timeout + 1`` s) cannot overwrite what the process that claimed the
delivery again wrote, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from gateway.webhooks.store import EndpointRow, Store
from gateway.webhooks.store_pg import PgStore
from tests.test_webhooks_processes import database  # noqa: F401 - the fixture

TYPES = ["fine_tuning.job.succeeded"]


def _store(dsn: str) -> Store | PgStore:
    return PgStore(dsn) if dsn.startswith("postgresql://") else Store(dsn)


async def _one_pending_delivery(store: Store | PgStore) -> None:
    now = int(time.time())
    await store.add_endpoint(
        EndpointRow("we_1", "team", "n", "https://x.test/h", TYPES, "v1.sealed", None, None,
                    "whsec_...abcd", now, now)
    )  # fmt: skip
    await store.watch_job("ftjob-1", "team", "{}", "running")
    assert await store.job_ended("ftjob-1", "succeeded", "evt_1", now)


def test_webhook_delivery_outcome_of_an_expired_lease_is_not_written(
    database: str,  # noqa: F811
) -> None:
    async def scenario() -> list[tuple[object, ...]]:
        stalled, other = _store(database), _store(database)
        try:
            await _one_pending_delivery(stalled)
            [late] = await stalled.claim_deliveries(10, lease=0.2)
            await asyncio.sleep(0.3)  # the stalled process's lease runs out
            [again] = await other.claim_deliveries(10, lease=30)
            assert again.event_id == late.event_id
            # The stalled attempt ends (a 5xx: retry later), then the fresh one delivers.
            assert not await stalled.delivery_done(late, "pending", 500, None, time.time())
            assert await other.delivery_done(again, "delivered", 200, None, time.time())
            # And a stale success after the fact changes nothing either.
            assert not await stalled.delivery_done(late, "given_up", 500, None, time.time())
            return await other.deliveries(None)
        finally:
            await stalled.close()
            await other.close()

    [row] = asyncio.run(scenario())
    assert row == ("evt_1", "we_1", "delivered", 1, 200, None)
