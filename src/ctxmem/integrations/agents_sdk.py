"""A ctxmem session as an OpenAI Agents SDK ``Session``.

::

    from agents import Agent, Runner
    from ctxmem.integrations.agents_sdk import CtxmemSession

    session = CtxmemSession("user-42", store="agent.db")            # path, URL or store object
    await Runner.run(agent, "Find the bug.", session=session)
    await Runner.run(agent, "Now fix it.", session=session)         # sees the first run

It implements the SDK's ``Session`` protocol (``session_id``, ``session_settings``,
``get_items(limit)``, ``add_items``, ``pop_item``, ``clear_session``), with the semantics the
SDK documents for its own ``SQLiteSession``, on top of ctxmem's append-only store.

**Storage: lossless, and useful to ctxmem.** Each Responses-API item is recorded as the
content events it maps to (:mod:`ctxmem.integrations.responses`: a ``function_call`` is a
tool call, a ``function_call_output`` a tool result, …), so the session can be exported,
searched, recalled and compacted like any other; *and* as a ``note`` event (tag
``responses_item``) holding the item's exact JSON and how many content events it produced.
Item types the SDK pairs by ``call_id`` beyond function and custom tool calls
(``shell_call`` / ``shell_call_output``, ``computer_call``, ``local_shell_call``,
``apply_patch_call``, ``tool_search_call`` / ``tool_search_output``, ``program`` /
``program_output``, any other item with a ``call_id``) are a tool call named by the item type
(input: the item, less its ``id``) and a tool result holding the output item's JSON (its
texts — shell stdout/stderr, an output or result string — after it, raw), so a strategy
counts, masks and pairs them like any tool call; any other item ctxmem has no block for
(hosted calls, MCP approvals, item references, …) is assistant text of its JSON. Every item
a preset hands back is thus counted by its budget.
All events of one ``add_items`` call are appended in one transaction. ``get_items`` returns
the stored items exactly as added (ids, statuses, annotations, reasoning
``encrypted_content``, item types ctxmem has no block for).

**get_items.** ``get_items()`` returns every item, oldest first; ``get_items(limit=n)`` the
latest ``n`` (``0`` → none; a negative limit → all, as ``SQLiteSession``). ``limit=None``
falls back to ``session_settings.limit``.

*With a preset* (``CtxmemSession(..., preset="masking-200k")``), ``get_items()`` without a
limit returns what the preset builds within its budget (``context_window=`` overrides the
preset's window; leave room there for the agent's instructions and tools, which the
session does not see), as valid SDK input: every message the strategy kept unchanged comes
back as its original items, the rest (masked tool outputs, summaries) converted with
:func:`~ctxmem.integrations.responses.to_responses`; system/developer items lead. A
masked output of a paired item type stays that type, the placeholder in its text field
(``shell_call_output`` stdout, ``local_shell_call_output`` / ``apply_patch_call_output``
output, ``program_output`` result); one whose type holds no text (a ``computer_call_output``
screenshot, a ``tool_search_output``) is left out together with its call. A history
that ends with the previous run's final assistant reply — what the SDK has when it calls
``get_items`` before appending the new input — is built as the preset's context ending
with that reply, for the input that follows (``expect_input``,
:class:`~ctxmem.integrations._common.LoopBuilder`), never by inserting a fake turn. A
history that ends in tool calls still waiting for their outputs (an interrupted run) is
built up to that turn, and the turn's items follow verbatim. ``get_items(limit=n)`` always
returns stored items verbatim: the SDK reads bounded tails to verify its own writes. The
default is ``preset=None``: every stored item, verbatim, like ``SQLiteSession``.

**Recall.** A masking preset's placeholders name a ``recall`` handle; the SDK agent holds
the tools, so add :meth:`CtxmemSession.recall_tool` to them to let the model fetch an
original output (a line range or the lines matching a pattern) from the session's log.

**History is never destroyed.** ``pop_item`` is a rewind: the session head moves back to
before the item's events, which stay stored and reachable by id; a note records the head
it moved from. ``clear_session`` starts a new branch: the head moves to empty,
the previous branch is kept as a fork of the session at its old head (sharing its
events, copying nothing); a note names it and :meth:`CtxmemSession.branches` lists every
branch set aside so far.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ctxmem.config import Preset
from ctxmem.errors import ConfigError, InputError
from ctxmem.events import (
    ContentEvent,
    Event,
    MessageEvent,
    NoteEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    _blocks_of,
    role_of,
)
from ctxmem.integrations._common import (
    LoopBuilder,
    open_or_create,
    open_store,
    recall_function,
    resolve_preset,
)
from ctxmem.integrations.responses import (
    HOSTED_CALLS,
    MAPPED_TYPES,
    custom_call_ids,
    item_blocks,
    item_type,
    to_responses,
)
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store.base import SessionStore
from ctxmem.store.codec import gc_paused_over

ITEM_TAG = "responses_item"
CLEAR_TAG = "agents_sdk.clear_session"
POP_TAG = "agents_sdk.pop_item"
#: strategy-written messages whose items are kept as JSON between calls
_CONVERTED_KEPT = 8192


def _loads(text: str) -> Any:
    """A note's JSON, read by orjson (~3x faster; a context hands out thousands of items),
    or by json where orjson would read it differently: orjson refuses NaN, and reads an
    integer past 64 bits as a float, so a text with a run of 19 digits or more (where such
    an integer may be) is left to json."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


