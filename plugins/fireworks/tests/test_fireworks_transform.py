"""The Fireworks plugin's pure pieces: settings from headers, line conversion, errors."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict

from gateway.errors import BadRequest, Unauthorized
from gateway.jsonl import LineInvalid
from gateway_fireworks.formats import to_fireworks_line
from gateway_fireworks.settings import FireworksSettings, settings_from_headers
from gateway_fireworks.transform import STATES, parse_error
from gateway_fireworks.wire import JobState


def test_settings_from_headers_reads_key_and_account() -> None:
    headers = CIMultiDict(
        {"Authorization": "Bearer fw-1", "x-portkey-fireworks-account-id": "acme"}
    )
    assert settings_from_headers(headers) == FireworksSettings(api_key="fw-1", account_id="acme")


@pytest.mark.parametrize(
    ("headers", "error", "param"),
    [
        ({"x-portkey-fireworks-account-id": "acme"}, Unauthorized, None),
        ({"Authorization": "Bearer fw-1"}, BadRequest, "x-portkey-fireworks-account-id"),
        (
            {"Authorization": "Bearer fw-1", "x-portkey-fireworks-account-id": "../other"},
            BadRequest,
            "x-portkey-fireworks-account-id",
        ),
    ],
    ids=["no-key", "no-account", "account-leaves-its-path-segment"],
)
def test_settings_from_headers_refuses_what_is_missing_or_unsafe(
    headers: dict[str, str], error: type[Exception], param: str | None
) -> None:
    with pytest.raises(error) as caught:
        settings_from_headers(CIMultiDict(headers))
    assert getattr(caught.value, "param", None) == param


def test_states_cover_every_state_of_the_spec_enum() -> None:
    assert set(STATES) == set(JobState.__args__)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
            b'"content": "a"}], "extra": 1}',
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        ),
        (
            b'{"messages": [{"role": "developer", "content": [{"type": "text", "text": "x"}]}]}',
            {"messages": [{"role": "system", "content": "x"}]},
        ),
    ],
)
def test_to_fireworks_line_converts_what_differs(line: bytes, expected: object) -> None:
    assert json.loads(to_fireworks_line(line)) == expected


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"messages": [{"role": "user", "content": "q", "name": "bob"}]}', "messages[0]"),
        (b'{"messages": [{"role": "assistant", "content": "a", "weight": 0}]}', "weight"),
        (b'{"messages": [{"role": "tool", "content": "42"}]}', "tool"),
        (b'{"prompt": "q", "completion": "a"}', "expected 'messages'"),
    ],
)
def test_to_fireworks_line_refuses_what_a_chat_line_cannot_say(line: bytes, says: str) -> None:
    with pytest.raises(LineInvalid) as caught:
        to_fireworks_line(line)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"code": 3, "message": "bad epochs", "details": []}', ("bad epochs", None, None)),
        (b'{"error": {"message": "nope", "code": 404}}', ("nope", None, "404")),
        (b"upstream connect error", ("upstream connect error", None, None)),
    ],
)
def test_parse_error_reads_each_envelope(
    raw: bytes, expected: tuple[str, str | None, str | None]
) -> None:
    assert parse_error(raw, "Bad Request") == expected
