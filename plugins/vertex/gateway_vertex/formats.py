"""Training lines: OpenAI chat and preference lines into Gemini's formats, Gemini lines checked.

Users upload the JSONL they would give OpenAI. Vertex wants, per line:

- supervised: ``{"systemInstruction": {"parts": [{"text"}]}, "contents": [{"role":
  "user"|"model", "parts": [{"text"}]}]}``;
- preference (DPO): ``{"system_instruction": ..., "contents": [... ending with a user
  turn], "completions": [{"score": 1, "completion": <model turn>}, {"score": 0, ...}]}``
  (each spelled as in Google's own dataset guide; Google's JSON parser takes both).

A line already in Gemini's format passes through untouched. The first line decides what
kind of file it is; every line must be of that kind. Whatever cannot be expressed in
Gemini's format (an image, a tool call, a mid-conversation system message, a message
with ``weight: 0``) is refused with the place in the line, never dropped: dropping it
would train on something other than what the user wrote.

Everything here is pure: bytes in, bytes (or an exception) out. Lines are decoded into
msgspec Structs, not dicts, which is what keeps conversion fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.jsonl import LineInvalid
from gateway.training import (
    ChatLine,
    ChatMessage,
    PreferenceLine,
    TextPart,
    decode_chat_line,
    decode_preference_line,
)

Kind = Literal["openai-chat", "openai-preference", "gemini", "gemini-preference"]
PREFERENCE_KINDS: frozenset[Kind] = frozenset({"openai-preference", "gemini-preference"})
KIND_NAMES: dict[Kind, str] = {
    "openai-chat": "an OpenAI chat example",
    "openai-preference": "an OpenAI preference (DPO) example",
    "gemini": "a Gemini example",
    "gemini-preference": "a Gemini preference example",
}

# ---- Gemini, as written -------------------------------------------------------------
# ``gc=False``: these hold only strings and lists of each other, never a cycle, so the
# collector need not track the millions made during a large upload.


class Part(msgspec.Struct, gc=False):
    text: str


class Instruction(msgspec.Struct, gc=False):
    parts: list[Part]


class Turn(msgspec.Struct, gc=False):
    role: Literal["user", "model"]
    parts: list[Part]


# Field names are Google's JSON keys, camelCase included.
class GeminiExample(msgspec.Struct, omit_defaults=True, gc=False):
    contents: list[Turn]
    systemInstruction: Instruction | None = None


class Completion(msgspec.Struct, gc=False):
    score: int
    completion: Turn


class GeminiPreferenceExample(msgspec.Struct, omit_defaults=True, gc=False):
    contents: list[Turn]
    completions: list[Completion]
    system_instruction: Instruction | None = None


_encoder = msgspec.json.Encoder()

# ---- Gemini, as read (pass-through lines are checked, not rewritten) ----------------


class _AnyPart(msgspec.Struct):
    """A Gemini part: exactly which data field it carries is Vertex's to check."""

    text: str | None = None
    fileData: Any = None
    file_data: Any = None
    inlineData: Any = None
    inline_data: Any = None
    functionCall: Any = None
    function_call: Any = None
    functionResponse: Any = None
    function_response: Any = None

    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__struct_fields__)


class _AnyContent(msgspec.Struct):
    parts: Annotated[list[_AnyPart], Meta(min_length=1)]
    role: Literal["user", "model"] | None = None


class _GeminiLine(msgspec.Struct):
    contents: Annotated[list[_AnyContent], Meta(min_length=1)]
    systemInstruction: _AnyContent | None = None
    system_instruction: _AnyContent | None = None


class _GeminiSupervisedLine(_GeminiLine):
    # Only to notice a preference line in a supervised file (its value is not parsed).
    completions: msgspec.Raw = msgspec.Raw(b"")


class _GeminiCompletion(msgspec.Struct):
    score: float
    completion: _AnyContent


class _GeminiPreferenceLine(_GeminiLine):
    completions: list[_GeminiCompletion] = []


_ABSENT = msgspec.Raw(b"")


class _Probe(msgspec.Struct):
    """Only which keys a line has; values are skipped unparsed."""

    messages: msgspec.Raw = _ABSENT
    input: msgspec.Raw = _ABSENT
    preferred_output: msgspec.Raw = _ABSENT
    contents: msgspec.Raw = _ABSENT
    completions: msgspec.Raw = _ABSENT