#: a run of digits that may spell an integer orjson reads as a float (past -2**63 .. 2**64-1)
_LONG_DIGITS = re.compile(r"\d{19}")


def _exact_json(items: list[Any]) -> bytes | None:
    """The items' JSON, comma-separated without the brackets, when parsing it gives back
    equal items (orjson writes a NaN as null and refuses an integer past 64 bits: None)."""
    try:
        data = orjson.dumps(items)
    except TypeError:
        return None
    if b"null" in data and orjson.loads(data) != items:  # a NaN (or ±inf) became null
        return None
    return data[1:-1]


def _items_json(notes: list[StoredEvent], kept: dict[int, tuple[int, bytes | None]], key: int) -> bytes | list[Any]:
    """The items of these stored notes as :func:`_exact_json`, kept in ``kept`` under
    ``key`` while the notes are the same (a message's notes only ever grow); new objects
    (:func:`_fresh`) when they have no exact JSON form."""
    got = kept.get(key)
    if got is None or got[0] != len(notes):
        data = None
        texts = [se.event.text for se in notes]  # type: ignore[union-attr]
        if not any(_LONG_DIGITS.search(t) for t in texts):
            try:  # what orjson reads holds no NaN and no integer past 64 bits: its items write back exactly
                items = [orjson.loads(t)["item"] for t in texts]
            except orjson.JSONDecodeError:
                pass
            else:
                data = _exact_json(items)
        got = kept[key] = (len(notes), data)
    return got[1] if got[1] is not None else [_fresh(se) for se in notes]


def _item_note(ev: StoredEvent) -> dict[str, Any] | None:
    e = ev.event
    if isinstance(e, NoteEvent) and ITEM_TAG in e.tags:
        data: dict[str, Any] = _loads(e.text)
        return data
    return None


def _fresh(se: StoredEvent) -> Any:
    """The stored item as a new object: callers may mutate what they get."""
    assert isinstance(se.event, NoteEvent)
    return _loads(se.event.text)["item"]


@dataclass
class _View:
    """The chain read as messages and items, kept and extended as the chain grows: what
    ``get_items`` with a preset needs, without a pass over the whole session each call."""

    chain: list[StoredEvent]
    n: int = 0  # events of ``chain`` read
    messages: list[Message] = field(default_factory=list)
    ids: list[tuple[int, ...]] = field(default_factory=list)
    msg_of_event: dict[int, int] = field(default_factory=dict)
    by_message: dict[int, list[StoredEvent]] = field(default_factory=dict)
    system_items: list[StoredEvent] = field(default_factory=list)
    system_texts: list[str] = field(default_factory=list)
    current: int = 0  # the message the last item's note belongs to
    # the last message, still open: the next content events of its role extend it
    role: str | None = None
    blocks: list[Any] = field(default_factory=list)
    open_ids: list[int] = field(default_factory=list)
    # the custom tool calls among messages[:custom_n] (closed messages: they never change)
    custom: set[str] = field(default_factory=set)
    custom_n: int = 0
    #: message index (-1: the system items) -> (notes covered, their items' JSON): see _items_json
    segments: dict[int, tuple[int, bytes | None]] = field(default_factory=dict)
    #: call_id -> the stored output item of a paired item type (_paired_call_id) answering it
    paired_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def custom_ids(self) -> set[str]:
        """``custom_call_ids`` of every message read, over only the ones new since the last call."""
        closed = len(self.messages) - 1  # the last message may still grow
        if self.custom_n < closed:
            self.custom |= custom_call_ids(self.messages[self.custom_n : closed])
            self.custom_n = closed
        return self.custom | custom_call_ids(self.messages[max(closed, 0) :])


