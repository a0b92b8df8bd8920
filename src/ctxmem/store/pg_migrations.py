"""Named, append-only schema migrations for the PostgreSQL store.

Same rules as :mod:`ctxmem.store.migrations` (the SQLite store's): each migration has a
unique name, runs once, in order, in the transaction that records it in
``_ctxmem_migrations``; never edit or reorder one that has shipped, add a new one. Every
column has a comment. Migrations run under ``pg_advisory_xact_lock``, so several
processes opening a fresh database at once apply each migration exactly once; opening an
up-to-date database takes no lock and writes nothing.

The tables mirror the SQLite store's (the same codec writes the same columns), with the
PostgreSQL types: ``BIGINT`` ids from sequences, ``DOUBLE PRECISION`` epoch seconds, and a
``tsvector`` column with a GIN index in place of FTS5.
"""

from __future__ import annotations

from typing import Any

# Taken (transaction-scoped) while migrating; an arbitrary constant unique to ctxmem.
MIGRATION_LOCK = 0x637478_6D656D

MIGRATIONS: list[tuple[str, str]] = [
    (
        "p001_sessions_events_blobs",
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,                 -- opaque session id (uuid4 hex unless given)
            created_at DOUBLE PRECISION NOT NULL, -- unix seconds
            title TEXT,                          -- optional human title
            metadata TEXT NOT NULL DEFAULT '{}', -- JSON object of user metadata (text: keeps key order)
            tokenizers TEXT NOT NULL DEFAULT '[]', -- JSON list of tokenizer names counted on append
            head_event_id BIGINT,                -- last event of the current chain; NULL while empty
            tail_role TEXT,                      -- role of the chain's last content event (message boundaries)
            parent_session_id TEXT,              -- the session this one was forked from
            fork_event_id BIGINT                 -- the event it was forked at
        );
        CREATE TABLE blobs (
            id BIGSERIAL PRIMARY KEY,            -- blob id
            hash TEXT NOT NULL UNIQUE,           -- sha256 hex (see store/codec.py), the content address
            size INTEGER NOT NULL,               -- length in characters
            text TEXT NOT NULL,                  -- the content, stored once however often it recurs
            escaped BOOLEAN NOT NULL DEFAULT FALSE, -- text is json.dumps(original): it held NUL or a lone surrogate
            tsv TSVECTOR                         -- tool outputs only: the 'simple' lexemes full-text search reads
        );
        CREATE INDEX blobs_tsv ON blobs USING GIN (tsv) WHERE tsv IS NOT NULL;
        CREATE TABLE events (
            id BIGSERIAL PRIMARY KEY,            -- global, increasing along a chain: ancestors have smaller ids
            session_id TEXT NOT NULL,            -- the session that wrote it
            parent_id BIGINT,                    -- previous event in its chain (NULL for the first)
            depth INTEGER NOT NULL,              -- number of events in the chain up to and including it
            kind TEXT NOT NULL,                  -- message | tool_call | tool_result | model_call | compaction | note
            role TEXT,                           -- user | assistant for content events
            starts_message BOOLEAN NOT NULL DEFAULT FALSE, -- it opens a new message in the view
            tool_use_id TEXT,                    -- tool_call / tool_result: the tool_use id
            tool_name TEXT,                      -- tool_call / tool_result: the tool's name
            is_error BOOLEAN NOT NULL DEFAULT FALSE, -- tool_result: the tool failed
            fmt TEXT,                            -- tool_result: 'text' or 'blocks' (list of text parts)
            blob_id BIGINT REFERENCES blobs(id), -- content (see store/codec.py)
            meta TEXT,                           -- JSON fields of non-content events, tool durations
            escaped BOOLEAN NOT NULL DEFAULT FALSE, -- tool_use_id/tool_name are json.dumps'd (NUL, lone surrogates)
            created_at DOUBLE PRECISION NOT NULL -- unix seconds
        );
        CREATE INDEX events_session ON events(session_id, id);
        CREATE INDEX events_parent ON events(parent_id);
        CREATE INDEX events_blob ON events(blob_id);
        """,
    ),
    (
        "p002_token_counts_calibration",
        """
        CREATE TABLE token_counts (
            hash TEXT NOT NULL,                  -- blob hash of the counted content
            tokenizer TEXT NOT NULL,             -- tokenizer id (ctxmem.tokens.tokenizer_id)
            tokens INTEGER NOT NULL,             -- content tokens of that blob's texts
            PRIMARY KEY (hash, tokenizer)
        );
        CREATE TABLE event_tokens (
            event_id BIGINT NOT NULL,            -- the event
            tokenizer TEXT NOT NULL,             -- tokenizer id
            content INTEGER NOT NULL,            -- content tokens of this event
            overhead INTEGER NOT NULL,           -- framing tokens charged to this event (store/counting.py)
            cum_content BIGINT NOT NULL,         -- content tokens of the chain up to and including it
            cum_overhead BIGINT NOT NULL,        -- overhead tokens of the chain up to and including it
            PRIMARY KEY (event_id, tokenizer)
        );
        CREATE TABLE calibration (
            id BIGSERIAL PRIMARY KEY,            -- insertion order
            model TEXT NOT NULL,                 -- provider model name
            tokenizer TEXT NOT NULL,             -- tokenizer id that made the estimate
            estimated INTEGER NOT NULL,          -- our count of the request's input tokens
            reported INTEGER NOT NULL,           -- the provider's usage.input_tokens
            created_at DOUBLE PRECISION NOT NULL -- unix seconds
        );
        CREATE INDEX calibration_model ON calibration(model, tokenizer, id);
        """,
    ),
    (
        "p003_embedding_cache",
        """
        CREATE TABLE embedding_cache (
            embedder TEXT NOT NULL,              -- embedder id (model and dimension)
            hash TEXT NOT NULL,                  -- content hash of the embedded text
            dim INTEGER NOT NULL,                -- vector length (a row whose bytes disagree is recomputed)
            vector BYTEA NOT NULL,               -- little-endian float32 values (no pgvector: exact bytes, any dim)
            PRIMARY KEY (embedder, hash)
        );
        """,
    ),
    (
        "p004_derived_state",
        """
        CREATE TABLE derived_state (
            session_id TEXT NOT NULL,            -- the session it was derived from
            kind TEXT NOT NULL,                  -- what it is and its layout version (salience/v2/..., summary-chunks/v1/...)
            key TEXT NOT NULL,                   -- the part of the session it covers (checked by the reader)
            data BYTEA NOT NULL,                 -- zlib-compressed JSON
            created_at DOUBLE PRECISION NOT NULL, -- unix seconds
            PRIMARY KEY (session_id, kind)
        );
        """,
    ),
]


def pending(conn: Any) -> list[str]:
    """The names of the migrations not yet applied, read without writing anything."""
    if conn.execute("SELECT to_regclass('_ctxmem_migrations')").fetchone()[0] is None:
        return [name for name, _ in MIGRATIONS]
    done = {r[0] for r in conn.execute("SELECT name FROM _ctxmem_migrations")}
    return [name for name, _ in MIGRATIONS if name not in done]


def migrate(conn: Any) -> list[str]:
    """Apply the pending migrations on a psycopg connection (autocommit off); returns their
    names. Safe to call from many processes at once. An up-to-date schema is only read
    (no lock, no DDL), so a role with SELECT alone, or a read-only standby, can open it."""
    with conn.transaction():
        if not pending(conn):
            return []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _ctxmem_migrations ("
            "name TEXT PRIMARY KEY, "  # migration name
            "applied_at DOUBLE PRECISION NOT NULL)"  # unix seconds
        )
        todo = set(pending(conn))  # again, under the lock: another process may have applied them
        applied = []
        for name, sql in MIGRATIONS:
            if name not in todo:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO _ctxmem_migrations (name, applied_at) VALUES (%s, extract(epoch from now()))",
                         (name,))
            applied.append(name)
    return applied
