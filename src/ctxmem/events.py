"""The append-only, typed session events.

A session is a chain of events linked by parent pointers. Six kinds:

=============  ==============================================================
``message``    content blocks of one role that are not tool blocks (text, thinking)
``tool_call``  one ``tool_use`` block the assistant emitted
``tool_result`` one ``tool_result`` block (the tool's output), stored by content hash
``model_call`` one request to a model: model name, usage, stop reason, latency
``compaction`` a strategy compacted the context: tokens before/after, source ids, summary
``note``       free text (and tags) attached by the user or the agent loop
=============  ==============================================================

A recorded :class:`~ctxmem.messages.Message` is split into content events in block order:
runs of text/thinking blocks become one ``message`` event, each tool block its own event;
the first carries ``new_message=True``. The view rebuilds messages by appending each
content event to the current message and starting a new one at ``new_message`` or a role
change, so recording then viewing gives back exactly the same messages. Tool results
recorded one at a time as tools finish (``new_message=False``) join the user message of
results that follows the assistant's tool calls.

Events never change once written. A compaction does not edit history: it is an event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from ctxmem.errors import InvalidConversationError
from ctxmem.messages import ContentBlock, Message, Role, ToolResultBlock, ToolUseBlock

EventKind: TypeAlias = Literal["message", "tool_call", "tool_result", "model_call", "compaction", "note"]
EVENT_KINDS: tuple[str, ...] = ("message", "tool_call", "tool_result", "model_call", "compaction", "note")
CONTENT_KINDS: frozenset[str] = frozenset({"message", "tool_call", "tool_result"})


@dataclass(frozen=True, slots=True)
class MessageEvent:
    role: Role
    blocks: tuple[ContentBlock, ...]
    new_message: bool = True
    kind: Literal["message"] = field(default="message", init=False)


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    tool_use: ToolUseBlock
    new_message: bool = False
    kind: Literal["tool_call"] = field(default="tool_call", init=False)


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    result: ToolResultBlock
    tool_name: str | None = None
    duration_s: float | None = None
    new_message: bool = False
    kind: Literal["tool_result"] = field(default="tool_result", init=False)


@dataclass(frozen=True, slots=True)
class ModelCallEvent:
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    stop_reason: str | None = None
    latency_s: float | None = None
    estimated_input_tokens: int | None = None
    request_id: str | None = None
    kind: Literal["model_call"] = field(default="model_call", init=False)


@dataclass(frozen=True, slots=True)
class CompactionEvent:
    strategy: str
    tokens_before: int
    tokens_after: int
    source_event_ids: tuple[int, ...] = ()
    summary: str | None = None
    reason: str | None = None
    kind: Literal["compaction"] = field(default="compaction", init=False)


@dataclass(frozen=True, slots=True)
class NoteEvent:
    text: str
    tags: tuple[str, ...] = ()
    kind: Literal["note"] = field(default="note", init=False)


Event: TypeAlias = MessageEvent | ToolCallEvent | ToolResultEvent | ModelCallEvent | CompactionEvent | NoteEvent
ContentEvent: TypeAlias = MessageEvent | ToolCallEvent | ToolResultEvent


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored: with its id, its session, its parent and its time."""

    id: int
    session_id: str
    parent_id: int | None
    created_at: float
    event: Event

    @property
    def kind(self) -> str:
        return self.event.kind


def role_of(event: Event) -> Role | None:
    if isinstance(event, MessageEvent):
        return event.role
    if isinstance(event, ToolCallEvent):
        return "assistant"
    if isinstance(event, ToolResultEvent):
        return "user"
    return None


def _misplaced(b: ToolUseBlock | ToolResultBlock, role: str) -> InvalidConversationError:
    return InvalidConversationError(
        f"a {b.type} block cannot appear in a {role} message "
        f"({'tool_use belongs to assistant' if b.type == 'tool_use' else 'tool_result belongs to user'} messages)",
        field="content",
    )


