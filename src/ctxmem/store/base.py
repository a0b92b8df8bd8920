"""The SessionStore protocol and the values it returns.

Two backends implement it: :class:`~ctxmem.store.sqlite.SQLiteStore` (the durable default:
one SQLite file, WAL, safe with several writer processes) and
:class:`~ctxmem.store.memory.MemoryStore` (plain Python objects, for tests and throwaway
runs), and :class:`~ctxmem.store.postgres.PostgresStore` (many processes on many hosts).
:class:`~ctxmem.session.Session` is written against the protocol only; open any backend
by URL with :func:`ctxmem.store.open_store`.

Capabilities beyond the protocol are small runtime-checkable protocols, so code that can
use them asks ``isinstance(store, FullTextSearch)`` instead of naming a backend class:

* :class:`FullTextSearch` — a ranked full-text index over tool outputs with document
  frequencies (SQLite: FTS5; PostgreSQL: tsvector/GIN). Retrieval uses it for its lexical
  part; without it (MemoryStore) retrieval keeps an in-process BM25 index.
* :class:`EmbeddingCacheProvider` — a durable embedding cache living next to the sessions
  (SQLite: a table in the same file; PostgreSQL: a table in the same database).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from ctxmem.events import Event, StoredEvent
from ctxmem.messages import ToolUseBlock

if TYPE_CHECKING:
    from ctxmem.tokens import Tokenizer


def content_hash(data: str | bytes) -> str:
    """SHA-256 hex of UTF-8 text: the key of blobs and memoized token counts."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session's record: id, creation time (unix seconds), title, user metadata, the head
    of its current chain, the session and event it was forked from, and the tokenizers
    its appends are counted with."""

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
        """Content plus modelled per-message overhead: what the chain costs as a request."""
        return self.content + self.overhead


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One full-text hit in a tool output: the event, its session and tool call, a snippet
    around the match, and the backend's relevance score (higher is better)."""

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


class ToolEventRef(NamedTuple):
    """A ``tool_call`` or ``tool_result`` event of a chain, without its content."""

    event_id: int
    kind: str  # "tool_call" | "tool_result"
    tool_use_id: str
    tool_name: str | None


@dataclass(frozen=True)
class AppendCheck:
    """A condition an append must meet under its write lock (``SessionStore.append(check=)``).

    The caller read the chain up to ``head`` and validated a batch whose tool events carry
    ``tool_use_ids``. The append may land when the chain still runs through ``head`` and
    nothing appended since carries one of those ids: unrelated appends by other writers
    (other tool calls, messages) do not void it, so many writers of one session never
    starve each other; a second answer to the same call, a reused id, or a rewind/fork
    that left ``head`` does.
    """

    head: int | None
    tool_use_ids: frozenset[str]
    #: the batch holds a message: any tool event appended since voids the check (the
    #: message would land between a call and its results, or among results)
    ordered: bool = False

    def holds(self, head: int | None, delta: Sequence[tuple[int, int | None, str | None]]) -> bool:
        """Whether the append may land at ``head``. ``delta`` is the chain from ``head``
        down to the first event deeper than ``self.head`` (newest first), as
        ``(id, parent_id, tool_use_id)`` rows (see :data:`DELTA_SQL`)."""
        if head == self.head:
            return True
        if not delta or delta[-1][1] != self.head:  # rewound past it, or on another branch
            return False
        if self.ordered:
            return not any(t is not None for _, _, t in delta)
        return not any(t is not None and t in self.tool_use_ids for _, _, t in delta)

    def enforce_sql(
        self, conn: Any, session_id: str, head: int | None, param: str,
        unescape: Callable[[str], str] | None = None,
    ) -> None:
        """Raise ``HeadMovedError`` unless the check holds at ``head``, reading the delta
        through ``conn`` (a DB-API connection inside the write transaction; ``param`` is its
        placeholder, ``?`` or ``%s``). Shared by the SQL stores. ``unescape``: the store keeps
        some tool ids encoded, in rows whose ``escaped`` column is set (PostgreSQL cannot hold
        NUL); the delta's ids are decoded with it, so the check compares them with the raw ids
        it holds."""
        from ctxmem.errors import HeadMovedError

        if head == self.head:
            return
        delta: list[tuple[int, int | None, str | None]] = []
        if head is not None:
            depth = 0
            if self.head is not None:
                row = conn.execute(f"SELECT depth FROM events WHERE id = {param}", (self.head,)).fetchone()
                depth = row[0] if row else 0
            rows = conn.execute(
                DELTA_SQL.format(head=param, depth=param, escaped="escaped" if unescape else "0"), (head, depth, depth)
            ).fetchall()
            delta = [(i, p, unescape(t) if esc and unescape and t is not None else t) for i, p, t, esc in rows]
        if not self.holds(head, delta):
            raise HeadMovedError(session_id, self.head, head)


