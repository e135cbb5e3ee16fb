"""``GET /metrics``: what a Prometheus scrape shows after requests a user made."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request

import openai

from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, UPSTREAM_KEY, Stack
from tests.support.prometheus import Sample, scrape, value

JOB_ROUTE = "/v1/fine_tuning/jobs/{fine_tuning_job_id}"


def _root(stack: Stack) -> str:
    return stack.gateway_url.removesuffix("/v1")


def _new_job(client: openai.OpenAI) -> str:
    uploaded = client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    return client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id).id


def test_metrics_count_requests_by_route_template_provider_and_status(stack: Stack) -> None:
    client = stack.client()
    job_id = _new_job(client)
    client.fine_tuning.jobs.retrieve(job_id)
    client.fine_tuning.jobs.retrieve(job_id)
    with contextlib.suppress(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-missing")

    text, samples = scrape(_root(stack))
    counted = "finetune_gateway_requests_total"
    common = {"route": JOB_ROUTE, "method": "GET", "provider": "openai"}
    assert value(samples, counted, **common, status="200") == 2
    assert value(samples, counted, **common, status="404") == 1
    assert value(samples, counted, route="/v1/files", method="POST", status="200") == 1
    # Route labels are templates: no id, and so no series per job or file.
    assert job_id not in text and "ftjob-missing" not in text
    assert {s.labels["route"] for s in samples if s.name == counted} <= {
        JOB_ROUTE,
        "/v1/files",
        "/v1/fine_tuning/jobs",
    }


def test_metrics_unknown_paths_share_one_label(stack: Stack) -> None:
    for path in ("/nope/1", "/nope/2", "/v1/secret-looking-path"):
        with contextlib.suppress(openai.NotFoundError):
            stack.client().get(path, cast_to=object)
    for method in ("PROPFIND", "MKCOL", "LOCK"):  # methods nobody routes: one label
        request = urllib.request.Request(f"{_root(stack)}/v1/files", method=method)
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=5).close()
    text, samples = scrape(_root(stack))
    assert "nope" not in text and "secret-looking-path" not in text
    counted = "finetune_gateway_requests_total"
    assert value(samples, counted, route="(unmatched)", method="GET") == 3
    assert "PROPFIND" not in text and "MKCOL" not in text and "LOCK" not in text
    assert value(samples, counted, route="(unmatched)", method="other") == 3


def test_metrics_histograms_are_cumulative_and_agree_with_counts(stack: Stack) -> None:
    client = stack.client()
    job_id = _new_job(client)
    for _ in range(5):
        client.fine_tuning.jobs.retrieve(job_id)
    _, samples = scrape(_root(stack))
    labels = {"route": JOB_ROUTE, "method": "GET", "provider": "openai"}
    for name in (
        "finetune_gateway_request_duration_seconds",
        "finetune_gateway_upstream_duration_seconds",
    ):
        buckets = _buckets(samples, name + "_bucket", labels)
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{name} buckets must be cumulative"
        assert buckets[-1] == (float("inf"), 5)
        assert value(samples, name + "_count", **labels) == 5
        assert 0 < value(samples, name + "_sum", **labels) < 5 * 5.0
    total = value(samples, "finetune_gateway_request_duration_seconds_sum", **labels)
    upstream = value(samples, "finetune_gateway_upstream_duration_seconds_sum", **labels)
    assert upstream <= total


def _buckets(samples: list[Sample], name: str, labels: dict[str, str]) -> list[tuple[float, float]]:
    found = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert found, f"no {name} for {labels}"
    return sorted((float(s.labels["le"]), s.value) for s in found)


def test_metrics_in_flight_rises_during_a_slow_request(stack: Stack) -> None:
    in_flight = "finetune_gateway_requests_in_flight"
    _, idle = scrape(_root(stack))
    assert value(idle, in_flight) == 1  # the scrape itself
    stack.upstream.stall_next(3.0)
    slow = threading.Thread(target=lambda: stack.client().fine_tuning.jobs.list())
    slow.start()
    try:
        deadline = time.monotonic() + 2.5
        seen = 1.0
        while seen < 2 and time.monotonic() < deadline:
            seen = value(scrape(_root(stack))[1], in_flight)
            time.sleep(0.02)
        assert seen == 2
    finally:
        slow.join(10)
    assert value(scrape(_root(stack))[1], in_flight) == 1


def test_metrics_count_uploaded_bytes_per_provider(stack: Stack) -> None:
    client = stack.client()
    client.files.create(file=("a.jsonl", TRAINING_JSONL), purpose="fine-tune")
    client.files.create(file=("b.jsonl", TRAINING_JSONL * 3), purpose="fine-tune")
    _, samples = scrape(_root(stack))
    uploaded = value(samples, "finetune_gateway_uploaded_bytes_total", provider="openai")
    assert uploaded == 4 * len(TRAINING_JSONL)


def test_metrics_show_no_secret(stack: Stack) -> None:
    client = stack.client()
    _new_job(client)
    caller = stack.client(
        api_key="sk-caller-secret-4242",
        default_headers={"x-portkey-provider": "openai", "x-portkey-api-key": GATEWAY_KEY},
    )
    with contextlib.suppress(openai.APIStatusError):
        caller.fine_tuning.jobs.list()
    text, samples = scrape(_root(stack))
    for secret in (GATEWAY_KEY, UPSTREAM_KEY, "sk-caller-secret-4242", "search-team"):
        assert secret not in text
    assert {s.labels.get("provider", "openai") for s in samples} <= {"openai", ""}
