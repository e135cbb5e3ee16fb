"""The kit's pytest plugin (entry point ``pytest11``: ``finetune_gateway``).

It only defines fixtures, so it costs nothing where unused: ``gateway_servers`` (a server
thread for the plugin's fake upstream) and ``conformance_gateway`` (a gateway in front of
the plugin's ``conformance_target``). The suite itself runs only where a test module opts
in with ``from gateway.testing.conformance import TestConformance``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from gateway.testing.live import ServerThread

if TYPE_CHECKING:
    from gateway.testing.kit import KitGateway
    from gateway.testing.target import ConformanceTarget


@pytest.fixture
def gateway_servers() -> Iterator[ServerThread]:
    """An event loop in a thread serving aiohttp apps on loopback: start the fake here."""
    thread = ServerThread()
    yield thread
    thread.close()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def conformance_gateway(
    conformance_target: ConformanceTarget,
    gateway_servers: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[KitGateway]:
    """A gateway in front of the plugin's fake, every answer checked against OpenAI's schema
    and every log line kept (``KitGateway.log_lines``)."""
    from gateway.testing.kit import KitGateway
    from gateway.testing.schema_guard import checked_answers

    handler = _Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    guard = checked_answers(monkeypatch)
    next(guard)
    kit = KitGateway.start(conformance_target, gateway_servers, handler.lines)
    try:
        yield kit
    finally:
        kit.close()
        root.removeHandler(handler)
        root.setLevel(level)
    next(guard, None)
