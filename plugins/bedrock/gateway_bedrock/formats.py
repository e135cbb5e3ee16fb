"""Training lines: OpenAI chat lines to the JSONL format a Bedrock base model takes.

Pure functions over one line's bytes, used by ``gateway.jsonl.checked`` at upload and
``gateway.jsonl.converted`` at job create. Bedrock takes three line formats, by model:

- ``bedrock-conversation-2024`` (Nova and other conversational models)
  ``{"schemaVersion", "system": [{"text"}], "messages": [{"role", "content": [{"text"}]}]}``
- Claude 3 Haiku: ``{"system": str, "messages": [{"role", "content": str}]}``
- Titan, Cohere, Llama 3.1 and 2: ``{"prompt", "completion"}``, one turn only.

A line already in the format the model takes passes through byte for byte. Anything that
cannot be carried over faithfully (tool calls, images, ``weight: 0``, a message's
``name``, a second turn for a single-turn model) raises ``LineInvalid``: the line is
reported, never dropped or bent.

Each line is first decoded into ``_Probe``, whose fields stay raw, to tell the formats
apart by their top-level keys (a nested key such as a tool schema's ``"system"`` cannot
fool it), then only the part that matters is decoded into Structs. A plain-text OpenAI
chat line, the common case, takes ``fastlines`` instead: one decode, its texts copied as
they are; any other line, and any line the fast path is unsure of, comes here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Literal

import msgspec

from gateway.jsonl import LineInvalid
from gateway.training import ChatMessage, message_text
from gateway_bedrock import fastlines

CONVERSATION_SCHEMA = "bedrock-conversation-2024"


class LineFormat(enum.Enum):
    """A Bedrock training-line format; the value names staged objects."""

    CONVERSATION = "conversation"
    CLAUDE = "claude-messages"
    PROMPT_COMPLETION = "prompt-completion"


_DESCRIPTION = {
    LineFormat.CONVERSATION: f"the {CONVERSATION_SCHEMA} format",
    LineFormat.CLAUDE: 'Claude\'s {"system", "messages"} format',
    LineFormat.PROMPT_COMPLETION: 'the {"prompt", "completion"} format',
}


def describe(line_format: LineFormat) -> str:
    return _DESCRIPTION[line_format]


# Raw is immutable, so one empty value can be every absent field's default.
_ABSENT = msgspec.Raw()


class _Probe(fastlines.TopLevel):
    """Top-level keys only, the messages raw too."""

    messages: msgspec.Raw = _ABSENT


# ---- Bedrock's own formats, as written and as checked ----------------------------------


class Text(msgspec.Struct):
    text: str


class ContentBlock(msgspec.Struct, forbid_unknown_fields=True):
    """A conversation content block: text, or media Bedrock reads from S3 itself."""

    text: str | None = None
    image: dict[str, object] | None = None
    video: dict[str, object] | None = None
    document: dict[str, object] | None = None


class ConversationMessage(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: list[Text]


class ConversationLine(msgspec.Struct):
    schemaVersion: str
    messages: list[ConversationMessage]
    # Left out when the example has no system prompt (UNSET is never encoded).
    system: list[Text] | msgspec.UnsetType = msgspec.UNSET


class _CheckedMessage(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: list[ContentBlock]


class _CheckedConversation(msgspec.Struct):
    """A conversation line as read for checking: media blocks allowed, as Bedrock does."""

    schemaVersion: str
    messages: list[_CheckedMessage]
    system: list[Text] | None = None


class ClaudeMessage(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str


class ClaudeLine(msgspec.Struct):
    messages: list[ClaudeMessage]
    system: str | msgspec.UnsetType = msgspec.UNSET


class PromptCompletionLine(msgspec.Struct):
    prompt: str
    completion: str


_probe = msgspec.json.Decoder(_Probe)
_openai_messages = msgspec.json.Decoder(list[ChatMessage])
_conversation = msgspec.json.Decoder(_CheckedConversation)
_claude = msgspec.json.Decoder(ClaudeLine)
_prompt_completion = msgspec.json.Decoder(PromptCompletionLine)
_encoder = msgspec.json.Encoder()

LineKind = Literal["openai"] | LineFormat


# ---- reading a line --------------------------------------------------------------------


def classify(raw: bytes) -> tuple[LineKind, _Probe]:
    """Which format a line is in, by its top-level keys; raises if it is in none."""
    probe = _probe.decode(raw)
    if probe.schemaVersion:
        return LineFormat.CONVERSATION, probe
    if probe.prompt or probe.completion:
        return LineFormat.PROMPT_COMPLETION, probe
    if probe.preferred_output:
        raise LineInvalid("is a preference (DPO) line; Bedrock fine-tuning is supervised only")
    if not probe.messages:
        raise LineInvalid(
            "has no 'messages': expected an OpenAI chat line or a line in a Bedrock format"
        )
    if probe.system:
        return LineFormat.CLAUDE, probe
    return "openai", probe


def _check_bedrock(kind: LineFormat, raw: bytes) -> None:
    """A line in one of Bedrock's formats, checked against that format's shape."""
    if kind is LineFormat.CONVERSATION:
        line = _conversation.decode(raw)
        if line.schemaVersion != CONVERSATION_SCHEMA:
            raise LineInvalid(
                f"has schemaVersion {line.schemaVersion!r}; expected {CONVERSATION_SCHEMA!r}"
            )
        for index, message in enumerate(line.messages):
            for block_index, block in enumerate(message.content):
                _check_block(block, f"messages[{index}].content[{block_index}]")
        _check_roles([m.role for m in line.messages])
    elif kind is LineFormat.CLAUDE:
        _check_roles([m.role for m in _claude.decode(raw).messages])
    else:
        _prompt_completion.decode(raw)


def _check_block(block: ContentBlock, where: str) -> None:
    present = [block.text, block.image, block.video, block.document]
    if sum(value is not None for value in present) != 1:
        raise LineInvalid(f"{where} must hold exactly one of text, image, video or document")


class Example(msgspec.Struct):
    """An OpenAI chat line reduced to what every Bedrock format can carry."""

    system: list[str]
    turns: list[tuple[Literal["user", "assistant"], str]]


def openai_example(probe: _Probe) -> Example:
    """The system prompts and user/assistant turns of an OpenAI chat line, or LineInvalid.

    The hot loop of every upload and conversion: a plain text message takes the fast
    path, and error locations are only spelled out for a message that needs a closer look.
    """
    if probe.tools or probe.functions:
        raise LineInvalid("has tool definitions; Bedrock fine-tuning takes text messages only")
    messages = _openai_messages.decode(probe.messages)
    if not messages:
        raise LineInvalid("has an empty 'messages' list")
    system: list[str] = []
    turns: list[tuple[Literal["user", "assistant"], str]] = []
    for index, message in enumerate(messages):
        text = message.content
        if (
            type(text) is not str
            or message.tool_calls
            or message.function_call is not None
            or message.weight == 0
            or message.name is not None
        ):
            text = _text_of(message, f"messages[{index}]")
        role = message.role
        if role == "user" or role == "assistant":
            turns.append((role, text))
        elif role == "system" or role == "developer":
            if turns:
                raise LineInvalid(
                    f"messages[{index}] is a {role} message after the conversation started"
                )
            system.append(text)
        else:
            raise LineInvalid(f"messages[{index}] is a {role} message; Bedrock takes text only")
    _check_roles([role for role, _ in turns])
    return Example(system, turns)


def _text_of(message: ChatMessage, where: str) -> str:
    if message.tool_calls or message.function_call is not None:
        raise LineInvalid(f"{where} is a tool call; Bedrock takes text messages only")
    if message.weight == 0:
        # Bedrock trains on every assistant message: honouring weight 0 is impossible
        # and ignoring it would train on what the user excluded.
        raise LineInvalid(f"{where} has weight 0, which Bedrock cannot honour")
    if message.name is not None:
        # OpenAI trains on the name; Bedrock's formats have nowhere to put it.
        raise LineInvalid(f"{where} has a 'name'; Bedrock's formats have no participant names")
    return message_text(message, where)


def _check_roles(roles: list[str]) -> None:
    if not roles:
        raise LineInvalid("has no user or assistant message")
    # Counted in C, as this runs for every line; the culprit is looked for only on failure.
    if roles[0::2].count("user") + roles[1::2].count("assistant") != len(roles):
        index = next(i for i, role in enumerate(roles) if role != ("user", "assistant")[i % 2])
        raise LineInvalid(
            f"turn {index + 1} is from the {roles[index]}; Bedrock needs turns that alternate "
            "user, assistant, user, ... starting with the user"
        )
    if roles[-1] != "assistant":
        raise LineInvalid("ends with a user message; the last message must be the assistant's")


def check_line(raw: bytes) -> None:
    """Upload check: an OpenAI chat line Bedrock can use, or a valid Bedrock-format line."""
    if fastlines.raw_example(raw) is not None:
        return
    kind, probe = classify(raw)
    if kind == "openai":
        openai_example(probe)
    else:
        _check_bedrock(kind, raw)


# ---- writing a line --------------------------------------------------------------------


def convert_line(raw: bytes, target: LineFormat, model: str) -> bytes:
    """One line in ``target``'s format: converted from OpenAI's, or passed through."""
    fast = fastlines.raw_example(raw)
    if fast is not None:
        written = _FAST_WRITERS[target](fast)
        if written is not None:
            return written
    kind, probe = classify(raw)
    if kind != "openai":
        if kind is not target:
            raise LineInvalid(f"is in {describe(kind)}, but {model} takes {describe(target)}")
        _check_bedrock(kind, raw)
        return raw
    example = openai_example(probe)
    if target is LineFormat.CONVERSATION:
        return _encoder.encode(to_conversation(example))
    if target is LineFormat.CLAUDE:
        return _encoder.encode(to_claude(example))
    return _encoder.encode(to_prompt_completion(example, model))


_FAST_WRITERS: dict[LineFormat, Callable[[fastlines.RawExample], bytes | None]] = {
    LineFormat.CONVERSATION: fastlines.conversation,
    LineFormat.CLAUDE: fastlines.claude,
    LineFormat.PROMPT_COMPLETION: fastlines.prompt_completion,
}


def to_conversation(example: Example) -> ConversationLine:
    line = ConversationLine(
        schemaVersion=CONVERSATION_SCHEMA,
        messages=[ConversationMessage(role, [Text(text)]) for role, text in example.turns],
    )
    if example.system:
        line.system = [Text(text) for text in example.system]
    return line


def to_claude(example: Example) -> ClaudeLine:
    line = ClaudeLine(messages=[ClaudeMessage(role, text) for role, text in example.turns])
    if example.system:
        line.system = "\n\n".join(example.system)
    return line


def to_prompt_completion(example: Example, model: str) -> PromptCompletionLine:
    if len(example.turns) != 2:
        raise LineInvalid(
            f"has {len(example.turns) // 2} exchanges; {model} takes single-turn examples "
            "only (one user message and the assistant's reply)"
        )
    (_, prompt), (_, completion) = example.turns
    # These models have no system prompt: it is kept as the start of the prompt.
    if example.system:
        prompt = "\n\n".join([*example.system, prompt])
    return PromptCompletionLine(prompt, completion)
