"""Store suite: ingest, CLI start-up, single durable appends and reload of a 1M-token session.

Peers, measured in the same run:

* **counting floor** — quicktok's ``count`` (the fastest exact o200k counter, C++, one
  thread) over the same texts and nothing else; ingest (parse + count + durable store) is
  reported as a ratio to it (issue target ≤ 1.5×), in both wire formats (Anthropic and
  OpenAI JSONL) through the Python API, and through ``ctxmem sessions import``'s own
  ``import_seconds``. tiktoken's encode over the same texts is in the note. The floor and
  the ingests alternate run by run, so load on a shared machine hits both.
* **naive sqlite** — one ``INSERT`` + ``COMMIT`` of the message JSON per append, WAL,
  synchronous=NORMAL, no counting, no dedup, no index: the least a durable log can do.
* **naive reload** — re-reading the JSONL and re-counting every text (quicktok), which is
  what reloading costs without stored counts.
* **the parts no importer avoids** (a diagnostic row): besides the counting floor, parsing
  every line (orjson), writing the distinct texts into one SQLite table in one
  transaction (same page size, WAL, synchronous=NORMAL), and indexing the distinct tool
  outputs in a bare FTS5 table (the same tokenizer); the ingest's CPU beyond their sum is
  what ctxmem itself adds (encoding messages to rows, SHA-256 content addressing, the
  events / counts / memo rows, Python glue).

Ingest is timed from ``import_jsonl`` to its committed transaction (durable in WAL) on a
store opened beforehand. A bulk ingest counts beside the writer (``store/parallel_count.py``:
on a thread for quicktok, whose count releases the GIL; in a forked child for other engines,
when a core is idle); the note says where it counted and how much CPU the process (and a
child) spent against the floor's. Reload runs in a **fresh process**
per repetition: the time from opening the store to a :class:`~ctxmem.context.History` with
every message and count (``Session.open`` + ``History.from_session``), imports excluded
(given in the note). CLI start-up is the wall time from spawning ``ctxmem --help`` to the
first byte on its stdout.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, timed
from ctxmem.jsonl import import_jsonl, parse_jsonl
from ctxmem.messages import (
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    message_texts,
    to_anthropic,
    to_openai,
)
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore, parallel_count
from ctxmem.store.sqlite import PAGE_SIZE

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


_RELOAD = """
import sys, time
t0 = time.perf_counter()
from ctxmem.context import History
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.store.sqlite import PAGE_SIZE
t1 = time.perf_counter()
c1 = time.process_time()
store = SQLiteStore(sys.argv[1])
history = History.from_session(Session.open(store, sys.argv[2]), sys.argv[3])
t2 = time.perf_counter()
c2 = time.process_time()
assert history.total > 0
print(t1 - t0, t2 - t1, history.total, c2 - c1)
"""


def fresh_reload(db: Path, session_id: str) -> tuple[float, float, int, float]:
    """(imports, open + history with counts, tokens, CPU of the latter) timed inside a fresh process."""
    out = subprocess.run([sys.executable, "-c", _RELOAD, str(db), session_id, TOKENIZER],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]), float(out[3])


def first_byte(argv: list[str]) -> float:
    """Seconds from spawning ``argv`` to the first byte on its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.read(1)
    got = time.perf_counter() - t0
    proc.stdout.read()
    proc.wait()
    return got


