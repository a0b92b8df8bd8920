"""Messages: frozen content blocks shaped like Anthropic's, and the provider conversions.

A :class:`Message` is a role (``"user"`` or ``"assistant"``) and a tuple of blocks. Blocks
carry the same ``type`` strings as the Anthropic Messages API (``text``, ``tool_use``,
``tool_result``, ``thinking``, ``redacted_thinking``). There are no ids or timestamps in
messages: those belong to session events. The system prompt is not a message; it travels
beside the list, as in the Anthropic API.

Every conversion to and from a provider's wire shape lives in this module:

* :func:`to_anthropic` / :func:`from_anthropic` — Messages API ``messages`` params. Lossless.
  ``from_anthropic`` also takes the SDK's own objects (an ``anthropic.types.Message``
  returned by ``messages.create``, its content blocks), so a raw-SDK loop can record a
  response as it comes; :func:`from_openai` likewise takes the ``openai`` SDK's message
  objects. Anything with a pydantic ``model_dump`` is read through it.
* :func:`to_openai` / :func:`from_openai` — Chat Completions messages (``tool_calls``, the
  ``tool`` role, a leading ``system`` message). Text, tool calls and tool results round-trip
  exactly. Chat Completions has no field for ``is_error`` or for thinking signatures; with
  ``extensions=True`` (used by ctxmem's own JSONL export) they are kept in the extra keys
  ``is_error``, ``reasoning_content`` and ``reasoning_signature`` so the round trip is
  lossless; with the default ``extensions=False`` (what is sent to a server) thinking is
  dropped and an error result is sent as plain text.

Values are immutable by convention and by construction: dataclasses are frozen, block
sequences are tuples. ``ToolUseBlock.input`` is a plain dict (JSON object) that nothing in
ctxmem mutates; strategies share history without copying it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from ctxmem.errors import InputError, InvalidConversationError

Role: TypeAlias = Literal["user", "assistant"]
ROLES: tuple[str, ...] = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class TextBlock:
    """Plain text from the user or the model (Anthropic ``{"type": "text"}``)."""

    text: str
    type: Literal["text"] = field(default="text", init=False)


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    """The model's visible reasoning; ``signature`` (Anthropic's) must be sent back unchanged.

    Thinking blocks stay with their tool loop: a provider rejects a tool loop whose
    thinking was dropped, so strategies keep or drop them together.
    """

    thinking: str
    signature: str = ""
    type: Literal["thinking"] = field(default="thinking", init=False)


@dataclass(frozen=True, slots=True)
class RedactedThinkingBlock:
    """Reasoning the provider encrypted (``data``, opaque); sent back as is, never shown."""

    data: str
    type: Literal["redacted_thinking"] = field(default="redacted_thinking", init=False)


@dataclass(frozen=True, slots=True, eq=True)
class ToolUseBlock:
    """A tool call by the model: its ``id`` (answered by a :class:`ToolResultBlock` with the
    same ``tool_use_id``), the tool ``name`` and the JSON ``input``. Hashable by value."""

    id: str
    name: str
    input: dict[str, Any]
    type: Literal["tool_use"] = field(default="tool_use", init=False)

    def __hash__(self) -> int:
        return hash((self.id, self.name, canonical_json(self.input)))


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    """The result of one tool call.

    ``content`` is either a string or a tuple of :class:`TextBlock` (the two shapes the
    Anthropic API accepts for text results); :attr:`text` gives the text either way.
    """

    tool_use_id: str
    content: str | tuple[TextBlock, ...] = ""
    is_error: bool = False
    type: Literal["tool_result"] = field(default="tool_result", init=False)

    @property
    def text(self) -> str:
        """The result's text: ``content`` as is, or its text blocks joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(b.text for b in self.content)


