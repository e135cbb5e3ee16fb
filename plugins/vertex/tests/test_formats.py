"""OpenAI training lines into Gemini's formats, and Gemini lines checked: table tests."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.jsonl import LineInvalid
from gateway_vertex.formats import LineConverter, convert_line, kind_of


def line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def chat(*messages: dict[str, Any], **extra: Any) -> bytes:
    return line({"messages": list(messages), **extra})


def msg(role: str, content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def text(t: str) -> list[dict[str, str]]:
    return [{"text": t}]


CHAT_CASES = [
    pytest.param(
        chat(msg("user", "Q"), msg("assistant", "A")),
        {"contents": [{"role": "user", "parts": text("Q")}, {"role": "model", "parts": text("A")}]},
        id="plain-turns",
    ),
    pytest.param(
        chat(
            msg("system", "Be brief."), msg("developer", "No emoji."), msg("user"), msg("assistant")
        ),
        {
            "contents": [
                {"role": "user", "parts": text("hi")},
                {"role": "model", "parts": text("hi")},
            ],
            "systemInstruction": {"parts": text("Be brief.") + text("No emoji.")},
        },
        id="system-and-developer-become-system-instruction",
    ),
    pytest.param(
        chat(
            msg("user", [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
            msg("assistant", "c", weight=1),
        ),
        {
            "contents": [
                {"role": "user", "parts": text("a") + text("b")},
                {"role": "model", "parts": text("c")},
            ]
        },
        id="text-parts-stay-parts-weight-1-is-fine",
    ),
    pytest.param(
        chat(msg("user", "1"), msg("assistant", "2"), msg("user", "3"), msg("assistant", "4")),
        {
            "contents": [
                {"role": "user", "parts": text("1")},
                {"role": "model", "parts": text("2")},
                {"role": "user", "parts": text("3")},
                {"role": "model", "parts": text("4")},
            ]
        },
        id="multi-turn",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CHAT_CASES)
def test_convert_line_chat_becomes_gemini_contents(raw: bytes, expected: dict[str, Any]) -> None:
    converted = convert_line(raw, "openai-chat")
    assert converted is not None
    assert json.loads(converted) == expected


REFUSED = [
    pytest.param(
        chat(
            msg("user", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]),
            msg("assistant"),
        ),
        "messages[0].content[0] is an image given as a data URL",
        id="image-data-url",
    ),
    pytest.param(
        chat(
            msg("user", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
            msg("assistant"),
        ),
        "messages[0].content[0] is an image given as a URL",
        id="image-url",
    ),
    pytest.param(
        chat(msg("user"), msg("assistant", None, tool_calls=[{"id": "1"}])),
        "messages[1] has a tool call",
        id="tool-call",
    ),
    pytest.param(
        chat(msg("user"), msg("assistant"), msg("tool", "42", tool_call_id="1")),
        "messages[2] is a tool message",
        id="tool-result",
    ),
    pytest.param(
        chat(msg("user"), msg("system", "late"), msg("assistant")),
        "messages[1] is a system message after the conversation started",
        id="mid-conversation-system",
    ),
    pytest.param(
        chat(msg("user"), msg("assistant", weight=0), msg("user"), msg("assistant")),
        "messages[1] has weight 0",
        id="weight-0",
    ),
    pytest.param(
        chat(msg("user", name="bob"), msg("assistant")), "messages[0] has a 'name'", id="name"
    ),
    pytest.param(
        chat(msg("user", ""), msg("assistant")), "messages[0] has empty content", id="empty"
    ),
    pytest.param(
        chat(msg("user", None), msg("assistant")), "messages[0] has no content", id="none"
    ),
    pytest.param(chat(msg("user")), "must end with an assistant message", id="no-answer"),
    pytest.param(
        chat(msg("user"), msg("assistant"), tools=[{"type": "function"}]), "has 'tools'", id="tools"
    ),
]


@pytest.mark.parametrize(("raw", "message"), REFUSED)
def test_convert_line_refuses_what_gemini_cannot_express(raw: bytes, message: str) -> None:
    with pytest.raises(LineInvalid, match=message.replace("[", r"\[").replace("]", r"\]")):
        convert_line(raw, "openai-chat")


def test_convert_line_preference_becomes_scored_completions() -> None:
    raw = line(
        {
            "input": {"messages": [msg("system", "Be kind."), msg("user", "Hi")]},
            "preferred_output": [msg("assistant", "Hello!")],
            "non_preferred_output": [msg("assistant", "What.")],
        }
    )
    converted = convert_line(raw, "openai-preference")
    assert converted is not None
    assert json.loads(converted) == {
        "contents": [{"role": "user", "parts": text("Hi")}],
        "completions": [
            {"score": 1, "completion": {"role": "model", "parts": text("Hello!")}},
            {"score": 0, "completion": {"role": "model", "parts": text("What.")}},
        ],
        "system_instruction": {"parts": text("Be kind.")},
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {
                "input": {"messages": [msg("user"), msg("assistant")]},
                "preferred_output": [msg("assistant")],
                "non_preferred_output": [msg("assistant")],
            },
            "must end with a user message",
        ),
        (
            {
                "input": {"messages": [msg("user")]},
                "preferred_output": [msg("assistant"), msg("assistant")],
                "non_preferred_output": [msg("assistant")],
            },
            "preferred_output must be exactly one assistant message",
        ),
    ],
)
def test_convert_line_preference_refusals(value: dict[str, Any], message: str) -> None:
    with pytest.raises(LineInvalid, match=message):
        convert_line(line(value), "openai-preference")


GEMINI: dict[str, Any] = {
    "contents": [{"role": "user", "parts": text("Q")}, {"role": "model", "parts": text("A")}]
}
GEMINI_PREFERENCE: dict[str, Any] = {
    "contents": [{"role": "user", "parts": text("Q")}],
    "completions": [
        {"score": 0, "completion": {"role": "model", "parts": text("meh")}},
        {"score": 1, "completion": {"role": "model", "parts": text("good")}},
    ],
}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"messages": [msg("user")]}, "openai-chat"),
        (
            {"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []},
            "openai-preference",
        ),
        (GEMINI, "gemini"),
        (GEMINI_PREFERENCE, "gemini-preference"),
        # A value that merely reads like a key does not fool the detection.
        ({"messages": [msg("user", "preferred_output contents")]}, "openai-chat"),
    ],
)
def test_kind_of_tells_formats_apart_by_keys(value: dict[str, Any], kind: str) -> None:
    assert kind_of(line(value)) == kind


def test_kind_of_refuses_an_unknown_shape() -> None:
    with pytest.raises(LineInvalid, match="neither an OpenAI example"):
        kind_of(line({"prompt": "a", "completion": "b"}))


def test_convert_line_gemini_passes_through_unchanged() -> None:
    assert convert_line(line(GEMINI), "gemini") is None
    assert convert_line(line(GEMINI_PREFERENCE), "gemini-preference") is None


@pytest.mark.parametrize(
    ("value", "kind", "error"),
    [
        ({"contents": []}, "gemini", msgspec.ValidationError),
        (
            {"contents": [{"role": "assistant", "parts": text("x")}]},
            "gemini",
            msgspec.ValidationError,
        ),
        ({"contents": [{"role": "user", "parts": [{}]}]}, "gemini", LineInvalid),
        (
            {**GEMINI_PREFERENCE, "completions": GEMINI_PREFERENCE["completions"][:1]},
            "gemini-preference",
            LineInvalid,
        ),
    ],
)
def test_convert_line_gemini_lines_are_checked(
    value: dict[str, Any], kind: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        convert_line(line(value), kind)


def test_line_converter_first_line_decides_and_mixing_is_named() -> None:
    converter = LineConverter()
    converter(chat(msg("user"), msg("assistant")))
    assert converter.kind == "openai-chat" and converter.converts
    with pytest.raises(
        LineInvalid, match="is a Gemini example, but the file started with an OpenAI"
    ):
        converter(line(GEMINI))
    assert converter.take() == b"", "a refused file's output is dropped, not kept"


def test_line_converter_gemini_file_writes_nothing() -> None:
    converter = LineConverter()
    converter(line(GEMINI))
    converter(line(GEMINI))
    assert converter.kind == "gemini" and not converter.converts
    assert converter.take() == b""


def test_line_converter_keeps_no_output_once_a_line_failed() -> None:
    """A refused file must not hold its converted lines in memory until the end.

    ``gateway.jsonl.checked`` stops yielding chunks after the first bad line (so the
    stager never calls ``take``) but reads on to the end: whatever the converter keeps
    after that grows with the rest of the file.
    """
    converter = LineConverter()
    converter(chat(msg("user"), msg("assistant")))
    with pytest.raises(LineInvalid):
        converter(chat(msg("user")))  # no assistant turn
    for _ in range(50):
        converter(chat(msg("user"), msg("assistant")))
    assert converter.take() == b""


def test_line_converter_gemini_file_refuses_a_preference_line() -> None:
    converter = LineConverter()
    converter(line(GEMINI))
    with pytest.raises(LineInvalid, match="is a Gemini preference example, but the file started"):
        converter(line(GEMINI_PREFERENCE))
