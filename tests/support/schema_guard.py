"""A pytest plugin: every answer of every gateway built in any test meets OpenAI's schema.

Loaded for the whole suite from ``pyproject.toml`` (``-p tests.support.schema_guard``),
so the provider plugins' tests are checked as much as core's: a mapping that puts
``null`` where OpenAI's schema has none, or leaves out a required field, fails the test
that produced it, whatever that test asserts itself. See ``tests.support.openai_schema``.

It hooks ``gateway.app.add_request_id``, the response-prepare hook ``make_app`` installs
on every app, because every JSON answer passes there with its body already set.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from aiohttp import web

import gateway.app
import gateway.middleware
from tests.support.openai_schema import answer_violations


@pytest.fixture(autouse=True)
def openai_schema_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The problems found in this test's answers; the test fails at teardown if any."""
    found: list[str] = []
    original = gateway.middleware.add_request_id

    async def checked(request: web.Request, response: web.StreamResponse) -> None:
        await original(request, response)
        if not isinstance(response, web.Response) or response.content_type != "application/json":
            return
        body = response.body
        if not isinstance(body, bytes):
            return
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError:
            found.append(f"{request.method} {request.path} {response.status}: not JSON")
            return
        for problem in answer_violations(request.method, request.path, response.status, decoded):
            found.append(f"{request.method} {request.path} {response.status}: {problem}")

    monkeypatch.setattr(gateway.app, "add_request_id", checked)
    yield found
    if found:
        shown = "\n  ".join(dict.fromkeys(found))
        pytest.fail(f"answers break OpenAI's schema:\n  {shown}", pytrace=False)
