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

**Writes are validated at the door**, before anything is written; a refused write leaves
the store exactly as it was and raises an :class:`~ctxmem.errors.InputError` whose
``field`` names the offending value:

* content that could not be stored or exported (``ctxmem.events.check_message``): lone
  surrogates, NaN/infinite numbers, JSON nested deeper than ``ctxmem.events.MAX_DEPTH``,
  values that are not JSON;
* tool ids that would make the conversation invalid
  (:class:`~ctxmem.errors.InvalidConversationError`): a ``tool_result`` whose id no
  ``tool_use`` of the chain carries, a second result for the same id, a ``tool_use`` id
  the chain already holds; a message recorded while tool calls still wait for their
  results (a provider wants the results to open the message after the calls): an
  assistant message, or user text before the results.

The tool-id check reads the chain's tool events once per handle, then only what was
appended since (``SessionStore.tool_events(after_event_id=...)``), so it stays cheap on a
long session and sees what other handles and processes appended. The write is a
conditional on what the check read (``SessionStore.append(check=AppendCheck(head, ids))``,
tested inside the write transaction): if another writer appended an event carrying one of
the batch's tool ids since (or rewound the chain), the ledger catches up and the batch is
checked again, so two writers answering the *same* call at the same instant get one
result stored and one ``InvalidConversationError``; unrelated appends never block it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from ctxmem.errors import (
    EventNotFoundError,
    HeadMovedError,
    InputError,
    InvalidConversationError,
    StoreError,
)
from ctxmem.events import (
    CompactionEvent,
    Event,
    MessageEvent,
    ModelCallEvent,
    NoteEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    check_block,
    check_event,
    check_message,
    events_from_message,
    format_path,
    json_problem,
    message_spans,
    messages_from_events,
    surrogate_at,
)
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.store.base import AppendCheck, ChainView, SessionInfo, SessionStore, TokenTotals

#: how often a checked tool write re-reads a session that other writers keep moving
_CAS_ATTEMPTS = 64


