"""Real servers on 127.0.0.1 for end-to-end tests, run on an event loop in a thread.

The official OpenAI SDK's synchronous client blocks the thread it runs on, so the
gateway and the fake upstreams it talks to cannot share the test's event loop. They run
here instead, on their own loop in a daemon thread, and the test talks to them over
real sockets as a user's program would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class ServerThread:
    """An event loop in a thread, serving aiohttp apps on loopback ports."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the server loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(
        self,
        app: web.Application,
        make_runner: Callable[[web.Application], web.AppRunner] | None = None,
    ) -> str:
        """Start ``app`` on a free loopback port; returns its base URL.

        ``make_runner`` is ``gateway.server.GatewayRunner`` to serve it as ``serve`` does,
        with the config's limits on clients.
        """
        return self.run(self._serve(app, make_runner))

    async def _serve(
        self, app: web.Application, make_runner: Callable[[web.Application], web.AppRunner] | None
    ) -> str:
        runner = web.AppRunner(app, access_log=None) if make_runner is None else make_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{site.port}"

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()
            # What outlives its server, as asyncio.run would: aiohttp keeps reading the
            # rest of an answered body for a while, even once its client has gone.
            leftovers = asyncio.all_tasks() - {asyncio.current_task()}
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

        self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
