"""Named, append-only schema migrations for the SQLite store.

Each migration is a function registered under a unique name, applied once, in order,
inside the same write transaction that records it in ``_ctxmem_migrations``. Never edit or
reorder a migration that has shipped: add a new one. Every column has a comment saying
what it holds.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = []


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    if any(name == fn.__name__ for name, _ in MIGRATIONS):
        raise RuntimeError(f"duplicate migration name {fn.__name__}")
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_sessions_events_blobs(conn: sqlite3.Connection) -> None:
    _script(conn,
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,              -- opaque session id (uuid4 hex unless given)
            created_at REAL NOT NULL,         -- unix seconds
            title TEXT,                       -- optional human title
            metadata TEXT NOT NULL DEFAULT '{}', -- JSON object of user metadata
            tokenizers TEXT NOT NULL DEFAULT '[]', -- JSON list of tokenizer names counted on append
            head_event_id INTEGER,            -- last event of the current chain; NULL while empty
            tail_role TEXT,                   -- role of the chain's last content event (message boundaries)
            parent_session_id TEXT,           -- the session this one was forked from
            fork_event_id INTEGER             -- the event it was forked at
        );
        CREATE TABLE blobs (
            id INTEGER PRIMARY KEY,           -- rowid, also the FTS rowid
            hash TEXT NOT NULL UNIQUE,        -- sha256 hex of the UTF-8 text
            size INTEGER NOT NULL,            -- length in characters
            text TEXT NOT NULL                -- the content, stored once however often it recurs
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, -- global, increasing: ancestors have smaller ids
            session_id TEXT NOT NULL,         -- the session that wrote it
            parent_id INTEGER,                -- previous event in its chain (NULL for the first)
            depth INTEGER NOT NULL,           -- number of events in the chain up to and including it
            kind TEXT NOT NULL,               -- message | tool_call | tool_result | model_call | compaction | note
            role TEXT,                        -- user | assistant for content events
            starts_message INTEGER NOT NULL DEFAULT 0, -- 1 when it opens a new message in the view
            tool_use_id TEXT,                 -- tool_call / tool_result: the tool_use id
            tool_name TEXT,                   -- tool_call / tool_result: the tool's name
            is_error INTEGER NOT NULL DEFAULT 0, -- tool_result: the tool failed
            fmt TEXT,                         -- tool_result: 'text' or 'blocks' (list of text parts)
            blob_id INTEGER REFERENCES blobs(id), -- content (see store/codec.py)
            meta TEXT,                        -- JSON fields of non-content events, tool durations
            created_at REAL NOT NULL          -- unix seconds
        );
        CREATE INDEX events_session ON events(session_id, id);
        CREATE INDEX events_parent ON events(parent_id);
        CREATE INDEX events_tool_use ON events(tool_use_id) WHERE tool_use_id IS NOT NULL;
        CREATE INDEX events_blob ON events(blob_id);
        """
    )


@migration
def m002_tool_output_fts(conn: sqlite3.Connection) -> None:
    # External-content FTS5 over tool outputs: the text lives once, in blobs.
    conn.execute("CREATE VIRTUAL TABLE tool_output_fts USING fts5(text, content='blobs', content_rowid='id')")


@migration
def m003_token_counts(conn: sqlite3.Connection) -> None:
    _script(conn,
        """
        CREATE TABLE token_counts (
            hash TEXT NOT NULL,               -- blob hash of the counted content
            tokenizer TEXT NOT NULL,          -- tokenizer id (e.g. tiktoken:o200k_base)
            tokens INTEGER NOT NULL,          -- content tokens of that content
            PRIMARY KEY (hash, tokenizer)
        ) WITHOUT ROWID;
        CREATE TABLE event_tokens (
            event_id INTEGER NOT NULL,        -- the event
            tokenizer TEXT NOT NULL,          -- tokenizer id
            content INTEGER NOT NULL,         -- content tokens of this event
            overhead INTEGER NOT NULL,        -- modelled overhead tokens of this event
            cum_content INTEGER NOT NULL,     -- content tokens of the chain up to this event
            cum_overhead INTEGER NOT NULL,    -- overhead tokens of the chain up to this event
            PRIMARY KEY (event_id, tokenizer)
        ) WITHOUT ROWID;
        CREATE TABLE calibration (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,              -- model name the provider reported usage for
            tokenizer TEXT NOT NULL,          -- tokenizer id we estimated with
            estimated INTEGER NOT NULL,       -- our count of the request
            reported INTEGER NOT NULL,        -- the provider's input tokens
            created_at REAL NOT NULL
        );
        CREATE INDEX calibration_model ON calibration(model, tokenizer, id);
        """
    )


