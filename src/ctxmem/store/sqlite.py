"""The durable session store: one SQLite file, through the standard library's ``sqlite3``.

Design:

* **WAL, synchronous=NORMAL.** A committed transaction survives the writer being killed
  (SIGKILL, OOM) at any point; readers never block the writer. Power loss may drop the
  last transactions, never corrupt the file.
* **Every write is one ``BEGIN IMMEDIATE`` transaction.** Taking the write lock up front
  means two processes never deadlock upgrading a read lock; a busy database is waited on
  (``busy_timeout``) and the whole transaction retried with backoff, so "database is
  locked" never reaches the caller unless it stays locked through every retry
  (:class:`~ctxmem.errors.StoreBusyError`).
* **Expensive work happens outside the lock.** Hashing, JSON encoding and tokenizing are
  done before ``BEGIN``; inside it there are only inserts.
* **Content-addressed blobs.** Identical tool outputs are stored once; FTS5 indexes each
  tool output once.
* **Counts.** Token counts are memoized per (content hash, tokenizer id). Each event keeps
  its chain's running totals per tokenizer (``event_tokens``), so a session's total is one
  row read, and an append costs one encode of the new content.
* **Branches by parent pointer.** A session's view is the chain from its head back
  through ``parent_id``; fork makes a new session whose head is an existing event; rewind
  moves the head back. Nothing is deleted.

``store.db`` wraps the connection in a ``sqlite_utils.Database`` for schema introspection
and ad-hoc queries (made on first use; the ``ctxmem[sqlite-utils]`` extra); the store
itself uses prepared statements on the same connection and needs nothing beyond ``sqlite3``.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ctxmem.errors import (
    EventNotFoundError,
    InputError,
    MissingDependencyError,
    SessionNotFoundError,
    StoreBusyError,
    StoreError,
)
from ctxmem.events import Event, StoredEvent, pending_tool_uses
from ctxmem.messages import Message, ToolUseBlock
from ctxmem.store import parallel_count
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
from ctxmem.store.codec import (
    MESSAGE_COLS,
    Encoded,
    decode_counts,
    decode_event,
    decode_messages,
    decode_rows,
    encode_event,
    event_texts,
    gc_paused,
)
from ctxmem.store.counting import cheaper_to_count, event_overhead
from ctxmem.store.migrations import (
    MIGRATIONS,
    SESSION_MARKER,
    foreign_tables,
    migrate,
    not_ours_message,
)
from ctxmem.tokens import Tokenizer, get_tokenizer, tokenizer_id
from ctxmem.tokens.counting import DEFAULT_OVERHEAD

T = TypeVar("T")

_CHAIN_CTE = """
WITH RECURSIVE chain(id) AS (
    SELECT ?
    UNION ALL
    SELECT e.parent_id FROM events e JOIN chain ON e.id = chain.id WHERE e.parent_id IS NOT NULL
)
"""
_EVENT_COLS = (
    "e.id, e.session_id, e.parent_id, e.kind, e.role, e.starts_message, e.tool_use_id, "
    "e.tool_name, e.is_error, e.fmt, b.text, e.meta, e.created_at"
)
_IN_CHUNK = 500  # SQLite's bound-parameter limit is 32766; keep IN lists modest
PAGE_SIZE = 8192  # bytes per page of a newly created store file
_BULK_EVENTS = 1000  # an append of this many events is a bulk write ...
_BULK_CACHE_KIB = 65536  # ... and gets this much page cache while it runs
_SAVE_DERIVED = (  # save_derived and try_save_derived: one row per session and kind
    "INSERT OR REPLACE INTO derived_state (session_id, kind, key, data, created_at) VALUES (?, ?, ?, ?, ?)"
)


_GRID: list[int] = [0]  # the grid points found so far, ascending (see _epoch_floor)


def _epoch_floor(n: int) -> int:
    """The largest point of the grid 0, 1, 2, ..., 32, then x -> x + x // 32, not above n."""
    grid = _GRID
    while grid[-1] <= n:  # extended once per process up to the largest n asked (~a few hundred points)
        b = grid[-1]
        grid.append(b + 1 if b < 32 else b + b // 32)
    return grid[bisect_right(grid, n) - 1]


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


@documented_by(SessionStore)
class SQLiteStore:
    """A :class:`~ctxmem.store.base.SessionStore` on one SQLite file (or ``":memory:"``)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        busy_timeout_ms: int = 5000,
        max_attempts: int = 40,
        synchronous: str = "NORMAL",
    ):
        if not isinstance(path, str | os.PathLike):
            # str(None) would make a database file named "None" in the working folder
            raise StoreError(f"the session store needs a file path (or ':memory:'), got {path!r}")
        self.path = str(path)
        if self.path != ":memory:":
            parent = Path(self.path).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder {parent} for the session store {self.path}: "
                                 f"{exc.strerror or exc}") from None
        self.max_attempts = max_attempts
        self._lock = threading.RLock()
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open session store {self.path}: {exc}") from exc
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._busy_timeout_ms = int(busy_timeout_ms)
        # 8 KiB pages for a new file (a no-op on an existing one, whose page size is fixed
        # once written): a 1M-token import writes half as many WAL frames; measured import
        # CPU 221 -> 212 ms and wall 233 -> 213 ms, single appends 128 -> 140 µs (medians of 9).
        self.conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        try:
            # before anything writes (WAL mode rewrites the header): another program's database
            # is refused untouched, not filled with ctxmem's tables
            foreign = self._retry(lambda: foreign_tables(self.conn, own=SESSION_MARKER))  # a results db too
            if not foreign:
                self._retry(lambda: self._pragma_wal())
        except StoreError as exc:
            self.conn.close()
            raise self._explain_open_failure(exc) from None
        if foreign:
            self.conn.close()
            raise StoreError(not_ours_message(self.path, foreign, "ctxmem session store"))
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("PRAGMA foreign_keys = OFF")  # integrity is enforced by the write path
        self._db: Any = None
        if self._retry(self._needs_migration):
            self._write(migrate)
        self._tokenizers: dict[str, Tokenizer] = {}
        self._df_memo: tuple[int, int, dict[str, int]] | None = None  # see document_frequencies
        self._size_memo: tuple[int, int, float] | None = None  # see output_stats

    def _explain_open_failure(self, exc: StoreError) -> StoreError:
        """SQLite says "unable to open database file" when the file is fine but its folder is
        read-only: a WAL store needs its ``-wal`` and ``-shm`` files beside it, even to read."""
        folder = Path(self.path).resolve().parent
        if self.path != ":memory:" and Path(self.path).is_file() and not os.access(folder, os.W_OK):
            return StoreError(f"cannot open session store {self.path}: its folder {folder} is read-only, and SQLite "
                              f"needs to create {Path(self.path).name}-wal and -shm beside it, even to read; copy the "
                              "file to a writable folder")
        return exc

    # ------------------------------------------------------------------ plumbing

    @property
    def db(self) -> Any:
        """A ``sqlite_utils.Database`` on the same connection, for introspection and ad-hoc
        queries; made on first use (importing sqlite_utils costs ~0.25 s of a fresh
        process's reload, and no hot path uses it)."""
        if self._db is None:
            try:
                import sqlite_utils
            except ImportError:
                raise MissingDependencyError("sqlite-utils", "sqlite-utils", "SQLiteStore.db") from None
            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def _needs_migration(self) -> bool:
        # A read: opening an up-to-date store must not wait for another process's write lock.
        with self._lock:
            if not self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_ctxmem_migrations'"
            ).fetchone():
                return True
            done = {r[0] for r in self.conn.execute("SELECT name FROM _ctxmem_migrations")}
        return any(name not in done for name, _ in MIGRATIONS)

    def _pragma_wal(self) -> None:
        if self.path != ":memory:":
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not enable WAL (journal_mode={mode})")

    def _retry(self, fn: Callable[[], T]) -> T:
        delay = 0.002
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == self.max_attempts:
                    if _is_busy(exc):
                        raise StoreBusyError(self.path, attempt) from exc
                    raise StoreError(f"{self.path}: {exc}") from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)
            except sqlite3.Error as exc:  # constraint failures, corruption: still one error tree
                raise StoreError(f"{self.path}: {type(exc).__name__}: {exc}") from exc
        raise StoreBusyError(self.path, self.max_attempts)  # pragma: no cover

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one BEGIN IMMEDIATE transaction, retrying the whole thing when busy."""

        def attempt() -> T:
            with self._lock:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(self.conn)
                    self.conn.execute("COMMIT")
                    return result
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise

        return self._retry(attempt)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            with self._lock:
                return self.conn.execute(sql, params).fetchall()

        return self._retry(run)

    @contextmanager
    def read_snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read across several queries (one read transaction)."""
        with self._lock:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                self.conn.execute("COMMIT")

    def tokenizer(self, name: str) -> Tokenizer:
        tok = self._tokenizers.get(name)
        if tok is None:
            tok = self._tokenizers[name] = get_tokenizer(name)
        return tok

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions

    @staticmethod
    def _session_from_row(row: Sequence[Any]) -> SessionInfo:
        return SessionInfo(
            id=row[0],
            created_at=row[1],
            title=row[2],
            metadata=json.loads(row[3]),
            tokenizers=tuple(json.loads(row[4])),
            head_event_id=row[5],
            parent_session_id=row[6],
            fork_event_id=row[7],
        )

    _SESSION_COLS = "id, created_at, title, metadata, tokenizers, head_event_id, parent_session_id, fork_event_id"

    def create_session(
        self,
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        tokenizers: Sequence[str] = (),
        events: Sequence[Event] = (),
        encoded: tuple[Sequence[Encoded], Sequence[bool], Sequence[int]] | None = None,
    ) -> SessionInfo:
        """See :meth:`SessionStore.create_session`: the session row and ``events`` are one
        transaction. ``encoded`` (SQLite only, the bulk import path of ``ctxmem.jsonl``):
        the first events already encoded, as (encoded, new_flags, bases) of
        :meth:`append_encoded`, written the same way, in the same transaction."""
        sid = session_id or uuid.uuid4().hex
        for name in tokenizers:
            self.tokenizer(name)  # fail now, with a clear error, not at the first append
        meta = json.dumps(metadata or {}, sort_keys=True)
        now = time.time()

        def create(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO sessions (id, created_at, title, metadata, tokenizers) VALUES (?, ?, ?, ?, ?)",
                    (sid, now, title, meta, json.dumps(list(tokenizers))),
                )
            except sqlite3.IntegrityError:
                raise InputError(f"a session with id {sid!r} already exists", field="session_id") from None

        if encoded is not None and encoded[0]:
            self._append_encoded_to(sid, tokenizers, *encoded, now, create)
        elif events:
            self._append_events(sid, tokenizers, events, now, create)
        else:
            self._write(create)
        return self.get_session(sid)

    def get_session(self, session_id: str) -> SessionInfo:
        rows = self._read(f"SELECT {self._SESSION_COLS} FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise SessionNotFoundError(session_id)
        return self._session_from_row(rows[0])

    def list_sessions(self) -> list[SessionInfo]:
        rows = self._read(f"SELECT {self._SESSION_COLS} FROM sessions ORDER BY created_at, id")
        return [self._session_from_row(r) for r in rows]

    def event_count(self, session_id: str) -> int:
        rows = self._read(
            "SELECT e.depth FROM sessions s JOIN events e ON e.id = s.head_event_id WHERE s.id = ?", (session_id,)
        )
        return int(rows[0][0]) if rows else 0

    # ------------------------------------------------------------------ appending

    def _memo(self, hashes: Sequence[str], tokenizer_id: str) -> dict[str, int]:
        out: dict[str, int] = {}
        uniq = list(dict.fromkeys(hashes))
        if len(uniq) > _IN_CHUNK and not self._read("SELECT 1 FROM token_counts LIMIT 1"):
            return out  # a new file: nothing to look up (3,249 hashes bound into IN lists cost ~2 ms)
        for i in range(0, len(uniq), _IN_CHUNK):
            chunk = uniq[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for h, n in self._read(
                f"SELECT hash, tokens FROM token_counts WHERE tokenizer = ? AND hash IN ({marks})",
                (tokenizer_id, *chunk),
            ):
                out[h] = n
        return out

    def _content_counts(self, encoded: Sequence[Encoded], tok: Tokenizer) -> tuple[list[int], dict[str, int]]:
        """Content tokens per encoded event, from the memo or one batched encode."""
        memo, missing = self._memo_lookup(encoded, tok)
        return self._finish_counts(encoded, tok, memo, missing)

    def _memo_lookup(self, encoded: Sequence[Encoded], tok: Tokenizer) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
        hashes = [e.blob_hash for e in encoded if e.blob_hash is not None]
        # a few KB are counted faster than the memo is queried (the memo rows are written all the same)
        memo = self._memo(hashes, tok.id) if hashes and not cheaper_to_count((e.texts for e in encoded), tok) else {}
        missing: dict[str, tuple[str, ...]] = {}
        for e in encoded:
            if e.blob_hash is not None and e.blob_hash not in memo and e.blob_hash not in missing:
                missing[e.blob_hash] = e.texts
        return memo, missing

    @staticmethod
    def _finish_counts(
        encoded: Sequence[Encoded],
        tok: Tokenizer,
        memo: dict[str, int],
        missing: dict[str, tuple[str, ...]],
    ) -> tuple[list[int], dict[str, int]]:
        """Tokenize what the memo lacks: each distinct text once, in one batch."""
        new: dict[str, int] = {}
        if missing:
            # Each distinct text once (a tool's name recurs in every call to it).
            flat = list(dict.fromkeys(t for texts in missing.values() for t in texts))
            counts = tok.count_many(flat)
            by_text = dict(zip(flat, counts, strict=True))
            for h, texts in missing.items():
                new[h] = by_text[texts[0]] if len(texts) == 1 else sum(by_text[t] for t in texts)
        known = {**memo, **new}
        return [known[e.blob_hash] if e.blob_hash is not None else 0 for e in encoded], new

    @staticmethod
    def _spread_counts(encoded: Sequence[Encoded], by_text: dict[str, int]) -> tuple[list[int], dict[str, int]]:
        """Content tokens per encoded event from counts per distinct text; and per blob hash."""
        per_hash: dict[str, int] = {}
        out: list[int] = []
        for e in encoded:
            h = e.blob_hash
            if h is None:
                out.append(0)
                continue
            n = per_hash.get(h)
            if n is None:
                ts = e.texts
                n = per_hash[h] = by_text[ts[0]] if len(ts) == 1 else sum(by_text[t] for t in ts)
            out.append(n)
        return out, per_hash

    def append(
        self, session_id: str, events: Sequence[Event], *, created_at: float | None = None,
        check: AppendCheck | None = None,
    ) -> list[int]:
        if not events:
            return []
        return self._append_events(session_id, self._session_tokenizers(session_id), events, created_at,
                                   check=check)

    def _session_tokenizers(self, session_id: str) -> tuple[str, ...]:
        """The tokenizers a session counts on append (one column read: an append does not
        need the whole :class:`SessionInfo`, whose metadata JSON may be large)."""
        rows = self._read("SELECT tokenizers FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise SessionNotFoundError(session_id)
        return tuple(json.loads(rows[0][0]))

    def _append_events(
        self,
        session_id: str,
        tokenizers: Sequence[str],
        events: Sequence[Event],
        created_at: float | None,
        create: Callable[[sqlite3.Connection], None] | None = None,
        check: AppendCheck | None = None,
    ) -> list[int]:
        """Append to a session tracking ``tokenizers``; ``create`` (the session's INSERT)
        runs first in the same transaction (:meth:`create_session` with events)."""
        toks = [self.tokenizer(name) for name in tokenizers]
        now = time.time() if created_at is None else created_at
        new_flags = [bool(getattr(e, "new_message", False)) for e in events]
        # Overhead of each event without the per-message share (added where it starts one).
        bases = [event_overhead(ev, False) for ev in events]

        # A bulk append counts on a second core (a thread or a forked child, see
        # parallel_count) while this one encodes, hashes and writes: the counting starts
        # first, on the distinct texts (the memo is not consulted: counts are deterministic,
        # so a memoized count is only work the second core repeats). Small appends count here from the memo or
        # one batched encode, before the write lock is taken.
        early: dict[int, tuple[list[str], parallel_count.Counting]] = {}
        texts: list[tuple[str, ...]] | None = None
        if any(parallel_count.wanted(tok, len(events)) for tok in toks):
            texts = [event_texts(e) for e in events]
            early = self._start_early(toks, texts)
        try:
            if texts is None:
                encoded = [encode_event(e) for e in events]
            else:
                encoded = [encode_event(e, ts) for e, ts in zip(events, texts, strict=True)]
            return self._append_encoded(
                session_id, encoded, new_flags, bases, now, self._counter(toks, encoded, early), create,
                check,
            )
        finally:
            for _, counting in early.values():
                counting.cancel()  # a no-op once the counts were collected

    def append_encoded(
        self,
        session_id: str,
        encoded: Sequence[Encoded],
        new_flags: Sequence[bool],
        bases: Sequence[int],
        *,
        created_at: float | None = None,
    ) -> list[int]:
        """Append events already encoded (the bulk import path, see ``ctxmem.jsonl``):
        ``encoded[i]`` must be ``encode_event(ev)`` of the event it stands for,
        ``new_flags[i]`` its ``new_message`` and ``bases[i]`` ``event_overhead(ev, False)``;
        stored exactly as :meth:`append` of those events stores them."""
        if not encoded:
            return []
        return self._append_encoded_to(session_id, self._session_tokenizers(session_id), encoded, new_flags, bases,
                                       created_at)

    def _append_encoded_to(
        self,
        session_id: str,
        tokenizers: Sequence[str],
        encoded: Sequence[Encoded],
        new_flags: Sequence[bool],
        bases: Sequence[int],
        created_at: float | None,
        create: Callable[[sqlite3.Connection], None] | None = None,
    ) -> list[int]:
        toks = [self.tokenizer(name) for name in tokenizers]
        now = time.time() if created_at is None else created_at
        early: dict[int, tuple[list[str], parallel_count.Counting]] = {}
        if any(parallel_count.wanted(tok, len(encoded)) for tok in toks):
            early = self._start_early(toks, [e.texts for e in encoded])
        try:
            return self._append_encoded(
                session_id, encoded, new_flags, bases, now, self._counter(toks, encoded, early), create
            )
        finally:
            for _, counting in early.values():
                counting.cancel()

    @staticmethod
    def _start_early(
        toks: Sequence[Tokenizer], texts: Sequence[tuple[str, ...]]
    ) -> dict[int, tuple[list[str], parallel_count.Counting]]:
        early: dict[int, tuple[list[str], parallel_count.Counting]] = {}
        distinct = list(dict.fromkeys(t for ts in texts for t in ts))
        # children are forked before any counting thread starts: a fork copies no other thread
        ordered = sorted(enumerate(toks), key=lambda kt: parallel_count.threaded(kt[1]))
        for k, tok in ordered:
            if parallel_count.enabled(tok, distinct):
                early[k] = (distinct, parallel_count.start(tok, distinct))
        return early

    def _counter(
        self,
        toks: Sequence[Tokenizer],
        encoded: Sequence[Encoded],
        early: dict[int, tuple[list[str], parallel_count.Counting]],
    ) -> Callable[[], list[tuple[str, list[int], dict[str, int]]]]:
        """Count here what no child counts (before the write lock); the returned function
        gives (tokenizer id, content tokens per event, new memo rows) per tokenizer."""
        counted_here = {k: self._content_counts(encoded, tok) for k, tok in enumerate(toks) if k not in early}

        def count_all() -> list[tuple[str, list[int], dict[str, int]]]:
            out = []
            for k, tok in enumerate(toks):
                if k in early:
                    distinct, result = early[k]
                    out.append((tok.id, *self._spread_counts(encoded, dict(zip(distinct, result(), strict=True)))))
                else:
                    out.append((tok.id, *counted_here[k]))
            return out

        return count_all

    def _append_encoded(
        self,
        session_id: str,
        encoded: Sequence[Encoded],
        new_flags: Sequence[bool],
        bases: Sequence[int],
        now: float,
        count_all: Callable[[], list[tuple[str, list[int], dict[str, int]]]],
        create: Callable[[sqlite3.Connection], None] | None = None,
        check: AppendCheck | None = None,
    ) -> list[int]:
        def write(conn: sqlite3.Connection) -> list[int]:
            if create is not None:  # a new session and its first events: one transaction
                create(conn)
            # What the append builds on, in one statement (a single append is a handful of
            # round trips, each ~5 µs): the head, its role and depth, the last event id, the
            # top blob id. Read under the write lock, so nothing moves before the commit.
            row = conn.execute(
                "SELECT s.head_event_id, s.tail_role, (SELECT depth FROM events WHERE id = s.head_event_id), "
                "(SELECT seq FROM sqlite_sequence WHERE name = 'events'), (SELECT max(id) FROM blobs) "
                "FROM sessions s WHERE s.id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            head, tail_role, depth, seq, top_blob = row
            if check is not None:  # under the write lock: nothing written yet
                check.enforce_sql(conn, session_id, head, "?")
            if head is not None and depth is None:  # only in a damaged file: never guess a depth
                raise StoreError(
                    f"{self.path}: session {session_id!r} names head event {head}, which is not stored; "
                    "the file is damaged (check it with PRAGMA integrity_check)"
                )
            blob_ids = self._put_blobs(conn, encoded, top_blob)
            depth = depth or 0
            next_id = (seq or 0) + 1
            ids = list(range(next_id, next_id + len(encoded)))
            rows = []
            starts_flags = []
            parent = head
            for i, enc in enumerate(encoded):
                starts = enc.role is not None and (new_flags[i] or enc.role != tail_role)
                starts_flags.append(starts)
                if enc.role is not None:
                    tail_role = enc.role
                depth += 1
                rows.append((
                    ids[i], session_id, parent, depth, enc.kind, enc.role, int(starts), enc.tool_use_id,
                    enc.tool_name, int(enc.is_error), enc.fmt,
                    blob_ids.get(enc.blob_hash) if enc.blob_hash else None, enc.meta, now,
                ))
                parent = ids[i]
            conn.executemany(
                "INSERT INTO events (id, session_id, parent_id, depth, kind, role, starts_message, tool_use_id, "
                "tool_name, is_error, fmt, blob_id, meta, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            counted = count_all()
            token_rows: list[tuple[int, str, int, int, int, int]] = []
            per_message = DEFAULT_OVERHEAD.per_message  # event_overhead(ev, s) == base + (per_message if s)
            overheads = [b + per_message if s else b for b, s in zip(bases, starts_flags, strict=True)]
            for tid, counts, new in counted:
                c = o = 0
                if head is not None:
                    r = conn.execute(
                        "SELECT cum_content, cum_overhead FROM event_tokens WHERE event_id = ? AND tokenizer = ?",
                        (head, tid),
                    ).fetchone()
                    c, o = (r[0], r[1]) if r else (0, 0)
                for i, eid in enumerate(ids):
                    c += counts[i]
                    o += overheads[i]
                    token_rows.append((eid, tid, counts[i], overheads[i], c, o))
                if new:  # in key order: appends to the b-tree instead of random inserts (~15% faster)
                    conn.executemany(
                        "INSERT OR IGNORE INTO token_counts (hash, tokenizer, tokens) VALUES (?, ?, ?)",
                        [(h, tid, n) for h, n in sorted(new.items())],
                    )
            if token_rows:
                conn.executemany(
                    "INSERT INTO event_tokens (event_id, tokenizer, content, overhead, cum_content, cum_overhead) "
                    "VALUES (?,?,?,?,?,?)",
                    token_rows,
                )
            conn.execute(
                "UPDATE sessions SET head_event_id = ?, tail_role = ? WHERE id = ?", (parent, tail_role, session_id)
            )
            return ids

        if len(encoded) < _BULK_EVENTS:
            return self._write(write)
        with self._lock:
            # A bulk write dirties more pages than the default 2 MB cache holds, which then
            # spills them to the WAL mid-transaction; 64 MB for this write only, given back
            # after it (a 1M-token import: ~3 ms less CPU of ~130, medians of 9, same run).
            was = self.conn.execute("PRAGMA cache_size").fetchone()[0]
            self.conn.execute(f"PRAGMA cache_size = {-_BULK_CACHE_KIB}")
            try:
                return self._write(write)
            finally:
                self.conn.execute(f"PRAGMA cache_size = {int(was)}")

    def _put_blobs(self, conn: sqlite3.Connection, encoded: Sequence[Encoded], top: int | None) -> dict[str, int]:
        """Insert blobs not yet stored (indexing new tool outputs in FTS); map hash → blob id.
        ``top``: the largest blob id stored, read in the same write transaction."""
        wanted: dict[str, Encoded] = {}
        for e in encoded:
            if e.blob_hash is not None and e.blob_hash not in wanted:
                wanted[e.blob_hash] = e
        if not wanted:
            return {}
        ids: dict[str, int] = {}
        hashes = list(wanted) if top is not None else []  # no blob stored yet: none to look up
        for i in range(0, len(hashes), _IN_CHUNK):
            chunk = hashes[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for bid, h in conn.execute(f"SELECT id, hash FROM blobs WHERE hash IN ({marks})", chunk):
                ids[h] = bid
        fresh = [(h, e) for h, e in wanted.items() if h not in ids]
        if not fresh:
            return ids
        next_id = (top or 0) + 1
        blob_rows = []
        fts_rows: list[tuple[int, str]] = []
        for k, (h, e) in enumerate(fresh):
            assert e.blob is not None
            bid = next_id + k
            ids[h] = bid
            blob_rows.append((bid, h, len(e.blob), e.blob))
            if e.is_tool_output:
                fts_rows.append((bid, e.texts[0]))
        conn.executemany("INSERT INTO blobs (id, hash, size, text) VALUES (?, ?, ?, ?)", blob_rows)
        if fts_rows:
            conn.executemany("INSERT INTO tool_output_fts (rowid, text) VALUES (?, ?)", fts_rows)
        return ids

    # ------------------------------------------------------------------ reading

    def _head(self, session_id: str) -> int | None:
        rows = self._read("SELECT head_event_id FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise SessionNotFoundError(session_id)
        head: int | None = rows[0][0]
        return head

    def _ranges(self, conn: sqlite3.Connection, session_id: str) -> list[tuple[str, int, int]]:
        """The session's chain as ``(writer session, lo, hi)`` id ranges, oldest first: every
        event written by ``writer`` with ``lo <= id <= hi`` is in the chain, no other is.

        The frozen segments (``chain_segments``, written at fork and rewind) plus the tail of
        the session's own events above ``tail_floor``: one indexed read, no chain walk.
        """
        rows = conn.execute(
            "SELECT 0, seg_session, lo, hi FROM chain_segments WHERE session_id = ?1 "
            "UNION ALL SELECT 1, id, tail_floor + 1, head_event_id FROM sessions WHERE id = ?1 ORDER BY 1, 3",
            (session_id,),
        ).fetchall()
        if not rows or rows[-1][0] != 1:
            raise SessionNotFoundError(session_id)
        out = [(r[1], r[2], r[3]) for r in rows[:-1]]
        _, writer, lo, head = rows[-1]
        if head is not None and head >= lo:
            out.append((writer, lo, head))
        return out

    @staticmethod
    def _in_ranges(ranges: Sequence[tuple[str, int, int]]) -> tuple[str, list[Any]]:
        """SQL condition (on alias ``e``) and parameters: the event is in one of ``ranges``."""
        if not ranges:
            return "0", []
        params: list[Any] = []
        for r in ranges:
            params.extend(r)
        return "(" + " OR ".join(["(e.session_id = ? AND e.id BETWEEN ? AND ?)"] * len(ranges)) + ")", params

    @staticmethod
    def _cut_ranges(ranges: Sequence[tuple[str, int, int]], at: int | None) -> list[tuple[str, int, int]]:
        """The chain's prefix ending at event ``at`` (ids ascend along a chain)."""
        if at is None:
            return []
        return [(w, lo, min(hi, at)) for w, lo, hi in ranges if lo <= at]

    @staticmethod
    def _freeze(conn: sqlite3.Connection, session_id: str, ranges: Sequence[tuple[str, int, int]]) -> None:
        """Make ``ranges`` the session's frozen chain; its tail starts above every stored event."""
        conn.execute("DELETE FROM chain_segments WHERE session_id = ?", (session_id,))
        conn.executemany(
            "INSERT INTO chain_segments (session_id, seg_session, lo, hi) VALUES (?, ?, ?, ?)",
            [(session_id, *r) for r in ranges],
        )
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        conn.execute("UPDATE sessions SET tail_floor = ? WHERE id = ?", (seq[0] if seq else 0, session_id))

    @staticmethod
    def _stored(row: Sequence[Any]) -> StoredEvent:
        ev = decode_event(row[3], row[4], row[6], row[7], bool(row[8]), row[9], row[10], row[11], bool(row[5]))
        return StoredEvent(id=row[0], session_id=row[1], parent_id=row[2], created_at=row[12], event=ev)

    def chain(self, session_id: str, *, tokenizers: Sequence[str] = ()) -> ChainView:
        info = self.get_session(session_id)
        if info.head_event_id is None:
            return ChainView(info, [], {name: [] for name in tokenizers})
        for name in tokenizers:
            self.totals(session_id, name)  # backfills counts for a tokenizer not tracked on append
        with self.read_snapshot() as conn, gc_paused():
            linear = conn.execute("SELECT linear FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]
            counts: dict[str, list[EventCounts]] = {}
            if linear and tokenizers:
                # One range scan for the events and the first tokenizer's counts (columns
                # 13-16 after _EVENT_COLS; decode_rows reads only the first 13).
                rows = conn.execute(
                    f"SELECT {_EVENT_COLS}, t.content, t.overhead, t.cum_content, t.cum_overhead "
                    "FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
                    "LEFT JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = ? "
                    "WHERE e.session_id = ? AND e.id <= ? ORDER BY e.id",
                    (tokenizer_id(tokenizers[0]), session_id, info.head_event_id),
                ).fetchall()
                counts[tokenizers[0]] = decode_counts(rows, at=13)
            elif linear:
                rows = conn.execute(
                    f"SELECT {_EVENT_COLS} FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
                    "WHERE e.session_id = ? AND e.id <= ? ORDER BY e.id",
                    (session_id, info.head_event_id),
                ).fetchall()
            else:
                member, mparams = self._in_ranges(self._ranges(conn, session_id))
                rows = conn.execute(
                    f"SELECT {_EVENT_COLS} FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
                    f"WHERE {member} ORDER BY e.id",
                    mparams,
                ).fetchall()
            for name in tokenizers:
                if name in counts:
                    continue
                tid = tokenizer_id(name)
                if linear:
                    crows = conn.execute(
                        "SELECT t.event_id, t.content, t.overhead, t.cum_content, t.cum_overhead FROM events e "
                        "JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = ? "
                        "WHERE e.session_id = ? AND e.id <= ? ORDER BY e.id",
                        (tid, session_id, info.head_event_id),
                    ).fetchall()
                else:
                    member, mparams = self._in_ranges(self._ranges(conn, session_id))
                    crows = conn.execute(
                        "SELECT t.event_id, t.content, t.overhead, t.cum_content, t.cum_overhead FROM events e "
                        f"JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = ? WHERE {member} ORDER BY e.id",
                        (tid, *mparams),
                    ).fetchall()
                counts[name] = decode_counts(crows)
            events = decode_rows(rows)
        return ChainView(info, events, counts)

    def chain_messages(
        self, session_id: str, tokenizer: str
    ) -> tuple[list[Message], list[int], list[tuple[int, ...]], int | None, int] | None:
        """The session's chain as messages with their stored counts in ``tokenizer`` and their
        event ids, plus the head and the number of events read: what
        :meth:`~ctxmem.context.History.from_session` builds, read in one range scan without an
        event object per row (:func:`~ctxmem.store.codec.decode_messages`). ``None`` for a
        forked session (its chain spans other sessions' events) or where a count is missing:
        the caller reads :meth:`chain` then."""
        head = self._head(session_id)
        if head is None:
            return [], [], [], None, 0
        self.totals(session_id, tokenizer)  # backfills counts for a tokenizer not tracked on append
        with self.read_snapshot() as conn, gc_paused():
            row = conn.execute("SELECT linear, head_event_id FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None or not row[0]:
                return None
            head = row[1]
            rows = conn.execute(
                f"SELECT {MESSAGE_COLS} FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
                "LEFT JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = ? "
                "WHERE e.session_id = ? AND e.id <= ? ORDER BY e.id",
                (tokenizer_id(tokenizer), session_id, head),
            ).fetchall()
            got = decode_messages(rows)
        if got is None:
            return None
        return got[0], got[1], got[2], rows[-1][0] if rows else None, len(rows)

    def chain_since(
        self, session_id: str, after_event_id: int, tokenizer: str, limit: int = 512
    ) -> tuple[int | None, list[StoredEvent], list[int | None]] | None:
        """The session's head and the chain's events after ``after_event_id`` (oldest first),
        each with its stored count in ``tokenizer`` (content + overhead; ``None`` when not
        stored), in one read: what a reader that saw the chain up to that event needs to
        catch up. ``None`` when the chain no longer passes through that event (a rewind, a
        fork) or more than ``limit`` events came since: read the whole chain then."""
        with self.read_snapshot() as conn:
            row = conn.execute("SELECT head_event_id FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            head: int | None = row[0]
            if head == after_event_id:
                return head, [], []
            if head is None or head < after_event_id:
                return None
            rows = conn.execute(
                f"SELECT {_EVENT_COLS}, t.content + t.overhead FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
                "LEFT JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = ? "
                "WHERE e.session_id = ? AND e.id > ? AND e.id <= ? ORDER BY e.id LIMIT ?",
                (tokenizer_id(tokenizer), session_id, after_event_id, head, limit + 1),
            ).fetchall()
        # the events of this session in the id range, on the chain or not (a rewound branch):
        # the chain's are those reached from the head by parent links, down to the event seen
        by_id = {r[0]: r for r in rows}
        walk: list[tuple[Any, ...]] = []
        eid: int | None = head
        while eid is not None and eid != after_event_id:
            r = by_id.get(eid)
            if r is None or len(walk) >= limit:
                return None
            walk.append(r)
            eid = r[2]
        if eid != after_event_id:
            return None
        walk.reverse()
        return head, [self._stored(r) for r in walk], [r[13] for r in walk]

    def chain_events_of_kind(self, session_id: str, kind: str) -> list[StoredEvent]:
        """The events of one kind in the session's current chain, oldest first: what
        ``chain(session_id).events`` filtered by kind gives, without decoding the rest (a
        compaction recorder looks for the last compaction of a 1M-token session: 0.1 ms
        instead of decoding its 5K events)."""
        info = self.get_session(session_id)
        if info.head_event_id is None:
            return []
        with self.read_snapshot() as conn:
            member, mparams = self._in_ranges(self._ranges(conn, session_id))
            rows = conn.execute(
                f"SELECT {_EVENT_COLS} FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
                f"WHERE {member} AND e.kind = ? ORDER BY e.id",
                (*mparams, kind),
            ).fetchall()
        return decode_rows(rows)

    def event(self, event_id: int) -> StoredEvent:
        rows = self._read(
            f"SELECT {_EVENT_COLS} FROM events e LEFT JOIN blobs b ON b.id = e.blob_id WHERE e.id = ?", (event_id,)
        )
        if not rows:
            raise EventNotFoundError(event_id)
        return self._stored(rows[0])

    def _chain_ids(self, head: int | None) -> list[int]:
        if head is None:
            return []
        return [r[0] for r in self._read(_CHAIN_CTE + "SELECT id FROM chain ORDER BY id", (head,))]

    def totals(self, session_id: str, tokenizer: str) -> TokenTotals:
        tid = tokenizer_id(tokenizer)
        head = self._head(session_id)
        if head is None:
            return TokenTotals(tokenizer, 0, 0, 0)
        rows = self._read(
            "SELECT t.cum_content, t.cum_overhead, e.depth FROM events e LEFT JOIN event_tokens t "
            "ON t.event_id = e.id AND t.tokenizer = ? WHERE e.id = ?",
            (tid, head),
        )
        if rows[0][0] is None:
            self._backfill(head, self.tokenizer(tokenizer))
            return self.totals(session_id, tokenizer)
        return TokenTotals(tokenizer, rows[0][0], rows[0][1], rows[0][2])

    def _backfill(self, head: int, tok: Tokenizer) -> None:
        """Count every event of the chain ending at ``head`` that has no counts for ``tok``."""
        rows = self._read(
            _CHAIN_CTE
            + f"SELECT {_EVENT_COLS}, b.hash, t.cum_content, t.cum_overhead FROM chain JOIN events e ON e.id = chain.id "
            "LEFT JOIN blobs b ON b.id = e.blob_id "
            "LEFT JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = ? ORDER BY e.id",
            (head, tok.id),
        )
        # Start after the last event that already has counts (an ancestor shared with a fork).
        start = 0
        cum = (0, 0)
        for i, r in enumerate(rows):
            if r[14] is not None:
                start, cum = i + 1, (r[14], r[15])
        todo = rows[start:]
        if not todo:
            return
        stored = [self._stored(r[:13]) for r in todo]
        encoded = [encode_event(s.event) for s in stored]
        counts, new = self._content_counts(encoded, tok)
        token_rows = []
        c, o = cum
        for s, n, r in zip(stored, counts, todo, strict=True):
            ov = event_overhead(s.event, bool(r[5]))
            c, o = c + n, o + ov
            token_rows.append((s.id, tok.id, n, ov, c, o))

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO token_counts (hash, tokenizer, tokens) VALUES (?, ?, ?)",
                [(h, tok.id, n) for h, n in new.items()],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO event_tokens (event_id, tokenizer, content, overhead, cum_content, cum_overhead) "
                "VALUES (?,?,?,?,?,?)",
                token_rows,
            )

        self._write(write)

    def pending_tool_uses(self, session_id: str) -> list[ToolUseBlock]:
        with self._lock:
            member, mparams = self._in_ranges(self._retry(lambda: self._ranges(self.conn, session_id)))
        if not mparams:
            return []
        rows = self._read(
            f"SELECT {_EVENT_COLS} FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
            f"WHERE e.kind IN ('tool_call', 'tool_result') AND {member} ORDER BY e.id",
            mparams,
        )
        return pending_tool_uses(self._stored(r).event for r in rows)

    def tool_events(
        self, session_id: str, *, after_event_id: int | None = None
    ) -> tuple[int | None, list[ToolEventRef]]:
        """See :meth:`SessionStore.tool_events`. A linear session reads an id range of its
        own events; otherwise the chain is walked from the head down to ``after_event_id``
        only (ids ascend along a chain), so catching up costs what was appended since."""

        lo = after_event_id or 0

        def linear_run() -> list[tuple[Any, ...]]:
            # One statement (one implicit read transaction): the session's head, the owner
            # of after_event_id and, if the session is linear (its chain is exactly its own
            # events up to the head), its tool events in (lo, head].
            with self._lock:
                return self.conn.execute(
                    "SELECT s.head_event_id, s.linear, (SELECT session_id FROM events WHERE id = ?2), "
                    "e.id, e.kind, e.tool_use_id, e.tool_name FROM sessions s "
                    "LEFT JOIN events e ON s.linear = 1 AND e.session_id = s.id AND e.id > ?2 "
                    "AND e.id <= s.head_event_id AND e.kind IN ('tool_call', 'tool_result') "
                    "WHERE s.id = ?1 ORDER BY e.id",
                    (session_id, lo),
                ).fetchall()

        fast = self._retry(linear_run)
        if not fast:
            raise SessionNotFoundError(session_id)
        head, linear, owner = fast[0][:3]
        if linear and head is not None and (after_event_id is None or (owner == session_id and after_event_id <= head)):
            return head, [ToolEventRef(*r[3:]) for r in fast if r[3] is not None]

        def run() -> tuple[int | None, list[ToolEventRef]]:
            with self.read_snapshot() as conn:
                row = conn.execute("SELECT head_event_id, linear FROM sessions WHERE id = ?", (session_id,)).fetchone()
                if row is None:
                    raise SessionNotFoundError(session_id)
                head, linear = row
                if head is None or (after_event_id is not None and after_event_id > head):
                    if after_event_id is not None:
                        raise EventNotFoundError(after_event_id, session_id)
                    return head, []
                if linear:
                    if after_event_id is not None:
                        owner = conn.execute("SELECT session_id FROM events WHERE id = ?", (after_event_id,)).fetchone()
                        if owner is None or owner[0] != session_id:
                            raise EventNotFoundError(after_event_id, session_id)
                    rows = conn.execute(
                        "SELECT id, kind, tool_use_id, tool_name FROM events WHERE session_id = ? AND id > ? "
                        "AND id <= ? AND kind IN ('tool_call', 'tool_result') ORDER BY id",
                        (session_id, lo, head),
                    ).fetchall()
                    return head, [ToolEventRef(*r) for r in rows]
                rows = conn.execute(
                    "WITH RECURSIVE chain(id) AS (SELECT ?1 UNION ALL SELECT e.parent_id FROM events e "
                    "JOIN chain ON e.id = chain.id WHERE e.parent_id IS NOT NULL AND e.parent_id >= ?2) "
                    "SELECT e.id, e.kind, e.tool_use_id, e.tool_name FROM chain JOIN events e ON e.id = chain.id "
                    "ORDER BY e.id",
                    (head, lo),
                ).fetchall()
                if after_event_id is not None and (not rows or rows[0][0] != after_event_id):
                    raise EventNotFoundError(after_event_id, session_id)
                return head, [ToolEventRef(*r) for r in rows if r[0] > lo and r[1] in ("tool_call", "tool_result")]

        return self._retry(run)

    # ------------------------------------------------------------------ branches

    def _require_in_chain(self, session_id: str, event_id: int) -> None:
        def check() -> bool:
            with self._lock:
                ranges = self._ranges(self.conn, session_id)
                row = self.conn.execute("SELECT session_id FROM events WHERE id = ?", (event_id,)).fetchone()
            return row is not None and any(w == row[0] and lo <= event_id <= hi for w, lo, hi in ranges)

        if not self._retry(check):
            raise EventNotFoundError(event_id, session_id)

    def _tail_role(self, conn: sqlite3.Connection, event_id: int | None) -> str | None:
        if event_id is None:
            return None
        row = conn.execute(
            _CHAIN_CTE + "SELECT e.role FROM chain JOIN events e ON e.id = chain.id "
            "WHERE e.role IS NOT NULL ORDER BY e.id DESC LIMIT 1",
            (event_id,),
        ).fetchone()
        return row[0] if row else None

    def fork(self, session_id: str, at_event_id: int, *, title: str | None = None) -> SessionInfo:
        self._require_in_chain(session_id, at_event_id)
        parent = self.get_session(session_id)
        sid = uuid.uuid4().hex

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sessions (id, created_at, title, metadata, tokenizers, head_event_id, tail_role, "
                "parent_session_id, fork_event_id, linear) VALUES (?,?,?,?,?,?,?,?,?,0)",
                (
                    sid,
                    time.time(),
                    title if title is not None else parent.title,
                    json.dumps(parent.metadata, sort_keys=True),
                    json.dumps(list(parent.tokenizers)),
                    at_event_id,
                    self._tail_role(conn, at_event_id),
                    session_id,
                    at_event_id,
                ),
            )
            self._freeze(conn, sid, self._cut_ranges(self._ranges(conn, session_id), at_event_id))

        self._write(write)
        return self.get_session(sid)

    def rewind(self, session_id: str, to_event_id: int | None) -> SessionInfo:
        """Move the head back to ``to_event_id`` (None: empty). Later events stay stored."""
        if to_event_id is not None:
            self._require_in_chain(session_id, to_event_id)

        def write(conn: sqlite3.Connection) -> None:
            kept = self._cut_ranges(self._ranges(conn, session_id), to_event_id)
            conn.execute(
                "UPDATE sessions SET head_event_id = ?, tail_role = ?, linear = 0 WHERE id = ?",
                (to_event_id, self._tail_role(conn, to_event_id), session_id),
            )
            self._freeze(conn, session_id, kept)

        self._write(write)
        return self.get_session(session_id)

    # ------------------------------------------------------------------ search, blobs, calibration

    def search(
        self, query: str, *, session_id: str | None = None, limit: int = 10, snippets: bool = True
    ) -> list[SearchHit]:
        """FTS5 search over tool outputs (FTS5 query syntax; bare words are ANDed).

        With ``session_id``, only tool results in that session's current chain are
        searched: membership is a few id ranges on the ``events_session`` index (see
        :meth:`_ranges`), so matches elsewhere never crowd them out and no chain is walked.
        Snippets are made for the returned hits only (``snippet()`` in the ranking query
        would run for every match before the sort); ``snippets=False`` skips them (empty
        strings): a retriever that reads the outputs itself saves ~0.1 ms per hit.
        """

        def run() -> list[SearchHit]:
            with self._lock:
                member, params = "1", list[Any]()
                if session_id is not None:
                    member, params = self._in_ranges(self._ranges(self.conn, session_id))
                    if not params:
                        return []
                hits = self.conn.execute(
                    "SELECT e.id, e.session_id, e.tool_use_id, e.tool_name, e.blob_id, bm25(tool_output_fts) AS score "
                    "FROM tool_output_fts CROSS JOIN events e ON e.blob_id = tool_output_fts.rowid "
                    f"WHERE tool_output_fts MATCH ? AND e.kind = 'tool_result' AND {member} "
                    "ORDER BY score, e.id LIMIT ?",
                    (query, *params, limit),
                ).fetchall()
                blobs = sorted({h[4] for h in hits})
                texts = dict(
                    self.conn.execute(
                        "SELECT rowid, snippet(tool_output_fts, 0, '[', ']', '…', 12) FROM tool_output_fts "
                        f"WHERE tool_output_fts MATCH ? AND rowid IN ({','.join('?' * len(blobs))})",
                        (query, *blobs),
                    ).fetchall()
                ) if blobs and snippets else {}
            return [SearchHit(eid, sid, tuid, tname, texts.get(bid, ""), -float(score))
                    for eid, sid, tuid, tname, bid, score in hits]

        try:
            return self._retry(run)
        except SessionNotFoundError:
            raise  # the session_id is wrong, not the query (its message says how to list them)
        except StoreError as exc:
            detail = str(exc).removeprefix(f"{self.path}: ").removeprefix("fts5: ")
            raise InputError(
                f"bad search query {query!r}: {detail.rstrip(': ') or 'not an FTS5 query'} (FTS5 syntax: words, "
                '"a phrase", a prefix*, AND / OR / NOT between terms, NEAR(a b, 5); quote a word that is an '
                "operator or holds punctuation)",
                field="query",
            ) from None

    def document_frequencies(self, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """``(n, {term: df})``: how many indexed tool outputs there are, and how many of them
        hold each term (a single FTS5 token, as ``unicode61`` splits text; any case).

        Counted over the outputs with an FTS rowid up to an *epoch boundary*, the largest
        point of a fixed geometric grid (ratio ~1.03) not above the newest rowid, and
        memoized per boundary: blob rowids only grow and nothing is deleted, so the answer
        is a function of the file's contents alone (a fresh process gives the same), and
        it is recounted only when the index has grown ~3% (not every turn). Callers use it
        to pick selective query terms, not to score.
        """
        def run() -> tuple[int, dict[str, int]]:
            with self._lock:
                # FTS rowids are blob ids (max(id) of blobs is one b-tree seek; of the FTS table, a scan)
                top = self.conn.execute("SELECT max(id) FROM blobs").fetchone()[0] or 0
                bound = _epoch_floor(top)
                memo = self._df_memo
                if memo is None or memo[0] != bound:
                    # indexed outputs are the blobs of tool results (a count(*) of the external-
                    # content FTS table would count every blob)
                    n = self.conn.execute(
                        "SELECT count(DISTINCT blob_id) FROM events WHERE blob_id <= ? AND kind = 'tool_result'",
                        (bound,),
                    ).fetchone()[0]
                    memo = self._df_memo = (bound, n, {})
                _, n, dfs = memo
                out: dict[str, int] = {}
                for t in dict.fromkeys(x.lower() for x in terms):
                    df = dfs.get(t)
                    if df is None:
                        quoted = '"' + t.replace('"', '""') + '"'
                        df = dfs[t] = self.conn.execute(
                            "SELECT count(*) FROM tool_output_fts WHERE tool_output_fts MATCH ? AND rowid <= ?",
                            (quoted, bound),
                        ).fetchone()[0]
                    out[t] = df
                return n, out

        try:
            return self._retry(run)
        except StoreError as exc:
            raise InputError(f"bad search terms {list(terms)!r}: {exc}", field="terms") from None

    # -- the TermPostings capability: what a session's term index (ctxmem.retrieval.session_terms) reads

    def output_stats(self) -> tuple[int, float]:
        """``(n, mean bytes)`` of the indexed tool outputs up to the same epoch boundary as
        :meth:`document_frequencies` (memoized per boundary: a function of the file's contents)."""
        def run() -> tuple[int, float]:
            with self._lock:
                top = self.conn.execute("SELECT max(id) FROM blobs").fetchone()[0] or 0
                bound = _epoch_floor(top)
                memo = self._size_memo
                if memo is None or memo[0] != bound:
                    n, mean = self.conn.execute(
                        "SELECT count(*), avg(size) FROM blobs WHERE id IN "
                        "(SELECT blob_id FROM events WHERE blob_id <= ? AND kind = 'tool_result')",
                        (bound,),
                    ).fetchone()
                    memo = self._size_memo = (bound, int(n), float(mean or 0.0))
                return memo[1], memo[2]

        return self._retry(run)

    def term_blob_ids(self, term: str) -> list[int]:
        """Blob ids of the stored tool outputs holding ``term`` (one FTS5 token), ascending."""
        quoted = '"' + term.replace('"', '""') + '"'

        def run() -> list[int]:
            with self._lock:
                return [r[0] for r in self.conn.execute(
                    "SELECT rowid FROM tool_output_fts WHERE tool_output_fts MATCH ? ORDER BY rowid", (quoted,))]

        try:
            return self._retry(run)
        except StoreError as exc:
            raise InputError(f"bad search term {term!r}: {exc}", field="term") from None

    def result_blobs(self, event_ids: Sequence[int]) -> list[tuple[int, int]]:
        """``(event id, blob id)`` of those of ``event_ids`` that are stored tool results."""
        out: list[tuple[int, int]] = []
        ids = list(event_ids)
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            out += self._read(
                f"SELECT id, blob_id FROM events WHERE id IN ({','.join('?' * len(chunk))}) "
                "AND kind = 'tool_result' AND blob_id IS NOT NULL",
                chunk,
            )
        return out

    def blob_texts(self, blob_ids: Sequence[int]) -> list[tuple[int, int, str]]:
        """``(blob id, size, text)`` of the given blobs (the text FTS5 indexed for a tool output)."""
        out: list[tuple[int, int, str]] = []
        ids = list(blob_ids)
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            out += self._read(f"SELECT id, size, text FROM blobs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return out

    def tool_output(self, event_id: int) -> str:
        rows = self._read(
            "SELECT b.text FROM events e JOIN blobs b ON b.id = e.blob_id WHERE e.id = ? AND e.kind = 'tool_result'",
            (event_id,),
        )
        if not rows:
            raise EventNotFoundError(event_id)
        ev = self.event(event_id).event
        return ev.result.text if hasattr(ev, "result") else str(rows[0][0])

    def blob_count(self) -> int:
        return int(self._read("SELECT count(*) FROM blobs")[0][0])

    def record_calibration(self, model: str, tokenizer: str, estimated: int, reported: int) -> None:
        tid = self.tokenizer(tokenizer).id

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO calibration (model, tokenizer, estimated, reported, created_at) VALUES (?,?,?,?,?)",
                (model, tid, estimated, reported, time.time()),
            )

        self._write(write)

    def calibration_observations(self, model: str, tokenizer: str, limit: int = 50) -> list[tuple[int, int]]:
        tid = self.tokenizer(tokenizer).id
        rows = self._read(
            "SELECT estimated, reported FROM calibration WHERE model = ? AND tokenizer = ? ORDER BY id DESC LIMIT ?",
            (model, tid, limit),
        )
        return [(int(e), int(r)) for e, r in reversed(rows)]

    def embedding_cache(self) -> Any:
        """The ``embedding_cache`` table of this file (the EmbeddingCacheProvider capability)."""
        from ctxmem.retrieval.cache import SQLiteEmbeddingCache

        return SQLiteEmbeddingCache(self)

    # -- the DerivedStateStore capability (ctxmem.context.memory saves the facts index here)

    def load_derived(self, session_id: str, kind: str) -> tuple[str, bytes] | None:
        """``(key, data)`` a strategy saved for this session and kind, or ``None`` (the
        :class:`~ctxmem.store.base.DerivedStateStore` capability: a cache, see ``derived_state``)."""
        rows = self._read("SELECT key, data FROM derived_state WHERE session_id = ? AND kind = ?", (session_id, kind))
        return (str(rows[0][0]), bytes(rows[0][1])) if rows else None

    def save_derived(self, session_id: str, kind: str, key: str, data: bytes) -> None:
        """Replace what is saved for this session and kind (one transaction)."""
        self._write(lambda c: c.execute(_SAVE_DERIVED, (session_id, kind, key, data, time.time())))

    def try_save_derived(self, session_id: str, kind: str, key: str, data: bytes) -> bool:
        """:meth:`save_derived` unless another connection holds the write lock right now:
        then nothing is saved and this returns False at once (what a dry run's cache does: a
        read-only command must not wait behind an import or a live agent for a cache)."""
        with self._lock:
            self.conn.execute("PRAGMA busy_timeout = 0")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return False
                raise StoreError(f"{self.path}: {exc}") from exc
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            try:
                self.conn.execute(_SAVE_DERIVED, (session_id, kind, key, data, time.time()))
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: {type(exc).__name__}: {exc}") from exc
        return True

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file (tests and crash checks)."""
        return str(self._read("PRAGMA integrity_check")[0][0])
