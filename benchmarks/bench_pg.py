"""PostgreSQL vs SQLite session store, side by side, in one run.

    python -m benchmarks --suite bench_pg            # full sizes (1M-token session, 8 × 1,000)
    python -m benchmarks --suite bench_pg --quick    # small sizes

Each row is the PostgreSQL store ("ctxmem" column) against the SQLite store ("peer" column)
on the same work, so the ratio says what the server costs (above 1: PostgreSQL slower):

* single append: one ``Session.record`` of a short message, committed (median);
* bulk import of the synthetic 1M-token session (``import_jsonl``, one transaction);
* reload: a fresh store handle reads the whole chain with its o200k counts;
* search: full-text queries restricted to the session's chain (median);
* 8 writer processes × N single-event appends to one shared session (wall time).

The server is a throwaway cluster started here (``tests/pg_server.py``: initdb + pg_ctl on
a free loopback port), fsync on, ``synchronous_commit=off``: like SQLite's WAL with
``synchronous=NORMAL``, a commit survives the writer being killed, and the last commits may
be lost on power loss. Client and server share the machine's cores. Without PostgreSQL
binaries the suite prints why and returns no rows.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import Message, to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import open_store

TOKENIZER = "o200k_base"
QUERIES = ["error", "shared memory", "timeout", "kernel", "speedup"]

_WRITER = """
import sys
from ctxmem.messages import Message
from ctxmem.session import Session
from ctxmem.store import open_store
store = open_store(sys.argv[1])
s = Session.open(store, sys.argv[2])
for n in range(int(sys.argv[3])):
    s.note(f"{sys.argv[4]} note {n}") if n % 2 else s.record(Message.user(f"{sys.argv[4]} says {n}"))
store.close()
"""


def _writers(url: str, sid: str, n_procs: int, events: int) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, sid, str(events), f"w{i}"],
                              stderr=subprocess.PIPE, text=True) for i in range(n_procs)]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"writer failed: {err.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def _measure(url: str, wire: bytes, appends: int, n_procs: int, events: int) -> dict[str, Any]:
    """Every measure on one backend (``url``), with the checks that make the numbers honest."""
    out: dict[str, Any] = {}
    store = open_store(url)
    store.tokenizer(TOKENIZER)  # load the encoding outside the timing
    t0 = time.perf_counter()
    sid = import_jsonl(store, wire, tokenizers=[TOKENIZER]).id
    out["import"] = time.perf_counter() - t0
    tokens = store.totals(sid, TOKENIZER).total
    store.close()

    t0 = time.perf_counter()
    fresh = open_store(url)
    view = fresh.chain(sid, tokenizers=[TOKENIZER])
    out["reload"] = time.perf_counter() - t0
    assert view.counts[TOKENIZER][-1].cum_content + view.counts[TOKENIZER][-1].cum_overhead == tokens
    lat = []
    for q in QUERIES * 4:
        t0 = time.perf_counter()
        fresh.search(q, session_id=sid, limit=10)
        lat.append(time.perf_counter() - t0)
    out["search"] = statistics.median(lat)
    s = Session.create(fresh, tokenizers=[TOKENIZER])
    lat = []
    for i in range(appends):
        t0 = time.perf_counter()
        s.record(Message.user(f"append number {i}: the benchmark shape is unchanged"))
        lat.append(time.perf_counter() - t0)
    out["append"] = statistics.median(lat)
    shared = Session.create(fresh, tokenizers=[TOKENIZER]).id
    fresh.close()
    out["writers"] = _writers(url, shared, n_procs, events)
    with open_store(url) as check:
        out["writers_events"] = len(check.chain(shared).events)
    out["tokens"] = tokens
    return out


def run(quick: bool = False) -> list[Row]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import pg_server

    try:
        server = pg_server.start(fsync=True, synchronous_commit=False)
    except pg_server.Unavailable as exc:
        print(f"bench_pg skipped: {exc}", file=sys.stderr)
        return []
    turns = 120 if quick else 1200
    appends, events = (50, 100) if quick else (300, 1000)
    n_procs = 8
    msgs = synthetic_session(turns, seed=7, output_scale=1.16)
    import json

    wire = "\n".join(json.dumps(o, ensure_ascii=False) for o in to_anthropic(msgs)).encode()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pg = _measure(server.fresh_url(), wire, appends, n_procs, events)
            lite = _measure(str(Path(tmp) / "bench.db"), wire, appends, n_procs, events)
    finally:
        server.stop()
    for r in (pg, lite):
        assert r["writers_events"] == n_procs * events, r  # nothing lost, one chain
    assert pg["tokens"] == lite["tokens"]
    peer = "SQLiteStore"
    size = f"{pg['tokens']:,} tokens"
    return [
        Row("pg", "PostgresStore: single append (median)", pg["append"] * 1e6, peer, lite["append"] * 1e6, "µs"),
        Row("pg", f"PostgresStore: bulk import ({size})", pg["import"], peer, lite["import"], "s"),
        Row("pg", "PostgresStore: reload chain + counts (fresh handle)", pg["reload"], peer, lite["reload"], "s"),
        Row("pg", "PostgresStore: search in the session's chain (median)", pg["search"] * 1e3, peer,
            lite["search"] * 1e3, "ms"),
        Row("pg", f"PostgresStore: {n_procs} writers × {events:,} appends, one session", pg["writers"], peer,
            lite["writers"], "s", note="all events in one linear chain on both"),
    ]
