"""Together's pure pieces: training lines, statuses, ids and settings from headers."""

from __future__ import annotations

import msgspec
import pytest
from gateway_together import transform as tf
from gateway_together.provider import TogetherProvider, TogetherSettings
from multidict import CIMultiDict

from gateway.answers import UpstreamBadResponse
from gateway.errors import NotFound, Unauthorized
from gateway.jsonl import LineInvalid


def test_convert_line_chat_becomes_together_conversation() -> None:
    line = (
        b'{"messages": [{"role": "developer", "content": "Be brief"},'
        b' {"role": "user", "content": [{"type": "text", "text": "Hi "},'
        b' {"type": "text", "text": "there"}]}, {"role": "assistant", "content": "Yo"}]}'
    )
    assert msgspec.json.decode(tf.convert_line(line)) == {
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Yo"},
        ]
    }


def test_convert_line_preference_keeps_together_columns() -> None:
    msg = b'[{"role": "assistant", "content": "%s"}]'
    line = (
        b'{"input": {"messages": [{"role": "user", "content": "Q"}]}, "preferred_output": '
        + msg % b"good"
        + b', "non_preferred_output": '
        + msg % b"bad"
        + b"}"
    )
    out = msgspec.json.decode(tf.convert_line(line))
    assert out["preferred_output"] == [{"role": "assistant", "content": "good"}]
    assert out["input"] == {"messages": [{"role": "user", "content": "Q"}]}


@pytest.mark.parametrize(
    ("line", "named"),
    [
        (b'{"messages": [{"role": "tool", "content": "1"}]}', "messages[0]"),
        (b'{"messages": [{"role": "assistant", "tool_calls": [{}]}]}', "messages[0]"),
        (b'{"messages": [{"role": "user", "content": "a", "weight": 0}]}', "weight"),
        (b'{"messages": [{"role": "user", "content": "a"}], "tools": [{}]}', "tools"),
        (b'{"foo": 1}', "not a fine-tuning line"),
    ],
)
def test_convert_line_refuses_what_together_cannot_express(line: bytes, named: str) -> None:
    with pytest.raises(LineInvalid, match=named.replace("[", r"\[")):
        tf.convert_line(line)


def test_convert_line_passes_together_formats_through() -> None:
    assert tf.convert_line(b'{"prompt": "a", "completion": "b"}\n') == (
        b'{"prompt": "a", "completion": "b"}'
    )


def test_job_from_together_unknown_status_is_502_naming_it() -> None:
    job = tf.TogetherJob(
        id="ft-1", status="paused", created_at="2026-01-01T00:00:00Z", updated_at="x"
    )
    with pytest.raises(UpstreamBadResponse) as caught:
        tf.job_from_together(job)
    assert caught.value.field == "$.status"


@pytest.mark.parametrize("value", ["../admin", "ft-1/cancel", "a?b", ""])
def test_native_id_refuses_what_is_not_an_id(value: str) -> None:
    with pytest.raises(NotFound):
        tf.native_id(value, "file")


def test_settings_from_headers_reads_bearer_key() -> None:
    headers = CIMultiDict({"Authorization": "Bearer tgp_abc"})
    assert TogetherProvider.settings_from_headers(headers) == TogetherSettings(api_key="tgp_abc")
    with pytest.raises(Unauthorized):
        TogetherProvider.settings_from_headers(CIMultiDict())
