"""The fast path for plain-text chat lines writes what the Struct path wrote, or steps aside."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.jsonl import LINE_ERRORS
from gateway_bedrock import fastlines, formats
from gateway_bedrock.formats import LineFormat


def struct_path(raw: bytes, target: LineFormat) -> bytes:
    """The conversion as it was before the fast path: decode into Structs, encode."""
    _, probe = formats.classify(raw)
    example = formats.openai_example(probe)
    if target is LineFormat.CONVERSATION:
        return formats._encoder.encode(formats.to_conversation(example))
    if target is LineFormat.CLAUDE:
        return formats._encoder.encode(formats.to_claude(example))
    return formats._encoder.encode(formats.to_prompt_completion(example, "m"))


def chat(*messages: dict[str, Any], ensure_ascii: bool = True, **top: Any) -> bytes:
    return json.dumps({"messages": list(messages), **top}, ensure_ascii=ensure_ascii).encode()


def m(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


PLAIN = [
    chat(m("user", "Hi"), m("assistant", "Hello")),
    chat(m("system", "Be brief."), m("user", "Hi"), m("assistant", "Hello")),
    chat(m("developer", "Rules"), m("system", "More"), m("user", "Q"), m("assistant", "A")),
    # Escapes are written as msgspec writes them: \u00e9 becomes é, \/ becomes /.
    chat(m("user", 'Caf\u00e9 "quoted"\n\ttab \\ slash /'), m("assistant", "\u2028 ok")),
    chat(m("user", "naïve ünïcode"), m("assistant", "日本語"), ensure_ascii=False),
    b'{"messages":[{"role":"user","content":"a\\/b"},{"role":"assistant","content":"c"}]}',
    chat(m("user", "1"), m("assistant", "2"), m("user", "3"), m("assistant", "4")),
    chat(m("user", "a", weight=None, name=None), m("assistant", "b", weight=1, tool_calls=[])),
    chat(m("user", ""), m("assistant", "")),
    chat(m("user", "a"), m("assistant", "b"), extra={"system": "nested, not top-level"}),
]


@pytest.mark.parametrize("raw", PLAIN)
@pytest.mark.parametrize("target", list(LineFormat))
def test_convert_line_writes_the_same_bytes_as_the_struct_path(
    raw: bytes, target: LineFormat
) -> None:
    assert fastlines.raw_example(raw) is not None, "a plain line takes the fast path"
    try:
        expected = struct_path(raw, target)
    except LINE_ERRORS:  # more than one exchange for a single-turn model
        with pytest.raises(LINE_ERRORS, match="single-turn"):
            formats.convert_line(raw, target, "titan")
        return
    assert formats.convert_line(raw, target, "m") == expected


ASIDE = [
    (chat(m("user", "a"), m("assistant", "b", weight=0)), "weight 0"),
    (chat(m("user", "a", name="bob"), m("assistant", "b")), "'name'"),
    (chat(m("user", "a"), m("assistant", None, tool_calls=[{"id": "1"}])), "tool call"),
    (chat(m("user", "a"), m("assistant", "b"), m("system", "late")), "after the conversation"),
    (chat(m("user", "a"), m("user", "b"), m("assistant", "c")), "turn 2 is from the user"),
    (chat(m("user", "a")), "ends with a user message"),
    (chat(m("tool", "x"), m("user", "a"), m("assistant", "b")), "tool message"),
    (chat(m("user", "a", tool_call_id=5), m("assistant", "b")), "tool_call_id"),
    (
        b'{"messages":[{"role":"user","content":"\xff"},{"role":"assistant","content":"b"}]}',
        "UTF-8",
    ),
    (chat(m("user", "a"), m("assistant", "b"), tools=None), "tool definitions"),
]


@pytest.mark.parametrize(("raw", "match"), ASIDE)
def test_lines_the_fast_path_cannot_judge_get_the_struct_paths_verdict(
    raw: bytes, match: str
) -> None:
    assert fastlines.raw_example(raw) is None
    with pytest.raises(LINE_ERRORS, match=match):
        formats.check_line(raw)
    with pytest.raises(LINE_ERRORS, match=match):
        formats.convert_line(raw, LineFormat.CONVERSATION, "m")


def test_text_parts_step_aside_and_still_convert() -> None:
    parts = chat(m("user", [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]),
                 m("assistant", "C"))  # fmt: skip
    assert fastlines.raw_example(parts) is None
    line = json.loads(formats.convert_line(parts, LineFormat.CLAUDE, "m"))
    assert line["messages"][0] == {"role": "user", "content": "AB"}
