"""The Session façade: record, view, fork, rewind, count.

A :class:`Session` is a handle on one session in a :class:`~ctxmem.store.SessionStore`.
Recording appends events; viewing rebuilds the provider-shaped messages from the current
chain. Everything an agent loop needs goes through here::

    store = SQLiteStore("agent.db")
    session = Session.create(store, title="kernel run", tokenizers=["o200k_base"])
    session.record(Message.user("Optimize the kernel."))
    session.record(response_message)                 # assistant text + tool_use blocks
    session.record_tool_result("toolu_1", output, tool_name="compile")
    session.record_model_call("claude-sonnet-4-5", input_tokens=1200, output_tokens=80)
    session.messages()                               # → list[Message] for the next request
    session.totals("o200k_base").total               # O(1)

The session is append-only: nothing here edits or deletes an event. ``fork`` starts a new
session that shares history up to an event; ``rewind`` moves the head back (later events
stay stored and reachable by id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ctxmem.events import (
    CompactionEvent,
    ContentEvent,
    Event,
    ModelCallEvent,
    NoteEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    events_from_message,
    message_spans,
    messages_from_events,
)
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.store.base import ChainView, SessionInfo, SessionStore, TokenTotals


class Session:
    def __init__(self, store: SessionStore, session_id: str):
        self.store = store
        self.id = session_id
        self._tool_names: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        store: SessionStore,
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        tokenizers: Sequence[str] = (),
    ) -> Session:
        info = store.create_session(session_id=session_id, title=title, metadata=metadata, tokenizers=tokenizers)
        return cls(store, info.id)

    @classmethod
    def open(cls, store: SessionStore, session_id: str) -> Session:
        store.get_session(session_id)  # raises SessionNotFoundError
        return cls(store, session_id)

    @property
    def info(self) -> SessionInfo:
        return self.store.get_session(self.id)

    # ------------------------------------------------------------------ recording

    def _named(self, events: list[ContentEvent]) -> list[ContentEvent]:
        # Tool results carry their tool's name (for search, reducers and reports): take it
        # from the tool_use recorded through this handle or earlier in the same batch.
        out: list[ContentEvent] = []
        for ev in events:
            if isinstance(ev, ToolCallEvent):
                self._tool_names[ev.tool_use.id] = ev.tool_use.name
            elif isinstance(ev, ToolResultEvent) and ev.tool_name is None:
                name = self._tool_names.get(ev.result.tool_use_id)
                if name is not None:  # == replace(ev, tool_name=name), without its overhead
                    ev = ToolResultEvent(ev.result, name, ev.duration_s, ev.new_message)
            out.append(ev)
        return out

    def record(self, message: Message) -> list[int]:
        """Record one message (split into content events, atomically). Returns event ids."""
        return self.store.append(self.id, self._named(events_from_message(message)))

    def record_many(self, messages: Sequence[Message]) -> list[int]:
        """Record several messages in one transaction."""
        events: list[ContentEvent] = []
        for m in messages:
            events.extend(events_from_message(m))
        return self.store.append(self.id, self._named(events))

    def record_events(self, events: Sequence[Event]) -> list[int]:
        return self.store.append(self.id, events)

    def record_tool_result(
        self,
        tool_use_id: str,
        content: str | tuple[TextBlock, ...],
        *,
        is_error: bool = False,
        tool_name: str | None = None,
        duration_s: float | None = None,
    ) -> int:
        """Record one tool's output as soon as it finishes (it joins the results message)."""
        ev = ToolResultEvent(ToolResultBlock(tool_use_id, content, is_error), tool_name, duration_s)
        return self.store.append(self.id, self._named([ev]))[0]

    def record_model_call(self, model: str, **fields: Any) -> int:
        """Record a model request's usage: input/output/cache tokens, stop reason, latency."""
        return self.store.append(self.id, [ModelCallEvent(model, **fields)])[0]

    def record_compaction(self, event: CompactionEvent) -> int:
        return self.store.append(self.id, [event])[0]

    def note(self, text: str, *tags: str) -> int:
        return self.store.append(self.id, [NoteEvent(text, tags)])[0]

    # ------------------------------------------------------------------ viewing

    def chain(self, *, tokenizers: Sequence[str] = ()) -> ChainView:
        return self.store.chain(self.id, tokenizers=tokenizers)

    def events(self) -> list[StoredEvent]:
        return self.store.chain(self.id).events

    def messages(self) -> list[Message]:
        """The conversation as provider-shaped messages, oldest first."""
        return messages_from_events(se.event for se in self.store.chain(self.id).events)

    def messages_with_ids(self) -> list[tuple[Message, list[int]]]:
        """Each message with the ids of the events it was rebuilt from (provenance)."""
        return list(message_spans(self.store.chain(self.id).events))

    def totals(self, tokenizer: str) -> TokenTotals:
        """Content and overhead tokens of the current chain, O(1) for tracked tokenizers."""
        return self.store.totals(self.id, tokenizer)

    def pending_tool_uses(self) -> list[ToolUseBlock]:
        """Tool calls with no recorded result: what a resumed agent must re-run or fail."""
        return self.store.pending_tool_uses(self.id)

    # ------------------------------------------------------------------ branches

    def fork(self, at_event_id: int, *, title: str | None = None) -> Session:
        return Session(self.store, self.store.fork(self.id, at_event_id, title=title).id)

    def rewind(self, to_event_id: int | None) -> None:
        self.store.rewind(self.id, to_event_id)

    def __repr__(self) -> str:
        return f"Session({self.id!r})"