_probe = msgspec.json.Decoder(_Probe)
_gemini = msgspec.json.Decoder(_GeminiSupervisedLine)
_gemini_preference = msgspec.json.Decoder(_GeminiPreferenceLine)


def kind_of(raw: bytes) -> Kind:
    """What kind of example a line holds, from its keys alone."""
    probe = _probe.decode(raw)
    if probe.contents:
        return "gemini-preference" if probe.completions else "gemini"
    if probe.input or probe.preferred_output:
        return "openai-preference"
    if probe.messages:
        return "openai-chat"
    raise LineInvalid(
        "is neither an OpenAI example ('messages', or 'input' with 'preferred_output') "
        "nor a Gemini example ('contents')"
    )


# ---- OpenAI -> Gemini ---------------------------------------------------------------

_GEMINI_ROLES: dict[str, Literal["user", "model"]] = {"user": "user", "assistant": "model"}


def chat_example(line: ChatLine) -> GeminiExample:
    """An OpenAI chat line as a Gemini supervised example."""
    _no_tools(line.tools, line.functions)
    system, contents = _turns(line.messages, "messages")
    if contents[-1].role != "model" if contents else True:
        # Vertex trains on the model turns; without one there is nothing to learn, and an
        # example that ends on the user's turn teaches nothing about answering it.
        raise LineInvalid("must end with an assistant message to train on")
    return GeminiExample(contents=contents, systemInstruction=_instruction(system))


def preference_example(line: PreferenceLine) -> GeminiPreferenceExample:
    """An OpenAI preference (DPO) line as a Gemini preference example."""
    _no_tools(line.input.tools, None)
    system, contents = _turns(line.input.messages, "input.messages")
    if not contents or contents[-1].role != "user":
        raise LineInvalid("input.messages must end with a user message (Vertex prompts do)")
    preferred = _completion(line.preferred_output, "preferred_output")
    rejected = _completion(line.non_preferred_output, "non_preferred_output")
    return GeminiPreferenceExample(
        contents=contents,
        completions=[Completion(score=1, completion=preferred), Completion(0, rejected)],
        system_instruction=_instruction(system),
    )


def _no_tools(tools: list[Any] | None, functions: list[Any] | None) -> None:
    if tools:
        raise LineInvalid("has 'tools'; tool definitions cannot be converted to Gemini's format")
    if functions:
        raise LineInvalid("has 'functions'; function definitions cannot be converted")


def _turns(messages: list[ChatMessage], where: str) -> tuple[list[Part], list[Turn]]:
    """Leading system/developer messages as instruction parts, the rest as turns."""
    system: list[Part] = []
    contents: list[Turn] = []
    for index, message in enumerate(messages):
        content = message.content
        # The hot path (millions of lines): a plain, non-empty text message. Anything
        # else, and every refusal, goes through _parts, which names the place.
        if (
            type(content) is str
            and content
            and message.name is None
            and message.weight != 0
            and not message.tool_calls
            and message.function_call is None
        ):
            parts = [Part(content)]
        else:
            parts = _parts(message, f"{where}[{index}]")
        role = _GEMINI_ROLES.get(message.role)
        if role is not None:
            contents.append(Turn(role, parts))
        elif message.role in ("system", "developer"):
            if contents:
                raise LineInvalid(
                    f"{where}[{index}] is a {message.role} message after the conversation "
                    "started; Gemini takes system instructions only before it"
                )
            system.extend(parts)
        else:  # tool, function
            raise LineInvalid(
                f"{where}[{index}] is a {message.role} message; tool results cannot be converted"
            )
    return system, contents


def _parts(message: ChatMessage, at: str) -> list[Part]:
    if message.tool_calls or message.function_call is not None:
        raise LineInvalid(f"{at} has a tool call; tool calls cannot be converted")
    if message.weight == 0:
        raise LineInvalid(
            f"{at} has weight 0; Vertex AI trains on every model turn and has no weights"
        )
    if message.name is not None:
        raise LineInvalid(f"{at} has a 'name'; Gemini turns have no participant names")
    content = message.content
    if isinstance(content, str):
        if not content:
            raise LineInvalid(f"{at} has empty content")
        return [Part(content)]
    if not content:
        raise LineInvalid(f"{at} has no content")
    parts: list[Part] = []
    for index, part in enumerate(content):
        if not isinstance(part, TextPart):
            url = part.image_url.url
            form = "a data URL" if url.startswith("data:") else "a URL"
            raise LineInvalid(
                f"{at}.content[{index}] is an image given as {form}; only text can be converted"
            )
        parts.append(Part(part.text))
    return parts


