"""Training-line conversion, one line at a time: what each Bedrock family receives."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.jsonl import LINE_ERRORS
from gateway_bedrock.formats import LineFormat, check_line, convert_line

CONVERSATION, CLAUDE, PROMPT = (
    LineFormat.CONVERSATION,
    LineFormat.CLAUDE,
    LineFormat.PROMPT_COMPLETION,
)


def line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def chat(*messages: tuple[str, Any], **extra: Any) -> bytes:
    return line({"messages": [{"role": r, "content": c} for r, c in messages], **extra})


SYS_USER_ASSISTANT = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
PARTS = chat(
    ("user", [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]), ("assistant", "C")
)
TWO_TURNS = chat(("user", "1"), ("assistant", "2"), ("user", "3"), ("assistant", "4"))
DEVELOPER = chat(("developer", "Rules"), ("system", "More"), ("user", "Q"), ("assistant", "A"))


@pytest.mark.parametrize(
    ("raw", "target", "expected"),
    [
        (
            SYS_USER_ASSISTANT,
            CONVERSATION,
            {
                "schemaVersion": "bedrock-conversation-2024",
                "messages": [
                    {"role": "user", "content": [{"text": "Hi"}]},
                    {"role": "assistant", "content": [{"text": "Hello"}]},
                ],
                "system": [{"text": "Be brief."}],
            },
        ),
        (
            PARTS,
            CONVERSATION,
            {
                "schemaVersion": "bedrock-conversation-2024",
                "messages": [
                    {"role": "user", "content": [{"text": "AB"}]},
                    {"role": "assistant", "content": [{"text": "C"}]},
                ],
            },
        ),
        (
            SYS_USER_ASSISTANT,
            CLAUDE,
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                ],
                "system": "Be brief.",
            },
        ),
        (
            DEVELOPER,
            CLAUDE,
            {
                "messages": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"},
                ],
                "system": "Rules\n\nMore",
            },
        ),
        (SYS_USER_ASSISTANT, PROMPT, {"prompt": "Be brief.\n\nHi", "completion": "Hello"}),
        (PARTS, PROMPT, {"prompt": "AB", "completion": "C"}),
        (
            TWO_TURNS,
            CONVERSATION,
            {
                "schemaVersion": "bedrock-conversation-2024",
                "messages": [
                    {"role": role, "content": [{"text": text}]}
                    for role, text in [
                        ("user", "1"),
                        ("assistant", "2"),
                        ("user", "3"),
                        ("assistant", "4"),
                    ]
                ],
            },
        ),
    ],
)
def test_convert_line_writes_the_target_format(
    raw: bytes, target: LineFormat, expected: dict[str, Any]
) -> None:
    assert json.loads(convert_line(raw, target, "model-x")) == expected


BEDROCK_LINES = [
    (
        line(
            {
                "schemaVersion": "bedrock-conversation-2024",
                "messages": [
                    {"role": "user", "content": [{"text": "see"}, {"image": {"format": "png"}}]},
                    {"role": "assistant", "content": [{"text": "a cat"}]},
                ],
            }
        ),
        CONVERSATION,
    ),
    (
        line(
            {
                "system": "S",
                "messages": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"},
                ],
            }
        ),
        CLAUDE,
    ),
    (line({"prompt": "P", "completion": "C"}), PROMPT),
]


@pytest.mark.parametrize(("raw", "target"), BEDROCK_LINES)
def test_convert_line_passes_lines_in_the_target_format_through_unchanged(
    raw: bytes, target: LineFormat
) -> None:
    assert convert_line(raw, target, "model-x") is raw
    check_line(raw)


@pytest.mark.parametrize(("raw", "own"), BEDROCK_LINES)
def test_convert_line_refuses_another_bedrock_format(raw: bytes, own: LineFormat) -> None:
    other = next(f for f in LineFormat if f is not own)
    with pytest.raises(LINE_ERRORS, match="takes"):
        convert_line(raw, other, "model-x")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"not json", "JSON"),
        (line({"text": "hello"}), "no 'messages'"),
        (chat(("user", "Hi")), "ends with a user message"),
        (
            chat(("assistant", "Hi"), ("user", "?"), ("assistant", "!")),
            "turn 1 is from the assistant",
        ),
        (chat(("user", "a"), ("user", "b"), ("assistant", "c")), "turn 2 is from the user"),
        (chat(("system", "only")), "no user or assistant"),
        (
            chat(
                ("user", "a"),
                ("assistant", "b"),
                ("system", "late"),
                ("user", "c"),
                ("assistant", "d"),
            ),
            "after the conversation",
        ),
        (
            chat(
                ("user", [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]),
                ("assistant", "b"),
            ),
            "image",
        ),
        (
            line(
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "tool_calls": [{"id": "1"}]},
                    ]
                }
            ),
            "tool call",
        ),
        (
            line(
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b", "weight": 0},
                    ]
                }
            ),
            "weight 0",
        ),
        (chat(("user", "a"), ("assistant", "b"), tools=[{"type": "function"}]), "tool definitions"),
        (
            line({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}),
            "DPO",
        ),
        (line({"schemaVersion": "other-2023", "messages": []}), "schemaVersion"),
        (
            line(
                {
                    "schemaVersion": "bedrock-conversation-2024",
                    "messages": [{"role": "user", "content": [{}]}],
                }
            ),
            "exactly one",
        ),
        (line({"prompt": "P"}), "completion"),
    ],
)
def test_check_line_refuses_what_bedrock_cannot_take(raw: bytes, match: str) -> None:
    with pytest.raises(LINE_ERRORS, match=match):
        check_line(raw)


def test_convert_line_single_turn_models_refuse_a_second_exchange() -> None:
    check_line(TWO_TURNS)  # fine for conversational models, so fine at upload
    with pytest.raises(LINE_ERRORS, match="2 exchanges; titan takes single-turn"):
        convert_line(TWO_TURNS, PROMPT, "titan")


def test_classification_uses_top_level_keys_only() -> None:
    # A tool schema property named "system" must not make an OpenAI line look like Claude's.
    nested = chat(("user", "a"), ("assistant", "b"), extra={"system": {"schemaVersion": 1}})
    assert json.loads(convert_line(nested, CLAUDE, "m"))["messages"][0] == {
        "role": "user",
        "content": "a",
    }
    assert msgspec.json.decode(convert_line(nested, CLAUDE, "m")).get("system") is None
