"""Finding 8: deep nesting is a 400 (or, from an upstream, a 502), never a 500."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.security.conftest import KEY_A, Gateway, call


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [33, 4_000, 100_000])
async def test_a_deeply_nested_body_is_a_400(gateway: Gateway, depth: int) -> None:
    url = await gateway()
    body = f'{{"model": "gpt-4o-mini", "training_file": "file-x", "metadata": {nested(depth)}}}'
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/fine_tuning/jobs",
            data=body,
            headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"},
        ) as response,
    ):
        answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"]["code"] == "nesting_too_deep"


# A header is at most limits.max_header_bytes (8190): 4,000 levels is about the deepest.
@pytest.mark.parametrize("depth", [33, 4_000])
async def test_a_deeply_nested_inline_config_is_a_400(gateway: Gateway, depth: int) -> None:
    url = await gateway()
    config = f'{{"virtual_key": "vk-a", "retry": {nested(depth)}}}'
    status, body = await call(
        f"{url}/fine_tuning/jobs", authorization=f"Bearer {KEY_A}", x_portkey_config=config
    )
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == (
        "x-portkey-config",
        "nesting_too_deep",
    )


async def test_a_shallow_config_still_works(gateway: Gateway) -> None:
    url = await gateway()
    config = json.dumps({"virtual_key": "vk-a"})
    status, body = await call(
        f"{url}/fine_tuning/jobs", authorization=f"Bearer {KEY_A}", x_portkey_config=config
    )
    assert (status, body["object"]) == (200, "list")


async def test_a_deeply_nested_training_line_is_a_400_naming_the_line(gateway: Gateway) -> None:
    url = await gateway()
    good = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    )
    deep = f'{{"messages": [{{"role": "user", "content": "hi", "x": {nested(100_000)}}}]}}'
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", f"{good}\n{deep}\n".encode(), filename="train.jsonl")
    headers = {"Authorization": f"Bearer {KEY_A}", "x-portkey-provider": "portkey"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{url}/files", data=form) as response,
    ):
        answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"]["code"] == "invalid_training_file"
    assert "line 2" in answer["error"]["message"]