@migration
def m004_sessions_linear(conn: sqlite3.Connection) -> None:
    # 1 while the session's chain is exactly its own events in id order (never forked from
    # another session, never rewound): its view is then an indexed range scan, not a walk.
    conn.execute("ALTER TABLE sessions ADD COLUMN linear INTEGER NOT NULL DEFAULT 1")


@migration
def m005_embedding_cache(conn: sqlite3.Connection) -> None:
    # Embeddings of retrieval chunks (ctxmem.retrieval.cache), so a chunk is embedded once
    # per (content, model) across processes and sessions sharing this file.
    _script(conn,
        """
        CREATE TABLE embedding_cache (
            hash TEXT NOT NULL,               -- sha256 hex of the embedded text (UTF-8)
            embedder TEXT NOT NULL,           -- embedder id (model and every setting that changes vectors)
            dim INTEGER NOT NULL,             -- vector length
            vector BLOB NOT NULL,             -- dim little-endian float32 values, L2-normalized
            PRIMARY KEY (hash, embedder)
        ) WITHOUT ROWID;
        """
    )


@migration
def m006_drop_unused_event_indexes(conn: sqlite3.Connection) -> None:
    # No query looks events up by parent_id (the chain walk goes child -> parent through
    # the primary key) or by tool_use_id: the two indexes only cost every insert (a 1M-token
    # import: ~2.4 ms of ~14 ms inserting its 4.5K events).
    conn.execute("DROP INDEX IF EXISTS events_parent")
    conn.execute("DROP INDEX IF EXISTS events_tool_use")


@migration
def m007_chain_segments(conn: sqlite3.Connection) -> None:
    # Per-session chain membership a query joins on the events_session index instead of
    # walking parent pointers: a session-restricted FTS search on a 1M-token session took
    # 1,160 ms with the recursive chain join, 10 ms with membership by range.
    # A session's chain is the union of its frozen segments (written at fork and rewind,
    # the chain's prefix then) and its own tail: its events with tail_floor < id <= head.
    _script(conn,
        """
        CREATE TABLE chain_segments (
            session_id TEXT NOT NULL,         -- the session whose chain this segment is part of
            seg_session TEXT NOT NULL,        -- every event written by this session ...
            lo INTEGER NOT NULL,              -- ... with lo <= id ...
            hi INTEGER NOT NULL,              -- ... and id <= hi is in the chain
            PRIMARY KEY (session_id, lo)
        ) WITHOUT ROWID;
        ALTER TABLE sessions ADD COLUMN tail_floor INTEGER NOT NULL DEFAULT 0; -- own events above this id (up to the head) are the chain's tail
        """
    )
    # Sessions already forked or rewound: their whole chain becomes frozen segments (runs of
    # one writer's events holding no event of that writer outside the chain).
    top = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    rows = conn.execute("SELECT id, head_event_id FROM sessions WHERE linear = 0").fetchall()
    for sid, head in rows:
        conn.execute("UPDATE sessions SET tail_floor = ? WHERE id = ?", (top, sid))
        if head is None:
            continue
        chain = conn.execute(
            "WITH RECURSIVE chain(id) AS (SELECT ? UNION ALL SELECT e.parent_id FROM events e "
            "JOIN chain ON e.id = chain.id WHERE e.parent_id IS NOT NULL) "
            "SELECT e.session_id, e.id FROM chain JOIN events e ON e.id = chain.id ORDER BY e.id",
            (head,),
        ).fetchall()
        for seg_session, lo, hi in split_runs(conn, chain):
            conn.execute(
                "INSERT INTO chain_segments (session_id, seg_session, lo, hi) VALUES (?, ?, ?, ?)",
                (sid, seg_session, lo, hi),
            )


