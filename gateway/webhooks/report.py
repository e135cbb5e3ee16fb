"""``finetune-gateway webhook-deliveries``: the deliveries in the config's database, by
state (``given_up`` by default: what no receiver took, and why)."""

from __future__ import annotations

import asyncio
import sys

from gateway.config import ConfigError, load_config
from gateway.registry import Registry
from gateway.webhooks.store_pg import open_store

STATES = ("given_up", "pending", "delivered", "dropped", "all")


def run(config_path: str, state: str) -> int:
    try:
        config = load_config(config_path, Registry.discover())
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    database = config.webhooks.database
    if database is None:
        print(f"{config_path}: webhooks are off (no [webhooks] database, nor managed mode's)",
              file=sys.stderr)  # fmt: skip
        return 1
    rows = asyncio.run(_rows(database, None if state == "all" else state))
    print(f"{'event':<28} {'endpoint':<28} {'state':<10} {'attempts':>8}  last answer")
    for event_id, endpoint_id, row_state, attempts, status, error in rows:
        last = f"status {status}" if status is not None else (error or "-")
        print(f"{event_id:<28} {endpoint_id:<28} {row_state:<10} {attempts:>8}  {last}")
    print(f"{len(rows)} deliveries {'in any state' if state == 'all' else state}")
    return 0


async def _rows(database: str, state: str | None) -> list[tuple[object, ...]]:
    store = open_store(database)
    try:
        return await store.deliveries(state)
    finally:
        await store.close()