class _ToolLedger:
    """What one handle knows of its chain's tool ids: every tool_use id (→ tool name) and
    every answered id, read up to ``head``. ``ready`` is False until first read."""

    __slots__ = ("answered", "head", "names", "open", "ready")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.answered: set[str] = set()
        self.open: dict[str, None] = {}  # the calls without a result, in call order (kept as read: O(1) a write)
        self.head: int | None = None
        self.ready = False

    def sync(self, store: SessionStore, session_id: str) -> None:
        """Catch up with the chain: only the tool events after ``head``, or all of them
        on the first call and after a rewind took ``head`` out of the chain."""
        if self.ready and self.head is not None:
            try:
                head, refs = store.tool_events(session_id, after_event_id=self.head)
            except EventNotFoundError:
                self.ready = False
        if not self.ready or self.head is None:
            head, refs = store.tool_events(session_id)
            self.names.clear()
            self.answered.clear()
            self.open.clear()
        for ref in refs:
            if ref.kind == "tool_call":
                self.names[ref.tool_use_id] = ref.tool_name or ""
                if ref.tool_use_id not in self.answered:
                    self.open[ref.tool_use_id] = None
            else:
                self.answered.add(ref.tool_use_id)
                self.open.pop(ref.tool_use_id, None)
        self.head, self.ready = head, True

    def pending(self) -> list[str]:
        return list(self.open)

    def admit(self, events: Sequence[Event], fields: Sequence[str]) -> list[Event]:
        """Check the batch's tool ids against the chain (and earlier events of the batch)
        and name its tool results; raise before anything is written. ``fields[k]`` is the
        error path prefix of the k-th tool event of the batch."""
        out: list[Event] = []
        calls: dict[str, str] = {}
        answered: set[str] = set()
        waiting = dict(self.open)  # calls whose results must come next, in call order
        role: str | None = None  # the role of the batch's current message (None: none begun yet)
        k = 0
        for ev in events:
            if isinstance(ev, ToolCallEvent | ToolResultEvent | MessageEvent):
                ev_role = "assistant" if isinstance(ev, ToolCallEvent) else "user" if isinstance(ev, ToolResultEvent) else ev.role
                starts = ev.new_message or (role is not None and ev_role != role)
                # continuing the assistant message that made the waiting calls is fine (text
                # between tool_use blocks); so is an event that continues the chain's own
                # assistant message (record_events), which this batch cannot see
                if waiting and not isinstance(ev, ToolResultEvent) and (starts or ev_role != "assistant"):
                    raise _not_answered_yet(list(waiting), {**self.names, **calls}, ev_role)
                if starts or role is None:
                    role = ev_role
            if isinstance(ev, ToolCallEvent):
                waiting[ev.tool_use.id] = None
                uid = ev.tool_use.id
                if uid in self.names or uid in calls:
                    raise InvalidConversationError(
                        f"tool_use id {uid!r} is already used in this session; give each tool call a fresh id",
                        field=fields[k] + "id",
                    )
                calls[uid] = ev.tool_use.name
                k += 1
            elif isinstance(ev, ToolResultEvent):
                tid = ev.result.tool_use_id
                name = calls.get(tid, self.names.get(tid))
                if name is None:
                    pending = [*self.pending(), *(c for c in calls if c not in answered)]
                    open_calls = (
                        "calls waiting for a result: " + ", ".join(repr(p) for p in pending[-5:])
                        if pending else "no call is waiting for a result"
                    )
                    raise InvalidConversationError(
                        f"tool_result for {tid!r} answers no tool_use of this session ({open_calls}); "
                        "record the assistant message with that tool_use first, or fix the id",
                        field=fields[k] + "tool_use_id",
                    )
                if tid in self.answered or tid in answered:
                    raise InvalidConversationError(
                        f"tool_use {tid!r} already has a result; a tool call is answered once "
                        "(record a new tool_use to run the tool again)",
                        field=fields[k] + "tool_use_id",
                    )
                answered.add(tid)
                waiting.pop(tid, None)
                if ev.tool_name is None and name:  # == replace(ev, tool_name=name), without its overhead
                    ev = ToolResultEvent(ev.result, name, ev.duration_s, ev.new_message)
                k += 1
            out.append(ev)
        return out


def _not_answered_yet(waiting: list[str], names: dict[str, str], role: str) -> InvalidConversationError:
    """A message (or text) recorded while tool calls still wait for their results: a
    provider refuses a tool_use that is not answered at the start of the next message."""
    shown = ", ".join(f"{i!r} ({names[i]})" if names.get(i) else repr(i) for i in waiting[:5])
    more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
    what = "an assistant message" if role == "assistant" else "user text"
    return InvalidConversationError(
        f"tool call{'s' if len(waiting) > 1 else ''} {shown}{more} still wait{'' if len(waiting) > 1 else 's'} for "
        f"a result, so {what} cannot come next (a provider refuses a tool_use whose results do not open the "
        "next message). Record the results first (Session.record_tool_result; after a crash, Agent.resume() "
        "settles them), then the message; or rewind the session to before the call",
        field="role" if role == "assistant" else "content",
    )


def _tool_ids(events: Sequence[Event]) -> frozenset[str]:
    """The tool_use ids a batch's tool calls and results carry."""
    return frozenset(
        ev.tool_use.id if isinstance(ev, ToolCallEvent) else ev.result.tool_use_id
        for ev in events if isinstance(ev, ToolCallEvent | ToolResultEvent)
    )


def _tool_fields(message: Message, prefix: str = "") -> list[str]:
    """Error path prefix of each tool block of ``message``, in block (= event) order."""
    return [f"{prefix}content[{i}]." for i, b in enumerate(message.content) if isinstance(b, ToolUseBlock | ToolResultBlock)]


