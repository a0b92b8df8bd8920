"""The evaluation results store on PostgreSQL: one grid, many workers on many hosts.

The same tables, columns and methods as :class:`ctxmem.evals.store.ResultStore` (the SQLite
one); open either with :func:`ctxmem.evals.store.open_results`. What the server adds:

* **Claims keyed by the idempotent cell key, with a lease on the server's clock** (hosts'
  clocks may disagree; the server's is the one all of them read). :meth:`claim` is one
  ``INSERT … ON CONFLICT DO UPDATE … WHERE`` the existing lease is ours or has lapsed,
  then a re-read of the cell's status in the same READ COMMITTED transaction, so a cell
  finished by another worker a moment earlier is never claimed again.
* :meth:`put` writes the result and drops the claim in one transaction. A worker that dies
  leaves its claims to lapse; any other worker then claims and runs those cells.

Every transaction is retried on a class-40 error (deadlock); nothing here uses
SERIALIZABLE, so "could not serialize" never reaches the caller. A connection lost (the
server restarted, an idle connection cut) is reopened and the operation run once more:
always when it failed before its commit was sent (the server rolled it back), and after
that only for the operations safe to repeat (all but :meth:`put`, which counts attempts,
and :meth:`start_run`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ctxmem.errors import MissingDependencyError, StoreBusyError, StoreError
from ctxmem.evals.store import DEFAULT_LEASE_S, JSON_COLS, RESULT_COLS
from ctxmem.store.postgres import redact

T = TypeVar("T")

_NOW = "extract(epoch from clock_timestamp())"
CONNECT_TIMEOUT_S = 10  # one connection attempt; and how long a lost connection is retried
_LOCK = 0x637478_6576  # advisory lock held while migrating

MIGRATIONS: list[tuple[str, str]] = [
    (
        "pe001_results_responses_runs_claims",
        """
        CREATE TABLE eval_results (
            key TEXT PRIMARY KEY,          -- sha256 (32 hex) of the fully resolved cell config
            run_id TEXT,                   -- the run that last wrote it
            status TEXT NOT NULL,          -- done | refused | error
            source TEXT, length INTEGER, depth DOUBLE PRECISION, needle TEXT, preset TEXT, model TEXT,
            seed INTEGER, tokenizer TEXT,  -- the cell's axes, denormalized for analysis queries
            cell TEXT NOT NULL,            -- JSON of the Cell as asked
            resolved TEXT NOT NULL,        -- JSON of the resolved config that was hashed
            response TEXT,                 -- the reader's answer
            score DOUBLE PRECISION,        -- the needle set's scorer, in [0, 1]
            correct INTEGER,               -- 1 if the scorer counts it right
            survival TEXT,                 -- verbatim | normalized | absent | n/a
            fate TEXT,                     -- kept | masked | summarized | dropped (from the strategy report)
            label TEXT,                    -- correct | dropped-by-strategy | distorted-by-summary | missed-by-model | refused
            rules TEXT,                    -- JSON: every rule scorer's value
            judge INTEGER,                 -- LLM judge verdict (1/0), NULL when no judge ran
            info TEXT,                     -- JSON: tokens, placement, strategy report, notes
            usage TEXT,                    -- JSON Usage of the reader's request
            cost DOUBLE PRECISION,         -- dollars (0 for offline readers, NULL when unpriced)
            cached INTEGER DEFAULT 0,      -- 1 when the answer came from the response cache
            error TEXT,                    -- refused/error: the one-line reason
            attempts INTEGER NOT NULL DEFAULT 1, -- how many runs wrote this cell
            elapsed_s DOUBLE PRECISION,    -- build + answer + score wall time
            updated_at DOUBLE PRECISION NOT NULL -- unix seconds
        );
        CREATE INDEX eval_results_axes ON eval_results(model, preset, source, needle, length, depth);
        CREATE TABLE eval_responses (
            model TEXT NOT NULL,           -- reader id
            request_hash TEXT NOT NULL,    -- sha256 of the canonical request (messages, system, max_tokens)
            text TEXT NOT NULL,            -- the answer
            usage TEXT NOT NULL,           -- JSON Usage
            created_at DOUBLE PRECISION NOT NULL, -- unix seconds
            PRIMARY KEY (model, request_hash)
        );
        CREATE TABLE eval_runs (
            id TEXT PRIMARY KEY,           -- uuid4 hex, one per worker invocation
            started_at DOUBLE PRECISION NOT NULL, -- unix seconds
            finished_at DOUBLE PRECISION,  -- unix seconds; NULL while running (or if it died)
            grid TEXT NOT NULL,            -- JSON: the grid as given (axes, options)
            summary TEXT                   -- JSON: counts by status, cost, stopped_by_budget
        );
        CREATE TABLE eval_claims (
            key TEXT PRIMARY KEY,          -- the cell being worked on (eval_results.key)
            owner TEXT NOT NULL,           -- the run that claimed it
            expires_at DOUBLE PRECISION NOT NULL -- server epoch seconds; renewed by a live owner
        );
        """,
    ),
]


class PgResultStore:
    """Evaluation results in a PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str, *, lease_s: float = DEFAULT_LEASE_S, max_attempts: int = 40):
        try:
            import psycopg
        except ImportError as exc:
            raise MissingDependencyError("psycopg", "postgres", "the PostgreSQL results store") from exc
        self._psycopg = psycopg
        self.url = url
        self.path = redact(url)  # what messages show (the SQLite store's attribute)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        try:
            self.conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open results store {self.path}: {str(exc).strip().splitlines()[0]}") from None
        self._lock = threading.RLock()
        self._write(self._migrate)

    def _write(self, fn: Callable[[Any], T], *, repeatable: bool = True) -> T:
        """Run ``fn(conn)`` in one transaction, retried on a class-40 error; on a lost
        connection, reconnect and run it once more unless it may have committed and is
        not ``repeatable``."""
        psycopg = self._psycopg
        reconnected = False
        for attempt in range(self.max_attempts):
            with self._lock:
                sent_commit = False
                try:
                    with self.conn.transaction():
                        result = fn(self.conn)
                        sent_commit = True  # the commit is sent as the block exits
                    return result
                except psycopg.errors.TransactionRollback:
                    time.sleep(min(0.5, 0.01 * 2**attempt) * random.uniform(0.5, 1.5))
                except psycopg.Error as exc:
                    if self.conn.closed and not reconnected and (repeatable or not sent_commit):
                        self._reconnect(exc)
                        reconnected = True
                        continue
                    raise StoreError(f"results store {self.path}: {str(exc).strip().splitlines()[0]}") from None
        raise StoreBusyError(self.path, self.max_attempts)

    def _reconnect(self, lost: Exception) -> None:
        """Replace the lost connection, trying for up to ``CONNECT_TIMEOUT_S`` (a restarting
        server refuses connections for a moment)."""
        psycopg = self._psycopg
        self.conn.close()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                self.conn = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S)
                return
            except psycopg.Error as exc:
                if time.monotonic() >= deadline:
                    raise StoreError(f"results store {self.path}: the connection was lost "
                                     f"({str(lost).strip().splitlines()[0]}) and reconnecting failed: "
                                     f"{str(exc).strip().splitlines()[0]}") from None
                time.sleep(0.25)

    @staticmethod
    def _migrate(conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS eval_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)")
        done = {r[0] for r in conn.execute("SELECT name FROM eval_migrations")}
        for name, sql in MIGRATIONS:
            if name not in done:
                conn.execute(sql)
                conn.execute(f"INSERT INTO eval_migrations VALUES (%s, {_NOW})", (name,))

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> PgResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ results

    def statuses(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        """key → status, for ``keys`` (all rows when None)."""
        if keys is None:
            return dict(self._write(lambda c: c.execute("SELECT key, status FROM eval_results").fetchall()))
        return dict(self._write(lambda c: c.execute(
            "SELECT key, status FROM eval_results WHERE key = ANY(%s)", (list(keys),)).fetchall()))

    def put(self, row: dict[str, Any]) -> None:
        """Insert or replace one result (attempts accumulate) and drop its claim."""
        values = dict(row)
        values.setdefault("updated_at", time.time())
        for c in JSON_COLS:
            if c in values and not isinstance(values[c], str | None):
                values[c] = json.dumps(values[c], ensure_ascii=False, default=str)
        cols = [c for c in RESULT_COLS if c in values]
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "key")

        def write(conn: Any) -> None:
            conn.execute("DELETE FROM eval_claims WHERE key = %s", (values["key"],))
            conn.execute(
                f"INSERT INTO eval_results ({', '.join(cols)}, attempts) VALUES ({', '.join(['%s'] * len(cols))}, 1) "
                f"ON CONFLICT (key) DO UPDATE SET {sets}, attempts = eval_results.attempts + 1",
                [values[c] for c in cols],
            )

        self._write(write, repeatable=False)  # run twice, it would count two attempts

    def rows(self, *, status: str | Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Result rows as dicts with JSON columns decoded."""
        q, args = "SELECT * FROM eval_results", []
        if status is not None:
            q += " WHERE status = ANY(%s)"
            args = [[status] if isinstance(status, str) else list(status)]
        q += " ORDER BY model, preset, source, needle, length, depth, seed"

        def read(conn: Any) -> list[dict[str, Any]]:
            cur = conn.execute(q, args)
            names = [d[0] for d in cur.description]
            out = []
            for r in cur.fetchall():
                d = dict(zip(names, r, strict=True))
                for c in JSON_COLS:
                    if d.get(c):
                        d[c] = json.loads(d[c])
                out.append(d)
            return out

        return self._write(read)

    # ------------------------------------------------------------------ claims

    def claim(self, key: str, owner: str) -> bool:
        """Take cell ``key`` for ``owner`` for :attr:`lease_s` seconds; False when it is
        finished or another owner's lease runs. :meth:`put` releases it."""
        def write(conn: Any) -> bool:
            if self._finished(conn, key):
                return False
            got = conn.execute(
                f"INSERT INTO eval_claims VALUES (%(k)s, %(o)s, {_NOW} + %(l)s) ON CONFLICT (key) DO UPDATE "
                f"SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
                f"WHERE eval_claims.owner = EXCLUDED.owner OR eval_claims.expires_at <= {_NOW} RETURNING key",
                {"k": key, "o": owner, "l": self.lease_s},
            ).fetchone()
            if got is None:
                return False
            if self._finished(conn, key):  # finished by its last owner while we waited on its row
                conn.execute("DELETE FROM eval_claims WHERE key = %s AND owner = %s", (key, owner))
                return False
            return True

        return self._write(write)

    @staticmethod
    def _finished(conn: Any, key: str) -> bool:
        st = conn.execute("SELECT status FROM eval_results WHERE key = %s", (key,)).fetchone()
        return st is not None and st[0] in ("done", "refused")

    def renew(self, owner: str) -> None:
        """Extend every lease ``owner`` holds by :attr:`lease_s` from now."""
        self._write(lambda c: c.execute(
            f"UPDATE eval_claims SET expires_at = {_NOW} + %s WHERE owner = %s", (self.lease_s, owner)))

    def release(self, owner: str) -> None:
        """Drop every claim ``owner`` still holds."""
        self._write(lambda c: c.execute("DELETE FROM eval_claims WHERE owner = %s", (owner,)))

    def claims(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        """key → (owner, seconds until its lease runs out; <= 0 when lapsed) for claimed ``keys``."""
        rows = self._write(lambda c: c.execute(
            f"SELECT key, owner, expires_at - {_NOW} FROM eval_claims WHERE key = ANY(%s)", (list(keys),)).fetchall())
        return {k: (o, float(left)) for k, o, left in rows}

    # ------------------------------------------------------------------ response cache, runs

    def cached_response(self, model: str, request_hash: str) -> tuple[str, dict[str, int]] | None:
        r = self._write(lambda c: c.execute(
            "SELECT text, usage FROM eval_responses WHERE model = %s AND request_hash = %s", (model, request_hash)
        ).fetchone())
        return (r[0], json.loads(r[1])) if r else None

    def cache_response(self, model: str, request_hash: str, text: str, usage: dict[str, int]) -> None:
        self._write(lambda c: c.execute(
            "INSERT INTO eval_responses VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model, request_hash) DO UPDATE "
            "SET text = EXCLUDED.text, usage = EXCLUDED.usage, created_at = EXCLUDED.created_at",
            (model, request_hash, text, json.dumps(usage), time.time()),
        ))

    def start_run(self, run_id: str, grid: dict[str, Any]) -> None:
        self._write(lambda c: c.execute(
            "INSERT INTO eval_runs (id, started_at, grid) VALUES (%s, %s, %s)",
            (run_id, time.time(), json.dumps(grid, default=str)),
        ), repeatable=False)  # run twice, the id would be taken by the first

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        self._write(lambda c: c.execute(
            "UPDATE eval_runs SET finished_at = %s, summary = %s WHERE id = %s",
            (time.time(), json.dumps(summary, default=str), run_id),
        ))

    def runs(self) -> list[dict[str, Any]]:
        rows = self._write(lambda c: c.execute(
            "SELECT id, started_at, finished_at, grid, summary FROM eval_runs ORDER BY started_at").fetchall())
        return [
            {"id": r[0], "started_at": r[1], "finished_at": r[2], "grid": json.loads(r[3]),
             "summary": json.loads(r[4]) if r[4] else None}
            for r in rows
        ]
