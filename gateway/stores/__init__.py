"""Object-store writers and readers shared by the plugins (S3 today).

Each store SDK is imported on first use, so the core stays importable with aiohttp and
msgspec alone; plugins keep owning key naming and conversion.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)


async def cleanup_shielded(store: str, cleanup: Awaitable[None]) -> None:
    """Run a failed write's ``cleanup`` (abort, cancel, delete) to its end even if the
    caller is cancelled meanwhile; a failure of it is logged, as the write's own error
    matters more."""
    task = asyncio.ensure_future(cleanup)
    task.add_done_callback(functools.partial(_log_cleanup_failure, store))
    with contextlib.suppress(Exception):
        await asyncio.shield(task)


def _log_cleanup_failure(store: str, task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s: could not clean up after a failed write: %r", store, task.exception())
