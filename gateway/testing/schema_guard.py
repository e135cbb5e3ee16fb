"""Every JSON answer of every gateway built in a test, checked against OpenAI's schema.

It hooks ``gateway.app.add_request_id``, the response-prepare hook ``make_app`` installs
on every app, because every JSON answer passes there with its body already set. Core's
suite turns it on for every test (``tests.support.schema_guard``); the plugin kit's
conformance suite for each of its tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from aiohttp import web

import gateway.app
import gateway.middleware
from gateway.testing.openai_schema import answer_violations


def checked_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Yield the problems found in the answers; fail the test afterwards if there are any."""
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