def _paired_call_id(item: Any) -> str | None:
    """The ``call_id`` of an item the SDK pairs (a call, or the output item answering it) that
    :func:`item_blocks` does not map (``shell_call``, ``computer_call_output``, …); else None."""
    if not isinstance(item, dict):
        return None
    kind = item_type(item)
    call_id = item.get("call_id")
    if kind in MAPPED_TYPES or kind in HOSTED_CALLS or not isinstance(call_id, str) or not call_id:
        return None
    return call_id


def _is_output(item: dict[str, Any]) -> bool:
    return item_type(item).endswith("_output")


#: output item types holding one text, by its field (a shell_call_output holds stdout/stderr chunks)
_TEXT_FIELD = {"local_shell_call_output": "output", "apply_patch_call_output": "output", "program_output": "result"}


def _item_text(item: dict[str, Any]) -> str:
    """An item as counted text: its JSON (less its ``id``: an opaque handle, not content);
    the texts of an output item (shell stdout/stderr, an output or result string) follow
    it raw, as a ``function_call_output``'s text is counted, so a masking reducer and the
    recall tool see its lines."""
    rest = {k: v for k, v in item.items() if k != "id"}
    texts: list[str] = []
    kind = item_type(item)
    if kind == "shell_call_output" and isinstance(rest.get("output"), list):
        chunks: list[Any] = []
        for chunk in rest["output"]:
            if isinstance(chunk, dict):
                chunk = dict(chunk)
                for part in ("stdout", "stderr"):
                    if isinstance(chunk.get(part), str) and chunk[part]:
                        texts.append(chunk[part])
                        chunk[part] = ""
            chunks.append(chunk)
        rest["output"] = chunks
    elif (key := _TEXT_FIELD.get(kind)) is not None and isinstance(rest.get(key), str) and rest[key]:
        texts.append(rest[key])
        rest[key] = ""
    return "\n".join([json.dumps(rest, ensure_ascii=False, sort_keys=True), *texts])


def _paired_blocks(item: dict[str, Any], call_id: str) -> tuple[str, tuple[Any, ...]]:
    """A paired item as a tool call (named by its type; input: the item less its id) or,
    an output item, as the tool result holding its text (:func:`_item_text`)."""
    if _is_output(item):
        return "user", (ToolResultBlock(call_id, _item_text(item)),)
    return "assistant", (ToolUseBlock(call_id, item_type(item), {k: v for k, v in item.items() if k != "id"}),)


def _shortened(item: dict[str, Any], text: str) -> dict[str, Any] | None:
    """A paired output item whose output a strategy rewrote (masked, shortened) to ``text``:
    the same item with ``text`` in its type's text field; None for a type that holds no
    text (a screenshot, a tool list), whose call and output are then left out together."""
    kind = item_type(item)
    out = dict(item)
    if kind == "shell_call_output":
        chunks = item.get("output")
        first = chunks[0] if isinstance(chunks, list) and chunks and isinstance(chunks[0], dict) else {}
        outcome = first.get("outcome") or {"type": "exit", "exit_code": 0}
        out["output"] = [{"stdout": text, "stderr": "", "outcome": outcome}]
    elif kind in _TEXT_FIELD:
        out[_TEXT_FIELD[kind]] = text
    else:
        return None
    return out


def _content_events(item: Any, index: int, tool_names: dict[str, str]) -> list[ContentEvent]:
    call_id = _paired_call_id(item)
    role: str | None
    blocks: tuple[Any, ...]
    if call_id is not None:
        role, blocks = _paired_blocks(item, call_id)
    else:
        role, blocks = item_blocks(item, index, strict=False, hosted_as_text=True)
        if role is None:
            # an item type ctxmem has no block for (an MCP approval, an item reference, …): it
            # is handed back, so it is counted, as the JSON the model reads back (HOSTED_CALLS)
            role, blocks = "assistant", (TextBlock(json.dumps(item, ensure_ascii=False, sort_keys=True)),)
    if role == "system":
        return []
    out: list[ContentEvent] = []
    for b in blocks:
        # new_message=False throughout: consecutive items of one role form one message
        # (a response's reasoning, text and calls; a turn's tool outputs and user text)
        if isinstance(b, ToolUseBlock):
            tool_names[b.id] = b.name
            out.append(ToolCallEvent(b, new_message=False))
        elif isinstance(b, ToolResultBlock):
            out.append(ToolResultEvent(b, tool_names.get(b.tool_use_id), new_message=False))
        else:
            out.append(MessageEvent(role, (b,), new_message=False))  # type: ignore[arg-type]
    return out