@migration
def m008_derived_state(conn: sqlite3.Connection) -> None:
    # What a strategy derived from a session and would otherwise recompute in every process
    # that opens it (the salient-facts index reads every tool-output line: ~1 s per 1M
    # tokens). A cache, never session content: dropping a row only costs the recomputation.
    _script(conn,
        """
        CREATE TABLE derived_state (
            session_id TEXT NOT NULL,         -- the session it was derived from
            kind TEXT NOT NULL,               -- what it is and its layout version (e.g. salience/v1/<profile digest>)
            key TEXT NOT NULL,                -- the part of the session it covers (checked by the reader)
            data BLOB NOT NULL,               -- zlib-compressed JSON
            created_at REAL NOT NULL,
            PRIMARY KEY (session_id, kind)
        ) WITHOUT ROWID;
        """
    )


def split_runs(conn: sqlite3.Connection, chain: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """Segments ``(writer, lo, hi)`` covering exactly the chain ``[(writer, id), ...]``
    (ascending ids): a run of one writer is split where that writer has an event between
    two consecutive chain events (a rewound-away event)."""
    out: list[tuple[str, int, int]] = []
    for writer, eid in chain:
        if out and out[-1][0] == writer:
            last = out[-1][2]
            gap = conn.execute(
                "SELECT 1 FROM events WHERE session_id = ? AND id > ? AND id < ? LIMIT 1", (writer, last, eid)
            ).fetchone()
            if gap is None:
                out[-1] = (writer, out[-1][1], eid)
                continue
        out.append((writer, eid, eid))
    return out


def _script(conn: sqlite3.Connection, sql: str) -> None:
    # executescript() would COMMIT the caller's transaction; run statement by statement.
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise RuntimeError(f"incomplete SQL statement in migration: {buf!r}")


#: the table that marks a SQLite file as a ctxmem store: each store's own migration log
SESSION_MARKER = "_ctxmem_migrations"
#: the evaluation results store's (:mod:`ctxmem.evals.store`)
RESULTS_MARKER = "eval_migrations"
OWN_MARKERS = (SESSION_MARKER, RESULTS_MARKER)
_KINDS = {SESSION_MARKER: "ctxmem session store", RESULTS_MARKER: "ctxmem results store"}


def foreign_tables(conn: sqlite3.Connection, own: str = SESSION_MARKER) -> list[str]:
    """The tables (and views) of a SQLite file that is not the store whose migration log is
    ``own`` (:data:`SESSION_MARKER` or :data:`RESULTS_MARKER`): it has some, and not that log.
    Empty for a new or empty file and for the store's own file (a table a user added beside
    it is theirs to keep). The other ctxmem store's file counts as foreign: a session store
    opened on a results database (or the reverse) must not add its schema to it. Reads
    only: a file that is not ours must not be written to at all, not even its journal mode."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name"
    )]
    if not names or own in names:
        return []
    return names


def not_ours_message(path: str, tables: list[str], what: str) -> str:
    """One line saying that ``path`` is another program's SQLite database (or the other kind
    of ctxmem store), left untouched."""
    shown = ", ".join(tables[:5]) + (f", … ({len(tables)} in all)" if len(tables) > 5 else "")
    other = next((_KINDS[m] for m in OWN_MARKERS if m in tables and _KINDS[m] != what), None)
    kind = (f"is a {other} (tables {shown}) and is not a {what}" if other
            else f"is a SQLite database with other tables ({shown}) and is not a {what}")
    return (f"{path} {kind}; it was left untouched: "
            f"name a new file (or an existing {what}) instead")


def applied(conn: sqlite3.Connection) -> set[str]:
    conn.execute("CREATE TABLE IF NOT EXISTS _ctxmem_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    return {r[0] for r in conn.execute("SELECT name FROM _ctxmem_migrations")}


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations; the caller holds a write transaction. Returns their names."""
    done = applied(conn)
    ran = []
    for name, fn in MIGRATIONS:
        if name not in done:
            fn(conn)
            conn.execute("INSERT INTO _ctxmem_migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            ran.append(name)
    return ran
