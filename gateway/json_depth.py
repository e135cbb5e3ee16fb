"""JSON from callers, decoded with its nesting bounded.

msgspec decodes recursively and raises RecursionError past Python's recursion limit
(a body of 100,000 ``[`` was a 500); what it does decode is then walked by the
gateway's own code, converted and encoded again. A request body or inline config has
no business being deeper than a few levels, so past ``limits.max_json_depth`` it is a
400 ``nesting_too_deep``, and so is anything msgspec itself finds too deep.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import BadRequest


def decode_bounded(data: bytes, *, max_depth: int, param: str | None, what: str) -> Any:
    """``data`` decoded as JSON; msgspec.DecodeError for what is not JSON, a 400 naming
    ``param`` for what is nested deeper than ``max_depth`` arrays and objects."""
    try:
        value = msgspec.json.decode(data)
    except RecursionError:
        raise too_deep(what, max_depth, param) from None
    if depth_exceeds(value, max_depth):
        raise too_deep(what, max_depth, param)
    return value


def depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests arrays and objects deeper than ``max_depth`` (iteratively:
    the check must not recurse itself)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def too_deep(what: str, max_depth: int, param: str | None) -> BadRequest:
    return BadRequest(
        f"{what} nests arrays and objects more than {max_depth} levels deep "
        "(limits.max_json_depth)",
        param=param,
        code="nesting_too_deep",
    )
