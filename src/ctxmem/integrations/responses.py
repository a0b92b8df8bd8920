"""The OpenAI Responses API item format ↔ ctxmem messages.

The Responses API (and the OpenAI Agents SDK, whose sessions store its input items) speaks
in *items*, not messages: one response is several items (a ``reasoning`` item, a
``message``, one ``function_call`` per tool call) and each tool output is its own
``function_call_output`` item. This module maps them onto ctxmem's Anthropic-shaped
:class:`~ctxmem.messages.Message` list, beside the Anthropic and Chat Completions
converters in :mod:`ctxmem.messages`:

==========================  =============================================================
item                        ctxmem
==========================  =============================================================
``message`` user            user :class:`TextBlock` per ``input_text`` part (or the string)
``message`` assistant       assistant :class:`TextBlock` per ``output_text``/``refusal`` part
``message`` system/dev.     the system prompt (joined, as :func:`ctxmem.messages.from_openai`)
``reasoning``               :class:`ThinkingBlock`: summary texts joined, ``encrypted_content``
                            as the signature
``function_call``           :class:`ToolUseBlock` (``call_id`` → id, ``arguments`` parsed)
``function_call_output``    :class:`ToolResultBlock` (string output, or text parts)
``custom_tool_call``        :class:`ToolUseBlock` whose input is ``{CUSTOM_INPUT: text}``
``custom_tool_call_output`` :class:`ToolResultBlock` (back as a custom output for such a call)
hosted calls (``mcp_call``  skipped; with ``hosted_as_text`` (a session that hands items back):
``web_search_call``, …)     assistant :class:`TextBlock` of the item's JSON, so it is counted
==========================  =============================================================

Consecutive assistant-side items form one assistant message; tool outputs and the user
text after them form one user message (results first), as :func:`from_openai` does.

**What round-trips.** ``from_responses(to_responses(messages, system))`` gives back the same
system prompt and messages for text, tool calls, tool results and thinking. Going the
other way, item-level details ctxmem's messages have no field for (item ``id``,
``status``, annotations, logprobs, non-text parts such as images, and item types like
``web_search_call``) are dropped by :func:`from_responses` — which is why
:class:`~ctxmem.integrations.agents_sdk.CtxmemSession` also stores every item verbatim
beside its content events and hands the verbatim items back. ``strict=True`` (the
default) refuses what it cannot map with an :class:`~ctxmem.errors.InputError` naming the
item index and field; ``strict=False`` skips it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ctxmem.errors import InputError
from ctxmem.messages import (
    ContentBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

#: item types this module maps onto message content
MAPPED_TYPES = frozenset({"message", "reasoning", "function_call", "function_call_output", "custom_tool_call",
                          "custom_tool_call_output"})
#: a custom (free-text input) tool call's input, as the one key of its ToolUseBlock's input
CUSTOM_INPUT = "__custom_tool_input__"
#: hosted tool calls that are one item, call and output together (no output item to pair):
#: with ``strict=False`` their JSON is assistant text, so a budget counts them
HOSTED_CALLS = frozenset({"mcp_call", "web_search_call", "file_search_call", "code_interpreter_call",
                          "image_generation_call", "mcp_list_tools"})


def item_type(item: Mapping[str, Any]) -> str:
    """An item's type; easy input messages (``{"role", "content"}``) have none and are messages."""
    t = item.get("type")
    if t is None and "role" in item:
        return "message"
    return str(t)


def _text_parts(raw: Any, where: str, index: int, strict: bool) -> tuple[TextBlock, ...]:
    if isinstance(raw, str):
        return (TextBlock(raw),)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InputError(f"item {index}: {where} 'content' must be a string or a list of parts", field="content")
    out: list[TextBlock] = []
    for p in raw:
        ptype = p.get("type") if isinstance(p, Mapping) else None
        if ptype in ("input_text", "output_text", "text") and isinstance(p.get("text"), str):
            out.append(TextBlock(p["text"]))
        elif ptype == "refusal" and isinstance(p.get("refusal"), str):
            out.append(TextBlock(p["refusal"]))
        elif strict:
            raise InputError(
                f"item {index}: {where} content part of type {ptype!r} has no ctxmem equivalent "
                "(text parts only); pass strict=False to skip it",
                field="content",
            )
    return tuple(out)