ContentBlock: TypeAlias = TextBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock | ToolResultBlock
BLOCK_TYPES: tuple[str, ...] = ("text", "thinking", "redacted_thinking", "tool_use", "tool_result")


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn: a ``role`` (``"user"`` or ``"assistant"``) and its content blocks.

    Frozen and id-free (ids and timestamps live on session events). A list ``content``
    is stored as a tuple.

    Raises:
        InputError: an unknown role.
    """

    role: Role
    content: tuple[ContentBlock, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InputError(f"unknown role {self.role!r}; expected 'user' or 'assistant'", field="role")
        if not isinstance(self.content, tuple):
            if isinstance(self.content, str):  # one text, not a sequence of one-character blocks
                object.__setattr__(self, "content", (TextBlock(self.content),))
            elif self.content is None or not hasattr(self.content, "__iter__"):
                raise InputError(
                    f"content must be a sequence of content blocks, got {type(self.content).__name__} "
                    "(Message.user('text') makes a text message)",
                    field="content",
                )
            else:
                object.__setattr__(self, "content", tuple(self.content))

    @classmethod
    def user(cls, *content: str | ContentBlock) -> Message:
        """A user message; each string becomes a :class:`TextBlock`."""
        return cls("user", tuple(TextBlock(c) if isinstance(c, str) else c for c in content))

    @classmethod
    def assistant(cls, *content: str | ContentBlock) -> Message:
        """An assistant message; each string becomes a :class:`TextBlock`."""
        return cls("assistant", tuple(TextBlock(c) if isinstance(c, str) else c for c in content))

    @property
    def text(self) -> str:
        """The concatenated text blocks (not thinking, not tool blocks)."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> tuple[ToolUseBlock, ...]:
        """The message's tool calls, in order (assistant messages only have them)."""
        return tuple(b for b in self.content if isinstance(b, ToolUseBlock))

    @property
    def tool_results(self) -> tuple[ToolResultBlock, ...]:
        """The message's tool results, in order (user messages only have them)."""
        return tuple(b for b in self.content if isinstance(b, ToolResultBlock))


# --------------------------------------------------------------------------- helpers


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 kept. Used for hashing and counting."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def block_texts(block: ContentBlock) -> tuple[str, ...]:
    """The texts of a block that count as *content tokens*.

    text → its text; thinking → the thinking text; redacted thinking → its opaque data;
    tool_use → the tool name and the canonical JSON of its input; tool_result → its text.
    Everything else a provider sends (roles, ids, JSON punctuation) is *overhead*, modelled
    separately by the token counter.
    """
    if isinstance(block, TextBlock):
        return (block.text,)
    if isinstance(block, ToolResultBlock):
        return (block.text,)
    if isinstance(block, ToolUseBlock):
        return (block.name, canonical_json(block.input))
    if isinstance(block, ThinkingBlock):
        return (block.thinking,)
    return (block.data,)


def message_texts(message: Message) -> Iterator[str]:
    for block in message.content:
        yield from block_texts(block)


# --------------------------------------------------------------------------- Anthropic


def block_to_anthropic(block: ContentBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if isinstance(block, ToolResultBlock):
        out: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.tool_use_id}
        if isinstance(block.content, str):
            out["content"] = block.content
        else:
            out["content"] = [{"type": "text", "text": b.text} for b in block.content]
        if block.is_error:
            out["is_error"] = True
        return out
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    return {"type": "redacted_thinking", "data": block.data}


