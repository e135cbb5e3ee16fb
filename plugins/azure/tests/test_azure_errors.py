"""Azure's failures as the SDK user sees them: OpenAI's envelope, Azure's message and code."""

from __future__ import annotations

import logging

import openai
import pytest

from plugins.azure.tests.conftest import AD_TOKEN, AZURE_KEY, DATED, AzureStack
from tests.conftest import TRAINING_JSONL


def _message(exc: openai.APIStatusError) -> str:
    """The envelope's own message (the SDK's ``message`` prefixes the status)."""
    assert isinstance(exc.body, dict)
    return str(exc.body["message"])


def test_dated_not_found_keeps_azure_message_and_code(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    assert caught.value.code == "notFound"
    assert _message(caught.value) == (
        "The specified fine-tuning job 'ftjob-nope' could not be found."
    )
    assert caught.value.type == "invalid_request_error"


def test_dated_invalid_payload_keeps_target_as_param_and_details(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(training_file="file-missing", model="gpt-4o-mini")
    assert caught.value.param == "training_file" and caught.value.code == "invalidPayload"
    assert "file-missing" in caught.value.message

    azure.dated.fail_next(
        400,
        {
            "error": {
                "code": "jsonlValidationFailed",
                "message": "The training file is not valid.",
                "details": [{"code": "invalidPayload", "message": "Line 3: no messages"}],
            }
        },
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.list()
    assert caught.value.code == "jsonlValidationFailed"
    assert _message(caught.value) == "The training file is not valid. (Line 3: no messages)"


def test_configured_key_refused_by_azure_is_a_502_not_the_callers_401(azure: AzureStack) -> None:
    client = azure.client("azure-dated-revoked")
    with pytest.raises(openai.InternalServerError) as caught:
        client.fine_tuning.jobs.list()
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_failed"
    assert "invalid subscription key" in caught.value.message


@pytest.mark.parametrize("virtual_key", ["azure-v1", "azure-dated"])
def test_throttling_is_a_rate_limit_error_with_retry_after(
    azure: AzureStack, virtual_key: str
) -> None:
    body = {"error": {"code": "tooManyRequests", "message": "Rate limit exceeded. Retry later."}}
    if virtual_key == "azure-v1":
        azure.v1.service.fail_next(429, body, headers={"Retry-After": "7"})
    else:
        azure.dated.fail_next(429, body, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as caught:
        azure.client(virtual_key).fine_tuning.jobs.list()
    assert caught.value.code == "tooManyRequests"
    assert _message(caught.value) == "Rate limit exceeded. Retry later."
    assert caught.value.response.headers["retry-after"] == "7"


def test_azure_server_failure_and_non_json_body_are_502s(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    azure.dated.fail_next(503, b"<html>Service Unavailable</html>")
    with pytest.raises(openai.InternalServerError) as caught:
        client.files.list()
    assert caught.value.status_code == 502
    assert "Service Unavailable" in caught.value.message


def test_dated_answer_missing_a_field_openai_requires_is_a_502(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    azure.dated.fail_next(200, {"object": "fine_tuning.job", "model": "m", "training_file": "f"})
    with pytest.raises(openai.InternalServerError) as caught:
        client.fine_tuning.jobs.retrieve("ftjob-1")
    assert caught.value.code == "upstream_bad_response" and "`$.id`" in caught.value.message


def _gateway_logs(caplog: pytest.LogCaptureFixture) -> str:
    # The SDK logs what the test hands it (its own api-key header): not the gateway's doing.
    sdk = ("openai", "httpx", "httpcore")
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(sdk))


def test_secrets_never_reach_errors_or_logs(
    azure: AzureStack, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream (or a proxy before it) that echoes credentials must not leak them."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    headers = {
        "x-portkey-provider": "azure-openai",
        "x-portkey-azure-api-version": DATED,
        "x-portkey-custom-host": azure.dated_url,
        "x-portkey-azure-ad-token": AD_TOKEN,
        "api-key": AZURE_KEY,
    }
    cases: list[tuple[str | None, dict[str, str], str]] = [
        ("azure-dated", {}, AZURE_KEY),
        ("azure-dated-entra", {}, AD_TOKEN),
    ]
    cases += [(None, headers, f"{AZURE_KEY} or {AD_TOKEN}")]
    for virtual_key, extra, echoed in cases:
        azure.dated.fail_next(401, {"error": {"code": "401", "message": f"Bad key {echoed}"}})
        with pytest.raises(openai.APIStatusError) as caught:
            azure.client(virtual_key, headers=extra).fine_tuning.jobs.list()
        seen.append(caught.value.response.text)
    azure.dated.fail_next(500, f"upstream crashed with key={AZURE_KEY}".encode())
    with pytest.raises(openai.InternalServerError) as crashed:
        azure.client("azure-dated").files.create(
            file=("t.jsonl", TRAINING_JSONL), purpose="fine-tune"
        )
    seen.append(crashed.value.response.text)

    assert all("Bad key" in text for text in seen[:3]), "the message itself still comes back"
    assert "finetune_gateway.access" in {r.name for r in caplog.records}
    for text in [*seen, _gateway_logs(caplog)]:
        assert AZURE_KEY not in text and AD_TOKEN not in text
