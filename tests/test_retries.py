"""Retries of upstream calls, through the gateway with the official OpenAI SDK (which itself
never retries here, ``max_retries=0``), against the fake OpenAI on 127.0.0.1.

Backoffs are a few milliseconds, so only a test about ``Retry-After`` waits for real.
"""

from __future__ import annotations

import email.utils
import json
import random
import socket
import time
from typing import Any

import openai
import pytest

from gateway.config import ConfigError, parse_config
from gateway.registry import Registry
from gateway.retry import (
    CallPolicy,
    Failure,
    RetryPolicy,
    policy_applied,
    retry_after_seconds,
    with_retries,
)
from tests.conftest import GATEWAY_KEY, TRAINING_JSONL, Stack, base_config
from tests.support.fault_proxy import FaultProxy, Seen
from tests.support.fault_proxy import make_app as make_fault_proxy

ATTEMPTS = "x-upstream-attempts"
FAST = {"backoff": 0.01, "max_backoff": 2.0}


def retrying_config(stack: Stack, **retry: Any) -> dict[str, Any]:
    raw = base_config(stack.upstream_url)
    raw["upstream"]["retry"] = {"attempts": 3, **FAST, **retry}
    return raw


def client_for(stack: Stack, raw: dict[str, Any], **headers: str) -> openai.OpenAI:
    return stack.client(GATEWAY_KEY, base_url=stack.start_gateway(raw), default_headers=headers)


def upstream_calls(stack: Stack, method: str, path: str) -> int:
    return len([r for r in stack.upstream.requests if r.method == method and r.path == path])


def training_file(stack: Stack) -> str:
    return str(stack.upstream.add_file("train.jsonl", TRAINING_JSONL)["id"])


# ---- creates: retried only when idempotent ------------------------------------------------


def test_create_with_idempotency_key_is_retried_after_500_and_makes_one_job(
    stack: Stack,
) -> None:
    client = client_for(stack, retrying_config(stack))
    file_id = training_file(stack)
    stack.upstream.fail_next(500)

    raw = client.with_raw_response.fine_tuning.jobs.create(
        training_file=file_id, model="gpt-4o-mini", extra_headers={"Idempotency-Key": "job-1"}
    )

    assert raw.status_code == 200
    assert raw.headers[ATTEMPTS] == "2"
    assert list(stack.upstream.jobs) == [raw.parse().id]
    creates = [r for r in stack.upstream.requests if r.path == "/v1/fine_tuning/jobs"]
    assert [r.headers.get("idempotency-key") for r in creates] == ["job-1", "job-1"]


def test_create_without_idempotency_key_is_not_retried(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack))
    file_id = training_file(stack)
    stack.upstream.fail_next(500)

    with pytest.raises(openai.InternalServerError) as failed:
        client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")

    assert failed.value.status_code == 502
    assert failed.value.response.headers[ATTEMPTS] == "1"
    assert upstream_calls(stack, "POST", "/v1/fine_tuning/jobs") == 1
    assert stack.upstream.jobs == {}


def test_upload_is_never_retried_its_body_streams_once(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack))
    stack.upstream.fail_next(503)

    with pytest.raises(openai.InternalServerError) as failed:
        client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")

    assert failed.value.response.headers[ATTEMPTS] == "1"
    assert upstream_calls(stack, "POST", "/v1/files") == 1
    assert stack.upstream.files == {}


# ---- reads and cancels: retried, never past the attempts ----------------------------------


def test_cancel_is_retried_after_503(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack))
    job = client.fine_tuning.jobs.create(training_file=training_file(stack), model="gpt-4o-mini")
    stack.upstream.fail_next(503)

    raw = client.with_raw_response.fine_tuning.jobs.cancel(job.id)

    assert raw.parse().status == "cancelled"
    assert raw.headers[ATTEMPTS] == "2"


def test_retries_never_exceed_the_attempts(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack, attempts=4))
    stack.upstream.fail_next(502, times=10)

    with pytest.raises(openai.InternalServerError) as failed:
        client.fine_tuning.jobs.list()

    assert failed.value.status_code == 502
    assert failed.value.response.headers[ATTEMPTS] == "4"
    assert upstream_calls(stack, "GET", "/v1/fine_tuning/jobs") == 4


def test_status_outside_on_status_codes_is_not_retried(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack, on_status_codes=[429]))
    stack.upstream.fail_next(500)

    with pytest.raises(openai.InternalServerError):
        client.files.list()

    assert upstream_calls(stack, "GET", "/v1/files") == 1


def test_client_errors_are_not_retried(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack))

    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.retrieve("ftjob-nope")

    assert missing.value.response.headers[ATTEMPTS] == "1"


def test_no_attempts_header_when_no_upstream_call_was_made(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack))

    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.retrieve("bad/id")

    assert ATTEMPTS not in refused.value.response.headers


# ---- Retry-After --------------------------------------------------------------------------