def check_session_fields(session_id: str | None, title: str | None, metadata: dict[str, Any] | None) -> None:
    """Refuse a session id, title or metadata that could not be stored and read back."""
    for name, value in (("session_id", session_id), ("title", title)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f"must be a string, got {type(value).__name__}", field=name)
        at = surrogate_at(value)
        if at >= 0:
            raise InputError(f"holds a lone surrogate at character {at}; fix: remove it", field=name)
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InputError(f"must be a dict, got {type(metadata).__name__}", field="metadata")
        problem = json_problem(metadata)
        if problem is not None:
            raise InputError(problem[1], field=format_path(problem[0], "metadata"))
        if "system" in metadata and not isinstance(metadata["system"], str):
            # the system prompt: builds, exports and imports read it as text
            raise InputError(f"the system prompt must be a string, got {type(metadata['system']).__name__}",
                             field="metadata.system")


class Session:
    """A handle on one session of a store: record events, view messages, fork, rewind.

    Create one with :meth:`create` (optionally with its first messages, atomically) or
    :meth:`open`. Several handles (and processes) may write the same session; every
    write is one transaction, validated first (see the module docstring). A session is one
    conversation: while a tool call waits for its result, only results may be recorded
    (another writer's message is refused, naming the call, until the result lands).
    """

    def __init__(self, store: SessionStore, session_id: str):
        self.store = store
        self.id = session_id
        self._ledger = _ToolLedger()

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
        messages: Sequence[Message] = (),
    ) -> Session:
        """A new session; with ``messages``, created holding them in one transaction (the
        session exists with all of them or not at all). Raises ``InputError`` for invalid
        messages, metadata or a taken id, before anything is written."""
        check_session_fields(session_id, title, metadata)
        if isinstance(tokenizers, str):  # one name, not its characters
            tokenizers = (tokenizers,)
        events: list[Event] = []
        if messages:
            events = _ToolLedger().admit(*_message_events(messages))
        info = store.create_session(
            session_id=session_id or uuid.uuid4().hex, title=title, metadata=metadata, tokenizers=tokenizers,
            events=events,
        )
        return cls(store, info.id)

    @classmethod
    def open(cls, store: SessionStore, session_id: str) -> Session:
        """A handle on an existing session. Raises ``SessionNotFoundError``."""
        store.get_session(session_id)  # raises SessionNotFoundError
        return cls(store, session_id)

    @property
    def info(self) -> SessionInfo:
        """The session's stored record, read now: title, metadata, tokenizers, head event,
        and the session (and event) it was forked from."""
        return self.store.get_session(self.id)

    # ------------------------------------------------------------------ recording

    def _append(self, events: Sequence[Event], fields: Sequence[str]) -> list[int]:
        """Validate tool ids against the chain (when the batch has tool events), then append
        on condition that the head is still the one checked against (a compare-and-swap);
        when another writer moved it in between, catch up and check again."""
        if not any(isinstance(ev, ToolCallEvent | ToolResultEvent | MessageEvent) for ev in events):
            return self.store.append(self.id, events)
        # a message (not only tool results) must not land after a tool call another writer
        # appended since the check: it would come between that call and its results
        ordered = any(isinstance(ev, ToolCallEvent | MessageEvent) for ev in events)
        for _ in range(_CAS_ATTEMPTS):
            self._ledger.sync(self.store, self.id)
            admitted = self._ledger.admit(events, fields)
            try:
                check = AppendCheck(self._ledger.head, _tool_ids(admitted), ordered=ordered)
                return self.store.append(self.id, admitted, check=check)
            except HeadMovedError:
                continue  # another writer appended since the sync: what it wrote is checked next
        raise StoreError(
            f"session {self.id!r} kept moving under {_CAS_ATTEMPTS} attempts to write a checked tool event; "
            "nothing was written: retry when fewer writers are busy"
        )

    def record(self, message: Message) -> list[int]:
        """Record one message (split into content events, atomically). Returns event ids.

        Raises ``InputError`` (``field`` like ``content[1].input.x``) for content that could
        not be stored, and ``InvalidConversationError`` for a tool_result that answers no
        pending tool_use; nothing is written then."""
        check_message(message)
        return self._append(events_from_message(message), _tool_fields(message))

    def record_many(self, messages: Sequence[Message]) -> list[int]:
        """Record several messages in one transaction (all or none; errors name
        ``[k].content[i]...``, k the message's index)."""
        return self._append(*_message_events(messages))

    def record_events(self, events: Sequence[Event]) -> list[int]:
        """Record events as they are (one transaction), validated like messages."""
        fields: list[str] = []
        for k, ev in enumerate(events):
            check_event(ev, f"[{k}].")
            if isinstance(ev, ToolCallEvent):
                fields.append(f"[{k}].tool_use.")
            elif isinstance(ev, ToolResultEvent):
                fields.append(f"[{k}].result.")
        return self._append(events, fields)

    def record_tool_result(
        self,
        tool_use_id: str,
        content: str | tuple[TextBlock, ...],
        *,
        is_error: bool = False,
        tool_name: str | None = None,
        duration_s: float | None = None,
    ) -> int:
        """Record one tool's output as soon as it finishes (it joins the results message).

        ``tool_use_id`` must be a tool_use of this session that has no result yet, else
        ``InvalidConversationError`` (``field="tool_use_id"``) and nothing is written."""
        block = ToolResultBlock(tool_use_id, content, is_error)
        check_block(block)
        ev = ToolResultEvent(block, tool_name, duration_s)
        check_event(ev)
        return self._append([ev], [""])[0]

    def tool_id_taken(self, tool_use_id: str) -> bool:
        """Whether a tool_use of this session's chain already carries ``tool_use_id`` (a new
        call with it would be refused: some local servers number calls ``call_0`` every turn)."""
        self._ledger.sync(self.store, self.id)
        return tool_use_id in self._ledger.names

    def record_model_call(self, model: str, **fields: Any) -> int:
        """Record a model request's usage: input/output/cache tokens, stop reason, latency."""
        known = set(ModelCallEvent.__dataclass_fields__) - {"model", "kind"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InputError(f"unknown field; expected some of {', '.join(sorted(known))}", field=unknown[0])
        ev = ModelCallEvent(model, **fields)
        check_event(ev)
        return self.store.append(self.id, [ev])[0]

    def record_compaction(self, event: CompactionEvent) -> int:
        """Record that a strategy compacted the context (the log itself is not edited)."""
        check_event(event)
        return self.store.append(self.id, [event])[0]

    def note(self, text: str, *tags: str) -> int:
        """Attach free text (and tags) to the session."""
        ev = NoteEvent(text, tags)
        check_event(ev)
        return self.store.append(self.id, [ev])[0]
    # ------------------------------------------------------------------ viewing

    def chain(self, *, tokenizers: Sequence[str] = ()) -> ChainView:
        """The current chain (root to head, forks and rewinds applied) with each event's
        stored token counts for ``tokenizers`` (no recount)."""
        return self.store.chain(self.id, tokenizers=tokenizers)

    def events(self) -> list[StoredEvent]:
        """The current chain's events, oldest first, with the ids fork and rewind take."""
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
        """A new session sharing this one's history up to ``at_event_id`` (one transaction)."""
        return Session(self.store, self.store.fork(self.id, at_event_id, title=title).id)

    def rewind(self, to_event_id: int | None) -> None:
        """Move the head back to ``to_event_id`` (None: empty); later events stay stored."""
        self.store.rewind(self.id, to_event_id)
        self._ledger = _ToolLedger()

    def __repr__(self) -> str:
        return f"Session({self.id!r})"


def _message_events(messages: Sequence[Message]) -> tuple[list[Event], list[str]]:
    """Content-check messages and split them into events, with each tool event's error path."""
    events: list[Event] = []
    fields: list[str] = []
    for k, m in enumerate(messages):
        prefix = f"[{k}]."
        check_message(m, prefix)
        events.extend(events_from_message(m))
        fields.extend(_tool_fields(m, prefix))
    return events, fields