def events_from_message(message: Message) -> list[ContentEvent]:
    """Split a message into content events, in block order (see the module docstring).

    Raises :class:`~ctxmem.errors.InvalidConversationError` for a ``tool_use`` in a user
    message or a ``tool_result`` in an assistant message: tool events carry their role, so
    storing such a block would silently move it to another message.
    """
    role = message.role
    out: list[ContentEvent] = []
    run: list[ContentBlock] = []
    # One pass: a misplaced block raises when reached (before anything is returned, so the
    # first misplaced block in order is the one reported, as a separate check would).
    for b in message.content:
        if isinstance(b, ToolUseBlock):
            if role != "assistant":
                raise _misplaced(b, role)
            if run:
                out.append(MessageEvent(role, tuple(run), new_message=not out))
                run = []
            out.append(ToolCallEvent(b, new_message=not out))
        elif isinstance(b, ToolResultBlock):
            if role != "user":
                raise _misplaced(b, role)
            if run:
                out.append(MessageEvent(role, tuple(run), new_message=not out))
                run = []
            out.append(ToolResultEvent(b, new_message=not out))
        else:
            run.append(b)
    if run:
        out.append(MessageEvent(role, tuple(run), new_message=not out))
    if not out:  # an empty message still marks a message boundary
        out.append(MessageEvent(message.role, (), new_message=True))
    return out


def _blocks_of(event: ContentEvent) -> tuple[ContentBlock, ...]:
    if isinstance(event, MessageEvent):
        return event.blocks
    if isinstance(event, ToolCallEvent):
        return (event.tool_use,)
    return (event.result,)


def messages_from_events(events: Iterable[Event]) -> list[Message]:
    """Rebuild messages from events (non-content events are skipped)."""
    out: list[Message] = []
    role: Role | None = None
    blocks: list[ContentBlock] = []
    for ev in events:
        r = role_of(ev)
        if r is None:
            continue
        assert isinstance(ev, MessageEvent | ToolCallEvent | ToolResultEvent)
        if role is None or r != role or ev.new_message:
            if role is not None:
                out.append(Message(role, tuple(blocks)))
            role, blocks = r, []
        blocks.extend(_blocks_of(ev))
    if role is not None:
        out.append(Message(role, tuple(blocks)))
    return out


def message_spans(events: Sequence[StoredEvent]) -> Iterator[tuple[Message, list[int]]]:
    """Like :func:`messages_from_events`, also yielding the event ids behind each message."""
    role: Role | None = None
    blocks: list[ContentBlock] = []
    ids: list[int] = []
    for se in events:
        ev = se.event
        r = role_of(ev)
        if r is None:
            continue
        assert isinstance(ev, MessageEvent | ToolCallEvent | ToolResultEvent)
        if role is None or r != role or ev.new_message:
            if role is not None:
                yield Message(role, tuple(blocks)), ids
            role, blocks, ids = r, [], []
        blocks.extend(_blocks_of(ev))
        ids.append(se.id)
    if role is not None:
        yield Message(role, tuple(blocks)), ids


def pending_tool_uses(events: Iterable[Event]) -> list[ToolUseBlock]:
    """Tool calls that never got a result, in call order (what a resume must account for)."""
    calls: dict[str, ToolUseBlock] = {}
    for ev in events:
        if isinstance(ev, ToolCallEvent):
            calls[ev.tool_use.id] = ev.tool_use
        elif isinstance(ev, ToolResultEvent):
            calls.pop(ev.result.tool_use_id, None)
    return list(calls.values())


def event_payload(event: Event) -> dict[str, Any]:
    """JSON-ready fields of a non-content event (content events are stored in columns/blobs)."""
    if isinstance(event, ModelCallEvent):
        return {
            "model": event.model,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cache_read_tokens": event.cache_read_tokens,
            "cache_write_tokens": event.cache_write_tokens,
            "stop_reason": event.stop_reason,
            "latency_s": event.latency_s,
            "estimated_input_tokens": event.estimated_input_tokens,
            "request_id": event.request_id,
        }
    if isinstance(event, CompactionEvent):
        return {
            "strategy": event.strategy,
            "tokens_before": event.tokens_before,
            "tokens_after": event.tokens_after,
            "source_event_ids": list(event.source_event_ids),
            "summary": event.summary,
            "reason": event.reason,
        }
    if isinstance(event, NoteEvent):
        return {"text": event.text, "tags": list(event.tags)}
    raise TypeError(f"{event.kind} events are stored as content, not payload")


def event_from_payload(kind: str, payload: dict[str, Any]) -> Event:
    if kind == "model_call":
        return ModelCallEvent(**payload)
    if kind == "compaction":
        return CompactionEvent(**{**payload, "source_event_ids": tuple(payload.get("source_event_ids") or ())})
    if kind == "note":
        return NoteEvent(payload["text"], tuple(payload.get("tags") or ()))
    raise ValueError(f"unknown payload event kind {kind!r}")
