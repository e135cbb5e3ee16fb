"""Webhook endpoints through the official SDK, and signed events for jobs' ends."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.webhooks import (
    FineTuningJobSucceededWebhookEvent,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

from gateway.webhooks.sealing import ENV
from tests.conftest import OTHER_GATEWAY_KEY, TRAINING_JSONL, Stack, base_config
from tests.support.webhook_receiver import Receiver

FT_TYPES = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


def hooks_config(upstream_url: str, database: Path, **webhooks: Any) -> dict[str, Any]:
    raw = base_config(upstream_url)
    raw["gateway_keys"]["no-default"]["default_virtual_key"] = "openai-main"
    raw["webhooks"] = {
        "database": str(database),
        "allow_http": True,
        "tick_seconds": 0.05,
        "poll_seconds": 0.1,
        "first_retry_seconds": 0.1,
        "max_retry_seconds": 0.2,
        "delivery_timeout": 1.0,
        **webhooks,
    }
    return raw


@pytest.fixture
def receiver(stack: Stack) -> Receiver:
    return Receiver()


@pytest.fixture
def hooks(
    stack: Stack, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stack, str]]:
    monkeypatch.setenv(ENV, "k" * 40)
    stack.gateway_url = stack.start_gateway(hooks_config(stack.upstream_url, tmp_path / "h.db"))
    url = stack.servers.serve(receiver.app()) + "/hook"
    yield stack, url


def endpoint(client: openai.OpenAI, url: str, **kwargs: Any) -> WebhookEndpointWithSecret:
    return client.webhooks.create(
        name="ci", url=url, event_types=kwargs.pop("event_types", FT_TYPES), **kwargs
    )


def verifier(secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", webhook_secret=secret)


def test_webhook_endpoints_lifecycle_through_the_sdk(hooks: tuple[Stack, str]) -> None:
    stack, url = hooks
    client = stack.client()
    made = endpoint(client, url)
    assert isinstance(made, WebhookEndpointWithSecret)
    assert made.id.startswith("we_") and made.signing_secret.startswith("whsec_")
    assert made.signing_secret_hint == "whsec_..." + made.signing_secret[-4:]
    assert made.event_types == FT_TYPES and made.url == url and made.name == "ci"

    raw = client.webhooks.with_raw_response.retrieve(made.id)
    assert 'signing_secret"' not in raw.text, "the secret is shown on create and rotate only"
    got = raw.parse()
    assert isinstance(got, WebhookEndpoint) and got.signing_secret_hint == made.signing_secret_hint

    second = endpoint(client, url, event_types=["fine_tuning.job.failed"])
    assert [e.id for e in client.webhooks.list()] == [second.id, made.id]  # newest first
    page = client.webhooks.list(limit=1)
    assert [e.id for e in page.data] == [second.id] and page.has_more
    assert [e.id for e in client.webhooks.list(limit=1, after=second.id)] == [made.id]

    time.sleep(1.01)
    updated = client.webhooks.update(made.id, name="renamed", event_types=FT_TYPES[:1])
    assert updated.name == "renamed" and updated.event_types == FT_TYPES[:1]
    assert updated.updated_at is not None and updated.updated_at > made.created_at
    assert client.webhooks.update(made.id, name="renamed").updated_at == updated.updated_at

    assert client.webhooks.event_types.list().data == FT_TYPES

    deleted = client.webhooks.delete(made.id)
    assert (
        deleted.id == made.id and deleted.deleted and deleted.object == "webhook_endpoint.deleted"
    )
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(made.id)


def test_webhook_endpoints_refuse_other_event_types_naming_the_field(
    hooks: tuple[Stack, str],
) -> None:
    stack, url = hooks
    with pytest.raises(openai.BadRequestError) as refused:
        endpoint(stack.client(), url, event_types=["batch.completed"])
    assert refused.value.body["param"] == "event_types"  # type: ignore[index]
    assert "batch.completed" in refused.value.message


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.1.2.3/hook", "10.1.2.3"),
        ("https://169.254.169.254/latest", "169.254.169.254"),
        ("https://[::ffff:10.0.0.1]/hook", "10.0.0.1"),
        ("ftp://example.com/hook", "https"),
        ("https://user:pw@127.0.0.1/hook", "credentials"),
    ],
)
def test_webhook_endpoint_url_refused_at_create(
    hooks: tuple[Stack, str], url: str, why: str
) -> None:
    stack, _ = hooks
    with pytest.raises(openai.BadRequestError) as refused:
        endpoint(stack.client(), url)
    assert refused.value.body["param"] == "url"  # type: ignore[index]
    assert why in refused.value.message
    assert "pw" not in refused.value.message


def test_webhook_endpoint_plain_http_needs_the_config(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "k" * 40)
    raw = hooks_config(stack.upstream_url, tmp_path / "h.db", allow_http=False)
    client = stack.client(base_url=stack.start_gateway(raw))
    with pytest.raises(openai.BadRequestError, match="allow_http"):
        endpoint(client, "http://127.0.0.1:9/hook")


def test_webhook_endpoints_api_off_without_gateway_keys(stack: Stack, tmp_path: Path) -> None:
    raw = hooks_config(stack.upstream_url, tmp_path / "h.db")
    del raw["gateway_keys"]
    client = stack.client("sk-anything", base_url=stack.start_gateway(raw))
    with pytest.raises(openai.PermissionDeniedError, match=r"\[gateway_keys\.NAME\]"):
        client.webhooks.list()


def test_webhook_endpoints_of_one_gateway_key_are_unseen_by_another(
    hooks: tuple[Stack, str],
) -> None:
    stack, url = hooks
    mine = endpoint(stack.client(), url)
    other = stack.client(OTHER_GATEWAY_KEY)
    assert list(other.webhooks.list()) == []
    for call in (
        lambda: other.webhooks.retrieve(mine.id),
        lambda: other.webhooks.update(mine.id, name="taken"),
        lambda: other.webhooks.rotate_secret(mine.id),
        lambda: other.webhooks.test(mine.id, event_type="fine_tuning.job.failed"),
        lambda: other.webhooks.delete(mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert stack.client().webhooks.retrieve(mine.id).name == "ci"


def test_webhook_test_sends_a_sample_event_the_sdk_verifies(
    hooks: tuple[Stack, str], receiver: Receiver
) -> None:
    stack, url = hooks
    client = stack.client()
    made = endpoint(client, url)
    result = client.webhooks.test(made.id, event_type="fine_tuning.job.failed")
    assert (result.status_code, result.object, result.webhook_endpoint_id) == (
        200, "webhook_endpoint.test", made.id,
    )  # fmt: skip
    sent = receiver.received[-1]
    event = verifier(made.signing_secret).webhooks.unwrap(sent.body, sent.headers)
    assert event.type == "fine_tuning.job.failed" and event.id == sent.headers["webhook-id"]

    with pytest.raises(openai.InvalidWebhookSignatureError):
        verifier(made.signing_secret).webhooks.unwrap(
            sent.body.replace(b"failed", b"succeeded"), sent.headers
        )
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verifier(openai_secret()).webhooks.unwrap(sent.body, sent.headers)
    old = {**sent.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(openai.InvalidWebhookSignatureError, match="too old"):
        verifier(made.signing_secret).webhooks.verify_signature(sent.body, old)

    receiver.script.append(503)
    assert client.webhooks.test(made.id, event_type="fine_tuning.job.failed").status_code == 503


def openai_secret() -> str:
    from gateway.webhooks.signing import new_secret

    return new_secret()


def test_webhook_rotate_secret_with_and_without_grace(
    hooks: tuple[Stack, str], receiver: Receiver
) -> None:
    stack, url = hooks
    client = stack.client()
    first = endpoint(client, url)
    graced = client.webhooks.rotate_secret(first.id, keep_old_secret_active_for_24_hours=True)
    assert graced.signing_secret != first.signing_secret
    assert client.webhooks.retrieve(first.id).signing_secret_hint == graced.signing_secret_hint
    client.webhooks.test(first.id, event_type="fine_tuning.job.succeeded")
    sent = receiver.received[-1]
    assert len(sent.headers["webhook-signature"].split()) == 2
    for secret in (first.signing_secret, graced.signing_secret):
        verifier(secret).webhooks.verify_signature(sent.body, sent.headers)

    third = client.webhooks.rotate_secret(first.id)
    client.webhooks.test(first.id, event_type="fine_tuning.job.succeeded")
    sent = receiver.received[-1]
    verifier(third.signing_secret).webhooks.verify_signature(sent.body, sent.headers)
    for stale in (first.signing_secret, graced.signing_secret):
        with pytest.raises(openai.InvalidWebhookSignatureError):
            verifier(stale).webhooks.verify_signature(sent.body, sent.headers)


def test_webhook_secrets_are_not_in_the_database_dump(
    hooks: tuple[Stack, str], tmp_path: Path
) -> None:
    stack, url = hooks
    made = endpoint(stack.client(), url)
    with sqlite3.connect(tmp_path / "h.db") as db:
        dump = "\n".join(db.iterdump())
    assert made.id in dump
    assert made.signing_secret not in dump
    assert made.signing_secret.removeprefix("whsec_") not in dump


def _job(client: openai.OpenAI) -> str:
    uploaded = client.files.create(file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune")
    return client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini").id


def test_webhook_one_signed_event_per_job_end(hooks: tuple[Stack, str], receiver: Receiver) -> None:
    stack, url = hooks
    client = stack.client()
    made = endpoint(client, url)
    job_id = _job(client)
    time.sleep(0.3)  # looked at while running: no event
    assert receiver.received == []
    stack.upstream.set_status(job_id, "succeeded", fine_tuned_model="ft:gpt-4o-mini:x")
    sent = receiver.wait_for(lambda got: len(got) >= 1)[0]
    event = verifier(made.signing_secret).webhooks.unwrap(sent.body, sent.headers)
    assert isinstance(event, FineTuningJobSucceededWebhookEvent)
    assert event.data.id == job_id and event.object == "event"
    assert event.id == sent.headers["webhook-id"]
    time.sleep(0.5)
    assert len(receiver.received) == 1, "a job's end is announced once"


def test_webhook_receiver_down_three_times_gets_it_once_more_same_id(
    hooks: tuple[Stack, str], receiver: Receiver
) -> None:
    stack, url = hooks
    client = stack.client()
    endpoint(client, url)
    receiver.script.extend([500, 502, 404])
    job_id = _job(client)
    stack.upstream.set_status(job_id, "failed")
    got = receiver.wait_for(lambda got: len(got) >= 4)
    assert [d.answered for d in got] == [500, 502, 404, 200]
    assert len({d.headers["webhook-id"] for d in got}) == 1
    time.sleep(0.5)
    assert len(receiver.received) == 4, "a 2xx ends the delivery"
    metrics = stack.client()._client.get(stack.gateway_url.removesuffix("/v1") + "/metrics").text
    assert "finetune_gateway_webhook_deliveries_total 1" in metrics
    assert "finetune_gateway_webhook_delivery_retries_total 3" in metrics
    assert "finetune_gateway_webhook_events_emitted_total 1" in metrics


def test_webhook_stalling_receiver_times_out_and_holds_nothing_else(
    hooks: tuple[Stack, str], receiver: Receiver
) -> None:
    stack, url = hooks
    client = stack.client()
    endpoint(client, url)
    first, second = _job(client), _job(client)
    receiver.script.append(-5)  # the first delivery stalls past delivery_timeout (1 s)
    stack.upstream.set_status(first, "cancelled")
    receiver.wait_for(lambda got: len(got) >= 1)
    stack.upstream.set_status(second, "succeeded")
    started = time.monotonic()
    got = receiver.wait_for(lambda got: len(got) >= 3, timeout=4)
    assert time.monotonic() - started < 4
    ids = [json.loads(d.body)["data"]["id"] for d in got]
    assert ids[0] == first and set(ids[1:]) == {first, second}
    assert got[0].headers["webhook-id"] in {d.headers["webhook-id"] for d in got[1:]}


def test_webhook_events_of_one_key_jobs_never_reach_another_key(
    hooks: tuple[Stack, str], receiver: Receiver
) -> None:
    stack, url = hooks
    endpoint(stack.client(), url)  # search-team's
    other = stack.client(OTHER_GATEWAY_KEY)
    job_id = _job(other)
    stack.upstream.set_status(job_id, "succeeded")
    time.sleep(0.6)
    assert receiver.received == []
    mine = _job(stack.client())
    stack.upstream.set_status(mine, "succeeded")
    got = receiver.wait_for(lambda got: len(got) >= 1)
    assert [json.loads(d.body)["data"]["id"] for d in got] == [mine]


def test_webhook_address_guard_applies_at_delivery(
    hooks: tuple[Stack, str], receiver: Receiver, tmp_path: Path
) -> None:
    stack, url = hooks
    made = endpoint(stack.client(), url)
    # A second process on the same database whose policy no longer allows loopback.
    strict = copy.deepcopy(hooks_config(stack.upstream_url, tmp_path / "h.db"))
    strict["routing"]["custom_host_allowlist"] = []
    for virtual_key in strict["virtual_keys"].values():  # a name: trusted, not 127.0.0.1
        virtual_key["base_url"] = stack.upstream_url.replace("127.0.0.1", "localhost")
    client = stack.client(base_url=stack.start_gateway(strict))
    with pytest.raises(openai.InternalServerError, match="egress"):
        client.webhooks.test(made.id, event_type="fine_tuning.job.failed")
    assert receiver.received == []


def test_webhook_given_up_is_logged_counted_and_listed_by_the_cli(
    stack: Stack,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gateway.cli import main
    from tests.support.serve import toml_of

    monkeypatch.setenv(ENV, "k" * 40)
    raw = hooks_config(stack.upstream_url, tmp_path / "h.db", retry_for_seconds=0.3)
    gateway_url = stack.start_gateway(raw)
    url = stack.servers.serve(receiver.app()) + "/hook"
    client = stack.client(base_url=gateway_url)
    made = endpoint(client, url)
    receiver.script.extend([500] * 100)
    job_id = _job(client)
    stack.upstream.set_status(job_id, "failed")
    metrics_url = gateway_url.removesuffix("/v1") + "/metrics"
    deadline = time.monotonic() + 10
    while "finetune_gateway_webhook_deliveries_given_up_total 1" not in (
        client._client.get(metrics_url).text
    ):
        assert time.monotonic() < deadline, "the delivery was never given up on"
        time.sleep(0.05)
    assert len(receiver.received) >= 2, "retried before giving up"
    assert any("given up" in r.getMessage() for r in caplog.records)
    assert not any(made.signing_secret in r.getMessage() for r in caplog.records)

    raw.pop("configs")
    path = tmp_path / "gateway.toml"
    path.write_text(toml_of(raw))
    assert main(["webhook-deliveries", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert made.id in out and "given_up" in out and "status 500" in out
    assert "1 deliveries given_up" in out


def test_webhook_endpoint_create_needs_the_sealing_key(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    client = stack.client(
        base_url=stack.start_gateway(hooks_config(stack.upstream_url, tmp_path / "h.db"))
    )
    with pytest.raises(openai.PermissionDeniedError, match=ENV):
        endpoint(client, "http://127.0.0.1:9/hook")