def test_429_retry_after_is_waited_before_the_retry(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack))
    stack.upstream.fail_next(429, headers={"Retry-After": "1"})

    started = time.monotonic()
    raw = client.with_raw_response.files.list()
    waited = time.monotonic() - started

    assert raw.status_code == 200
    assert raw.headers[ATTEMPTS] == "2"
    assert 1.0 <= waited < 5.0


def test_retry_after_longer_than_max_backoff_goes_back_to_the_client(stack: Stack) -> None:
    client = client_for(stack, retrying_config(stack))
    stack.upstream.fail_next(429, headers={"Retry-After": "30"})

    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as limited:
        client.files.list()

    assert time.monotonic() - started < 5.0
    assert limited.value.response.headers["retry-after"] == "30"
    assert limited.value.response.headers[ATTEMPTS] == "1"


# ---- connection failures ------------------------------------------------------------------


@pytest.fixture
def proxy(stack: Stack) -> FaultProxy:
    """A fault proxy in front of the fake OpenAI."""
    made = FaultProxy(target=stack.upstream_url.removesuffix("/v1"))
    made.url = stack.servers.serve(make_fault_proxy(made))
    return made


def proxied_config(stack: Stack, proxy: FaultProxy) -> dict[str, Any]:
    raw = retrying_config(stack)
    raw["virtual_keys"]["openai-main"]["base_url"] = proxy.url + "/v1"
    return raw


def _get_jobs(seen: Seen) -> bool:
    return seen.method == "GET" and seen.path == "/v1/fine_tuning/jobs"


@pytest.mark.parametrize("fault", ["reset", "disconnect"])
def test_connection_lost_on_a_read_is_retried(stack: Stack, proxy: FaultProxy, fault: Any) -> None:
    client = client_for(stack, proxied_config(stack, proxy))
    proxy.add(_get_jobs, fault)

    raw = client.with_raw_response.fine_tuning.jobs.list()

    assert raw.status_code == 200
    assert raw.headers[ATTEMPTS] == "2"
    assert [s.fault for s in proxy.requests("GET", "/fine_tuning/jobs")] == [fault, None]


def test_connection_lost_on_a_create_without_key_is_not_retried(
    stack: Stack, proxy: FaultProxy
) -> None:
    client = client_for(stack, proxied_config(stack, proxy))
    proxy.add(lambda seen: seen.method == "POST", "reset", after_bytes=10)

    with pytest.raises(openai.InternalServerError) as failed:
        client.fine_tuning.jobs.create(training_file=training_file(stack), model="gpt-4o-mini")

    assert failed.value.response.json()["error"]["code"] == "upstream_connection_error"
    assert len(proxy.requests("POST")) == 1
    assert stack.upstream.jobs == {}


def test_upstream_resetting_every_try_is_tried_attempts_times(
    stack: Stack, proxy: FaultProxy
) -> None:
    client = client_for(stack, proxied_config(stack, proxy))
    proxy.add(_get_jobs, "reset", times=10)

    with pytest.raises(openai.InternalServerError) as failed:
        client.fine_tuning.jobs.list()

    assert failed.value.response.headers[ATTEMPTS] == "3"
    assert len(proxy.requests("GET", "/fine_tuning/jobs")) == 3


def test_refused_connection_is_retried_then_502(stack: Stack) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    raw = retrying_config(stack)
    raw["virtual_keys"]["openai-main"]["base_url"] = f"http://127.0.0.1:{port}/v1"
    client = client_for(stack, raw)

    with pytest.raises(openai.InternalServerError) as failed:
        client.files.list()

    assert failed.value.response.json()["error"]["code"] == "upstream_unreachable"
    assert failed.value.response.headers[ATTEMPTS] == "3"


# ---- where the policy comes from ----------------------------------------------------------


def test_virtual_key_and_named_config_policies_override_the_default(stack: Stack) -> None:
    raw = retrying_config(stack, attempts=1)
    main = raw["virtual_keys"]["openai-main"]
    raw["virtual_keys"]["openai-retrying"] = {**main, "retry": {"attempts": 3}}
    raw["configs"]["patient"] = {"virtual_key": "openai-main", "retry": {"attempts": 2}}
    url = stack.start_gateway(raw)

    def list_with(**headers: str) -> tuple[int, str]:
        stack.upstream.fail_next(503)
        client = stack.client(GATEWAY_KEY, base_url=url, default_headers=headers)
        try:
            answer = client.with_raw_response.files.list()
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.headers[ATTEMPTS]
        return answer.status_code, answer.headers[ATTEMPTS]

    assert list_with() == (502, "1")  # the default: [upstream.retry] attempts = 1
    assert list_with(**{"x-portkey-virtual-key": "openai-retrying"}) == (200, "2")
    assert list_with(**{"x-portkey-config": "patient"}) == (200, "2")