def _completion(messages: list[ChatMessage], where: str) -> Turn:
    if len(messages) != 1 or messages[0].role != "assistant":
        raise LineInvalid(f"{where} must be exactly one assistant message")
    return Turn("model", _parts(messages[0], f"{where}[0]"))


def _instruction(parts: list[Part]) -> Instruction | None:
    return Instruction(parts) if parts else None


# ---- Gemini lines, checked ----------------------------------------------------------


def check_gemini(raw: bytes) -> None:
    line = _gemini.decode(raw)
    if line.completions:
        raise LineInvalid(
            f"is {KIND_NAMES['gemini-preference']}, but the file started with "
            f"{KIND_NAMES['gemini']}; a training file holds one kind of example"
        )
    _check_contents(line)


def check_gemini_preference(raw: bytes) -> None:
    line = _gemini_preference.decode(raw)
    _check_contents(line)
    scores = sorted(c.score for c in line.completions)
    if scores != [0.0, 1.0]:
        raise LineInvalid(
            "completions must be a pair: one with score 1 (preferred), one with score 0"
        )
    for index, completion in enumerate(line.completions):
        if completion.completion.role != "model":
            raise LineInvalid(f"completions[{index}].completion must have role 'model'")


def _check_contents(line: _GeminiLine) -> None:
    for index, content in enumerate(line.contents):
        for number, part in enumerate(content.parts):
            if part.empty():
                raise LineInvalid(f"contents[{index}].parts[{number}] carries no data")


# ---- a whole file, line by line -----------------------------------------------------


class LineConverter:
    """The line check for one upload: converts each line, keeping the output to ``take``.

    Used as ``gateway.jsonl.checked``'s check, so one pass over the upload both checks
    it (line numbers come from there) and produces the Gemini lines to stage beside it.
    """

    def __init__(self) -> None:
        self.kind: Kind | None = None
        self._convert: Callable[[bytes], bytes | None] = _unknown
        self._out: list[bytes] = []
        # Once a line is refused the file is: ``checked`` reads on to report more bad
        # lines but never hands out another chunk, so output kept now would only grow.
        self._failed = False

    @property
    def converts(self) -> bool:
        """Whether the file's lines are rewritten (OpenAI lines) or kept (Gemini lines)."""
        return self.kind in ("openai-chat", "openai-preference")

    def __call__(self, raw: bytes) -> None:
        try:
            if self.kind is None:
                self.kind = kind_of(raw)
                self._convert = _CONVERTERS[self.kind]
            try:
                converted = self._convert(raw)
            except msgspec.ValidationError:
                self._explain_mismatch(raw)
                raise
        except BaseException:
            self._failed, self._out = True, []
            raise
        if converted is not None and not self._failed:
            self._out.append(converted)

    def take(self) -> bytes:
        """The converted lines so far, newline-terminated, and forget them."""
        if not self._out:
            return b""
        self._out.append(b"")
        out = b"\n".join(self._out)
        self._out = []
        return out

    def _explain_mismatch(self, raw: bytes) -> None:
        try:
            other = kind_of(raw)
        except (LineInvalid, msgspec.DecodeError, msgspec.ValidationError):
            return
        if self.kind is not None and other != self.kind:
            raise LineInvalid(
                f"is {KIND_NAMES[other]}, but the file started with {KIND_NAMES[self.kind]}; "
                "a training file holds one kind of example"
            )


def convert_line(raw: bytes, kind: Kind) -> bytes | None:
    """One line of a file of ``kind``: the Gemini line, or None if it passes unchanged."""
    return _CONVERTERS[kind](raw)


def _chat(raw: bytes) -> bytes:
    return _encoder.encode(chat_example(decode_chat_line(raw)))


def _preference(raw: bytes) -> bytes:
    return _encoder.encode(preference_example(decode_preference_line(raw)))


def _gemini_line(raw: bytes) -> None:
    check_gemini(raw)


def _gemini_preference_line(raw: bytes) -> None:
    check_gemini_preference(raw)


def _unknown(raw: bytes) -> None:
    raise AssertionError("the kind is decided before the first line is converted")


_CONVERTERS: dict[Kind, Callable[[bytes], bytes | None]] = {
    "openai-chat": _chat,
    "openai-preference": _preference,
    "gemini": _gemini_line,
    "gemini-preference": _gemini_preference_line,
}
