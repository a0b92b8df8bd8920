"""Store suite: ingest, single durable appends and reload of a 1M-token session.

Peers, measured in the same run:

* **tiktoken floor** — encoding the same texts with tiktoken and nothing else; ingest
  (parse + count + durable store) is reported as a ratio to it (issue target ≤ 1.5×).
  The floor and the ingests alternate run by run, so load on a shared machine hits both.
* **naive sqlite** — one ``INSERT`` + ``COMMIT`` of the message JSON per append, WAL,
  synchronous=NORMAL, no counting, no dedup, no index: the least a durable log can do.
* **naive reload** — re-reading the JSONL and re-counting every text with tiktoken,
  which is what reloading costs without memoized counts.

Ingest is timed from ``import_jsonl`` to its committed transaction (durable in WAL: it
survives the process being killed) on a store opened beforehand; opening the fresh file
and closing it (the WAL checkpoint) are reported in the note, not hidden. A bulk ingest
counts on a second core (a forked child, ``store/parallel_count.py``) when one is idle:
the first row is ingest as shipped; the next two force the child (``CTXMEM_PARALLEL_COUNT=1``)
and forbid it (``=0``). Each says whether a child counted and how much CPU parent and child
spent together against the floor's, so a reader sees both the wall ratio and the total work.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
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


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


class _Runs:
    """Wall and CPU (parent, children) of each run, by name."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.child: dict[str, list[float]] = {}

    def measure(self, name: str, fn: Callable[[], object]) -> None:
        p0, c0 = _cpu()
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        p1, c1 = _cpu()
        self.wall.setdefault(name, []).append(wall)
        self.cpu.setdefault(name, []).append((p1 - p0) + (c1 - c0))
        self.child.setdefault(name, []).append(c1 - c0)

    def med(self, table: dict[str, list[float]], name: str) -> float:
        return statistics.median(table[name])


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


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
        sessions: list[str] = []
        runs = _Runs()
        opened: list[float] = []
        closed: list[float] = []

        def floor() -> None:
            for t in texts:
                enc.encode_ordinary(t)

        def ingest_run(variant: str) -> None:
            _fresh(db)
            t0 = time.perf_counter()
            store = SQLiteStore(db)  # a fresh file: schema created here, outside the timing
            opened.append(time.perf_counter() - t0)
            before = os.environ.pop("CTXMEM_PARALLEL_COUNT", None)
            if variant != "auto":  # auto: as shipped, a child only beside an idle core
                os.environ["CTXMEM_PARALLEL_COUNT"] = variant
            try:
                runs.measure(variant, lambda: sessions.append(import_jsonl(store, data, tokenizers=[TOKENIZER]).id))
            finally:
                os.environ.pop("CTXMEM_PARALLEL_COUNT", None)
                if before is not None:
                    os.environ["CTXMEM_PARALLEL_COUNT"] = before
                t0 = time.perf_counter()
                store.close()  # the WAL checkpoint
                closed.append(time.perf_counter() - t0)

        SQLiteStore(db).tokenizer(TOKENIZER)  # load the encoding outside the timing
        for _ in range(repeat):  # interleaved: load on the machine hits every variant alike
            runs.measure("floor", floor)
            for variant in ("auto", "1", "0"):
                ingest_run(variant)
        with SQLiteStore(db) as store:
            total = store.totals(sessions[-1], TOKENIZER).content
        assert total == n_tokens, (total, n_tokens)
        floor_s, floor_cpu = runs.med(runs.wall, "floor"), runs.med(runs.cpu, "floor")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        size = f"{len(msgs)} msgs / {n_tokens / 1e6:.2f}M tok"
        variants = (
            ("auto", f"ingest {size}", "≤ 1.5×"),
            ("1", f"ingest {size}, always fork (=1)", ""),
            ("0", f"ingest {size}, one core (=0)", ""),
        )
        for name, label, target in variants:
            cpu = runs.med(runs.cpu, name)
            forked = sum(c > 0 for c in runs.child[name])
            core = (f"second core: a forked child counted in {forked}/{repeat} runs "
                    f"(child CPU {_ms(runs.med(runs.child, name))})" if forked else "second core: not used")
            rows.append(Row(
                "store", label, runs.med(runs.wall, name), "tiktoken encode only", floor_s, "s", target,
                note=(f"{core}; CPU parent+child {_ms(cpu)} vs floor {_ms(floor_cpu)} = {cpu / floor_cpu:.2f}×"
                      + (f"; load avg {load:.1f} on {cores} cores; store opened before the timing "
                         f"(fresh file {_ms(statistics.median(opened))}), closed after it "
                         f"(checkpoint {_ms(statistics.median(closed))})" if name == "auto" else "")),
            ))

        # Reload: a fresh store object reads the chain and its counts.
        def reload() -> None:
            with SQLiteStore(db) as store:
                store.chain(sessions[-1], tokenizers=[TOKENIZER])

        for _ in range(max(repeat, 7)):
            runs.measure("reload", reload)

        def naive_reload() -> None:
            _, ms = parse_jsonl(data)
            [enc.encode_ordinary(t) for m in ms for t in message_texts(m)]

        rows.append(Row("store", "reload session + counts", runs.med(runs.wall, "reload"), "re-parse + re-count",
                        timed(naive_reload, repeat=repeat), "s", "≤ 30 ms",
                        note=f"CPU {runs.med(runs.cpu, 'reload') * 1000:.1f} ms; best of {len(runs.wall['reload'])} "
                             f"{min(runs.wall['reload']) * 1000:.1f} ms"))

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
