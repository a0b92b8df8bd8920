"""Store suite: ingest, single durable appends and reload of a 1M-token session.

Peers, measured in the same run:

* **tiktoken floor** — encoding the same texts with tiktoken and nothing else; ingest
  (parse + count + durable store) is reported as a ratio to it (issue target ≤ 1.5×).
* **naive sqlite** — one ``INSERT`` + ``COMMIT`` of the message JSON per append, WAL,
  synchronous=NORMAL, no counting, no dedup, no index: the least a durable log can do.
* **naive reload** — re-reading the JSONL and re-counting every text with tiktoken,
  which is what reloading costs without memoized counts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._harness import Row, timed
from ctxmem.jsonl import import_jsonl, parse_jsonl
from ctxmem.messages import Message, ToolResultBlock, message_texts, to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore

TOKENIZER = "o200k_base"


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def run(quick: bool = False) -> list[Row]:
    import tiktoken

    turns = 120 if quick else 1200
    msgs = synthetic_session(turns, seed=7, output_scale=1.16)
    data = "\n".join(json.dumps(o, ensure_ascii=False) for o in to_anthropic(msgs)).encode()
    texts = [t for m in msgs for t in message_texts(m)]
    enc = tiktoken.get_encoding(TOKENIZER)
    n_tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
    rows: list[Row] = []
    repeat = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"

        floor = timed(lambda: [enc.encode_ordinary(t) for t in texts], repeat=repeat)
        sessions: list[str] = []

        def ingest() -> None:
            with SQLiteStore(db) as store:
                sessions.append(import_jsonl(store, data, tokenizers=[TOKENIZER]).id)

        SQLiteStore(db).tokenizer(TOKENIZER)  # load the encoding outside the timing
        ingest_s = timed(ingest, repeat=repeat, setup=lambda: _fresh(db))
        with SQLiteStore(db) as store:
            total = store.totals(sessions[-1], TOKENIZER).content
        assert total == n_tokens, (total, n_tokens)
        rows.append(Row("store", f"ingest {len(msgs)} msgs / {n_tokens / 1e6:.2f}M tok", ingest_s,
                        "tiktoken encode only", floor, "s", "≤ 1.5×"))

        # Reload: a fresh store object reads the chain and its counts.
        def reload() -> None:
            with SQLiteStore(db) as store:
                store.chain(sessions[-1], tokenizers=[TOKENIZER])

        reload_s = timed(reload, repeat=repeat)

        def naive_reload() -> None:
            _, ms = parse_jsonl(data)
            [enc.encode_ordinary(t) for m in ms for t in message_texts(m)]

        rows.append(Row("store", "reload session + counts", reload_s, "re-parse + re-count", timed(naive_reload, repeat=repeat),
                        "s", "≤ 30 ms"))

        # Single durable appends: one tool result each, like an agent loop records them.
        n_appends = 300 if quick else 2000
        outputs = [f"step {i}: " + " ".join(texts[i % len(texts)].split()[:60]) for i in range(n_appends)]
        with SQLiteStore(db) as store:
            session = Session.create(store, tokenizers=[TOKENIZER])
            lat = []
            for i, out in enumerate(outputs):
                m = Message("user", (ToolResultBlock(f"t{i}", out),)) if i % 2 else Message.user(out)
                t0 = time.perf_counter()
                session.record(m)
                lat.append(time.perf_counter() - t0)
        naive = Path(tmp) / "naive.db"
        conn = sqlite3.connect(naive, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, session TEXT, body TEXT)")
        nlat = []
        for out in outputs:
            body = json.dumps({"role": "user", "content": [{"type": "text", "text": out}]})
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO log (session, body) VALUES (?, ?)", ("s", body))
            conn.execute("COMMIT")
            nlat.append(time.perf_counter() - t0)
        conn.close()
        rows.append(Row("store", "single durable append (median)", statistics.median(lat) * 1e6,
                        "naive sqlite insert", statistics.median(nlat) * 1e6, "us", "≤ 200 µs",
                        note=f"p99 {sorted(lat)[int(len(lat) * 0.99)] * 1e6:.0f} µs"))
        rows[-1].note += f"; {os.path.getsize(db) / 1e6:.0f} MB db"
    return rows
