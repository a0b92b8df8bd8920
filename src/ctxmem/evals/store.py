"""The results store: one SQLite file per evaluation (or shared), resumable.

Same discipline as the session store (:mod:`ctxmem.store.sqlite`): WAL, every write one
``BEGIN IMMEDIATE`` transaction retried while the file is busy, named append-only
migrations with a comment per column. Tables:

* ``eval_results`` — one row per cell, keyed by the hash of its fully resolved config
  (:func:`ctxmem.evals.cells.cell_key`). ``status`` is ``done``, ``refused`` (the cell
  cannot fit the model's window: a finished outcome, not retried) or ``error`` (retried
  by the next run). A row is written the moment its cell finishes, so a run killed at any
  point keeps everything finished before it.
* ``eval_responses`` — the response cache: (model, request hash) → answer and usage.
  Re-scoring, a judge added later, or an identical cell in another grid never pays twice.
* ``eval_runs`` — one row per invocation: its grid, start/end, totals.
* ``eval_claims`` — cells being worked on, with a lease: several workers on one grid
  (processes, or hosts sharing a PostgreSQL results store, :mod:`ctxmem.evals.pg_store`)
  each :meth:`~ResultStore.claim` a cell before evaluating it; a claim is refused while
  another owner's lease runs or the cell is finished, so every cell is done once. A live
  worker renews its leases; a dead worker's lapse and its cells are claimed again.

:func:`open_results` opens a results store by path or URL (``postgresql://…``).

The store is synchronous; the async runner calls it off the event loop
(``asyncio.to_thread``), serialized by a lock.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ctxmem.errors import StoreBusyError, StoreError

T = TypeVar("T")

DEFAULT_LEASE_S = 120.0  # a claim's lease; a live worker renews it every third of that


def open_results(url: str | Path, *, lease_s: float = DEFAULT_LEASE_S) -> Any:
    """The results store ``url`` names: a ``postgresql://`` URL (shared by many hosts,
    needs ``ctxmem[postgres]``), ``sqlite:///path``, ``memory:`` or a bare path.

    Any other scheme is an :class:`~ctxmem.errors.InputError`: a mistyped URL
    (``postgresql+psycopg://…``, ``mysql://…``) must not become a local SQLite file named
    after it, where each host's workers would run the whole grid on their own."""
    from ctxmem.errors import InputError
    from ctxmem.store import sqlite_url_path, store_scheme

    text = str(url)
    scheme = store_scheme(text)
    if scheme in ("postgresql", "postgres"):
        from ctxmem.evals.pg_store import PgResultStore

        return PgResultStore(scheme + text[len(scheme):], lease_s=lease_s)
    if scheme == "memory":
        return ResultStore(":memory:", lease_s=lease_s)
    if scheme != "sqlite":
        from ctxmem.store.postgres import redact

        raise InputError(
            f"results store {redact(text)}: unknown scheme {scheme!r}; give a file path, sqlite:///path/to/results.db, "
            "memory: or postgresql://user@host/db (a file whose name holds a colon: write it as ./name)",
            field="results",
        )
    if text[:7].lower().startswith("sqlite:"):
        text = sqlite_url_path("sqlite:" + text[7:])
    return ResultStore(text or ":memory:", lease_s=lease_s)


MIGRATIONS: list[tuple[str, str]] = [
    (
        "e001_results_responses_runs",
        """
        CREATE TABLE eval_results (
            key TEXT PRIMARY KEY,          -- sha256 (32 hex) of the fully resolved cell config
            run_id TEXT,                   -- the run that last wrote it
            status TEXT NOT NULL,          -- done | refused | error
            source TEXT, length INTEGER, depth REAL, needle TEXT, preset TEXT, model TEXT,
            seed INTEGER, tokenizer TEXT,  -- the cell's axes, denormalized for analysis queries
            cell TEXT NOT NULL,            -- JSON of the Cell as asked
            resolved TEXT NOT NULL,        -- JSON of the resolved config that was hashed
            response TEXT,                 -- the reader's answer
            score REAL,                    -- the needle set's scorer, in [0, 1]
            correct INTEGER,               -- 1 if the scorer counts it right
            survival TEXT,                 -- verbatim | normalized | absent | n/a
            fate TEXT,                     -- kept | masked | summarized | dropped (from the strategy report)
            label TEXT,                    -- correct | dropped-by-strategy | distorted-by-summary | missed-by-model | refused
            rules TEXT,                    -- JSON: every rule scorer's value
            judge INTEGER,                 -- LLM judge verdict (1/0), NULL when no judge ran
            info TEXT,                     -- JSON: tokens, placement, strategy report, notes
            usage TEXT,                    -- JSON Usage of the reader's request
            cost REAL,                     -- dollars (0 for offline readers, NULL when unpriced)
            cached INTEGER DEFAULT 0,      -- 1 when the answer came from the response cache
            error TEXT,                    -- refused/error: the one-line reason
            attempts INTEGER NOT NULL DEFAULT 1, -- how many runs tried this cell
            elapsed_s REAL,                -- build + answer + score wall time
            updated_at REAL NOT NULL       -- unix seconds
        );
        CREATE INDEX eval_results_axes ON eval_results(model, preset, source, needle, length, depth);
        CREATE TABLE eval_responses (
            model TEXT NOT NULL,           -- reader id
            request_hash TEXT NOT NULL,    -- sha256 of the canonical request (messages, system, max_tokens)
            text TEXT NOT NULL,            -- the answer
            usage TEXT NOT NULL,           -- JSON Usage
            created_at REAL NOT NULL,
            PRIMARY KEY (model, request_hash)
        );
        CREATE TABLE eval_runs (
            id TEXT PRIMARY KEY,           -- uuid4 hex
            started_at REAL NOT NULL,
            finished_at REAL,
            grid TEXT NOT NULL,            -- JSON: the grid as given (axes, options)
            summary TEXT                   -- JSON: counts by status, cost, stopped_by_budget
        );
        """,
    ),
    (
        "e002_claims",
        """
        CREATE TABLE eval_claims (
            key TEXT PRIMARY KEY,          -- the cell being worked on (eval_results.key)
            owner TEXT NOT NULL,           -- the run that claimed it (a run id: one per worker process)
            expires_at REAL NOT NULL       -- unix seconds, renewed by the owner (a dead owner lets it lapse)
        );
        """,
    ),
]

RESULT_COLS = (
    "key", "run_id", "status", "source", "length", "depth", "needle", "preset", "model", "seed", "tokenizer", "cell",
    "resolved", "response", "score", "correct", "survival", "fate", "label", "rules", "judge", "info", "usage", "cost",
    "cached", "error", "elapsed_s", "updated_at",
)
JSON_COLS = ("cell", "resolved", "rules", "info", "usage")


class ResultStore:
    """Evaluation results in one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        busy_timeout_ms: int = 5000,
        max_attempts: int = 40,
        lease_s: float = DEFAULT_LEASE_S,
    ):
        from ctxmem.store.migrations import RESULTS_MARKER, foreign_tables, not_ours_message

        self.path = str(path)
        self.lease_s = lease_s
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._lock = threading.RLock()
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                        timeout=busy_timeout_ms / 1000)
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # before anything writes: another program's database is refused untouched
            foreign = foreign_tables(self.conn, own=RESULTS_MARKER)  # a session store is not ours either
            if not foreign:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results store {self.path}: {exc}") from exc
        if foreign:
            self.conn.close()
            raise StoreError(not_ours_message(self.path, foreign, "ctxmem results store"))
        self._write(self._migrate)

    # ------------------------------------------------------------------ plumbing

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one BEGIN IMMEDIATE transaction, retrying while the file is busy."""
        for attempt in range(self.max_attempts):
            with self._lock:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        time.sleep(min(0.5, 0.01 * 2**attempt) * random.uniform(0.5, 1.5))
                        continue
                    raise StoreError(f"results store {self.path}: {exc}") from exc
                try:
                    out = fn(self.conn)
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
                return out
        raise StoreBusyError(self.path, self.max_attempts)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS eval_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT name FROM eval_migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            for stmt in (s for s in sql.split(";") if s.strip()):  # no ";" inside comments
                conn.execute(stmt)
            conn.execute("INSERT INTO eval_migrations VALUES (?, ?)", (name, time.time()))

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ results

    def statuses(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        """key → status, for ``keys`` (all rows when None)."""
        with self._lock:
            if keys is None:
                return dict(self.conn.execute("SELECT key, status FROM eval_results").fetchall())
            out: dict[str, str] = {}
            keys = list(keys)
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT key, status FROM eval_results WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(dict(self.conn.execute(q, chunk).fetchall()))
            return out

    def put(self, row: dict[str, Any]) -> None:
        """Insert or replace one result (attempts accumulate across runs)."""
        values = dict(row)
        values.setdefault("updated_at", time.time())
        for c in JSON_COLS:
            if c in values and not isinstance(values[c], str | None):
                values[c] = json.dumps(values[c], ensure_ascii=False, default=str)
        cols = [c for c in RESULT_COLS if c in values]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM eval_claims WHERE key = ?", (values["key"],))
            prev = conn.execute("SELECT attempts FROM eval_results WHERE key = ?", (values["key"],)).fetchone()
            attempts = (prev[0] + 1) if prev else 1
            conn.execute(
                f"INSERT OR REPLACE INTO eval_results ({', '.join(cols)}, attempts) "
                f"VALUES ({', '.join('?' * len(cols))}, ?)",
                [values[c] for c in cols] + [attempts],
            )

        self._write(write)

    # ------------------------------------------------------------------ claims

    def claim(self, key: str, owner: str) -> bool:
        """Take the cell ``key`` for ``owner`` for :attr:`lease_s` seconds. False when it is
        finished (done/refused) or another owner's lease has not run out. :meth:`put`
        releases it."""
        def write(conn: sqlite3.Connection) -> bool:
            now = time.time()
            st = conn.execute("SELECT status FROM eval_results WHERE key = ?", (key,)).fetchone()
            if st is not None and st[0] in ("done", "refused"):
                return False
            held = conn.execute("SELECT owner, expires_at FROM eval_claims WHERE key = ?", (key,)).fetchone()
            if held is not None and held[0] != owner and held[1] > now:
                return False
            conn.execute("INSERT OR REPLACE INTO eval_claims VALUES (?, ?, ?)", (key, owner, now + self.lease_s))
            return True

        return self._write(write)

    def renew(self, owner: str) -> None:
        """Extend every lease ``owner`` holds by :attr:`lease_s` from now."""
        self._write(lambda c: c.execute(
            "UPDATE eval_claims SET expires_at = ? WHERE owner = ?", (time.time() + self.lease_s, owner)))

    def release(self, owner: str) -> None:
        """Drop every claim ``owner`` still holds (its cells may be claimed at once)."""
        self._write(lambda c: c.execute("DELETE FROM eval_claims WHERE owner = ?", (owner,)))

    def claims(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        """key → (owner, seconds until its lease runs out; <= 0 when lapsed) for claimed ``keys``."""
        out: dict[str, tuple[str, float]] = {}
        keys, now = list(keys), time.time()
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT key, owner, expires_at FROM eval_claims WHERE key IN ({','.join('?' * len(chunk))})"
                out.update({k: (o, e - now) for k, o, e in self.conn.execute(q, chunk).fetchall()})
        return out

    def rows(self, *, status: str | Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Result rows as dicts with JSON columns decoded."""
        q = "SELECT * FROM eval_results"
        args: list[Any] = []
        if status is not None:
            sts = [status] if isinstance(status, str) else list(status)
            q += f" WHERE status IN ({','.join('?' * len(sts))})"
            args = sts
        q += " ORDER BY model, preset, source, needle, length, depth, seed"
        with self._lock:
            cur = self.conn.execute(q, args)
            names = [d[0] for d in cur.description]
            out = []
            for r in cur.fetchall():
                d = dict(zip(names, r, strict=True))
                for c in JSON_COLS:
                    if d.get(c):
                        d[c] = json.loads(d[c])
                out.append(d)
        return out

    # ------------------------------------------------------------------ response cache

    def cached_response(self, model: str, request_hash: str) -> tuple[str, dict[str, int]] | None:
        with self._lock:
            r = self.conn.execute(
                "SELECT text, usage FROM eval_responses WHERE model = ? AND request_hash = ?", (model, request_hash)
            ).fetchone()
        return (r[0], json.loads(r[1])) if r else None

    def cache_response(self, model: str, request_hash: str, text: str, usage: dict[str, int]) -> None:
        self._write(lambda c: c.execute(
            "INSERT OR REPLACE INTO eval_responses VALUES (?, ?, ?, ?, ?)",
            (model, request_hash, text, json.dumps(usage), time.time()),
        ))

    # ------------------------------------------------------------------ runs

    def start_run(self, run_id: str, grid: dict[str, Any]) -> None:
        self._write(lambda c: c.execute(
            "INSERT INTO eval_runs (id, started_at, grid) VALUES (?, ?, ?)",
            (run_id, time.time(), json.dumps(grid, default=str)),
        ))

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        self._write(lambda c: c.execute(
            "UPDATE eval_runs SET finished_at = ?, summary = ? WHERE id = ?",
            (time.time(), json.dumps(summary, default=str), run_id),
        ))

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.execute("SELECT id, started_at, finished_at, grid, summary FROM eval_runs ORDER BY started_at")
            return [
                {"id": r[0], "started_at": r[1], "finished_at": r[2], "grid": json.loads(r[3]),
                 "summary": json.loads(r[4]) if r[4] else None}
                for r in cur.fetchall()
            ]