def test_inline_config_retry_is_used(stack: Stack) -> None:
    inline = {"virtual_key": "openai-main", "retry": {"attempts": 2, "on_status_codes": [503]}}
    client = client_for(
        stack, retrying_config(stack, attempts=1), **{"x-portkey-config": json.dumps(inline)}
    )
    stack.upstream.fail_next(503, times=5)

    with pytest.raises(openai.InternalServerError) as failed:
        client.files.list()

    assert failed.value.response.headers[ATTEMPTS] == "2"
    assert upstream_calls(stack, "GET", "/v1/files") == 2


@pytest.mark.parametrize(
    ("config", "param"),
    [
        ({"retry": {"attempts": 0}}, "x-portkey-config.retry.attempts"),
        ({"retry": {"attempts": 11}}, "x-portkey-config.retry.attempts"),
        ({"retry": {"attempts": "3"}}, "x-portkey-config.retry.attempts"),
        ({"retry": {"on_status_codes": [200]}}, "x-portkey-config.retry.on_status_codes[0]"),
        ({"retry": {"backoff": 60}}, "x-portkey-config.retry"),
        ({"retry": 3}, "x-portkey-config.retry"),
        ({"request_timeout": -5}, "x-portkey-config.request_timeout"),
        ({"request_timeout": "soon"}, "x-portkey-config.request_timeout"),
    ],
)
def test_inline_config_bad_retry_values_are_400_naming_the_param(
    stack: Stack, config: dict[str, Any], param: str
) -> None:
    header = json.dumps({"virtual_key": "openai-main", **config})
    client = stack.client(default_headers={"x-portkey-config": header})

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.list()

    error = refused.value.response.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_config")
    assert stack.upstream.requests == []


# ---- the policy itself --------------------------------------------------------------------


async def test_backoff_is_full_jitter_under_a_doubling_ceiling_within_a_total(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ceilings: list[float] = []

    def longest(low: float, high: float) -> float:
        ceilings.append(high)
        assert low == 0  # full jitter: anywhere from no wait to the ceiling
        return high

    monkeypatch.setattr(random, "uniform", longest)
    retry = RetryPolicy(attempts=10, backoff=0.01, max_backoff=0.04, max_total_backoff=0.1)
    tries = 0

    async def down() -> None:
        nonlocal tries
        tries += 1
        raise ConnectionRefusedError

    async with policy_applied(CallPolicy(retry=retry)):
        with pytest.raises(ConnectionRefusedError):
            await with_retries(down, idempotent=True, failure_of=lambda _: Failure(None))

    # 0.01 + 0.02 + 0.04 waited; one more 0.04 would pass the 0.1 s total.
    assert ceilings == [0.01, 0.02, 0.04, 0.04]
    assert tries == 4


def test_retry_after_is_read_as_seconds_an_http_date_or_milliseconds() -> None:
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    long_ago = email.utils.formatdate(time.time() - 30, usegmt=True)

    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert 28 <= (retry_after_seconds({"Retry-After": soon}) or 0) <= 30
    assert retry_after_seconds({"Retry-After": long_ago}) == 0.0
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": "whenever"}) is None
    assert retry_after_seconds({}) is None


def test_config_retry_keys_override_only_what_they_give(registry: Registry) -> None:
    raw = base_config("http://127.0.0.1:9/v1")
    raw["upstream"] = {"read_timeout": 30.0, "retry": {"attempts": 5, "backoff": 0.2}}
    main = raw["virtual_keys"]["openai-main"]
    main.update(retry={"attempts": 2}, read_timeout=60.0, request_timeout=600.0)
    raw["configs"]["prod"]["retry"] = {"on_status_codes": [429]}

    config = parse_config(raw, registry, {})

    vk = config.virtual_keys["openai-main"].policy
    assert vk is not None
    assert (vk.retry.attempts, vk.retry.backoff, vk.read_timeout) == (2, 0.2, 60.0)
    assert vk.request_timeout == 600.0
    named = config.configs["prod"].policy
    assert named is not None
    assert (named.retry.attempts, named.retry.on_status_codes) == (2, frozenset({429}))
    assert config.virtual_keys["openai-revoked"].policy is None  # [upstream]'s


@pytest.mark.parametrize(
    ("where", "value", "problem"),
    [
        (("upstream", "retry"), {"tries": 3}, "upstream.retry.tries: unknown setting"),
        (("virtual_keys", "openai-main"), {"retry": {"attempts": 0}}, "openai-main.retry.attempts"),
        (("virtual_keys", "openai-main"), {"read_timeout": -1}, "openai-main.read_timeout"),
        (("configs", "prod"), {"retry": {"on_status_codes": [200]}}, "prod.retry.on_status_codes"),
    ],
)
def test_config_bad_retry_values_are_named_by_their_path(
    registry: Registry, where: tuple[str, str], value: dict[str, Any], problem: str
) -> None:
    raw = base_config("http://127.0.0.1:9/v1")
    raw[where[0]].setdefault(where[1], {}).update(value)

    with pytest.raises(ConfigError) as bad:
        parse_config(raw, registry, {})

    assert any(problem in line for line in bad.value.problems), bad.value.problems
