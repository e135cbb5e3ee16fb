"""The dashboard's server side: its page, its JSON endpoints, and the series it plots."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest

from gateway.ui.series import collect, decode_page, downsample, page_of, series_of
from tests.conftest import GATEWAY_KEY, OTHER_GATEWAY_KEY, UPSTREAM_KEY, Stack, base_config

TEAM_KEY = "gw-team-b-abcdefabcdef0123"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _root(stack: Stack, url: str | None = None) -> str:
    return (url or stack.gateway_url).removesuffix("/v1")


def _metrics_job(stack: Stack, steps: int) -> str:
    upload = stack.upstream.add_file("train.jsonl", b"{}\n", "fine-tune")
    job = stack.client().fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload["id"])
    for step in range(1, steps + 1):
        data = {"step": step, "train_loss": 1.0 / step, "total_steps": steps}
        if step % 10 == 0:
            data["valid_loss"] = 2.0 / step
        stack.upstream.add_event(job.id, f"Step {step}", type_="metrics", data=data)
    return job.id


@pytest.mark.parametrize(
    ("values", "buckets", "expected"),
    [
        ([3.0, 1.0, 2.0], 5, [3.0, 1.0, 2.0]),  # short: unchanged
        ([5.0, 1.0, 9.0, 2.0, 4.0, 4.0, 0.0, 8.0], 2, [1.0, 9.0, 0.0, 8.0]),
        ([1.0] * 8, 2, [1.0, 1.0]),  # min and max the same point: kept once
    ],
)
def test_downsample_keeps_each_buckets_minimum_and_maximum_in_step_order(
    values: list[float], buckets: int, expected: list[float]
) -> None:
    points = list(enumerate(values))
    kept = downsample(points, buckets)
    assert [value for _, value in kept] == expected
    assert [step for step, _ in kept] == sorted(step for step, _ in kept)


def test_downsample_long_series_keeps_global_extremes() -> None:
    points = [(step, float((step * 7919) % 1000)) for step in range(100_000)]
    points[54_321] = (54_321, -5.0)
    points[77_777] = (77_777, 5000.0)
    kept = downsample(points, 500)
    assert len(kept) <= 1000
    assert (54_321, -5.0) in kept and (77_777, 5000.0) in kept


def test_collect_takes_metrics_events_only_and_finite_numbers_only() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message", "data": {"step": 1, "train_loss": 9.0}},
        {"type": "metrics", "data": {"step": 2, "train_loss": 0.5, "valid_loss": "0.4"}},
        {"type": "metrics", "data": {"step": 3, "train_loss": float("nan")}},
        {"type": "metrics", "data": {"train_loss": 0.1}},
        {"type": "metrics", "data": {"step": 4, "train_mean_token_accuracy": 0.75}},
    ]
    page = page_of({"data": events})
    assert collect(page.data) == {"train_loss": {2: 0.5}, "train_mean_token_accuracy": {4: 0.75}}
    answer = series_of(page.data, 10)
    assert answer["train_loss"] == {"total": 1, "downsampled": False, "points": [[2, 0.5]]}


def test_decode_page_reads_odd_shapes_item_by_item() -> None:
    fine = b'{"data": [{"id": "e1", "type": "metrics", "data": {"step": 1, "train_loss": 2}}]}'
    assert collect(decode_page(fine).data) == {"train_loss": {1: 2.0}}
    odd = (
        b'{"data": [{"id": "e1", "type": "metrics", "data": ["not", "an", "object"]},'
        b' {"id": "e2", "type": "metrics", "data": {"step": 2, "train_loss": 1.5}}],'
        b' "has_more": true}'
    )
    page = decode_page(odd)
    assert page.has_more and collect(page.data) == {"train_loss": {2: 1.5}}


def test_ui_page_loads_without_a_key_under_a_strict_policy(stack: Stack) -> None:
    status, headers, body = _get(_root(stack) + "/ui")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = body.decode()
    # No inline script or style: every <script> has a src, no style attribute or element.
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    assert "style=" not in html and "<style" not in html
    for name in ("app.js", "chart.js", "app.css"):
        status, headers, body = _get(_root(stack) + "/ui/static/" + name)
        assert status == 200 and body and "Content-Security-Policy" in headers
        assert b"innerHTML" not in body and b"outerHTML" not in body and b"eval(" not in body
    assert _get(_root(stack) + "/ui/static/index.html%2e%2e")[0] == 404
    assert _get(_root(stack) + "/ui/static/..%2fapp.py")[0] == 404


def test_ui_api_asks_for_the_gateway_key_in_a_header_never_the_url(stack: Stack) -> None:
    url = _root(stack) + "/ui/api/virtual-keys"
    status, headers, body = _get(url)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert "Content-Security-Policy" in headers
    assert _get(url + f"?api_key={GATEWAY_KEY}")[0] == 401
    status, _, body = _get(url, {"Authorization": f"Bearer {GATEWAY_KEY}"})
    assert status == 200
    assert json.loads(body)["data"] == [
        {"name": "openai-main", "provider": "openai"},
        {"name": "openai-revoked", "provider": "openai"},
    ]


def test_ui_virtual_keys_are_those_the_gateway_key_may_use(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["gateway_keys"]["team-b"] = {"key": TEAM_KEY, "virtual_keys": ["openai-revoked"]}
    root = _root(stack, stack.start_gateway(raw))
    _, _, body = _get(root + "/ui/api/virtual-keys", {"Authorization": f"Bearer {TEAM_KEY}"})
    assert [vk["name"] for vk in json.loads(body)["data"]] == ["openai-revoked"]
    job_id = _metrics_job(stack, 3)
    # Another team's virtual key is refused here as in the API.
    status, _, body = _get(
        root + f"/ui/api/jobs/{job_id}/metrics",
        {"Authorization": f"Bearer {TEAM_KEY}", "x-portkey-virtual-key": "openai-main"},
    )
    assert status == 403 and json.loads(body)["error"]["code"] == "virtual_key_not_allowed"
    assert UPSTREAM_KEY  # the other team's credentials stay with the gateway


def test_ui_metrics_are_downsampled_on_the_server(stack: Stack) -> None:
    job_id = _metrics_job(stack, 3000)
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "x-portkey-virtual-key": "openai-main"}
    url = _root(stack) + f"/ui/api/jobs/{job_id}/metrics"
    status, _, body = _get(url + "?buckets=100", headers)
    assert status == 200
    series = json.loads(body)["series"]
    train = series["train_loss"]
    assert train["total"] == 3000 and train["downsampled"]
    assert len(train["points"]) <= 200
    assert [1, 1.0] in train["points"] and [3000, 1.0 / 3000] in train["points"]
    assert series["valid_loss"]["total"] == 300
    _, _, body = _get(url, headers)  # by default, up to 2,000 buckets: all 3,000 kept
    assert len(json.loads(body)["series"]["train_loss"]["points"]) == 3000
    status, _, _ = _get(url, {"Authorization": f"Bearer {OTHER_GATEWAY_KEY}"})
    assert status == 400  # no provider chosen: routed exactly as the API is


def test_ui_virtual_keys_on_an_open_gateway_are_all_of_them(stack: Stack) -> None:
    raw = base_config(stack.upstream_url)
    raw["gateway_keys"] = {}
    root = _root(stack, stack.start_gateway(raw))
    status, _, body = _get(root + "/ui/api/virtual-keys")
    assert status == 200
    assert [vk["name"] for vk in json.loads(body)["data"]] == ["openai-main", "openai-revoked"]
