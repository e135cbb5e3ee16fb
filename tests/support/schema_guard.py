"""A pytest plugin: every answer of every gateway built in any test meets OpenAI's schema.

Loaded for the whole suite from ``pyproject.toml`` (``-p tests.support.schema_guard``),
so the provider plugins' tests are checked as much as core's: a mapping that puts
``null`` where OpenAI's schema has none, or leaves out a required field, fails the test
that produced it, whatever that test asserts itself. The check itself is the plugin
kit's (``gateway.testing.schema_guard``, with the schemas in ``gateway.testing.openai_schema``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.testing.schema_guard import checked_answers


@pytest.fixture(autouse=True)
def openai_schema_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The problems found in this test's answers; the test fails at teardown if any."""
    yield from checked_answers(monkeypatch)
