"""Scale suite: a 10M-token session — ingest, peak memory, file size, per-turn builds.

    python -m benchmarks --suite bench_scale            # 10M tokens (12,000 rounds)
    CTXMEM_SCALE_TURNS=36000 python -m benchmarks --suite bench_scale   # 30M (the slow test)

The session is the synthetic kernel-agent transcript (``output_scale=1.16``: ~880 o200k
tokens per round), written as Anthropic JSONL. **Ingest** runs in a fresh process
(``import_file`` into a new SQLite file, as ``ctxmem sessions import`` does), which reports
its wall and CPU time and its peak RSS (``ru_maxrss``: everything that process ever held,
interpreter and tokenizer included); the file size is measured after the store is closed,
against the UTF-8 size of the session's text. **Builds** are the context suite's
session-backed loop (:mod:`benchmarks.bench_context`): each preset opens its own copy of the
file, builds once (cold), then runs rounds of record → extend → build, alternating with the
other presets; each built context is recounted and validated outside the timing. Each
preset's cold build is also timed in a fresh process reopening its copy afterwards (an agent
resuming the session: the facts index is restored from the store, not re-read).

The per-turn target at 10M is ≤ 10 ms for every preset. What a turn costs beyond O(log n) +
what it returns + what changed is said per strategy in the README's scale section.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._harness import Row
from benchmarks.bench_context import TOKENIZER, open_contender, run_turns
from ctxmem.config import available_presets
from ctxmem.messages import message_texts, to_anthropic
from ctxmem.samples import synthetic_session

_INGEST = """
import json, resource, sys, time
from ctxmem.jsonl import import_file
from ctxmem.store import SQLiteStore
store = SQLiteStore(sys.argv[2])
store.tokenizer(sys.argv[3])
c0 = time.process_time(); t0 = time.perf_counter()
session = import_file(store, sys.argv[1], tokenizers=[sys.argv[3]])
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
total = store.totals(session.id, sys.argv[3]).content
store.close()
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"id": session.id, "wall": wall, "cpu": cpu, "child_cpu": kids.ru_utime + kids.ru_stime,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "tokens": total}))
"""


def ingest_fresh(jsonl: Path, db: Path) -> dict[str, float]:
    """Import ``jsonl`` into a new file ``db`` in a fresh process; its own figures."""
    out = subprocess.run([sys.executable, "-c", _INGEST, str(jsonl), str(db), TOKENIZER],
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out))


def run(quick: bool = False) -> list[Row]:
    turns = int(os.environ.get("CTXMEM_SCALE_TURNS", 600 if quick else 12_000))
    rounds = 6 if quick else 12
    msgs = synthetic_session(turns + rounds, seed=23, output_scale=1.16)
    base, extra = msgs[: len(msgs) - 2 * rounds], msgs[len(msgs) - 2 * rounds :]
    text_bytes = sum(len(t.encode()) for m in base for t in message_texts(m))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jsonl = tmp / "session.jsonl"
        with jsonl.open("w", encoding="utf-8") as f:
            for obj in to_anthropic(base):
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        del msgs
        db = tmp / "base.db"
        got = ingest_fresh(jsonl, db)
        size = sum(os.path.getsize(p) for p in (db, Path(f"{db}-wal")) if p.exists())
        mtok = got["tokens"] / 1e6
        label = f"{mtok:.1f}M tok"
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        rows.append(Row("scale", f"ingest {label} (fresh process)", got["wall"], "—", float("nan"), "s",
                        note=(f"CPU {got['cpu']:.2f} s (every thread)"
                              + (f" + child {got['child_cpu']:.2f} s" if got["child_cpu"] else "")
                              + f"; {len(base)} msgs; load avg {load:.1f}")))
        rows.append(Row("scale", f"ingest {label}: peak RSS", got["rss_kb"] / 1024, "—", float("nan"), "MB",
                        note=f"{got['rss_kb'] / 1024 / mtok:.0f} MB per M tokens (whole process)"))
        rows.append(Row("scale", f"{label}: DB size", size / 1e6, "text (UTF-8)", text_bytes / 1e6, "MB",
                        note="file after close, FTS5 index and counts included"))

        contenders = []
        refused: dict[str, str] = {}
        for name in sorted(available_presets()):
            c = open_contender(name, db, str(got["id"]), tmp)
            if isinstance(c, str):
                refused[name] = c
            else:
                contenders.append(c)
        run_turns(contenders, extra, {})
        for c in contenders:
            if c.refused and len(c.turns) < 2:
                refused[c.name] = c.refused
                c.store.close()
                continue
            per_turn = statistics.median(c.turns)
            rows.append(Row("scale", f"{c.name} @ {label}: per-turn build"
                            + (f" (first {len(c.turns)} turns, then refused)" if c.refused else ""),
                            per_turn, "—", float("nan"), "s",
                            "≤ 10 ms" if 9 <= mtok <= 12 and not c.refused else "",
                            note=f"max {max(c.turns) * 1000:.1f} ms; CPU median {statistics.median(c.cpu) * 1000:.2f} ms; "
                                 f"cold first build {c.cold_s * 1000:.0f} ms, "
                                 f"session load {c.load_s * 1000:.0f} ms; reopened in a fresh process: cold build "
                                 f"{c.reopen_cold_s * 1000:.0f} ms, load {c.reopen_load_s * 1000:.0f} ms; "
                                 f"{c.over_budget} over budget, "
                                 f"{c.unpaired} unpaired in {c.checked} builds" + (f"; {c.refused}" if c.refused else "")))
            c.store.close()
        for name, why in refused.items():
            rows.append(Row("scale", f"{name} @ {label}", float("nan"), "—", float("nan"), "s", note=why))
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