class CtxmemSession:
    """The Agents SDK ``Session`` protocol over a ctxmem session (see the module docstring)."""

    def __init__(
        self,
        session_id: str,
        store: SessionStore | str | os.PathLike[str] = "memory://",
        *,
        preset: Preset | str | None = None,
        context_window: int | None = None,
        session_settings: Any = None,
        title: str | None = None,
    ):
        if not isinstance(session_id, str) or not session_id:
            raise ConfigError(f"expected a non-empty session id, got {session_id!r}", field="session_id")
        self.session_id = session_id
        self.store = open_store(store)
        self.session_settings = session_settings
        self.preset = resolve_preset(preset)
        meta: dict[str, Any] = {"source": "openai-agents"}
        if self.preset is not None:
            meta["strategy"] = self.preset.name
        self.session: Session = open_or_create(self.store, session_id, title=title, metadata=meta)
        self._builder = LoopBuilder(self.preset, context_window=context_window) if self.preset else None
        # a thread lock, taken in the worker thread: an asyncio.Lock binds to the first event
        # loop that waits on it, and a second asyncio.run then fails (and loses the items)
        self._lock = threading.Lock()
        self._chain: list[StoredEvent] | None = None
        self._chain_head: int | None = None
        self._notes: dict[int, dict[str, Any]] = {}
        self._view: _View | None = None
        #: (History uid, messages mapped, {id(message): position}): see _message_index
        self._index: tuple[int, int, dict[int, int]] | None = None
        #: id(message) -> (the message, its custom and paired call ids, its items as JSON, the
        #: paired calls left out): see _converted
        self._converted_memo: dict[int, tuple[Message, tuple[str, ...], tuple[str, ...], bytes, tuple[str, ...]]] = {}
        self.last_report: Any = None

    # ------------------------------------------------------------------ protocol

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """Stored items (``limit``: the latest n), or with a preset and no limit the built context."""
        settings = self.session_settings
        if limit is None and settings is not None:
            limit = settings.get("limit") if isinstance(settings, dict) else getattr(settings, "limit", None)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise InputError(f"limit must be a whole number of items or None, got {limit!r}", field="limit")
        if limit is None and self._builder is not None:
            return await asyncio.to_thread(self._locked, self._built_items)
        return await asyncio.to_thread(self._locked, self._stored_items, limit)

    async def add_items(self, items: list[Any]) -> None:
        """Append items (and their content events) in one transaction."""
        if isinstance(items, str | bytes | dict):
            raise InputError(f"items must be a list of items, got one {type(items).__name__}", field="items")
        if not items:
            return
        await asyncio.to_thread(self._locked, self._add, list(items))

    async def pop_item(self) -> Any | None:
        """Rewind past the most recent item and return it (None when there is none)."""
        return await asyncio.to_thread(self._locked, self._pop)

    async def clear_session(self) -> None:
        """Start a new, empty branch; the old one stays stored (see :meth:`branches`)."""
        await asyncio.to_thread(self._locked, self._clear)

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return fn(*args)

    # ------------------------------------------------------------------ beyond the protocol

    def recall_tool(self) -> Any:
        """The ``recall`` tool a masking preset's placeholders name, as an Agents SDK
        ``FunctionTool`` answering from this session's log: add it to the agent's tools
        (``Agent(..., tools=[*tools, session.recall_tool()])``)."""
        from agents import function_tool

        from ctxmem.context.masking import RECALL_TOOL

        recall = recall_function(lambda: self.session)
        return function_tool(recall, name_override=RECALL_TOOL.name, description_override=RECALL_TOOL.description,
                             strict_mode=False)

    def branches(self) -> list[str]:
        """Sessions holding the branches ``clear_session`` set aside (oldest first).

        Each is a fork of this session at its head before the clear: open it with
        ``CtxmemSession(branch_id, store=session.store)`` to read its items.
        """
        out: list[str] = []
        for se in self.store.chain(self.session_id).events:
            e = se.event
            if isinstance(e, NoteEvent) and CLEAR_TAG in e.tags:
                out.extend(t.split("=", 1)[1] for t in e.tags if t.startswith("branch="))
        return out

    # ------------------------------------------------------------------ implementation

    def _events(self) -> list[StoredEvent]:
        """The session's chain, cached and extended incrementally.

        Every call checks the head (one small query). When the head moved on from the one
        this handle last saw — another writer, or a strategy recording a compaction — the
        few new events are read back by parent pointer; anything else (a rewind, a fork)
        reloads the chain.
        """
        head = self.store.get_session(self.session_id).head_event_id
        if self._chain is not None and head == self._chain_head:
            return self._chain
        if self._chain is not None and head is not None:
            new = self._walk_back(head, self._chain_head)
            if new is not None:
                self._chain.extend(new)
                self._chain_head = head
                return self._chain
        self._chain = list(self.store.chain(self.session_id).events)
        self._chain_head = self._chain[-1].id if self._chain else None
        return self._chain

    def _walk_back(self, head: int, known: int | None, limit: int = 256) -> list[StoredEvent] | None:
        """Events from ``known`` (exclusive) to ``head``, oldest first; None if not found nearby."""
        event = getattr(self.store, "event", None)
        if event is None:
            return None
        out: list[StoredEvent] = []
        eid: int | None = head
        while eid is not None and eid != known and len(out) < limit:
            se = event(eid)
            out.append(se)
            eid = se.parent_id
        if eid != known:
            return None
        out.reverse()
        return out

    def _append(self, events: list[Event]) -> None:
        self._events()  # bring the cache up to the current head before extending it
        ids = self.store.append(self.session_id, events)
        if ids:
            new = self._walk_back(ids[-1], self._chain_head)
            if new is not None and self._chain is not None:
                self._chain.extend(new)
                self._chain_head = ids[-1]
            else:
                self._chain = None

    def _note(self, se: StoredEvent) -> dict[str, Any] | None:
        if not isinstance(se.event, NoteEvent):
            return None
        hit = self._notes.get(se.id)
        if hit is None:
            hit = self._notes[se.id] = _item_note(se) or {}
        return hit or None

    def _stored_items(self, limit: int | None) -> list[Any]:
        # items are handed out as fresh objects (a caller may mutate them), as SQLiteSession does
        items = [_fresh(se) for se in self._events() if self._note(se) is not None]
        if limit is None or limit < 0:
            return items
        return items[-limit:] if limit else []

    def _add(self, items: list[Any]) -> None:
        plain: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                # the SDK hands plain dicts; pydantic models (openai types) are accepted too
                dump = getattr(item, "model_dump", None)
                if dump is None:
                    raise InputError(f"item {i} must be a JSON object, got {type(item).__name__}", field="items")
                item = dump(exclude_unset=True, mode="json")
            plain.append(item)
        tool_names = self._tool_names(plain)
        events: list[Event] = []
        for i, item in enumerate(plain):
            try:
                content = _content_events(item, i, tool_names)  # an item's JSON may be counted text
                text = json.dumps({"item": item, "events": len(content)}, ensure_ascii=False)
            except InputError:
                raise
            except (TypeError, ValueError) as exc:
                raise InputError(f"item {i} is not JSON-serializable: {exc}", field="items") from None
            events.extend(content)
            events.append(NoteEvent(text, (ITEM_TAG,)))
        self._append(events)

    def _tool_names(self, items: list[dict[str, Any]]) -> dict[str, str]:
        """The names of the stored tool calls these items' outputs answer (the latest call of
        each id), read back from the newest event only as far as the last one of them: a
        turn's outputs answer calls a few events back, not the whole session."""
        ids = [(str(i.get("type", "")).endswith("_output"), i.get("call_id")) for i in items]
        # (a call among these items names its own outputs: _content_events reads it first)
        wanted = {c for out, c in ids if out and isinstance(c, str)} - {c for out, c in ids if not out}
        names: dict[str, str] = {}
        for se in reversed(self._events() if wanted else ()):
            e = se.event
            if isinstance(e, ToolCallEvent) and e.tool_use.id not in names:
                names[e.tool_use.id] = e.tool_use.name
                wanted.discard(e.tool_use.id)
                if not wanted:
                    break
        return names

    def _pop(self) -> Any | None:
        events = self._events()
        for j in range(len(events) - 1, -1, -1):
            note = self._note(events[j])
            if note is None:
                continue
            first = j - int(note["events"])
            head = events[-1].id
            target = events[first - 1].id if first > 0 else None
            self.store.rewind(self.session_id, target)
            self.store.append(self.session_id, [NoteEvent(f"pop_item: rewound from event {head}",
                                                          (POP_TAG, f"previous_head={head}"))])
            return note["item"]
        return None

    def _clear(self) -> None:
        head = self.store.get_session(self.session_id).head_event_id
        if head is None:
            return
        earlier = self.branches()
        branch = self.store.fork(self.session_id, head, title=f"{self.session_id} before clear_session").id
        self.store.rewind(self.session_id, None)
        tags = (CLEAR_TAG, *(f"branch={b}" for b in [*earlier, branch]))
        self.store.append(self.session_id, [NoteEvent(f"clear_session: the previous items are in session {branch}",
                                                      tags)])

    def _read_view(self) -> _View:
        """:class:`_View` of the current chain: extended by the events appended since the
        last call, rebuilt when the chain was reloaded (a rewind, a fork, another writer's
        branch)."""
        events = self._events()
        v = self._view
        if v is None or v.chain is not events or v.n > len(events):
            v = self._view = _View(events)
        grew = False
        for j in range(v.n, len(events)):
            se = events[j]
            ev = se.event
            r = role_of(ev)
            if r is not None:  # a content event: the message spans of message_spans, one at a time
                assert isinstance(ev, MessageEvent | ToolCallEvent | ToolResultEvent)
                if v.role is None or r != v.role or ev.new_message:
                    if grew:  # the open message is complete: it ends here
                        v.messages[-1] = Message(v.role, tuple(v.blocks))  # type: ignore[arg-type]
                        v.ids[-1] = tuple(v.open_ids)
                    v.role, v.blocks, v.open_ids = r, [], []
                    v.messages.append(Message(r, ()))  # filled in when it closes (below)
                    v.ids.append(())
                v.blocks.extend(_blocks_of(ev))
                v.open_ids.append(se.id)
                v.msg_of_event[se.id] = len(v.messages) - 1
                grew = True
            note = self._note(se)
            if note is None:
                continue
            item, n = note["item"], int(note["events"])
            if item_type(item) == "message" and item.get("role") in ("system", "developer"):
                _, blocks = item_blocks(item, j, strict=False)
                v.system_items.append(se)
                v.system_texts.append("".join(b.text for b in blocks if isinstance(b, TextBlock)))
                continue
            if n:
                v.current = v.msg_of_event[events[j - n].id]
                call_id = _paired_call_id(item)
                if call_id is not None and _is_output(item):
                    v.paired_outputs[call_id] = item
            v.by_message.setdefault(v.current, []).append(se)
        if grew:
            v.messages[-1] = Message(v.role, tuple(v.blocks))  # type: ignore[arg-type]
            v.ids[-1] = tuple(v.open_ids)
        v.n = len(events)
        return v

    def _built_items(self) -> list[Any]:
        assert self._builder is not None
        v = self._read_view()
        messages, ids, by_message = v.messages, v.ids, v.by_message
        system_items, system_texts = v.system_items, v.system_texts
        # a run interrupted between its tool calls and their outputs (an approval pending):
        # build the context before that turn and hand the turn back as it was stored
        pending = len(messages) - 1 if messages and messages[-1].role == "assistant" and messages[-1].tool_uses \
            else None
        if pending is not None:
            messages, ids = messages[:-1], ids[:-1]
        built = self._builder.build(self.session, messages, ids, system="\n\n".join(system_texts) or None)
        self.last_report = built.built.report
        history = built.history.messages
        index = self._message_index(built.history)
        custom = v.custom_ids()  # a masked output of a custom tool call stays a custom output
        # Every item as a new object (callers may mutate them): the items' JSON, kept per
        # message, joined and parsed in one orjson call (~2,800 items at 1M tokens: one
        # parse instead of one per stored note); a part that has no exact JSON form
        # (read by json: a NaN, an integer past 64 bits) is read as before, in its place.
        out: list[Any] = []
        run: list[bytes] = []
        left_out: set[str] = set()  # paired calls whose rewritten output has no form of its type

        def add(part: bytes | list[Any]) -> None:
            if isinstance(part, bytes):
                if part:
                    run.append(part)
                return
            if run:
                out.extend(orjson.loads(b"[" + b",".join(run) + b"]"))
                run.clear()
            out.extend(part)

        with gc_paused_over(len(index)):  # thousands of acyclic dicts: no collection over the history
            add(_items_json(system_items, v.segments, -1))
            for m in built.built.messages:
                k = index.get(id(m))
                if k is not None and history[k] is m and k in by_message:
                    add(_items_json(by_message[k], v.segments, k))
                else:
                    part, dropped = self._converted(m, custom, v.paired_outputs)
                    add(part)
                    if dropped:
                        left_out.update(dropped)
            if pending is not None:
                add(_items_json(by_message.get(pending, []), v.segments, pending))
            add([])
        if left_out:  # their outputs were left out: so are the calls (a call is never unanswered)
            kept: list[Any] = []
            for i in out:
                if isinstance(i, dict) and i.get("call_id") in left_out and _paired_call_id(i) is not None \
                        and not _is_output(i):
                    # and the reasoning items right before the call: the Responses API refuses a
                    # reasoning item without the item that followed it
                    while kept and isinstance(kept[-1], dict) and item_type(kept[-1]) == "reasoning":
                        kept.pop()
                    continue
                kept.append(i)
            out = kept
        return out

    def _message_index(self, history: Any) -> dict[int, int]:
        """``{id(message): position}`` of the built History's messages, extended with the
        messages appended since the last call (a History only appends; another History, after
        a rewind or a fork, starts a new map). A position is only used once the message
        there is checked to be the very object, so a reused id() can never mislead."""
        uid, n, index = self._index if self._index is not None else (None, 0, {})
        msgs = history.messages
        if uid != history.uid or n > len(msgs):
            n, index = 0, {}
        for k in range(n, len(msgs)):
            index[id(msgs[k])] = k
        self._index = (history.uid, len(msgs), index)
        return index

    def _converted(
        self, m: Message, custom: set[str], paired: dict[str, dict[str, Any]]
    ) -> tuple[bytes | list[Any], tuple[str, ...]]:
        """``to_responses([m])`` for a message the strategy wrote (a masked output, a
        summary), as the items' JSON (comma-separated, no brackets): converted once while
        the strategy hands back the same object. The items themselves where they have no
        exact JSON form. A result answering a paired call (``paired``: call_id → its stored
        output item) is that output item: as stored when its text is unchanged, else with
        the new text in the type's text field (:func:`_shortened`); where the type holds no
        text the output is left out and its call_id returned, for the caller to leave the
        call out too."""
        # one pass (this runs for every strategy-written message of every call, ~500 a call
        # at 1M tokens; the memo hit below is the common case)
        mine: tuple[str, ...] = ()
        theirs: tuple[str, ...] = ()
        for b in m.content:
            if isinstance(b, ToolResultBlock):
                t = b.tool_use_id
                if t in custom:
                    mine += (t,)
                if t in paired:
                    theirs += (t,)
        hit = self._converted_memo.get(id(m))
        if hit is not None and hit[0] is m and hit[1] == mine and hit[2] == theirs:
            return hit[3], hit[4]
        results = [b for b in m.content if isinstance(b, ToolResultBlock)]
        items = to_responses([m], custom_calls=mine)
        dropped: list[str] = []
        if theirs:
            by_id = {b.tool_use_id: b for b in results}
            kept: list[dict[str, Any]] = []
            for item in items:
                call_id = item.get("call_id")
                stored = paired.get(call_id) if isinstance(call_id, str) else None
                if stored is None or not isinstance(call_id, str) or item["type"] != "function_call_output":
                    kept.append(item)
                    continue
                text = by_id[call_id].text
                fresh = json.loads(json.dumps(stored))  # a copy: the stored item is cached
                new = fresh if text == _item_text(stored) else _shortened(fresh, text)
                if new is None:
                    dropped.append(call_id)
                else:
                    kept.append(new)
            items = kept
        data = _exact_json(items)
        if data is None:
            return items, tuple(dropped)
        if len(self._converted_memo) >= _CONVERTED_KEPT:
            self._converted_memo.clear()
        # holding m: its id() is not reused while kept
        self._converted_memo[id(m)] = (m, mine, theirs, data, tuple(dropped))
        return data, tuple(dropped)


__all__ = ["CtxmemSession"]