#: the chain from event ``:head`` down through the events deeper than ``:depth`` (the
#: checked head's depth), newest first: what :meth:`AppendCheck.holds` reads, with each
#: row's ``{escaped}`` flag (a column, or ``0`` where the store never encodes ids). Bounded
#: by what was appended since the check, not by the session's length.
DELTA_SQL = (
    "WITH RECURSIVE c(id, parent_id, depth, tuid, esc) AS ("
    "SELECT id, parent_id, depth, tool_use_id, {escaped} FROM events WHERE id = {head} "
    "UNION ALL SELECT e.id, e.parent_id, e.depth, e.tool_use_id, {escaped} FROM events e JOIN c ON e.id = c.parent_id "
    "WHERE e.depth > {depth}) "
    "SELECT id, parent_id, tuid, esc FROM c WHERE depth > {depth} ORDER BY depth DESC"
)


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live. Every method is atomic: it fully happens or not at all.

    Stores trust what they are given: the door is :class:`~ctxmem.session.Session`, which
    validates events (``ctxmem.events.check_event``) and tool ids before calling
    :meth:`append` or :meth:`create_session`. Code that calls a store directly must hand it
    validated events. Errors: :class:`~ctxmem.errors.SessionNotFoundError`,
    :class:`~ctxmem.errors.EventNotFoundError`, :class:`~ctxmem.errors.StoreError` (and,
    from the SQLite store, :class:`~ctxmem.errors.StoreBusyError` after every retry).
    """

    def tokenizer(self, name: str) -> Tokenizer:
        """The tokenizer this store counts appends with, by name (loaded once, cached).

        :raises ~ctxmem.errors.UnknownNameError: the name is not a registered tokenizer.
        """
        ...

    def create_session(
        self,
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        tokenizers: Sequence[str] = (),
        events: Sequence[Event] = (),
    ) -> SessionInfo:
        """Create a session (a fresh uuid4 hex id unless ``session_id`` is given) whose first
        events are ``events``, in **one** transaction: after a crash the session exists
        with all of them or does not exist (an import relies on this). ``metadata`` must be
        JSON. ``tokenizers`` are counted on every append (each must load, or
        :class:`~ctxmem.errors.TokenizerError`/:class:`~ctxmem.errors.UnknownNameError` is
        raised before anything is written). Raises :class:`~ctxmem.errors.InputError`
        (``field="session_id"``) if the id is taken."""
        ...

    def get_session(self, session_id: str) -> SessionInfo:
        """The session's current state. Raises :class:`~ctxmem.errors.SessionNotFoundError`."""
        ...

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, oldest first (ties by id)."""
        ...

    def append(
        self, session_id: str, events: Sequence[Event], *, created_at: float | None = None,
        check: AppendCheck | None = None,
    ) -> list[int]:
        """Append events to the session's head in one transaction; returns their ids (in
        order, increasing). ``created_at`` (epoch seconds) defaults to now. An empty list
        writes nothing and returns ``[]``. Raises ``SessionNotFoundError``.

        ``check`` (an :class:`AppendCheck`) is tested inside the write transaction: when it
        fails nothing is written and ``HeadMovedError`` is raised. Session uses it so that a
        check made against the chain (a tool result answers a pending call, once; a call id
        is fresh) still holds when the write lands, whatever other processes append."""
        ...

    def chain(self, session_id: str, *, tokenizers: Sequence[str] = ()) -> ChainView:
        """The current chain (head back through parent pointers, returned oldest first),
        with per-event counts for each of ``tokenizers`` (counted now if not tracked)."""
        ...

    def totals(self, session_id: str, tokenizer: str) -> TokenTotals:
        """Running content/overhead totals of the current chain: O(1) for a tokenizer the
        session tracks, a one-time backfill otherwise."""
        ...

    def pending_tool_uses(self, session_id: str) -> list[ToolUseBlock]:
        """Tool calls of the current chain with no result, in call order."""
        ...

    def tool_events(
        self, session_id: str, *, after_event_id: int | None = None
    ) -> tuple[int | None, list[ToolEventRef]]:
        """(head event id, the chain's tool_call/tool_result events oldest first), read in
        one consistent snapshot. With ``after_event_id``, only the events after it, which
        costs what those events cost (how a :class:`~ctxmem.session.Session` keeps its
        view of tool ids current); raises :class:`~ctxmem.errors.EventNotFoundError` when
        that event is no longer in the chain (a rewind), and the caller reads it all."""
        ...

    def fork(self, session_id: str, at_event_id: int, *, title: str | None = None) -> SessionInfo:
        """A new session whose head is ``at_event_id`` (an event of this session's chain,
        else ``EventNotFoundError``); it shares the history up to there and copies the
        metadata and tokenizers. One transaction."""
        ...

    def rewind(self, session_id: str, to_event_id: int | None) -> SessionInfo:
        """Move the head back to ``to_event_id`` (an event of the current chain, else
        ``EventNotFoundError``; None empties the view). Later events stay stored and
        reachable by id (a fork at one of them brings them back)."""
        ...

    def search(self, query: str, *, session_id: str | None = None, limit: int = 10) -> list[SearchHit]:
        """Tool outputs matching ``query``, best first (only the session's current chain
        when ``session_id`` is given). A malformed query raises ``InputError``."""
        ...

    def tool_output(self, event_id: int) -> str:
        """The full text of a ``tool_result`` event. Raises ``EventNotFoundError``."""
        ...

    def event(self, event_id: int) -> StoredEvent:
        """One stored event by id, in any session or branch (a rewound event stays
        reachable). Raises :class:`~ctxmem.errors.EventNotFoundError`."""
        ...

    def event_count(self, session_id: str) -> int:
        """How many events the session's current chain holds (its head's depth; 0 when
        empty): O(1), what ``ctxmem sessions list`` shows."""
        ...

    def blob_count(self) -> int:
        """How many distinct contents the store holds (identical outputs count once)."""
        ...

    def record_calibration(self, model: str, tokenizer: str, estimated: int, reported: int) -> None:
        """Keep one (estimated, provider-reported) input-token observation."""
        ...

    def calibration_observations(self, model: str, tokenizer: str, limit: int = 50) -> list[tuple[int, int]]:
        """The last ``limit`` observations for (model, tokenizer), oldest first."""
        ...

    def close(self) -> None:
        """Release the store's resources; the handle is unusable afterwards."""
        ...


