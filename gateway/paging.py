"""OpenAI-style paging (``after=<id of last item>``, ``limit``, a true ``has_more``).

OpenAI's clients page by item id; Bedrock and Vertex page by opaque tokens. ``page_of``
serves a list held whole; ``TokenPager`` serves a token-paged upstream, remembering which
upstream page each item it served came from, so the SDK's auto-pagination costs one
upstream call per page instead of a walk from the start every time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.provider import PageQuery

T = TypeVar("T")
TokenFetch = Callable[[str | None, int], Awaitable[tuple[Sequence[T], str | None]]]


def openai_list_params(query: PageQuery) -> dict[str, str]:
    """``query`` as OpenAI's list query string, for upstreams with OpenAI's schema."""
    params = {"limit": str(query.limit)}
    if query.after is not None:
        params["after"] = query.after
    if query.order is not None:
        params["order"] = query.order
    if query.purpose is not None:
        params["purpose"] = query.purpose
    if query.metadata is not None:
        if not query.metadata:
            params["metadata"] = "null"  # OpenAI's filter for jobs with no metadata
        for key, value in query.metadata.items():
            params[f"metadata[{key}]"] = value
    return params


def page_of(
    items: Sequence[T], query: PageQuery, id_of: Callable[[T], str]
) -> tuple[list[T], bool]:
    """The items after ``query.after`` (all if None), at most ``query.limit``, and has_more.

    An ``after`` that is not in the list gives an empty page: the item is gone, and
    starting over would hand the client items it has already seen.
    """
    start = 0
    if query.after is not None:
        for index, item in enumerate(items):
            if id_of(item) == query.after:
                start = index + 1
                break
        else:
            return [], False
    chosen = list(items[start : start + query.limit])
    return chosen, start + query.limit < len(items)


@dataclass(slots=True)
class _Resume:
    """Where the item after a served page's last item lives upstream."""

    token: str | None
    index: int
    # The upstream page already fetched, kept briefly: the SDK asks for the next page at
    # once, and fetching it again would double the upstream calls.
    items: Sequence[Any] | None
    next_token: str | None
    fetched_at: float


class TokenPager(Generic[T]):
    """``after``/``limit`` paging over an upstream that pages with tokens.

    After serving a page it remembers, by the id of the page's last item, the upstream
    token and position of the next item, and for a few seconds the fetched upstream page
    itself. An ``after`` it has not served (another process did, or it was forgotten)
    walks from the start.
    """

    KEEP_PAGES_SECONDS = 30.0
    KEEP_PAGES = 32

    def __init__(
        self,
        fetch: TokenFetch[T],
        id_of: Callable[[T], str],
        *,
        page_size: int = 100,
        remembered: int = 1024,
    ) -> None:
        self._fetch = fetch
        self._id_of = id_of
        self._page_size = page_size
        self._remembered = remembered
        self._resume: OrderedDict[str, _Resume] = OrderedDict()

    async def page(self, query: PageQuery) -> tuple[list[T], bool]:
        after = query.after
        token: str | None = None
        start = 0
        skipping = after is not None
        cached: tuple[Sequence[T], str | None] | None = None
        resume = self._resume.pop(after, None) if after is not None else None
        if resume is not None:
            token, start, skipping = resume.token, resume.index, False
            if resume.items is not None and self._fresh(resume):
                cached = (resume.items, resume.next_token)
        chosen: list[T] = []
        while True:
            items, next_token = cached or await self._fetch(token, self._page_size)
            cached = None
            if not skipping and start and not self._follows(items, start, after):
                skipping, start = True, 0  # the upstream changed under us: find `after` again
            for index in range(start, len(items)):
                item = items[index]
                if skipping:
                    skipping = self._id_of(item) != after
                    continue
                if len(chosen) == query.limit:
                    self._remember(chosen[-1], _Resume(token, index, items, next_token, _now()))
                    return chosen, True
                chosen.append(item)
            start = 0
            if next_token is None or next_token == token:
                break
            token = next_token
        return ([], False) if skipping else (chosen, False)

    def _follows(self, items: Sequence[T], start: int, after: str | None) -> bool:
        return start <= len(items) and self._id_of(items[start - 1]) == after

    def _fresh(self, resume: _Resume) -> bool:
        return _now() - resume.fetched_at < self.KEEP_PAGES_SECONDS

    def _remember(self, last: T, resume: _Resume) -> None:
        self._resume[self._id_of(last)] = resume
        while len(self._resume) > self._remembered:
            self._resume.popitem(last=False)
        # Only the newest few entries keep their page, so memory stays bounded.
        if len(self._resume) > self.KEEP_PAGES:
            for old in list(self._resume.values())[: -self.KEEP_PAGES]:
                old.items = None


def _now() -> float:
    return time.monotonic()
