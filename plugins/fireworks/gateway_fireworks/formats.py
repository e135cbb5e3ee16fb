"""OpenAI chat JSONL -> the chat lines a Fireworks dataset holds (format CHAT); no I/O.

Fireworks' chat dataset lines are ``{"messages": [{"role", "content": str}]}``. OpenAI's
lines may say the same in ways Fireworks' do not: content as a list of text parts (joined
here) and the ``developer`` role (Fireworks' ``system``). What no Fireworks chat line can
say is refused with the line's number, never dropped: images, tool calls and tool
messages, ``name``, ``weight``, and preference (DPO) lines, as these jobs are supervised.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.jsonl import LineInvalid
from gateway.training import ChatMessage, _AnyOpenAILine, decode_preference_line, message_text

FireworksRole = Literal["system", "user", "assistant"]


class _Message(msgspec.Struct, kw_only=True):
    role: FireworksRole
    content: str


class _Line(msgspec.Struct, kw_only=True):
    messages: list[_Message]


_any_line = msgspec.json.Decoder(_AnyOpenAILine)
_encoder = msgspec.json.Encoder()


def to_fireworks_line(raw: bytes) -> bytes:
    """One OpenAI training line as a Fireworks chat line; raises ``LineInvalid``."""
    line = _any_line.decode(raw)
    if line.input is not None or line.preferred_output is not None:
        decode_preference_line(raw)  # a malformed one says what is wrong with it
        raise LineInvalid(
            "a preference (DPO) line; Fireworks supervised fine-tuning takes chat lines "
            '({"messages": [...]}) only'
        )
    if line.messages is None:
        raise LineInvalid("not an OpenAI chat line: expected 'messages'")
    return _encoder.encode(_Line(messages=[_message(m, i) for i, m in enumerate(line.messages)]))


def _message(message: ChatMessage, index: int) -> _Message:
    where = f"messages[{index}]"
    if message.role in ("tool", "function") or message.tool_calls or message.function_call:
        raise LineInvalid(f"{where} is a tool call or tool result; only text messages convert")
    if message.name is not None:
        raise LineInvalid(f"{where} has 'name', which a Fireworks chat line cannot carry")
    if message.weight is not None:
        raise LineInvalid(f"{where} has 'weight', which this gateway does not send to Fireworks")
    role: FireworksRole = "system" if message.role == "developer" else message.role  # type: ignore[assignment]
    return _Message(role=role, content=message_text(message, where))
