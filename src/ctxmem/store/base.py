"""The SessionStore protocol and the values it returns.

Two backends implement it: :class:`~ctxmem.store.sqlite.SQLiteStore` (the durable default:
one SQLite file, WAL, safe with several writer processes) and
:class:`~ctxmem.store.memory.MemoryStore` (plain Python objects, for tests and throwaway
runs). :class:`~ctxmem.session.Session` is written against the protocol only; a server
backend (PostgreSQL) would slot in the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ctxmem.events import Event, StoredEvent
from ctxmem.messages import ToolUseBlock


def content_hash(data: str | bytes) -> str:
    """SHA-256 hex of UTF-8 text: the key of blobs and memoized token counts."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    created_at: float
    title: str | None
    metadata: dict[str, Any]
    head_event_id: int | None
    parent_session_id: str | None = None
    fork_event_id: int | None = None
    tokenizers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenTotals:
    """Running token totals of a session's current chain for one tokenizer."""

    tokenizer: str
    content: int
    overhead: int
    events: int

    @property
    def total(self) -> int:
        return self.content + self.overhead


@dataclass(frozen=True, slots=True)
class SearchHit:
    event_id: int
    session_id: str
    tool_use_id: str | None
    tool_name: str | None
    snippet: str
    score: float


@dataclass(frozen=True, slots=True)
class EventCounts:
    """Token counts of one event for one tokenizer, with the chain's running totals."""

    event_id: int
    content: int
    overhead: int
    cum_content: int
    cum_overhead: int


@dataclass
class ChainView:
    """The current chain of a session, oldest first, with its counts if asked for."""

    session: SessionInfo
    events: list[StoredEvent]
    counts: dict[str, list[EventCounts]] = field(default_factory=dict)


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live. Every method is atomic: it fully happens or not at all."""

    def create_session(
        self,
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        tokenizers: Sequence[str] = (),
    ) -> SessionInfo: ...

    def get_session(self, session_id: str) -> SessionInfo: ...

    def list_sessions(self) -> list[SessionInfo]: ...

    def append(self, session_id: str, events: Sequence[Event], *, created_at: float | None = None) -> list[int]:
        """Append events to the session's head in one transaction; returns their ids."""
        ...

    def chain(self, session_id: str, *, tokenizers: Sequence[str] = ()) -> ChainView: ...

    def totals(self, session_id: str, tokenizer: str) -> TokenTotals: ...

    def pending_tool_uses(self, session_id: str) -> list[ToolUseBlock]: ...

    def fork(self, session_id: str, at_event_id: int, *, title: str | None = None) -> SessionInfo: ...

    def rewind(self, session_id: str, to_event_id: int | None) -> SessionInfo: ...

    def search(self, query: str, *, session_id: str | None = None, limit: int = 10) -> list[SearchHit]: ...

    def tool_output(self, event_id: int) -> str: ...

    def record_calibration(self, model: str, tokenizer: str, estimated: int, reported: int) -> None: ...

    def calibration_observations(self, model: str, tokenizer: str, limit: int = 50) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...
