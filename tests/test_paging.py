"""Paging by ``after=<id>`` over whole lists and over token-paged upstreams."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from gateway.errors import NotFound
from gateway.ids import decode_id, encode_id, stable_id
from gateway.paging import TokenPager, openai_list_params, page_of
from gateway.provider import PageQuery

ITEMS = [f"job-{n}" for n in range(10)]


def ident(item: str) -> str:
    return item


def test_page_of_walks_a_whole_list_once() -> None:
    seen, after, more = [], None, True
    while more:
        page, more = page_of(ITEMS, PageQuery(limit=3, after=after), ident)
        seen += page
        after = page[-1]
    assert seen == ITEMS


def test_page_of_has_more_is_false_on_an_exact_last_page() -> None:
    assert page_of(ITEMS, PageQuery(limit=5, after="job-4"), ident) == (ITEMS[5:], False)
    assert page_of(ITEMS, PageQuery(limit=10), ident) == (ITEMS, False)
    assert page_of(ITEMS, PageQuery(limit=5, after="gone"), ident) == ([], False)


class Upstream:
    """A token-paged upstream that counts its calls."""

    def __init__(self, items: list[str], size: int) -> None:
        self.items = items
        self.size = size
        self.calls: list[str | None] = []

    async def fetch(self, token: str | None, page_size: int) -> tuple[Sequence[str], str | None]:
        self.calls.append(token)
        start = int(token) if token else 0
        end = start + min(page_size, self.size)
        return self.items[start:end], (str(end) if end < len(self.items) else None)


async def auto_paginate(pager: TokenPager[str], limit: int) -> list[str]:
    seen: list[str] = []
    after, more = None, True
    while more:
        page, more = await pager.page(PageQuery(limit=limit, after=after))
        seen += page
        after = page[-1] if page else None
    return seen


@pytest.mark.parametrize(("limit", "upstream_size"), [(3, 4), (4, 4), (10, 3), (1, 10), (25, 7)])
async def test_token_pager_yields_each_item_once(limit: int, upstream_size: int) -> None:
    upstream = Upstream(ITEMS, upstream_size)
    pager = TokenPager(upstream.fetch, ident, page_size=upstream_size)
    assert await auto_paginate(pager, limit) == ITEMS


async def test_token_pager_resumes_from_the_remembered_token() -> None:
    upstream = Upstream([f"job-{n}" for n in range(100)], 10)
    pager = TokenPager(upstream.fetch, ident, page_size=10)
    await auto_paginate(pager, 10)
    # One upstream call per page, plus the look-ahead that proves there is more.
    assert len(upstream.calls) == 10
    assert upstream.calls.count(None) == 1


async def test_token_pager_walks_from_the_start_for_an_unseen_id() -> None:
    upstream = Upstream(ITEMS, 3)
    other_process = TokenPager(upstream.fetch, ident, page_size=3)
    assert await other_process.page(PageQuery(limit=2, after="job-6")) == (["job-7", "job-8"], True)
    assert await other_process.page(PageQuery(limit=2, after="missing")) == ([], False)


def test_ids_round_trip_and_are_url_safe() -> None:
    for native in ["arn:aws:bedrock:us-east-1:123:custom/ab+c", "tuning/a b/é", "x"]:
        public = encode_id("ftjob-", native)
        assert public.startswith("ftjob-")
        assert all(c.isalnum() or c in "-_" for c in public)
        assert decode_id("ftjob-", public, what="fine-tuning job") == native


@pytest.mark.parametrize("bad", ["ftjob-", "file-abc", "ftjob-!!!", "ftjob-YQ=", "ftjob-YR"])
def test_decode_id_refuses_ids_it_never_issued(bad: str) -> None:
    with pytest.raises(NotFound, match="No fine-tuning job found"):
        decode_id("ftjob-", bad, what="fine-tuning job")


def test_decode_id_refuses_native_names_of_the_wrong_shape() -> None:
    shape = re.compile(r"[a-z]{1,8}")
    assert decode_id("ftjob-", encode_id("ftjob-", "abc"), what="job", shape=shape) == "abc"
    for native in ["../etc", "a b", "x" * 9]:
        with pytest.raises(NotFound, match="No job found"):
            decode_id("ftjob-", encode_id("ftjob-", native), what="job", shape=shape)


def test_stable_id_depends_only_on_its_parts() -> None:
    assert stable_id("ftevent-", "job", "created") == stable_id("ftevent-", "job", "created")
    assert stable_id("ftevent-", "job", "created") != stable_id("ftevent-", "job", "started")
    assert stable_id("ftevent-", "a", "bc") != stable_id("ftevent-", "ab", "c")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (PageQuery(limit=20), {"limit": "20"}),
        (PageQuery(limit=5, after="ftjob-1"), {"limit": "5", "after": "ftjob-1"}),
        (
            PageQuery(limit=1, order="asc", purpose="fine-tune"),
            {"limit": "1", "order": "asc", "purpose": "fine-tune"},
        ),
        (PageQuery(limit=2, metadata={}), {"limit": "2", "metadata": "null"}),
        (
            PageQuery(limit=2, metadata={"team": "a", "env": "b"}),
            {"limit": "2", "metadata[team]": "a", "metadata[env]": "b"},
        ),
    ],
)
def test_openai_list_params_carry_filters(query: PageQuery, expected: dict[str, str]) -> None:
    assert openai_list_params(query) == expected
