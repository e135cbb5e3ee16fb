"""Answers that are valid JSON but break a provider's documented formats, one field at a time.

``malformed(answer)`` walks a provider's well-formed answer and yields, for every field,
the answer with that field removed, and with its value replaced by each value of a
wrong type or a wrong format (a timestamp that is no time, an int64 string that is no
number, an enum value nobody documented). A mapping fed each of them must give either
an object that meets OpenAI's schema or the gateway's 502 naming the field, never
anything else (which a client would see as a 500).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

# Strings of the right JSON type and the wrong format.
BAD_STRINGS = ("", "not-a-timestamp", "2026-13-45T99:99:99Z", "3.5", "1e400", "x" * 70, "-1")
BAD_NUMBERS = (-1, 0, 2**70, 3.5)
WRONG_TYPES: tuple[Any, ...] = ("text", 7, True, [], {}, None)


def malformed(answer: Any, where: str = "$") -> Iterator[tuple[str, Any]]:
    """(a description, the whole answer with one field broken) for every field."""
    for path, value in _leaves_and_nodes(answer, where):
        if path == where:
            continue
        yield f"{path} removed", _without(answer, where, path)
        replacements: list[Any] = list(WRONG_TYPES)
        if isinstance(value, str):
            replacements += BAD_STRINGS
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            replacements += BAD_NUMBERS
        for replacement in replacements:
            if replacement == value and type(replacement) is type(value):
                continue
            yield f"{path} = {replacement!r:.40}", _replaced(answer, where, path, replacement)


def _leaves_and_nodes(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, element in value.items():
            yield from _leaves_and_nodes(element, f"{path}.{key}")
    elif isinstance(value, list):
        for index, element in enumerate(value):
            yield from _leaves_and_nodes(element, f"{path}[{index}]")


def _steps(root: str, path: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in path[len(root) :].replace("[", ".[").split(".")[1:]:
        steps.append(int(part[1:-1]) if part.startswith("[") else part)
    return steps


def _parent(answer: Any, root: str, path: str) -> tuple[Any, Any, str | int]:
    copied = copy.deepcopy(answer)
    steps = _steps(root, path)
    node = copied
    for step in steps[:-1]:
        node = node[step]
    return copied, node, steps[-1]


def _without(answer: Any, root: str, path: str) -> Any:
    copied, node, last = _parent(answer, root, path)
    del node[last]
    return copied


def _replaced(answer: Any, root: str, path: str, value: Any) -> Any:
    copied, node, last = _parent(answer, root, path)
    node[last] = value
    return copied
