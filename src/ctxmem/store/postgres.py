"""The PostgreSQL session store: many processes on many hosts share one database.

Same contract and the same rows as :class:`~ctxmem.store.sqlite.SQLiteStore` (both write
through :mod:`ctxmem.store.codec`, so they store, hash and count identically). Open it
with ``open_store("postgresql://user@host/db")``; psycopg 3 and its pool come with
``pip install "ctxmem[postgres]"``.

Design:

* **One transaction per write, serialized per session by a row lock.** An append (and a
  rewind) starts with ``SELECT … FROM sessions WHERE id = … FOR UPDATE``: writers to one
  session queue on that row, whichever host they run on, and each reads the head the
  previous one committed, so the chain stays linear and nothing is lost. Writers to other
  sessions do not wait. Event ids are drawn from the sequence *after* the lock, so ids
  ascend along every chain (the SQLite store's invariant, which ``tool_events`` and the
  branch checks rely on).
* **Isolation READ COMMITTED**, so PostgreSQL never raises "could not serialize" for these
  writes; the only transaction-rollback error left is a deadlock between two batches that
  share new blobs, which sorted inserts make rare, and any class-40 error is retried with
  backoff (:class:`~ctxmem.errors.StoreBusyError` only after every retry).
* **No wait without an end.** Each connection sets ``lock_timeout`` (``busy_timeout_ms``,
  like the SQLite store's): a writer that waited that long for a session's row lock
  retries, ``lock_attempts`` times, then raises ``StoreBusyError``. And
  ``idle_in_transaction_session_timeout``: the server ends the session of a writer frozen
  inside its transaction (a stopped process, a suspended VM), which frees its locks. Opening
  the pool, or taking a connection from it, waits ``connect_timeout`` at most and fails as
  one ``StoreError`` line (the pool's own per-attempt warnings are silenced, see
  :func:`_quiet_pool_log`).
* **Expensive work outside the transaction.** Encoding, hashing and tokenizing happen
  before the connection is taken; inside there are only inserts.
* **Content-addressed blobs** (``INSERT … ON CONFLICT (hash) DO NOTHING``): a tool output
  stored by two hosts at once is stored once. Tool outputs carry a ``tsvector`` ('simple'
  configuration: no stemming, no stop words, like FTS5's unicode61) with a GIN index; the
  first :data:`FTS_BYTES` bytes (UTF-8) of an output are indexed (a ``tsvector``'s lexemes
  are capped at 1 MB). Queries use ``websearch_to_tsquery``: bare words are ANDed, "quoted phrases"
  match as phrases, as in FTS5.
* **Counts** are memoized per (blob hash, tokenizer id) and each event keeps its chain's
  running totals per tokenizer, so ``totals`` is one indexed read.
* **Branches by parent pointer**, read with recursive CTEs from the head.
* **Text PostgreSQL cannot hold** (NUL, lone surrogates) is stored JSON-escaped with a
  flag on the row and restored on read, so every string round-trips as on SQLite.

Each process opens its own store (the pool's connections are not fork-safe).
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
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
from ctxmem.messages import ToolUseBlock
from ctxmem.store.base import (
    AppendCheck,
    ChainView,
    SearchHit,
    SessionInfo,
    SessionStore,
    TokenTotals,
    ToolEventRef,
    documented_by,
)
from ctxmem.store.codec import Encoded, decode_counts, decode_rows, encode_event
from ctxmem.store.counting import cheaper_to_count, event_overhead
from ctxmem.store.pg_migrations import migrate
from ctxmem.tokens import Tokenizer, get_tokenizer, tokenizer_id

T = TypeVar("T")

# UTF-8 bytes of one tool output that full-text search indexes. A tsvector's lexemes and
# positions may not pass 1 MB, and they can outweigh the text: measured on PostgreSQL 15,
# up to 2.95 bytes per byte of text (hyphenated words, each indexed whole and in parts), so
# 300 KB stays under the cap (a cap in characters did not: 300k 4-byte characters failed).
FTS_BYTES = 300_000

# The chain from %(head)s back through parent pointers, stopping below %(lo)s. The step is a
# LATERAL primary-key lookup: a plain join lets the planner pick a hash join that scans the
# whole events table at every step (quadratic: 240 ms for a search in a 3,600-event chain).
_CHAIN = (
    "WITH RECURSIVE chain(id) AS (SELECT %(head)s::bigint UNION ALL SELECT p.parent_id FROM chain "
    "CROSS JOIN LATERAL (SELECT parent_id FROM events WHERE events.id = chain.id) p "
    "WHERE p.parent_id IS NOT NULL AND p.parent_id >= %(lo)s) "
)
_EVENT_COLS = (
    "e.id, e.session_id, e.parent_id, e.kind, e.role, e.starts_message, e.tool_use_id, "
    "e.tool_name, e.is_error, e.fmt, b.text, e.meta, e.created_at, e.escaped, b.escaped"
)
# Characters of an escaped tool output (one holding NUL) that a search hit reads whole to
# cut its snippet; larger ones get no snippet (their stored form cannot be cut on the server).
_SNIPPET_ESCAPED_CHARS = 1_000_000
_SESSION_COLS = "id, created_at, title, metadata, tokenizers, head_event_id, parent_session_id, fork_event_id"


def _bad_text(s: str) -> bool:
    """Text a PostgreSQL ``text`` column cannot hold."""
    if "\x00" in s:
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _esc(s: str | None, escaped: bool) -> str | None:
    return json.dumps(s) if escaped and s is not None else s


def _unesc(s: str | None, escaped: bool) -> str | None:
    return json.loads(s) if escaped and s is not None else s


def redact(url: str) -> str:
    """The URL or conninfo string without its password (for messages and logs): the one in
    ``user:password@``, a ``?password=`` / ``&password=`` parameter, a ``password=`` key."""
    url = re.sub(r"(://[^:/@?#]*):[^/?#]*@", r"\1:***@", url)  # the password may hold '@'
    url = re.sub(r"([?&]password=)[^&#]*", r"\1***", url)
    return re.sub(r"(^|\s)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", r"\1\2***", url)


def _quiet_pool_log() -> None:
    """Silence psycopg_pool's warnings unless the program set that logger's level itself.
    The pool retries a failed connection in the background and logs every attempt (a
    two-line warning each second or so while a server is down); the store reports the
    failure once, as its own one-line error."""
    log = logging.getLogger("psycopg.pool")
    if log.level == logging.NOTSET:
        log.setLevel(logging.ERROR)


def _decode(rows: Sequence[Sequence[Any]]) -> list[StoredEvent]:
    plain = []
    for r in rows:
        if r[13] or r[14]:
            r = list(r)
            r[6], r[7] = _unesc(r[6], r[13]), _unesc(r[7], r[13])
            r[10] = _unesc(r[10], r[14])
        plain.append(r)
    return decode_rows(plain)


@documented_by(SessionStore)
class PostgresStore:
    """A :class:`~ctxmem.store.base.SessionStore` on a PostgreSQL database.

    ``url`` is a libpq URL (``postgresql://user:pass@host:port/db``; ``?options=-csearch_path%3Dname``
    selects a schema). The schema is created or migrated on open. ``pool_size`` is the
    number of connections this handle holds (a store is used from one thread at a time
    in most programs; raise it for a threaded server). ``connect_timeout`` (seconds) bounds
    each connection attempt, the wait for the pool to fill and the wait for a free
    connection. ``busy_timeout_ms`` is how long one attempt waits for a lock another
    writer holds (``lock_timeout``); after ``lock_attempts`` such waits the write raises
    ``StoreBusyError``. ``idle_timeout_ms`` is the server's
    ``idle_in_transaction_session_timeout`` for these connections.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 2,
        max_attempts: int = 40,
        connect_timeout: float = 10,
        busy_timeout_ms: int = 5000,
        lock_attempts: int = 6,
        idle_timeout_ms: int = 60_000,
    ):
        try:
            import psycopg
            import psycopg_pool
        except ImportError as exc:
            raise MissingDependencyError("psycopg", "postgres", "the PostgreSQL store") from exc
        self.url = url
        self.max_attempts = max_attempts
        self.lock_attempts = lock_attempts
        self._errors = psycopg.errors
        self._psycopg = psycopg
        self._pool_timeout = psycopg_pool.PoolTimeout
        timeout = max(1, int(connect_timeout))
        try:
            with psycopg.connect(url, connect_timeout=timeout) as conn:
                migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL store {redact(url)}: {_one_line(exc)}") from None
        settings = (f"{int(busy_timeout_ms)}ms", f"{int(idle_timeout_ms)}ms")

        def configure(conn: Any) -> None:
            conn.execute("SELECT set_config('lock_timeout', %s, false), "
                         "set_config('idle_in_transaction_session_timeout', %s, false)", settings)
            conn.commit()

        _quiet_pool_log()
        self.pool = psycopg_pool.ConnectionPool(
            url, min_size=pool_size, max_size=pool_size, open=False, timeout=timeout, name="ctxmem",
            kwargs={"connect_timeout": timeout}, configure=configure,
        )
        # A fixed size, filled now: the pool never grows from a background thread later
        # (its connection jitter draws from the global random module mid-run).
        try:
            self.pool.open(wait=True, timeout=timeout)
        except psycopg.Error:  # PoolTimeout: the pool closed itself
            self.pool.close()
            stats = self.pool.get_stats()
            opened = stats.get("connections_num", 0) - stats.get("connections_errors", 0)
            raise StoreError(
                f"cannot open PostgreSQL store {redact(url)}: {max(0, opened)} of its {pool_size} connections "
                f"(pool_size) opened within {timeout} s; the server refuses more (max_connections, or the "
                "role's CONNECTION LIMIT) or is unreachable: lower pool_size, raise the limit or connect_timeout"
            ) from None
        self._tokenizers: dict[str, Tokenizer] = {}
        self._tok_lock = threading.Lock()
        self._session_toks: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ plumbing

    def _run(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` in one transaction, retrying the whole of it on a deadlock or
        serialization failure (class 40); other database errors become ``StoreError``."""
        psycopg = self._psycopg
        delay = 0.002
        lock_waits = 0
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self.pool.connection() as conn, conn.transaction():
                    return fn(conn)
            except psycopg.errors.LockNotAvailable:
                # lock_timeout: another transaction held a lock we need (a session's row
                # lock, a blob being inserted) for busy_timeout_ms; its writer may be frozen
                lock_waits += 1
                if lock_waits >= self.lock_attempts:
                    raise StoreBusyError(redact(self.url), attempt) from None
            except psycopg.errors.TransactionRollback:
                if attempt == self.max_attempts:
                    raise StoreBusyError(redact(self.url), attempt) from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)
            except self._pool_timeout:
                raise StoreError(
                    f"{redact(self.url)}: no connection within {self.pool.timeout:g} s: the server is unreachable, "
                    "or more threads use this store at once than its pool_size"
                ) from None
            except psycopg.Error as exc:
                raise StoreError(f"{redact(self.url)}: {type(exc).__name__}: {_one_line(exc)}") from None
        raise StoreBusyError(redact(self.url), self.max_attempts)

    def _read(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def tokenizer(self, name: str) -> Tokenizer:
        with self._tok_lock:
            tok = self._tokenizers.get(name)
            if tok is None:
                tok = self._tokenizers[name] = get_tokenizer(name)
            return tok

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions

    @staticmethod
    def _session(row: Sequence[Any]) -> SessionInfo:
        return SessionInfo(
            id=row[0], created_at=row[1], title=row[2], metadata=json.loads(row[3]),
            tokenizers=tuple(json.loads(row[4])), head_event_id=row[5], parent_session_id=row[6],
            fork_event_id=row[7],
        )

    def create_session(
        self,
        *,
        session_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        tokenizers: Sequence[str] = (),
        events: Sequence[Event] = (),
    ) -> SessionInfo:
        sid = session_id or uuid.uuid4().hex
        for value, name in ((sid, "session_id"), (title, "title")):
            if value is not None and _bad_text(value):
                raise InputError(f"{name} {value!r} holds NUL or a lone surrogate", field=name)
        for name in tokenizers:
            self.tokenizer(name)
        meta = json.dumps(metadata or {}, sort_keys=True)
        now = time.time()
        unique = self._errors.UniqueViolation

        def create(conn: Any) -> None:
            try:
                with conn.transaction():  # a savepoint: the violation is reported, not the abort
                    conn.execute(
                        "INSERT INTO sessions (id, created_at, title, metadata, tokenizers) VALUES (%s,%s,%s,%s,%s)",
                        (sid, now, title, meta, json.dumps(list(tokenizers))),
                    )
            except unique:
                raise InputError(f"a session with id {sid!r} already exists", field="session_id") from None

        if events:
            self._append(sid, tokenizers, events, now, create)
        else:
            self._run(create)
        return self.get_session(sid)

    def get_session(self, session_id: str) -> SessionInfo:
        rows = self._read(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = %s", (session_id,))
        if not rows:
            raise SessionNotFoundError(session_id)
        return self._session(rows[0])

    def list_sessions(self) -> list[SessionInfo]:
        return [self._session(r) for r in self._read(f"SELECT {_SESSION_COLS} FROM sessions ORDER BY created_at, id")]

    def event_count(self, session_id: str) -> int:
        """Events in the session's current chain (its head's depth)."""
        rows = self._read(
            "SELECT s.id, e.depth FROM sessions s LEFT JOIN events e ON e.id = s.head_event_id WHERE s.id = %s",
            (session_id,),
        )
        if not rows:
            raise SessionNotFoundError(session_id)
        return int(rows[0][1] or 0)

    def blob_count(self) -> int:
        """Distinct contents stored (identical outputs count once)."""
        return int(self._read("SELECT count(*) FROM blobs")[0][0])

    # ------------------------------------------------------------------ appending

    def append(
        self, session_id: str, events: Sequence[Event], *, created_at: float | None = None,
        check: AppendCheck | None = None,
    ) -> list[int]:
        toks = self._session_toks.get(session_id)
        if toks is None or not events:
            # A session's tokenizers never change once created: one read per handle, after
            # which an append is the write transaction, plus a memo read when its new text is
            # large or its engine slow (store.counting.cheaper_to_count).
            toks = self._session_toks[session_id] = self.get_session(session_id).tokenizers
        if not events:
            return []
        return self._append(session_id, toks, events, time.time() if created_at is None else created_at,
                            check=check)

    def _memo(self, hashes: Sequence[str], tid: str) -> dict[str, int]:
        if not hashes:
            return {}
        rows = self._read(
            "SELECT hash, tokens FROM token_counts WHERE tokenizer = %s AND hash = ANY(%s)", (tid, list(set(hashes)))
        )
        return {h: n for h, n in rows}

    def _content_counts(self, encoded: Sequence[Encoded], tok: Tokenizer) -> tuple[list[int], dict[str, int]]:
        """Content tokens per event, from the memo or one batched encode of what it lacks;
        and the new memo rows."""
        # a few KB are counted faster than the memo is read (a round trip to the server);
        # the memo rows are written all the same
        hashes = [e.blob_hash for e in encoded if e.blob_hash is not None]
        memo = {} if cheaper_to_count((e.texts for e in encoded), tok) else self._memo(hashes, tok.id)
        missing: dict[str, tuple[str, ...]] = {}
        for e in encoded:
            if e.blob_hash is not None and e.blob_hash not in memo:
                missing.setdefault(e.blob_hash, e.texts)
        new: dict[str, int] = {}
        if missing:
            flat = list(dict.fromkeys(t for texts in missing.values() for t in texts))
            by_text = dict(zip(flat, tok.count_many(flat), strict=True))
            new = {h: sum(by_text[t] for t in texts) for h, texts in missing.items()}
        known = {**memo, **new}
        return [known[e.blob_hash] if e.blob_hash is not None else 0 for e in encoded], new

    def _append(
        self,
        session_id: str,
        tokenizers: Sequence[str],
        events: Sequence[Event],
        now: float,
        create: Callable[[Any], None] | None = None,
        check: AppendCheck | None = None,
    ) -> list[int]:
        encoded = [encode_event(e) for e in events]
        new_flags = [bool(getattr(e, "new_message", False)) for e in events]
        counted = [(self.tokenizer(n).id, *self._content_counts(encoded, self.tokenizer(n))) for n in tokenizers]
        escaped = [
            (e.tool_use_id is not None and _bad_text(e.tool_use_id)) or (e.tool_name is not None and _bad_text(e.tool_name))
            for e in encoded
        ]

        def write(conn: Any) -> list[int]:
            if create is not None:
                create(conn)
            # Everything between this row lock and the commit is what other writers of the
            # session wait for. The lock is taken alone: a FOR UPDATE that waited re-reads
            # only the locked row, so anything joined to it would be the stale version.
            # Then the head's depth and running totals in one read (a fresh snapshot, taken
            # after the lock), and the inserts pipelined (one round trip).
            row = conn.execute(
                "SELECT head_event_id, tail_role FROM sessions WHERE id = %s FOR UPDATE", (session_id,)
            ).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            head, tail_role = row
            if check is not None:  # under the row lock: nothing written yet
                check.enforce_sql(conn, session_id, head, "%s", unescape=json.loads)
            depth, cum = 0, {}
            if head is not None:
                trow = conn.execute(
                    "SELECT e.depth, (SELECT array_agg(ARRAY[t.tokenizer, t.cum_content::text, t.cum_overhead::text]) "
                    "FROM event_tokens t WHERE t.event_id = e.id) FROM events e WHERE e.id = %s",
                    (head,),
                ).fetchone()
                depth, cum = trow[0], {r[0]: (int(r[1]), int(r[2])) for r in trow[1] or ()}
            blob_ids = self._put_blobs(conn, encoded)
            ids = sorted(r[0] for r in conn.execute(
                "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, %s)", (len(encoded),)
            ))
            rows, starts_flags, parent = [], [], head
            for i, enc in enumerate(encoded):
                starts = enc.role is not None and (new_flags[i] or enc.role != tail_role)
                starts_flags.append(starts)
                if enc.role is not None:
                    tail_role = enc.role
                depth += 1
                rows.append((
                    ids[i], session_id, parent, depth, enc.kind, enc.role, starts, _esc(enc.tool_use_id, escaped[i]),
                    _esc(enc.tool_name, escaped[i]), enc.is_error, enc.fmt,
                    blob_ids.get(enc.blob_hash) if enc.blob_hash else None, enc.meta, escaped[i], now,
                ))
                parent = ids[i]
            token_rows = []
            memo_rows: list[tuple[str, str, int]] = []
            for tid, counts, new in counted:
                c, o = cum.get(tid, (0, 0))
                for i, eid in enumerate(ids):
                    ov = event_overhead(events[i], starts_flags[i])
                    c, o = c + counts[i], o + ov
                    token_rows.append((eid, tid, counts[i], ov, c, o))
                memo_rows.extend((h, tid, n) for h, n in new.items())
            with conn.pipeline(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (id, session_id, parent_id, depth, kind, role, starts_message, tool_use_id, "
                    "tool_name, is_error, fmt, blob_id, meta, escaped, created_at) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    rows,
                )
                if memo_rows:
                    cur.executemany(
                        "INSERT INTO token_counts (hash, tokenizer, tokens) VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                        sorted(memo_rows),
                    )
                if token_rows:
                    cur.executemany(
                        "INSERT INTO event_tokens (event_id, tokenizer, content, overhead, cum_content, cum_overhead) "
                        "VALUES (%s,%s,%s,%s,%s,%s)",
                        token_rows,
                    )
                cur.execute(
                    "UPDATE sessions SET head_event_id = %s, tail_role = %s WHERE id = %s",
                    (parent, tail_role, session_id),
                )
            return ids

        return self._run(write)

    @staticmethod
    def _put_blobs(conn: Any, encoded: Sequence[Encoded]) -> dict[str, int]:
        """Store the blobs not yet stored (sorted by hash, so two batches that share new
        blobs lock them in the same order); map hash → blob id."""
        wanted: dict[str, Encoded] = {}
        for e in encoded:
            if e.blob_hash is not None:
                wanted.setdefault(e.blob_hash, e)
        if not wanted:
            return {}
        ids = dict(conn.execute("SELECT hash, id FROM blobs WHERE hash = ANY(%s)", (list(wanted),)).fetchall())
        fresh = sorted(h for h in wanted if h not in ids)
        if fresh:
            rows = []
            for h in fresh:
                e = wanted[h]
                assert e.blob is not None
                bad = _bad_text(e.blob)
                fts = None
                if e.is_tool_output:
                    fts = e.texts[0][:FTS_BYTES]  # no more bytes than characters
                    if _bad_text(fts):
                        fts = fts.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
                    data = fts.encode("utf-8")
                    if len(data) > FTS_BYTES:  # the prefix, less a character cut in two
                        fts = data[:FTS_BYTES].decode("utf-8", "ignore")
                rows.append((h, len(e.blob), _esc(e.blob, bad), bad, fts))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO blobs (hash, size, text, escaped, tsv) VALUES "
                    "(%s, %s, %s, %s, to_tsvector('simple', %s)) ON CONFLICT (hash) DO NOTHING",
                    rows,
                )
            ids.update(conn.execute("SELECT hash, id FROM blobs WHERE hash = ANY(%s)", (fresh,)).fetchall())
        return ids

    # ------------------------------------------------------------------ reading

    def _head(self, conn: Any, session_id: str) -> int | None:
        row = conn.execute("SELECT head_event_id FROM sessions WHERE id = %s", (session_id,)).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)
        head: int | None = row[0]
        return head

    def chain(self, session_id: str, *, tokenizers: Sequence[str] = ()) -> ChainView:
        for name in tokenizers:
            self.totals(session_id, name)  # backfills counts for a tokenizer not tracked on append

        def read(conn: Any) -> ChainView:
            row = conn.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = %s", (session_id,)).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            info = self._session(row)
            if info.head_event_id is None:
                return ChainView(info, [], {name: [] for name in tokenizers})
            p = {"head": info.head_event_id, "lo": 0}
            rows = conn.execute(
                _CHAIN + f"SELECT {_EVENT_COLS} FROM chain JOIN events e ON e.id = chain.id "
                "LEFT JOIN blobs b ON b.id = e.blob_id ORDER BY e.id",
                p,
            ).fetchall()
            counts = {}
            for name in tokenizers:
                crows = conn.execute(
                    _CHAIN + "SELECT t.event_id, t.content, t.overhead, t.cum_content, t.cum_overhead FROM chain "
                    "JOIN event_tokens t ON t.event_id = chain.id AND t.tokenizer = %(tid)s ORDER BY t.event_id",
                    {**p, "tid": tokenizer_id(name)},
                ).fetchall()
                counts[name] = decode_counts(crows)
            return ChainView(info, _decode(rows), counts)

        return self._run(read)

    def chain_since(
        self, session_id: str, after_event_id: int, tokenizer: str, limit: int = 512
    ) -> tuple[int | None, list[StoredEvent], list[int | None]] | None:
        """See :meth:`ctxmem.store.sqlite.SQLiteStore.chain_since`: one transaction, the chain
        walked from the head down to the event seen (a recursive read of the new part only)."""

        def read(conn: Any) -> tuple[int | None, list[StoredEvent], list[int | None]] | None:
            head = self._head(conn, session_id)
            if head == after_event_id:
                return head, [], []
            if head is None or head < after_event_id:
                return None
            rows = conn.execute(
                _CHAIN + f"SELECT {_EVENT_COLS}, t.content + t.overhead FROM chain JOIN events e ON e.id = chain.id "
                "LEFT JOIN blobs b ON b.id = e.blob_id "
                "LEFT JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = %(tid)s ORDER BY e.id LIMIT %(n)s",
                {"head": head, "lo": after_event_id, "tid": tokenizer_id(tokenizer), "n": limit + 2},
            ).fetchall()
            # the walk stops below the event seen: it is the first row unless the chain left it
            if not rows or rows[0][0] != after_event_id or len(rows) > limit + 1:
                return None
            rest = rows[1:]
            return head, _decode([r[:15] for r in rest]), [r[15] for r in rest]

        return self._run(read)

    def event(self, event_id: int) -> StoredEvent:
        rows = self._read(
            f"SELECT {_EVENT_COLS} FROM events e LEFT JOIN blobs b ON b.id = e.blob_id WHERE e.id = %s", (event_id,)
        )
        if not rows:
            raise EventNotFoundError(event_id)
        return _decode(rows)[0]

    def totals(self, session_id: str, tokenizer: str) -> TokenTotals:
        tid = tokenizer_id(tokenizer)
        rows = self._read(
            "SELECT s.head_event_id, e.depth, t.cum_content, t.cum_overhead FROM sessions s "
            "LEFT JOIN events e ON e.id = s.head_event_id "
            "LEFT JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = %s WHERE s.id = %s",
            (tid, session_id),
        )
        if not rows:
            raise SessionNotFoundError(session_id)
        head, depth, c, o = rows[0]
        if head is None:
            return TokenTotals(tokenizer, 0, 0, 0)
        if c is None:
            self._backfill(head, self.tokenizer(tokenizer))
            return self.totals(session_id, tokenizer)
        return TokenTotals(tokenizer, int(c), int(o), int(depth))

    def _backfill(self, head: int, tok: Tokenizer) -> None:
        """Count every event of the chain ending at ``head`` after its last counted one."""
        rows = self._read(
            _CHAIN + f"SELECT {_EVENT_COLS}, t.cum_content, t.cum_overhead FROM chain JOIN events e ON e.id = chain.id "
            "LEFT JOIN blobs b ON b.id = e.blob_id "
            "LEFT JOIN event_tokens t ON t.event_id = e.id AND t.tokenizer = %(tid)s ORDER BY e.id",
            {"head": head, "lo": 0, "tid": tok.id},
        )
        start, cum = 0, (0, 0)
        for i, r in enumerate(rows):
            if r[15] is not None:
                start, cum = i + 1, (r[15], r[16])
        todo = rows[start:]
        if not todo:
            return
        stored = _decode([r[:15] for r in todo])
        encoded = [encode_event(s.event) for s in stored]
        counts, new = self._content_counts(encoded, tok)
        c, o = cum
        token_rows = []
        for s, n, r in zip(stored, counts, todo, strict=True):
            ov = event_overhead(s.event, bool(r[5]))
            c, o = c + n, o + ov
            token_rows.append((s.id, tok.id, n, ov, c, o))

        def write(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO token_counts (hash, tokenizer, tokens) VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                    sorted((h, tok.id, n) for h, n in new.items()),
                )
                cur.executemany(
                    "INSERT INTO event_tokens (event_id, tokenizer, content, overhead, cum_content, cum_overhead) "
                    "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                    token_rows,
                )

        self._run(write)

    def pending_tool_uses(self, session_id: str) -> list[ToolUseBlock]:
        def read(conn: Any) -> list[StoredEvent]:
            head = self._head(conn, session_id)
            if head is None:
                return []
            return _decode(conn.execute(
                _CHAIN + f"SELECT {_EVENT_COLS} FROM chain JOIN events e ON e.id = chain.id "
                "LEFT JOIN blobs b ON b.id = e.blob_id WHERE e.kind IN ('tool_call', 'tool_result') ORDER BY e.id",
                {"head": head, "lo": 0},
            ).fetchall())

        return pending_tool_uses(s.event for s in self._run(read))

    def tool_events(
        self, session_id: str, *, after_event_id: int | None = None
    ) -> tuple[int | None, list[ToolEventRef]]:
        """See :meth:`SessionStore.tool_events`: the chain is walked from the head down to
        ``after_event_id`` only (ids ascend along a chain)."""
        lo = after_event_id or 0

        def read(conn: Any) -> tuple[int | None, list[ToolEventRef]]:
            head = self._head(conn, session_id)
            if head is None:
                if after_event_id is not None:
                    raise EventNotFoundError(after_event_id, session_id)
                return None, []
            rows = conn.execute(
                _CHAIN + "SELECT e.id, e.kind, e.tool_use_id, e.tool_name, e.escaped FROM chain "
                "JOIN events e ON e.id = chain.id ORDER BY e.id",
                {"head": head, "lo": lo},
            ).fetchall()
            if after_event_id is not None and (not rows or rows[0][0] != after_event_id):
                raise EventNotFoundError(after_event_id, session_id)
            return head, [
                ToolEventRef(r[0], r[1], _unesc(r[2], r[4]) or "", _unesc(r[3], r[4]))
                for r in rows if r[0] > lo and r[1] in ("tool_call", "tool_result")
            ]

        return self._run(read)

    # ------------------------------------------------------------------ branches

    @staticmethod
    def _in_chain(conn: Any, head: int | None, event_id: int) -> bool:
        if head is None:
            return False
        row = conn.execute(
            _CHAIN + "SELECT 1 FROM chain WHERE id = %(target)s", {"head": head, "lo": event_id, "target": event_id}
        ).fetchone()
        return row is not None

    @staticmethod
    def _tail_role(conn: Any, event_id: int | None) -> str | None:
        if event_id is None:
            return None
        row = conn.execute(
            _CHAIN + "SELECT e.role FROM chain JOIN events e ON e.id = chain.id WHERE e.role IS NOT NULL "
            "ORDER BY e.id DESC LIMIT 1",
            {"head": event_id, "lo": 0},
        ).fetchone()
        return row[0] if row else None

    def fork(self, session_id: str, at_event_id: int, *, title: str | None = None) -> SessionInfo:
        sid = uuid.uuid4().hex

        def write(conn: Any) -> None:
            row = conn.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = %s", (session_id,)).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            parent = self._session(row)
            if not self._in_chain(conn, parent.head_event_id, at_event_id):
                raise EventNotFoundError(at_event_id, session_id)
            conn.execute(
                "INSERT INTO sessions (id, created_at, title, metadata, tokenizers, head_event_id, tail_role, "
                "parent_session_id, fork_event_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (sid, time.time(), title if title is not None else parent.title,
                 json.dumps(parent.metadata, sort_keys=True), json.dumps(list(parent.tokenizers)), at_event_id,
                 self._tail_role(conn, at_event_id), session_id, at_event_id),
            )

        self._run(write)
        return self.get_session(sid)

    def rewind(self, session_id: str, to_event_id: int | None) -> SessionInfo:
        def write(conn: Any) -> None:
            row = conn.execute("SELECT head_event_id FROM sessions WHERE id = %s FOR UPDATE", (session_id,)).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            if to_event_id is not None and not self._in_chain(conn, row[0], to_event_id):
                raise EventNotFoundError(to_event_id, session_id)
            conn.execute(
                "UPDATE sessions SET head_event_id = %s, tail_role = %s WHERE id = %s",
                (to_event_id, self._tail_role(conn, to_event_id), session_id),
            )

        self._run(write)
        return self.get_session(session_id)

    # ------------------------------------------------------------------ search, outputs, calibration

    def search(
        self, query: str, *, session_id: str | None = None, limit: int = 10, snippets: bool = True
    ) -> list[SearchHit]:
        """Full-text search over tool outputs (``websearch_to_tsquery`` syntax: bare words
        are ANDed, "quoted phrases", ``OR``), best first, ranked by ``ts_rank_cd``; only the
        session's current chain with ``session_id``. A snippet is ~180 characters around
        the first occurrence of the query's first word, the word in [brackets];
        ``snippets=False`` leaves snippets empty."""
        if not re.search(r"\w", query) or _bad_text(query):
            raise InputError(f"bad search query {query!r}: no words to search for", field="query")

        def read(conn: Any) -> list[SearchHit]:
            prefix, source, p = "", "events e", {"q": query, "limit": limit}
            if session_id is not None:
                head = self._head(conn, session_id)
                if head is None:
                    return []
                # Driven from the chain (primary-key lookups), never a semi-join against it:
                # without table statistics the planner loops over the chain per event.
                prefix, source, p = _CHAIN, "chain JOIN events e ON e.id = chain.id", {**p, "head": head, "lo": 0}
            hits = conn.execute(
                prefix + "SELECT e.id, e.session_id, e.tool_use_id, e.tool_name, e.escaped, b.id, "
                f"ts_rank_cd(b.tsv, q) AS score FROM {source} JOIN blobs b ON b.id = e.blob_id, "
                "websearch_to_tsquery('simple', %(q)s) q "
                "WHERE b.tsv @@ q AND e.kind = 'tool_result' ORDER BY score DESC, e.id LIMIT %(limit)s",
                p,
            ).fetchall()
            texts: dict[int, str] = {}
            if hits and snippets:
                # Around the first occurrence of the query's first word, cut on the server
                # (ts_headline re-parses whole outputs: ~30 ms a query on large logs).
                # An escaped output (it holds NUL) is cut here once decoded, when not too large.
                word = re.findall(r"\w+", query)[0]
                rows = conn.execute(
                    "SELECT id, CASE WHEN escaped THEN text WHEN p > 0 THEN substr(text, greatest(1, p - 60), 180) "
                    "ELSE left(text, 180) END, escaped "
                    "FROM (SELECT id, text, escaped, CASE WHEN escaped THEN 0 ELSE strpos(lower(text), lower(%(w)s)) "
                    "END AS p FROM blobs WHERE id = ANY(%(ids)s) AND (NOT escaped OR size <= %(most)s)) s",
                    {"w": word, "ids": sorted({h[5] for h in hits}), "most": _SNIPPET_ESCAPED_CHARS},
                ).fetchall()
                mark = re.compile(re.escape(word), re.IGNORECASE)
                for bid, text, esc in rows:
                    if esc:
                        text = json.loads(text)
                        start = max(0, text.lower().find(word.lower()) - 60)  # as the server cuts
                        text = text[start:start + 180]
                    texts[bid] = mark.sub(lambda m: f"[{m.group(0)}]", " ".join(text.split()))
            return [SearchHit(eid, sid, _unesc(tuid, esc), _unesc(tname, esc), texts.get(bid, ""), float(score))
                    for eid, sid, tuid, tname, esc, bid, score in hits]

        return self._run(read)

    def tool_output(self, event_id: int) -> str:
        ev = self.event(event_id).event
        result = getattr(ev, "result", None)
        if result is None:
            raise EventNotFoundError(event_id)
        text: str = result.text
        return text

    def document_frequencies(self, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """``(n, {term: df})`` over the indexed tool outputs (the FullTextSearch capability):
        counted now, each term as a 'simple' phrase, on the GIN index."""
        uniq = list(dict.fromkeys(t.lower() for t in terms))
        if any(_bad_text(t) for t in uniq):
            raise InputError(f"bad search terms {list(terms)!r}: NUL or a lone surrogate", field="terms")

        def read(conn: Any) -> tuple[int, dict[str, int]]:
            n = conn.execute("SELECT count(*) FROM blobs WHERE tsv IS NOT NULL").fetchone()[0]
            rows = conn.execute(
                "SELECT t, (SELECT count(*) FROM blobs WHERE tsv @@ phraseto_tsquery('simple', t)) "
                "FROM unnest(%s::text[]) AS t",
                (uniq,),
            ).fetchall()
            return int(n), {t: int(df) for t, df in rows}

        return self._run(read)

    # -- the DerivedStateStore capability (ctxmem.context.memory and summarization save here)

    def load_derived(self, session_id: str, kind: str) -> tuple[str, bytes] | None:
        """``(key, data)`` a strategy saved for this session and kind, or ``None`` (the
        :class:`~ctxmem.store.base.DerivedStateStore` capability: a cache, see ``derived_state``)."""
        rows = self._read("SELECT key, data FROM derived_state WHERE session_id = %s AND kind = %s", (session_id, kind))
        return (str(rows[0][0]), bytes(rows[0][1])) if rows else None

    def save_derived(self, session_id: str, kind: str, key: str, data: bytes) -> None:
        """Replace what is saved for this session and kind (one transaction)."""
        self._run(lambda conn: conn.execute(
            "INSERT INTO derived_state (session_id, kind, key, data, created_at) "
            "VALUES (%s, %s, %s, %s, extract(epoch from now())) "
            "ON CONFLICT (session_id, kind) DO UPDATE SET key = EXCLUDED.key, data = EXCLUDED.data, "
            "created_at = EXCLUDED.created_at",
            (session_id, kind, key, data),
        ))

    def embedding_cache(self) -> PgEmbeddingCache:
        """The ``embedding_cache`` table of this database (the EmbeddingCacheProvider capability)."""
        return PgEmbeddingCache(self)

    def record_calibration(self, model: str, tokenizer: str, estimated: int, reported: int) -> None:
        tid = self.tokenizer(tokenizer).id
        self._run(lambda conn: conn.execute(
            "INSERT INTO calibration (model, tokenizer, estimated, reported, created_at) VALUES (%s,%s,%s,%s,%s)",
            (model, tid, estimated, reported, time.time()),
        ))

    def calibration_observations(self, model: str, tokenizer: str, limit: int = 50) -> list[tuple[int, int]]:
        tid = self.tokenizer(tokenizer).id
        rows = self._read(
            "SELECT estimated, reported FROM calibration WHERE model = %s AND tokenizer = %s ORDER BY id DESC LIMIT %s",
            (model, tid, limit),
        )
        return [(int(e), int(r)) for e, r in reversed(rows)]


class PgEmbeddingCache:
    """Vectors by (embedder id, content hash) in the store's database, as float32 bytes."""

    def __init__(self, store: PostgresStore):
        self.store = store

    def get_many(self, embedder_id: str, hashes: Sequence[str]) -> dict[str, Any]:
        import numpy as np

        rows = self.store._read(
            "SELECT hash, dim, vector FROM embedding_cache WHERE embedder = %s AND hash = ANY(%s)",
            (embedder_id, list(dict.fromkeys(hashes))),
        )
        out = {}
        for h, dim, blob in rows:
            vec = np.frombuffer(bytes(blob), dtype="<f4")
            if vec.shape[0] == dim:  # a torn or foreign row is recomputed, not trusted
                out[h] = vec.astype(np.float32, copy=False)
        return out

    def put_many(self, embedder_id: str, vectors: Any) -> None:
        if not vectors:
            return
        rows = sorted((embedder_id, h, int(v.shape[0]), v.astype("<f4").tobytes()) for h, v in vectors.items())

        def write(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO embedding_cache (embedder, hash, dim, vector) VALUES (%s,%s,%s,%s) "
                    "ON CONFLICT DO NOTHING",
                    rows,
                )

        self.store._run(write)

    def count(self, embedder_id: str | None = None) -> int:
        if embedder_id is None:
            return int(self.store._read("SELECT count(*) FROM embedding_cache")[0][0])
        return int(self.store._read("SELECT count(*) FROM embedding_cache WHERE embedder = %s", (embedder_id,))[0][0])


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
