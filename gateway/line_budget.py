"""How many bytes of unfinished training-file lines a process holds, and how long a line may be.

A line that spans chunks is held until its newline comes, then joined and decoded
whole. Without bounds, four uploads of one 60 MiB line raised a process by 370 MiB, and
one caller could push it to several GiB. So each line is limited
(``limits.max_line_bytes``: longer is a 400 naming the line), and every line being held
in the process draws on one budget (``limits.line_buffer_budget_bytes``): an upload
that cannot get budget for its line is a 429 ``line_buffer_full``, the rest of the
process unharmed. A line being joined and decoded is alive about three times over (its
pieces, the joined copy, the decoded strings), so that is what it takes from the budget.

The limits reach ``gateway.jsonl`` through a context variable that the request
middleware sets from the app's config, so plugins' calls to ``jsonl.checked`` and
``jsonl.converted`` need no new arguments, and staging a provider does in the
background (a task copies the context it was made in) draws on the same budget.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from gateway.errors import RateLimited

MiB = 1024 * 1024
# Bytes of memory a partial line costs per byte, measured (bench/long_lines.py): the
# pieces, the joined copy and the decoded strings.
HELD_PER_BYTE = 3
# The defaults, as in LimitsConfig (kept here so gateway.jsonl works outside an app).
DEFAULT_MAX_LINE_BYTES = 32 * MiB
DEFAULT_BUDGET_BYTES = 256 * MiB


class LineBudget:
    """Bytes the process's partial lines may hold at once."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0

    def take(self, wanted: int) -> bool:
        if self.held + wanted > self.total:
            return False
        self.held += wanted
        return True

    def give(self, returned: int) -> None:
        self.held -= returned


@dataclass(frozen=True, slots=True)
class LineLimits:
    max_line_bytes: int
    budget: LineBudget


# Outside a request (a script using gateway.jsonl): the defaults, one budget for all.
_DEFAULT = LineLimits(DEFAULT_MAX_LINE_BYTES, LineBudget(DEFAULT_BUDGET_BYTES))
_limits: ContextVar[LineLimits | None] = ContextVar("line_limits", default=None)


def use_line_limits(limits: LineLimits) -> None:
    """For the current request (and the tasks it starts)."""
    _limits.set(limits)


def current_line_limits() -> LineLimits:
    return _limits.get() or _DEFAULT


def budget_spent() -> RateLimited:
    return RateLimited(
        "This gateway is holding as many long training-file lines as it may at once "
        "(limits.line_buffer_budget_bytes): retry shortly, or split very long lines",
        param="file",
        code="line_buffer_full",
        headers={"Retry-After": "5"},
    )
