"""The fast path for the common OpenAI chat line: plain text messages, nothing else.

Most training lines are ``{"messages": [{"role", "content": "text"}, ...]}``. Such a line
is decoded once, with every message's text kept as the raw JSON string literal it came
in (``msgspec.Raw``): checking it needs only the roles, and converting it writes those
literals straight into the Bedrock line, so no text is decoded into a Python string and
encoded again. That halves the cost of the check and of each conversion (the profile in
docs/benchmarks.md).

The fast path only ever accepts a line the Struct path in ``formats`` would accept, and
writes the same bytes: whatever it is not sure of (an odd field, a role out of order, an
escape sequence it would copy differently, a byte that is not UTF-8) makes it answer
``None``, and the caller takes the Struct path, which reports the problem as before.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

_ABSENT = msgspec.Raw()
_EMPTY = Annotated[list[Any], msgspec.Meta(max_length=0)]


class _Message(msgspec.Struct):
    """A message as the Struct path accepts it and converts it without a closer look:
    msgspec refuses anything else here, in C, and the Struct path takes over."""

    role: Literal["system", "developer", "user", "assistant"]
    content: msgspec.Raw = _ABSENT  # a string literal, checked below
    name: None = None
    weight: Literal[1] | None = None  # weight 0 is refused by the Struct path
    tool_calls: _EMPTY | None = None
    tool_call_id: str | None = None
    function_call: None = None


class TopLevel(msgspec.Struct):
    """The top-level keys that tell the line formats apart (``formats.classify``), raw;
    an absent one is an empty Raw (Raw cannot sit in a union)."""

    system: msgspec.Raw = _ABSENT
    schemaVersion: msgspec.Raw = _ABSENT
    prompt: msgspec.Raw = _ABSENT
    completion: msgspec.Raw = _ABSENT
    tools: msgspec.Raw = _ABSENT
    functions: msgspec.Raw = _ABSENT
    preferred_output: msgspec.Raw = _ABSENT


class _Line(TopLevel):
    messages: list[_Message] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(_Line)
_text = msgspec.json.Decoder(str)
_encode = msgspec.json.Encoder().encode


class RawExample(msgspec.Struct):
    """An OpenAI chat line's system prompts and turns, each a JSON string literal as
    ``msgspec`` would encode it (quotes included)."""

    system: list[bytes]
    turns: list[tuple[Literal["user", "assistant"], bytes]]


def raw_example(raw: bytes) -> RawExample | None:
    """The line as a ``RawExample`` when it is a plain-text OpenAI chat line the Struct
    path would accept; None for anything else (even a valid line of another shape)."""
    try:
        line = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if (
        not line.messages
        or line.system
        or line.schemaVersion
        or line.prompt
        or line.completion
        or line.tools
        or line.functions
        or line.preferred_output
    ):
        return None
    # Without an escape or a non-ASCII byte, every literal is already what msgspec
    # would write (the usual case: one scan of the line, in C, instead of one per text).
    plain = raw.isascii() and b"\\" not in raw
    system: list[bytes] = []
    turns: list[tuple[Literal["user", "assistant"], bytes]] = []
    for message in line.messages:
        text = bytes(message.content)
        if not text.startswith(b'"'):
            return None  # parts, null or absent: the Struct path reads those
        if not plain:
            canonical = _canonical(text)
            if canonical is None:
                return None
            text = canonical
        role = message.role
        if role == "user" or role == "assistant":
            turns.append((role, text))
        elif turns:
            return None  # a system prompt after the first turn: the Struct path says so
        else:
            system.append(text)
    roles = [role for role, _ in turns]
    # The same rule as formats._check_roles: alternating, from the user, ending with
    # the assistant.
    if (
        not roles
        or roles[-1] != "assistant"
        or roles[0::2].count("user") + roles[1::2].count("assistant") != len(roles)
    ):
        return None
    return RawExample(system, turns)


def _canonical(literal: bytes) -> bytes | None:
    """A string literal as msgspec encodes its string; None if it is not UTF-8."""
    if b"\\" in literal:
        # Escapes are written as msgspec writes them (\u00e9 as é, \/ as /), so a
        # converted line is the same bytes whichever path made it.
        try:
            return _encode(_text.decode(literal))
        except msgspec.DecodeError:  # not UTF-8
            return None
    try:
        literal.decode()  # msgspec checks UTF-8 when it decodes a string; so must this
    except UnicodeDecodeError:
        return None
    return literal


# ---- writing the Bedrock formats from literals -------------------------------------------

_CONVERSATION_HEAD = b'{"schemaVersion":"bedrock-conversation-2024","messages":['
_TURN = {
    "user": (b'{"role":"user","content":[{"text":', b"}]}"),
    "assistant": (b'{"role":"assistant","content":[{"text":', b"}]}"),
}
_CLAUDE_TURN = {
    "user": (b'{"role":"user","content":', b"}"),
    "assistant": (b'{"role":"assistant","content":', b"}"),
}
_PARAGRAPH = b"\\n\\n"  # "\n\n" inside a JSON string


def conversation(example: RawExample) -> bytes:
    """The bedrock-conversation-2024 line, field for field as ``formats.ConversationLine``."""
    out = [_CONVERSATION_HEAD]
    for index, (role, text) in enumerate(example.turns):
        head, tail = _TURN[role]
        out += (b"," if index else b"", head, text, tail)
    out.append(b"]")
    if example.system:
        out.append(b',"system":[')
        out.append(b",".join(b'{"text":' + text + b"}" for text in example.system))
        out.append(b"]")
    out.append(b"}")
    return b"".join(out)


def claude(example: RawExample) -> bytes:
    """Claude 3 Haiku's line, as ``formats.ClaudeLine``; system prompts joined by a blank line."""
    out = [b'{"messages":[']
    for index, (role, text) in enumerate(example.turns):
        head, tail = _CLAUDE_TURN[role]
        out += (b"," if index else b"", head, text, tail)
    out.append(b"]")
    if example.system:
        out += (b',"system":', _joined(example.system))
    out.append(b"}")
    return b"".join(out)


def prompt_completion(example: RawExample) -> bytes | None:
    """The {"prompt", "completion"} line; None for more than one exchange (the Struct path
    says why)."""
    if len(example.turns) != 2:
        return None
    (_, prompt), (_, completion) = example.turns
    return (
        b'{"prompt":' + _joined([*example.system, prompt]) + b',"completion":' + completion + b"}"
    )


def _joined(literals: list[bytes]) -> bytes:
    """String literals as one literal, separated by a blank line (as "\\n\\n".join)."""
    if len(literals) == 1:
        return literals[0]
    return b'"' + _PARAGRAPH.join(literal[1:-1] for literal in literals) + b'"'
