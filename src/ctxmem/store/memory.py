"""An in-memory SessionStore: plain Python objects, same contract as the SQLite store.

For tests, notebooks and throwaway runs. Nothing survives the process. It stores events
already decoded, shares blob text by content hash like the durable store, and searches
tool outputs with a simple AND-of-terms match (no FTS5 ranking: scores are term counts).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ctxmem.errors import EventNotFoundError, HeadMovedError, InputError, SessionNotFoundError
from ctxmem.events import (
    Event,
    MessageEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    pending_tool_uses,
    role_of,
)
from ctxmem.messages import ToolUseBlock
from ctxmem.store.base import (
    AppendCheck,
    ChainView,
    EventCounts,
    SearchHit,
    SessionInfo,
    SessionStore,
    TokenTotals,
    ToolEventRef,
    documented_by,
)
from ctxmem.store.codec import encode_event
from ctxmem.store.counting import event_overhead
from ctxmem.tokens import Tokenizer, get_tokenizer


@dataclass
class _Row:
    stored: StoredEvent
    depth: int
    starts_message: bool
    blob_hash: str | None


@documented_by(SessionStore)
class MemoryStore:
    """The :class:`~ctxmem.store.SessionStore` protocol in memory, for tests, notebooks and
    throwaway runs: the same semantics as the durable stores (chains, forks, rewinds, exact
    totals, search by substring), nothing written anywhere. Not shared between processes."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionInfo] = {}
        self._tail_role: dict[str, str | None] = {}
        self._events: dict[int, _Row] = {}
        self._blobs: dict[str, str] = {}
        self._memo: dict[tuple[str, str], int] = {}
        self._counts: dict[tuple[int, str], EventCounts] = {}
        self._calibration: list[tuple[str, str, int, int]] = []
        self._next_id = 1
        self._lock = threading.RLock()
        self._tokenizers: dict[str, Tokenizer] = {}

    def tokenizer(self, name: str) -> Tokenizer:
        if name not in self._tokenizers:
            self._tokenizers[name] = get_tokenizer(name)
        return self._tokenizers[name]

    def close(self) -> None:
        pass

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_session(
        self,
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        tokenizers: Sequence[str] = (),
        events: Sequence[Event] = (),
    ) -> SessionInfo:
        """The session and its first ``events`` together: if the append fails, the session
        is removed again, so it exists with all of them or not at all."""
        for name in tokenizers:
            self.tokenizer(name)
        with self._lock:
            sid = session_id or uuid.uuid4().hex
            if sid in self._sessions:
                raise InputError(f"a session with id {sid!r} already exists", field="session_id")
            info = SessionInfo(sid, time.time(), title, dict(metadata or {}), None, tokenizers=tuple(tokenizers))
            self._sessions[sid] = info
            self._tail_role[sid] = None
            if events:
                try:
                    self.append(sid, events, created_at=info.created_at)
                except BaseException:
                    del self._sessions[sid], self._tail_role[sid]
                    raise
            return self._sessions[sid]

    def get_session(self, session_id: str) -> SessionInfo:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFoundError(session_id) from None

    def list_sessions(self) -> list[SessionInfo]:
        return sorted(self._sessions.values(), key=lambda s: (s.created_at, s.id))

    def _chain_rows(self, head: int | None) -> list[_Row]:
        out = []
        while head is not None:
            row = self._events[head]
            out.append(row)
            head = row.stored.parent_id
        out.reverse()
        return out

    def _count_event(self, row: _Row, parent: int | None, tok: Tokenizer) -> EventCounts:
        key = (row.stored.id, tok.id)
        if key in self._counts:
            return self._counts[key]
        prev = self._count_event(self._events[parent], self._events[parent].stored.parent_id, tok) if parent else None
        enc = encode_event(row.stored.event)
        content = 0
        if enc.blob_hash is not None:
            mk = (enc.blob_hash, tok.id)
            if mk not in self._memo:
                self._memo[mk] = sum(tok.count_many(list(enc.texts)))
            content = self._memo[mk]
        ov = event_overhead(row.stored.event, row.starts_message)
        ec = EventCounts(
            row.stored.id,
            content,
            ov,
            (prev.cum_content if prev else 0) + content,
            (prev.cum_overhead if prev else 0) + ov,
        )
        self._counts[key] = ec
        return ec

    def append(
        self, session_id: str, events: Sequence[Event], *, created_at: float | None = None,
        check: AppendCheck | None = None,
    ) -> list[int]:
        """All or nothing, like a transaction: if encoding or counting fails part way, the
        rows, counts and head written so far are taken back."""
        with self._lock:
            info = self.get_session(session_id)
            head = info.head_event_id
            if check is not None and head != check.head:
                depth = self._events[check.head].depth if check.head in self._events else 0
                delta: list[tuple[int, int | None, str | None]] = []
                at = head
                while at is not None and self._events[at].depth > depth:
                    row = self._events[at]
                    ev = row.stored.event
                    tid = (ev.tool_use.id if isinstance(ev, ToolCallEvent)
                           else ev.result.tool_use_id if isinstance(ev, ToolResultEvent) else None)
                    delta.append((at, row.stored.parent_id, tid))
                    at = row.stored.parent_id
                if not check.holds(head, delta):
                    raise HeadMovedError(session_id, check.head, head)
            next_id, tail = self._next_id, self._tail_role[session_id]
            try:
                return self._append(session_id, events, created_at)
            except BaseException:
                for eid in range(next_id, self._next_id):
                    self._events.pop(eid, None)
                    for name in info.tokenizers:
                        self._counts.pop((eid, self.tokenizer(name).id), None)
                self._next_id, self._sessions[session_id], self._tail_role[session_id] = next_id, info, tail
                raise

    def _append(self, session_id: str, events: Sequence[Event], created_at: float | None) -> list[int]:
        with self._lock:
            info = self.get_session(session_id)
            head = info.head_event_id
            depth = self._events[head].depth if head is not None else 0
            tail = self._tail_role[session_id]
            now = time.time() if created_at is None else created_at
            ids = []
            new_rows = []
            for ev in events:
                enc = encode_event(ev)
                if enc.blob_hash is not None and enc.blob is not None:
                    self._blobs.setdefault(enc.blob_hash, enc.blob)
                role = role_of(ev)
                starts = role is not None and (bool(getattr(ev, "new_message", False)) or role != tail)
                if role is not None:
                    tail = role
                if isinstance(ev, MessageEvent | ToolCallEvent | ToolResultEvent):
                    ev = replace(ev, new_message=starts)
                eid = self._next_id
                self._next_id += 1
                depth += 1
                row = _Row(StoredEvent(eid, session_id, head, now, ev), depth, starts, enc.blob_hash)
                new_rows.append(row)
                self._events[eid] = row
                ids.append(eid)
                head = eid
            self._sessions[session_id] = replace(info, head_event_id=head)
            self._tail_role[session_id] = tail
            for name in info.tokenizers:
                tok = self.tokenizer(name)
                for row in new_rows:
                    self._count_event(row, row.stored.parent_id, tok)
            return ids

    def chain(self, session_id: str, *, tokenizers: Sequence[str] = ()) -> ChainView:
        info = self.get_session(session_id)
        rows = self._chain_rows(info.head_event_id)
        counts = {}
        for name in tokenizers:
            tok = self.tokenizer(name)
            counts[name] = [self._count_event(r, r.stored.parent_id, tok) for r in rows]
        return ChainView(info, [r.stored for r in rows], counts)

    def event(self, event_id: int) -> StoredEvent:
        try:
            return self._events[event_id].stored
        except KeyError:
            raise EventNotFoundError(event_id) from None

    def chain_since(
        self, session_id: str, after_event_id: int, tokenizer: str, limit: int = 512
    ) -> tuple[int | None, list[StoredEvent], list[int | None]] | None:
        """See :meth:`ctxmem.store.sqlite.SQLiteStore.chain_since`."""
        head = self.get_session(session_id).head_event_id
        if head == after_event_id:
            return head, [], []
        rows: list[_Row] = []
        eid = head
        while eid is not None and eid != after_event_id:
            if len(rows) >= limit:
                return None
            row = self._events[eid]
            rows.append(row)
            eid = row.stored.parent_id
        if eid != after_event_id:
            return None
        rows.reverse()
        tok = self.tokenizer(tokenizer)
        counts = [self._count_event(r, r.stored.parent_id, tok) for r in rows]
        return head, [r.stored for r in rows], [c.content + c.overhead for c in counts]

    def event_count(self, session_id: str) -> int:
        head = self.get_session(session_id).head_event_id
        return self._events[head].depth if head is not None else 0

    def totals(self, session_id: str, tokenizer: str) -> TokenTotals:
        info = self.get_session(session_id)
        if info.head_event_id is None:
            return TokenTotals(tokenizer, 0, 0, 0)
        tok = self.tokenizer(tokenizer)
        row = self._events[info.head_event_id]
        # walk iteratively first so deep chains do not recurse
        for r in self._chain_rows(info.head_event_id):
            self._count_event(r, r.stored.parent_id, tok)
        ec = self._count_event(row, row.stored.parent_id, tok)
        return TokenTotals(tokenizer, ec.cum_content, ec.cum_overhead, row.depth)

    def pending_tool_uses(self, session_id: str) -> list[ToolUseBlock]:
        return pending_tool_uses(r.stored.event for r in self._chain_rows(self.get_session(session_id).head_event_id))

    def tool_events(
        self, session_id: str, *, after_event_id: int | None = None
    ) -> tuple[int | None, list[ToolEventRef]]:
        with self._lock:
            head = self.get_session(session_id).head_event_id
            rows = self._chain_rows(head)
            if after_event_id is not None:
                ids = [r.stored.id for r in rows]
                if after_event_id not in ids:
                    raise EventNotFoundError(after_event_id, session_id)
                rows = rows[ids.index(after_event_id) + 1 :]
            out = []
            for r in rows:
                ev = r.stored.event
                if isinstance(ev, ToolCallEvent):
                    out.append(ToolEventRef(r.stored.id, "tool_call", ev.tool_use.id, ev.tool_use.name))
                elif isinstance(ev, ToolResultEvent):
                    out.append(ToolEventRef(r.stored.id, "tool_result", ev.result.tool_use_id, ev.tool_name))
            return head, out

    def _require_in_chain(self, session_id: str, event_id: int) -> None:
        ids = {r.stored.id for r in self._chain_rows(self.get_session(session_id).head_event_id)}
        if event_id not in ids:
            raise EventNotFoundError(event_id, session_id)

    def _tail_of(self, event_id: int | None) -> str | None:
        for r in reversed(self._chain_rows(event_id)):
            role = role_of(r.stored.event)
            if role is not None:
                return role
        return None

    def fork(self, session_id: str, at_event_id: int, *, title: str | None = None) -> SessionInfo:
        with self._lock:
            self._require_in_chain(session_id, at_event_id)
            parent = self.get_session(session_id)
            sid = uuid.uuid4().hex
            info = SessionInfo(
                sid,
                time.time(),
                title if title is not None else parent.title,
                dict(parent.metadata),
                at_event_id,
                parent_session_id=session_id,
                fork_event_id=at_event_id,
                tokenizers=parent.tokenizers,
            )
            self._sessions[sid] = info
            self._tail_role[sid] = self._tail_of(at_event_id)
            return info

    def rewind(self, session_id: str, to_event_id: int | None) -> SessionInfo:
        with self._lock:
            if to_event_id is not None:
                self._require_in_chain(session_id, to_event_id)
            info = replace(self.get_session(session_id), head_event_id=to_event_id)
            self._sessions[session_id] = info
            self._tail_role[session_id] = self._tail_of(to_event_id)
            return info

    def search(self, query: str, *, session_id: str | None = None, limit: int = 10) -> list[SearchHit]:
        terms = [t.lower() for t in re.findall(r"\w+", query)]
        if not terms:
            raise InputError(f"bad search query {query!r}: no terms", field="query")
        if session_id is not None:
            rows = self._chain_rows(self.get_session(session_id).head_event_id)
        else:
            rows = [self._events[i] for i in sorted(self._events)]
        hits = []
        for r in rows:
            ev = r.stored.event
            if not isinstance(ev, ToolResultEvent):
                continue
            text = ev.result.text
            low = text.lower()
            if all(t in low for t in terms):
                pos = low.find(terms[0])
                snippet = text[max(0, pos - 40) : pos + 80]
                score = float(sum(low.count(t) for t in terms))
                hits.append(SearchHit(r.stored.id, r.stored.session_id, ev.result.tool_use_id, ev.tool_name, snippet, score))
        hits.sort(key=lambda h: (-h.score, h.event_id))
        return hits[:limit]

    def tool_output(self, event_id: int) -> str:
        ev = self.event(event_id).event
        if not isinstance(ev, ToolResultEvent):
            raise EventNotFoundError(event_id)
        return ev.result.text

    def blob_count(self) -> int:
        return len(self._blobs)

    def record_calibration(self, model: str, tokenizer: str, estimated: int, reported: int) -> None:
        self._calibration.append((model, self.tokenizer(tokenizer).id, estimated, reported))

    def calibration_observations(self, model: str, tokenizer: str, limit: int = 50) -> list[tuple[int, int]]:
        tid = self.tokenizer(tokenizer).id
        rows = [(e, r) for m, t, e, r in self._calibration if m == model and t == tid]
        return rows[-limit:]
