"""Run every benchmark suite and print one table of ratios.

    python -m benchmarks            # full size (1M-token session), ~1 minute
    python -m benchmarks --quick    # small sizes, for CI smoke runs
    python -m benchmarks --json out.json
    python -m benchmarks --suite bench_scale   # 10M-token scale suite (not in the default run)
    python -m benchmarks --suite bench_pg      # PostgreSQL vs SQLite store (skips without a server)

Each row times ctxmem and a peer in the same process, back to back, and prints the
ratio ctxmem / peer (below 1 means ctxmem is faster), the issue's target for that row and
whether it was met in this run (targets are for the full sizes, so ``--quick``, a smoke
test at small sizes, leaves that column empty). Timings are medians of repeated runs; the machine is shared, so compare ratios,
not absolute numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

from benchmarks._harness import Row, fmt

SUITES = ["benchmarks.bench_store", "benchmarks.bench_context", "benchmarks.bench_retrieval", "benchmarks.bench_evals",
          "benchmarks.bench_agent", "benchmarks.bench_tokens", "benchmarks.bench_retention", "benchmarks.bench_pg"]


def fmt_ratio(ratio: float) -> str:
    """ctxmem ÷ peer; below 0.1 also say how many times faster ctxmem is."""
    if ratio != ratio:  # NaN
        return "n/a"
    if ratio < 0.1:
        return f"{ratio:.2g}× ({1 / ratio:,.0f}× faster)"
    return f"{ratio:.2f}×"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write results as JSON")
    ap.add_argument("--suite", action="append", default=None, help="run only these suites (module names)")
    args = ap.parse_args(argv)
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers" / "tiktoken-cache"
    if "TIKTOKEN_CACHE_DIR" not in os.environ and shared.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(shared)
    # The peers count with tiktoken itself (LangChain's exact counter, the tiktoken floor):
    # without network or ../shared its files are written from quicktok's vocabulary, the
    # same bytes tiktoken would download (checked against its own hash)
    from ctxmem.tokens import provision_tiktoken_cache

    provision_tiktoken_cache()
    rows: list[Row] = []
    for name in args.suite or SUITES:
        mod = importlib.import_module(name if name.startswith("benchmarks.") else f"benchmarks.{name}")
        print(f"running {mod.__name__} …", file=sys.stderr, flush=True)
        rows.extend(mod.run(quick=args.quick))
    header = ["suite", "metric", "ctxmem", "peer", "peer time", "ratio", "target", "met", "note"]
    body = [
        [r.suite, r.metric, fmt(r.ctxmem, r.unit), r.peer_name, fmt(r.peer, r.unit), fmt_ratio(r.ratio), r.target,
         "" if args.quick else {True: "yes", False: "**no**", None: ""}[r.met], r.note]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for b in body:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(b, widths, strict=True)) + " |")
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
          + (" (quick)" if args.quick else ""))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps([r.__dict__ | {"ratio": r.ratio, "met": r.met} for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