def cli_import_seconds(path: Path, db: Path, fmt: str) -> tuple[float, float, float]:
    """``ctxmem sessions import``: (its own import_seconds, wall time of the whole command,
    its own import_cpu_seconds)."""
    _fresh(db)
    exe = shutil.which("ctxmem")
    argv = [exe] if exe else [sys.executable, "-c", "from ctxmem.cli import main; main()"]
    t0 = time.perf_counter()
    out = subprocess.run([*argv, "sessions", "import", str(path), "--format", fmt, "--db", str(db), "--json"],
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    got = json.loads(out)
    return float(got["import_seconds"]), wall, float(got["import_cpu_seconds"])


def _line_parser() -> Callable[[bytes], object]:
    """The fastest JSON line parser here (orjson, as the import uses; else json)."""
    try:
        from orjson import loads
    except ImportError:  # pragma: no cover - depends on the environment
        return json.loads
    return loads


def run(quick: bool = False) -> list[Row]:
    import quicktok
    import tiktoken

    turns = 120 if quick else 1200
    msgs = synthetic_session(turns, seed=7, output_scale=1.16)
    wire = {
        "anthropic": "\n".join(json.dumps(o, ensure_ascii=False) for o in to_anthropic(msgs)).encode(),
        "openai": "\n".join(json.dumps(o, ensure_ascii=False) for o in to_openai(msgs)).encode(),
    }
    texts = [t for m in msgs for t in message_texts(m)]
    qt = quicktok.get_encoding(TOKENIZER)
    enc = tiktoken.get_encoding(TOKENIZER)
    n_tokens = sum(qt.count(t) for t in texts)
    rows: list[Row] = []
    repeat = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        files = {fmt: Path(tmp) / f"session.{fmt}.jsonl" for fmt in wire}
        for fmt, path in files.items():
            path.write_bytes(wire[fmt])
        sessions: list[str] = []
        runs = _Runs()
        cli: dict[str, list[tuple[float, float, float]]] = {fmt: [] for fmt in wire}

        def floor() -> None:
            count = qt.count
            for t in texts:
                count(t)

        def tiktoken_floor() -> None:
            for t in texts:
                enc.encode_ordinary(t)

        loads = _line_parser()
        lines = [x for x in wire["anthropic"].split(b"\n") if x.strip()]
        distinct = list(dict.fromkeys(texts))
        outputs = list(dict.fromkeys(b.text for m in msgs for b in m.content if isinstance(b, ToolResultBlock)))
        bare_db = Path(tmp) / "bare.db"

        def parse_floor() -> None:
            for x in lines:
                loads(x)

        def bare_run(name: str, ddl: str, sql: str, rows: list[tuple[int, str]]) -> None:
            _fresh(bare_db)
            conn = sqlite3.connect(bare_db, isolation_level=None)
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(ddl)

            def write() -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")

            runs.measure(name, write)
            conn.close()

        real_start = parallel_count.start
        counted: dict[str, list[str]] = {}  # run name -> where each run counted

        def ingest_run(fmt: str, variant: str) -> None:
            _fresh(db)
            store = SQLiteStore(db)  # a fresh file: schema created here, outside the timing
            before = os.environ.pop("CTXMEM_PARALLEL_COUNT", None)
            if variant != "auto":  # auto: as shipped (a thread for quicktok, a child beside an idle core)
                os.environ["CTXMEM_PARALLEL_COUNT"] = variant
            where = counted.setdefault(f"{fmt}/{variant}", [])

            def spy(tok: Any, texts: list[str]) -> parallel_count.Counting:
                c = real_start(tok, texts)
                where.append("thread" if c.threaded else "child" if c.forked else "inline")
                return c

            parallel_count.start = spy  # type: ignore[assignment]
            try:
                runs.measure(f"{fmt}/{variant}", lambda: sessions.append(
                    import_jsonl(store, wire[fmt], fmt=fmt, tokenizers=[TOKENIZER]).id))  # type: ignore[arg-type]
            finally:
                parallel_count.start = real_start  # type: ignore[assignment]
                os.environ.pop("CTXMEM_PARALLEL_COUNT", None)
                if before is not None:
                    os.environ["CTXMEM_PARALLEL_COUNT"] = before
                store.close()

        SQLiteStore(db).tokenizer(TOKENIZER)  # load the encoding outside the timing
        for _ in range(repeat):  # interleaved: load on the machine hits every variant alike
            runs.measure("floor", floor)
            runs.measure("tiktoken", tiktoken_floor)
            runs.measure("parse", parse_floor)
            bare_run("write", "CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",
                     "INSERT INTO t (id, text) VALUES (?, ?)", list(enumerate(distinct, 1)))
            bare_run("fts", "CREATE VIRTUAL TABLE f USING fts5(text, content='', columnsize=1)",
                     "INSERT INTO f (rowid, text) VALUES (?, ?)", list(enumerate(outputs, 1)))
            for fmt, variant in (("anthropic", "auto"), ("openai", "auto"), ("anthropic", "0")):
                ingest_run(fmt, variant)
            for fmt in wire:
                cli[fmt].append(cli_import_seconds(files[fmt], db, fmt))
        floor_s, floor_cpu = runs.med(runs.wall, "floor"), runs.med(runs.cpu, "floor")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        size = f"{len(msgs)} msgs / {n_tokens / 1e6:.2f}M tok"
        peer = "quicktok count (floor)"
        for name, label, target in (
            ("anthropic/auto", f"ingest {size}, Anthropic JSONL (Python API)", "≤ 1.5×"),
            ("openai/auto", f"ingest {size}, OpenAI JSONL (Python API)", "≤ 1.5×"),
            ("anthropic/0", f"ingest {size}, Anthropic, one core (=0)", ""),
        ):
            cpu = runs.med(runs.cpu, name)
            threads = counted.get(name, []).count("thread")
            forked = counted.get(name, []).count("child")
            core = (f"counted on a thread in {threads}/{repeat} runs" if threads else
                    f"a forked child counted in {forked}/{repeat} runs (child CPU {_ms(runs.med(runs.child, name))})"
                    if forked else "second core not used")
            rows.append(Row(
                "store", label, runs.med(runs.wall, name), peer, floor_s, "s", target,
                note=(f"{core}; CPU {_ms(cpu)} vs floor {_ms(floor_cpu)} = {cpu / floor_cpu:.2f}×; "
                      f"tiktoken encode {_ms(runs.med(runs.wall, 'tiktoken'))}; load avg {load:.1f} on {cores} cores"),
            ))
        parts = {name: runs.med(runs.cpu, name) for name in ("floor", "parse", "write", "fts")}
        unavoidable = sum(parts.values())
        one_core = runs.med(runs.cpu, "anthropic/0")
        rows.append(Row(
            "store", "ingest CPU (Anthropic, one core) vs the parts no importer avoids", one_core,
            "count + parse + write + FTS5 (CPU)", unavoidable, "s",
            note=(f"count {_ms(parts['floor'])}, parse lines {_ms(parts['parse'])}, write the distinct texts "
                  f"{_ms(parts['write'])}, FTS5 index of the tool outputs {_ms(parts['fts'])}; ctxmem's own "
                  f"{_ms(one_core - unavoidable)} (rows, hashing, events/counts/memo rows, glue); "
                  f"the unavoidable parts alone are {unavoidable / parts['floor']:.2f}× the floor"),
        ))
        for fmt in wire:
            own = statistics.median(x[0] for x in cli[fmt])
            wall = statistics.median(x[1] for x in cli[fmt])
            cpu = statistics.median(x[2] for x in cli[fmt])
            rows.append(Row("store", f"ctxmem sessions import ({fmt}), its import_seconds", own, peer, floor_s, "s",
                            "≤ 1.5×", note=f"its import_cpu_seconds {_ms(cpu)} vs floor CPU {_ms(floor_cpu)} = "
                                           f"{cpu / floor_cpu:.2f}×; whole command wall {_ms(wall)} incl. "
                                           "interpreter, imports, tokenizer load and the WAL checkpoint"))

        # CLI start-up to first byte.
        exe = shutil.which("ctxmem")
        if exe:
            starts = [first_byte([exe, "--help"]) for _ in range(repeat)]
            bare = [first_byte([sys.executable, "-c", "print(1)"]) for _ in range(repeat)]
            rows.append(Row("store", "CLI start-up to first byte (ctxmem --help)", statistics.median(starts),
                            "python -c 'print(1)'", statistics.median(bare), "s", "≤ 500 ms",
                            note="wall, spawn to first stdout byte"))

        # Reload in a fresh process: open the store, the session's history with its counts.
        _fresh(db)
        with SQLiteStore(db) as store:
            sid = import_jsonl(store, wire["anthropic"], tokenizers=[TOKENIZER]).id
            got = store.totals(sid, TOKENIZER).content
        assert got == n_tokens, (got, n_tokens)  # exact: the store's total is the floor's count
        reloads = [fresh_reload(db, sid) for _ in range(max(repeat, 7))]
        assert all(r[2] == reloads[0][2] for r in reloads)

        def naive_reload() -> None:
            _, ms = parse_jsonl(wire["anthropic"])
            [qt.count(t) for m in ms for t in message_texts(m)]

        rows.append(Row("store", "reload session + counts (fresh process)", statistics.median(r[1] for r in reloads),
                        "re-parse + re-count (quicktok)", timed(naive_reload, repeat=repeat), "s", "≤ 50 ms",
                        note=f"imports before it {_ms(statistics.median(r[0] for r in reloads))} (not counted); "
                             f"best of {len(reloads)} {min(r[1] for r in reloads) * 1000:.1f} ms; "
                             f"CPU {statistics.median(r[3] for r in reloads) * 1000:.1f} ms (median)"))

        # Single durable appends: one tool result each, like an agent loop records them.
        n_appends = 300 if quick else 2000
        outputs = [f"step {i}: " + " ".join(texts[i % len(texts)].split()[:60]) for i in range(n_appends)]
        with SQLiteStore(db) as store:
            session = Session.create(store, tokenizers=[TOKENIZER])
            lat = []
            for i, out in enumerate(outputs):
                # a tool call, then its result: each result answers the call before it
                m = (Message("user", (ToolResultBlock(f"t{i}", out),)) if i % 2
                     else Message("assistant", (TextBlock(out[:200]), ToolUseBlock(f"t{i + 1}", "read_file", {"path": f"f{i}"}))))
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