def to_anthropic(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Messages → the ``messages`` parameter of the Anthropic Messages API."""
    return [
        {"role": m.role, "content": [block_to_anthropic(b) for b in m.content]} for m in messages
    ]


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise InputError(f"missing {key!r} in {where}", field=key)
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(f"{key!r} in {where} must be {names}, got {type(value).__name__}", field=key)
    return value


def _plain(obj: Any) -> Any:
    """An SDK object (pydantic: ``anthropic``/``openai`` types) as its JSON dict; else as is."""
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_none=True)
    return obj


def block_from_anthropic(obj: Any) -> ContentBlock:
    obj = _plain(obj)
    if not isinstance(obj, Mapping):
        raise InputError(f"a content block must be an object, got {type(obj).__name__}", field="content")
    btype = obj.get("type")
    if btype == "text":
        return TextBlock(_require(obj, "text", str, "text block"))
    if btype == "tool_use":
        return ToolUseBlock(
            id=_require(obj, "id", str, "tool_use block"),
            name=_require(obj, "name", str, "tool_use block"),
            input=dict(_require(obj, "input", dict, "tool_use block")),
        )
    if btype == "tool_result":
        raw = obj.get("content", "")
        content: str | tuple[TextBlock, ...]
        if isinstance(raw, str):
            content = raw
        elif isinstance(raw, list):
            parts = []
            for part in raw:
                if not isinstance(part, Mapping) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                    raise InputError(
                        f"tool_result content part of type {kind!r} is not supported; "
                        "ctxmem stores text results only",
                        field="content",
                    )
                parts.append(TextBlock(_require(part, "text", str, "tool_result text part")))
            content = tuple(parts)
        else:
            raise InputError("tool_result 'content' must be a string or a list of text blocks", field="content")
        is_error = obj.get("is_error", False)
        if not isinstance(is_error, bool):
            raise InputError("'is_error' must be true or false", field="is_error")
        return ToolResultBlock(
            tool_use_id=_require(obj, "tool_use_id", str, "tool_result block"),
            content=content,
            is_error=is_error,
        )
    if btype == "thinking":
        return ThinkingBlock(
            thinking=_require(obj, "thinking", str, "thinking block"),
            signature=obj.get("signature") or "",
        )
    if btype == "redacted_thinking":
        return RedactedThinkingBlock(_require(obj, "data", str, "redacted_thinking block"))
    raise InputError(
        f"unknown content block type {btype!r}; expected one of {', '.join(BLOCK_TYPES)}", field="type"
    )


def message_from_anthropic(obj: Any) -> Message:
    """One Messages API message: a ``{"role", "content"}`` dict or an SDK ``Message``
    (a response's extra fields — id, model, usage — are ignored here)."""
    obj = _plain(obj)
    if not isinstance(obj, Mapping):
        raise InputError(f"a message must be a JSON object, got {type(obj).__name__}")
    role = obj.get("role")
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}; expected 'user' or 'assistant'", field="role")
    raw = obj.get("content")
    if isinstance(raw, str):
        blocks: tuple[ContentBlock, ...] = (TextBlock(raw),)
    elif isinstance(raw, list):
        blocks = tuple(block_from_anthropic(b) for b in raw)
    else:
        raise InputError("'content' must be a string or a list of blocks", field="content")
    return Message(role, blocks)


def from_anthropic(messages: Iterable[Any] | Any) -> list[Message]:
    """The ``messages`` parameter of the Anthropic API → Messages (string content becomes one
    text block). Items may be dicts or SDK objects; a single SDK ``Message`` (what
    ``client.messages.create`` returns) is accepted on its own too."""
    if not isinstance(messages, Mapping) and getattr(messages, "role", None) in ROLES:
        return [message_from_anthropic(messages)]
    return [message_from_anthropic(m) for m in messages]


# --------------------------------------------------------------------------- OpenAI


def _openai_text(blocks: Sequence[TextBlock]) -> str | list[dict[str, Any]] | None:
    if not blocks:
        return None
    if len(blocks) == 1:
        return blocks[0].text
    return [{"type": "text", "text": b.text} for b in blocks]


def message_to_openai(message: Message, *, extensions: bool = False) -> list[dict[str, Any]]:
    """One Message → one or more chat-completions messages.

    A user message's tool results become ``tool`` messages, placed first (Anthropic requires
    results to lead the user turn); any user text follows as a ``user`` message.
    """
    if message.role == "assistant":
        texts = [b for b in message.content if isinstance(b, TextBlock)]
        out: dict[str, Any] = {"role": "assistant", "content": _openai_text(texts)}
        calls = [
            {
                "id": b.id,
                "type": "function",
                "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)},
            }
            for b in message.content
            if isinstance(b, ToolUseBlock)
        ]
        if calls:
            out["tool_calls"] = calls
        elif out["content"] is None and not extensions:
            # no text and no calls (a reply that was all thinking, cut at max_tokens): the API
            # needs content then, and an empty turn keeps user and assistant alternating
            out["content"] = ""
        if extensions:
            thinking = [b for b in message.content if isinstance(b, ThinkingBlock)]
            if thinking:
                out["reasoning_content"] = "".join(t.thinking for t in thinking)
                out["reasoning_signature"] = thinking[0].signature if len(thinking) == 1 else [
                    t.signature for t in thinking
                ]
                if len(thinking) > 1:
                    out["reasoning_parts"] = [t.thinking for t in thinking]
            redacted = [b.data for b in message.content if isinstance(b, RedactedThinkingBlock)]
            if redacted:
                out["redacted_reasoning"] = redacted
        return [out]
    result: list[dict[str, Any]] = []
    for b in message.content:
        if isinstance(b, ToolResultBlock):
            tool: dict[str, Any] = {"role": "tool", "tool_call_id": b.tool_use_id}
            if isinstance(b.content, str):
                tool["content"] = b.content
            else:
                tool["content"] = [{"type": "text", "text": t.text} for t in b.content]
            if extensions and b.is_error:
                tool["is_error"] = True
            result.append(tool)
    texts = [b for b in message.content if isinstance(b, TextBlock)]
    if texts or not result:
        result.append({"role": "user", "content": _openai_text(texts) if texts else ""})
    return result


def to_openai(
    messages: Iterable[Message], system: str | None = None, *, extensions: bool = False
) -> list[dict[str, Any]]:
    """Messages (+ optional system prompt) → chat-completions ``messages``."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for m in messages:
        out.extend(message_to_openai(m, extensions=extensions))
    return out


def _openai_content_blocks(raw: Any, where: str) -> tuple[TextBlock, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (TextBlock(raw),)
    if isinstance(raw, list):
        parts = []
        for p in raw:
            if not isinstance(p, Mapping) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise InputError(f"{where} content parts must be text parts", field="content")
            parts.append(TextBlock(p["text"]))
        return tuple(parts)
    raise InputError(f"{where} 'content' must be a string, a list of parts or null", field="content")


def _json_kind(value: Any) -> str:
    """A JSON value's kind as a person reads it in an error (``null``, ``a number``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _openai_reasoning(obj: Mapping[str, Any]) -> list[ContentBlock]:
    """An assistant message's reasoning fields (ctxmem's extensions, as
    :func:`message_to_openai` writes them) as thinking blocks: ``reasoning_content`` (a
    string) with ``reasoning_signature`` (a string), or, for several blocks,
    ``reasoning_parts`` and ``reasoning_signature`` as lists of strings of one length; and
    ``redacted_reasoning``, a list of strings. Any other shape is refused, naming the field
    (nothing is dropped or rewritten)."""
    blocks: list[ContentBlock] = []
    content = obj.get("reasoning_content")
    if content is not None:
        if not isinstance(content, str):
            raise InputError(f"'reasoning_content' must be a string, got {_json_kind(content)}",
                             field="reasoning_content")
        sig = obj.get("reasoning_signature")
        parts = obj.get("reasoning_parts")
        if isinstance(parts, list) and isinstance(sig, list) and sig:
            if len(parts) != len(sig):
                raise InputError(
                    f"'reasoning_signature' has {len(sig)} signature{'s' if len(sig) != 1 else ''} for "
                    f"{len(parts)} reasoning_parts; fix: give one signature per part",
                    field="reasoning_signature",
                )
            for j, (p, s) in enumerate(zip(parts, sig, strict=True)):
                if not isinstance(p, str):
                    raise InputError(f"each reasoning part must be a string, got {_json_kind(p)}",
                                     field=f"reasoning_parts[{j}]")
                if not isinstance(s, str):
                    raise InputError(f"each reasoning signature must be a string, got {_json_kind(s)}",
                                     field=f"reasoning_signature[{j}]")
                blocks.append(ThinkingBlock(p, s))
        else:
            if sig is None or sig == []:
                sig = ""
            if not isinstance(sig, str):
                raise InputError(
                    f"'reasoning_signature' must be a string, got {_json_kind(sig)}"
                    + ("; a list of signatures needs 'reasoning_parts', a list of the same length"
                       if isinstance(sig, list) else ""),
                    field="reasoning_signature",
                )
            blocks.append(ThinkingBlock(content, sig))
    redacted = obj.get("redacted_reasoning")
    if redacted is not None:
        if not isinstance(redacted, list | tuple):
            raise InputError(
                f"'redacted_reasoning' must be a list of strings, got {_json_kind(redacted)}; "
                'fix: wrap a single value in a list (["..."])',
                field="redacted_reasoning",
            )
        for j, d in enumerate(redacted):
            if not isinstance(d, str):
                raise InputError(f"each redacted_reasoning item must be a string, got {_json_kind(d)}",
                                 field=f"redacted_reasoning[{j}]")
            blocks.append(RedactedThinkingBlock(d))
    return blocks


def _assistant_from_openai(obj: Mapping[str, Any], *, reply: bool) -> Message:
    """One chat-completions assistant message → a Message.

    ``reply=False`` (an import, a request read back): exactly as written; arguments that are
    not a JSON object are refused. ``reply=True`` (a model's live answer, already paid for):
    empty text is not kept as a block, and a call whose arguments are not a JSON object is
    kept as ``{"_unparsed_arguments": raw}``, for the caller to answer with an error result.
    """
    blocks: list[ContentBlock] = list(_openai_reasoning(obj))
    texts = _openai_content_blocks(obj.get("content"), "assistant")
    blocks.extend(b for b in texts if b.text or not reply)
    refusal = obj.get("refusal")
    if refusal is not None:
        # what the model said when it declined (content is null then): kept as its text,
        # as the Responses API's refusal parts are, not dropped
        if not isinstance(refusal, str):
            raise InputError("'refusal' must be a string", field="refusal")
        if refusal:
            blocks.append(TextBlock(refusal))
    for k, call in enumerate(obj.get("tool_calls") or ()):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(call.get("id"), str):
            raise InputError("each tool call needs an 'id' and a 'function'", field="tool_calls")
        args = fn.get("arguments") or "{}"
        parsed: Any
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except ValueError as exc:  # JSONDecodeError, or an integer past Python's digit limit
            if not (reply and isinstance(args, str)):
                raise InputError(
                    f"tool call {call['id']!r} has arguments that are not valid JSON: "
                    f"{exc.msg if isinstance(exc, json.JSONDecodeError) else exc}",
                    field="tool_calls.function.arguments",
                ) from None
            parsed = None
        if not isinstance(parsed, dict):
            if not (reply and isinstance(args, str)):
                raise InputError("tool call arguments must be a JSON object", field="tool_calls.function.arguments")
            parsed = {"_unparsed_arguments": args}  # answered with an error result by the agent
        name = fn.get("name", "")
        if not isinstance(name, str):
            raise InputError(
                f"the tool name must be a string, got {_json_kind(name)}; fix: give the function's name",
                field=f"tool_calls[{k}].function.name",
            )
        blocks.append(ToolUseBlock(call["id"], name, parsed))
    return Message("assistant", tuple(blocks))


def reply_from_openai(obj: Any) -> Message:
    """A model's live chat-completions answer (``choices[0].message``, a dict or an SDK
    object) → an assistant Message.

    Read as :func:`from_openai` reads an assistant message, but lenient where the reply is
    already paid for: an empty ``content`` ("" from vLLM and llama.cpp beside tool calls)
    makes no text block, and a tool call whose arguments are not a JSON object (truncated
    JSON from a local model) is kept with ``{"_unparsed_arguments": raw}`` as its input, so
    the reply and its usage can be recorded and the call answered with an error result.

    Raises:
        InputError: anything else malformed (a call without an id, a bad reasoning field).
    """
    obj = _plain(obj)
    if not isinstance(obj, Mapping):
        raise InputError(f"a reply message must be a JSON object, got {type(obj).__name__}")
    return _assistant_from_openai(obj, reply=True)


def from_openai(messages: Iterable[Any]) -> tuple[str | None, list[Message]]:
    """Chat-completions ``messages`` → (system prompt, Messages).

    ``tool`` messages and the ``user`` message that follows them merge into one user
    Message (results first), which is the Anthropic shape. ``system``/``developer``
    messages are joined into the system prompt.
    """
    system_parts: list[str] = []
    out: list[Message] = []
    pending_user: list[ContentBlock] = []

    def flush_user() -> None:
        if pending_user:
            out.append(Message("user", tuple(pending_user)))
            pending_user.clear()

    for i, raw_obj in enumerate(messages):
        obj = _plain(raw_obj)
        if not isinstance(obj, Mapping):
            raise InputError(f"message {i} must be a JSON object, got {type(obj).__name__}")
        role = obj.get("role")
        if role in ("system", "developer"):
            system_parts.append("".join(b.text for b in _openai_content_blocks(obj.get("content"), role)))
        elif role == "tool":
            raw = obj.get("content", "")
            content: str | tuple[TextBlock, ...] = raw if isinstance(raw, str) else _openai_content_blocks(raw, "tool")
            call_id = obj.get("tool_call_id")
            if not isinstance(call_id, str):
                raise InputError("a tool message needs a string 'tool_call_id'", field="tool_call_id")
            is_error = obj.get("is_error", False)
            if not isinstance(is_error, bool):
                raise InputError("'is_error' must be true or false", field="is_error")
            pending_user.append(ToolResultBlock(call_id, content, is_error))
        elif role == "user":
            pending_user.extend(_openai_content_blocks(obj.get("content"), "user"))
            flush_user()
        elif role == "assistant":
            flush_user()
            out.append(_assistant_from_openai(obj, reply=False))
        else:
            raise InputError(
                f"unknown role {role!r}; expected system, developer, user, assistant or tool", field="role"
            )
    flush_user()
    return ("\n\n".join(system_parts) if system_parts else None), out


# --------------------------------------------------------------------------- validation


def validate_conversation(messages: Sequence[Message], *, allow_pending: bool = False) -> None:
    """Raise :class:`InvalidConversationError` if a provider would reject ``messages``.

    Checks: every ``tool_result`` answers a ``tool_use`` of the assistant message right
    before it, and the results open that message (no other block before them); every
    ``tool_use`` is answered in the next message (unless ``allow_pending`` and it is the
    last message); tool ids are unique.
    """
    seen_ids: set[str] = set()
    for i, m in enumerate(messages):
        uses = m.tool_uses
        for u in uses:
            if u.id in seen_ids:
                raise InvalidConversationError(f"tool_use id {u.id!r} appears twice", line=i + 1, field="id")
            seen_ids.add(u.id)
        if m.role == "user":
            prev_ids = {u.id for u in messages[i - 1].tool_uses} if i > 0 and messages[i - 1].role == "assistant" else set()
            for r in m.tool_results:
                if r.tool_use_id not in prev_ids:
                    raise InvalidConversationError(
                        f"tool_result for {r.tool_use_id!r} has no tool_use in the preceding assistant message",
                        line=i + 1,
                        field="tool_use_id",
                    )
            if prev_ids:
                _results_first(m, i)
        if uses:
            if i + 1 == len(messages):
                if allow_pending:
                    continue
                raise InvalidConversationError(
                    f"tool_use {uses[0].id!r} is never answered by a tool_result", line=i + 1, field="tool_use"
                )
            answered = {r.tool_use_id for r in messages[i + 1].tool_results}
            missing = [u.id for u in uses if u.id not in answered]
            if missing:
                raise InvalidConversationError(
                    f"tool_use {missing[0]!r} has no tool_result in the next message", line=i + 2, field="tool_use"
                )


def _results_first(m: Message, i: int) -> None:
    """The message after tool calls opens with their results: Anthropic refuses text (or
    any block) before a tool_result there ("Messages following tool_use blocks must begin
    with a matching number of tool_result blocks")."""
    other = None
    for j, b in enumerate(m.content):
        if not isinstance(b, ToolResultBlock):
            if other is None:
                other = j
        elif other is not None:
            raise InvalidConversationError(
                f"content[{other}] comes before the tool_result for {b.tool_use_id!r}: a message answering tool "
                "calls opens with their tool_result blocks; put the other content after them",
                line=i + 1,
                field=f"content[{other}]",
            )


def late_result(content: Sequence[ContentBlock]) -> bool:
    """Whether a tool result comes after other content (text, an image) in a message: what
    every provider refuses, and what ctxmem recorded before the session door refused it."""
    other = False
    for b in content:
        if isinstance(b, ToolResultBlock):
            if other:
                return True
        else:
            other = True
    return False


def with_results_first(m: Message) -> Message:
    """``m`` with its tool results first, in their order, and its other blocks after them in
    theirs, where a result came after other content (:func:`late_result`); else ``m``
    itself. How an export writes a session stored before the door: a transcript every
    provider, and ctxmem's own import, accept."""
    if len(m.content) < 2 or not late_result(m.content):
        return m
    results = tuple(b for b in m.content if isinstance(b, ToolResultBlock))
    return Message(m.role, results + tuple(b for b in m.content if not isinstance(b, ToolResultBlock)))


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: a name, a description and a JSON Schema for its input.

    Shaped like an Anthropic tool definition; :func:`tool_to_openai` gives the
    chat-completions ``function`` tool.
    """

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def __hash__(self) -> int:
        return hash((self.name, self.description, canonical_json(self.input_schema)))


def tool_to_anthropic(tool: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.input_schema}
    if tool.description:
        out["description"] = tool.description
    return out


def tool_to_openai(tool: ToolSpec) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        fn["description"] = tool.description
    return {"type": "function", "function": fn}


def tool_from_anthropic(obj: Any) -> ToolSpec:
    if not isinstance(obj, Mapping):
        raise InputError(f"a tool must be an object, got {type(obj).__name__}", field="tools")
    return ToolSpec(
        name=_require(obj, "name", str, "tool"),
        description=obj.get("description") or "",
        input_schema=dict(_require(obj, "input_schema", dict, "tool")),
    )


def tool_from_openai(obj: Any) -> ToolSpec:
    fn = obj.get("function") if isinstance(obj, Mapping) else None
    if not isinstance(fn, Mapping) or obj.get("type") != "function":
        raise InputError("a chat-completions tool must be {'type': 'function', 'function': {...}}", field="tools")
    return ToolSpec(
        name=_require(fn, "name", str, "tool function"),
        description=fn.get("description") or "",
        input_schema=dict(fn.get("parameters") or {"type": "object", "properties": {}}),
    )