@runtime_checkable
class FullTextSearch(Protocol):
    """A store with a ranked full-text index over tool outputs."""

    def search(
        self, query: str, *, session_id: str | None = None, limit: int = 10, snippets: bool = True
    ) -> list[SearchHit]:
        """Like :meth:`SessionStore.search` (bare words ANDed, ``"quoted phrases"``, ``OR``);
        ``snippets=False`` leaves every snippet empty, which is cheaper."""
        ...

    def document_frequencies(self, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """``(n, {term: df})``: how many tool outputs are indexed and how many hold each
        (lower-cased, single-token) term. Used to pick selective query terms; it may be
        computed over a slightly older snapshot of the index. A bad term raises ``InputError``."""
        ...


@runtime_checkable
class EmbeddingCacheProvider(Protocol):
    """A store that keeps embedding vectors by (embedder id, content hash) durably."""

    def embedding_cache(self) -> Any:
        """An :class:`~ctxmem.retrieval.cache.EmbeddingCache` stored with this store's
        data (shared by every process that opens the same store). Raises ``StoreError``
        when the store's schema has no cache table."""
        ...


@runtime_checkable
class DerivedStateStore(Protocol):
    """A store that keeps state a strategy derived from a session (a cache: losing it only
    costs recomputing it), so a later process restores it instead of re-reading the session."""

    def load_derived(self, session_id: str, kind: str) -> tuple[str, bytes] | None:
        """``(key, data)`` saved for this session and kind, or ``None``."""
        ...

    def save_derived(self, session_id: str, kind: str, key: str, data: bytes) -> None:
        """Replace what is saved for this session and kind."""
        ...


def documented_by(protocol: type) -> Any:
    """Class decorator for a store backend: every public method the backend does not
    document itself takes the docstring of the same method of ``protocol`` (the backends
    implement :class:`SessionStore` structurally, without subclassing it, so ``help()`` and
    the API reference would otherwise show them bare). A method the backend documents keeps
    its own docstring."""

    def apply(cls: type) -> type:
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue
            source = getattr(protocol, name, None)
            doc = getattr(source, "__doc__", None) if source is not None else None
            if not doc:
                continue
            target = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if callable(target) and not (getattr(target, "__doc__", None) or "").strip():
                target.__doc__ = doc
        return cls

    return apply