def item_blocks(
    item: Any, index: int = 0, *, strict: bool = True, hosted_as_text: bool = False
) -> tuple[str | None, tuple[ContentBlock, ...]]:
    """One item → (``"user"``/``"assistant"``/``"system"``, blocks); ``(None, ())`` if unmapped.

    ``hosted_as_text`` (with ``strict=False``): a hosted tool call (:data:`HOSTED_CALLS`)
    becomes assistant text of its JSON, so a budget counts it (a session that hands the
    verbatim items back); otherwise it is skipped like other unmapped items.

    Raises :class:`InputError` (naming ``index``) for malformed items, and with ``strict``
    for item types or parts that have no ctxmem equivalent.
    """
    if not isinstance(item, Mapping):
        raise InputError(f"item {index} must be a JSON object, got {type(item).__name__}")
    kind = item_type(item)
    if kind == "message":
        role = item.get("role")
        if role in ("system", "developer"):
            return "system", _text_parts(item.get("content"), str(role), index, strict)
        if role not in ("user", "assistant"):
            raise InputError(
                f"item {index}: unknown role {role!r}; expected user, assistant, system or developer", field="role"
            )
        return str(role), _text_parts(item.get("content"), str(role), index, strict)
    if kind == "reasoning":
        summary = item.get("summary") or []
        texts = [s.get("text", "") for s in summary if isinstance(s, Mapping)]
        encrypted = item.get("encrypted_content")
        if not texts and encrypted and not item.get("content"):
            return "assistant", (RedactedThinkingBlock(str(encrypted)),)
        return "assistant", (ThinkingBlock("\n".join(texts), str(encrypted or "")),)
    if kind == "function_call":
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise InputError(f"item {index}: a function_call needs string 'call_id' and 'name'", field="call_id")
        raw = item.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            if not strict:
                # the model wrote arguments that do not parse; the agent answers the call with an
                # error output, so it is a call of the conversation: its raw text is kept
                return "assistant", (ToolUseBlock(call_id, name, {"_unparsed_arguments": raw}),)
            raise InputError(
                f"item {index}: function_call {call_id!r} arguments are not valid JSON: {exc.msg}", field="arguments"
            ) from None
        if not isinstance(args, dict):
            raise InputError(f"item {index}: function_call arguments must be a JSON object", field="arguments")
        return "assistant", (ToolUseBlock(call_id, name, args),)
    if kind == "function_call_output":
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise InputError(f"item {index}: a function_call_output needs a string 'call_id'", field="call_id")
        out = item.get("output", "")
        content: str | tuple[TextBlock, ...] = out if isinstance(out, str) else _text_parts(
            out, "function_call_output", index, strict
        )
        return "user", (ToolResultBlock(call_id, content),)
    if kind == "custom_tool_call":
        call_id, name, text = item.get("call_id"), item.get("name"), item.get("input", "")
        if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(text, str):
            raise InputError(f"item {index}: a custom_tool_call needs string 'call_id', 'name' and 'input'",
                             field="call_id")
        return "assistant", (ToolUseBlock(call_id, name, {CUSTOM_INPUT: text}),)
    if kind == "custom_tool_call_output":
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise InputError(f"item {index}: a custom_tool_call_output needs a string 'call_id'", field="call_id")
        out = item.get("output", "")
        return "user", (ToolResultBlock(call_id, out if isinstance(out, str) else _text_parts(
            out, "custom_tool_call_output", index, strict)),)
    if strict:
        raise InputError(
            f"item {index}: item type {kind!r} has no ctxmem message equivalent; pass strict=False to skip it",
            field="type",
        )
    if hosted_as_text and kind in HOSTED_CALLS:
        # counted as what it is, JSON the model reads back; kept or dropped with its turn
        shown = {k: v for k, v in item.items() if k not in ("id", "status")}
        return "assistant", (TextBlock(json.dumps(shown, ensure_ascii=False, sort_keys=True)),)
    return None, ()


