"""A webhook receiver on 127.0.0.1 that records what it is sent and answers as told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    # Statuses to answer with, in turn; then 200. A negative one: stall that many seconds.
    script: list[int] = field(default_factory=list)
    received: list[Delivery] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.pop(0) if self.script else 200
        if status < 0:
            self.received.append(Delivery(dict(request.headers), body, 0))
            deadline = time.monotonic() - status
            transport = request.transport  # until then, or until the sender goes away
            while time.monotonic() < deadline and transport and not transport.is_closing():
                await asyncio.sleep(0.05)
            return web.Response(status=200)
        self.received.append(Delivery(dict(request.headers), body, status))
        return web.Response(status=status, text="ok")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app

    def wait_for(
        self, done: Callable[[list[Delivery]], bool], timeout: float = 10.0
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while not done(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver got {len(self.received)} deliveries: not enough")
            time.sleep(0.02)
        return list(self.received)