def from_responses(items: Iterable[Any], *, strict: bool = True) -> tuple[str | None, list[Message]]:
    """Responses API input items → (system prompt, Messages). See the module docstring."""
    system: list[str] = []
    out: list[Message] = []
    role: str | None = None
    blocks: list[ContentBlock] = []

    def flush() -> None:
        if role is not None and blocks:
            out.append(Message(role, tuple(blocks)))  # type: ignore[arg-type]

    for i, item in enumerate(items):
        r, bs = item_blocks(item, i, strict=strict)
        if r is None:
            continue
        if r == "system":
            system.append("".join(b.text for b in bs if isinstance(b, TextBlock)))
            continue
        # a user text item after user text starts no new message: the Anthropic API would
        # merge consecutive user turns anyway; tool results lead their user message
        if r != role:
            flush()
            role, blocks = r, []
        blocks.extend(bs)
    flush()
    return ("\n\n".join(system) if system else None), out


def _tool_output(block: ToolResultBlock) -> str | list[dict[str, Any]]:
    if isinstance(block.content, str):
        return block.content
    return [{"type": "input_text", "text": t.text} for t in block.content]


def _assistant_items(m: Message) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    texts: list[TextBlock] = []
    for b in (*m.content, None):  # None flushes the last run of text
        if isinstance(b, TextBlock):
            texts.append(b)
            continue
        if texts:
            items.append({
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": t.text, "annotations": []} for t in texts],
            })
            texts = []
        if isinstance(b, ThinkingBlock):
            item: dict[str, Any] = {"type": "reasoning", "summary": [{"type": "summary_text", "text": b.thinking}]}
            if b.signature:
                item["encrypted_content"] = b.signature
            items.append(item)
        elif isinstance(b, RedactedThinkingBlock):
            items.append({"type": "reasoning", "summary": [], "encrypted_content": b.data})
        elif isinstance(b, ToolUseBlock):
            if set(b.input) == {CUSTOM_INPUT} and isinstance(b.input[CUSTOM_INPUT], str):
                items.append({"type": "custom_tool_call", "call_id": b.id, "name": b.name,
                              "input": b.input[CUSTOM_INPUT]})
                continue
            items.append({
                "type": "function_call",
                "call_id": b.id,
                "name": b.name,
                "arguments": json.dumps(b.input, ensure_ascii=False),
            })
    return items


def custom_call_ids(messages: Iterable[Message]) -> set[str]:
    """Ids of the custom (free-text input) tool calls among ``messages``: their outputs are
    ``custom_tool_call_output`` items (see :func:`to_responses`'s ``custom_calls``)."""
    return {b.id for m in messages if m.role == "assistant" for b in m.tool_uses
            if set(b.input) == {CUSTOM_INPUT}}


def to_responses(
    messages: Sequence[Message], system: str | None = None, *, custom_calls: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Messages (+ optional system prompt) → Responses API input items.

    Items carry no ids (the API assigns them); thinking becomes a ``reasoning`` item whose
    ``encrypted_content`` is the block's signature (reasoning is only reusable by the API
    with the id it issued, which the verbatim items of a session keep).
    """
    items: list[dict[str, Any]] = []
    custom = set(custom_calls) | custom_call_ids(messages)
    if system:
        items.append({"type": "message", "role": "system", "content": system})
    for m in messages:
        if m.role == "user":
            results = [b for b in m.content if isinstance(b, ToolResultBlock)]
            for r in results:
                kind = "custom_tool_call_output" if r.tool_use_id in custom else "function_call_output"
                items.append({"type": kind, "call_id": r.tool_use_id, "output": _tool_output(r)})
            texts = [b for b in m.content if isinstance(b, TextBlock)]
            if texts or not results:
                items.append({
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": t.text} for t in texts],
                })
            continue
        items.extend(_assistant_items(m))
    return items


__all__ = ["CUSTOM_INPUT", "HOSTED_CALLS", "MAPPED_TYPES", "custom_call_ids", "from_responses", "item_blocks", "item_type",
           "to_responses"]
