"""Retention benchmark: planted facts kept in the context, per preset and budget.

    python -m benchmarks.bench_retention                  # both families, every preset, 8K-200K
    python -m benchmarks.bench_retention --family val --budgets 30000,100000
    python -m benchmarks.bench_retention --out retention  # also JSON rows and a PNG curve

Sessions come from :mod:`ctxmem.evals.retention`: a ~1M-token kernel-optimization
session, an incident-triage session and a data-analysis session, each with twelve planted
facts (ten in tool outputs, two user instructions). The ``dev`` family's phrasing was used
while developing the salience scorer; the ``val`` family was written separately and never
tuned on. For every preset in ``strategies/`` (the ``dump`` that raises is skipped: it
does not compact) and every budget, one context is built for the next request and the
facts whose keys appear in it are counted; contexts are checked for provider validity
and recounted against the budget. The table says, per family, preset and budget, the
facts kept summed over the three sessions (out of 36) with the kernel session's own
count, and the tokens spent on the facts and instructions sections.

In the benchmark suite (``python -m benchmarks``) it contributes two rows: the best
LLM-free preset's facts kept on the validation kernel session at 100K and 30K, next to
the recent window's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from benchmarks._harness import Row

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (8_000, 16_000, 30_000, 64_000, 100_000, 200_000)


def _tok_env() -> None:
    shared = ROOT.parent / "shared" / "tokenizers" / "tiktoken-cache"
    if "TIKTOKEN_CACHE_DIR" not in os.environ and shared.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(shared)


def grid(families: list[str], budgets: list[int], *, scale: float = 1.0, presets: list[str] | None = None) -> list[dict]:
    from ctxmem.evals.retention import compacting, presets_in, run_grid, sessions

    chosen = [p for p in presets_in(ROOT / "strategies") if compacting(p) and (not presets or p.name in presets)]
    rows = []
    for fam in families:
        ss = sessions(fam, scale=scale)  # type: ignore[arg-type]
        t0 = time.perf_counter()

        def progress(r: object) -> None:
            print(".", end="", file=sys.stderr, flush=True)

        rows += [r.to_json() | {"domain": r.session.split("-")[0]} for r in run_grid(ss, chosen, budgets, progress=progress)]
        print(f" {fam}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return rows


def table(rows: list[dict], family: str) -> str:
    """Markdown: preset × budget, kept over all sessions (/36) and on the kernel session (/12)."""
    budgets = sorted({r["budget"] for r in rows})
    cell: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        if r["family"] == family:
            cell[(r["preset"], r["budget"])].append(r)
    presets = sorted({p for p, _ in cell})
    head = "| preset | " + " | ".join(f"{b // 1000}K" for b in budgets) + " | facts+instr. tokens at 30K / 100K |"
    out = [head, "|---|" + "---|" * (len(budgets) + 1)]
    for p in presets:
        parts = []
        for b in budgets:
            rs = cell.get((p, b), [])
            total = sum(r["kept"] for r in rs)
            of = sum(r["of"] for r in rs)
            kern = next((r["kept"] for r in rs if r["domain"] == "kernel"), 0)
            bad = any((not r["valid"]) or (not r["within_budget"]) for r in rs if r["error"] is None or "invalid" in str(r["error"]))
            refused = sum(1 for r in rs if r["error"] and r["error"].startswith("overflow"))
            mark = " ⚠invalid" if bad else (f" ({refused} refused)" if refused else "")
            parts.append(f"{total}/{of} (kernel {kern}){mark}")
        spent = []
        for b in (30_000, 100_000):
            rs = cell.get((p, b), [])
            spent.append(str(max((r["facts_tokens"] + r["instructions_tokens"] for r in rs), default=0)))
        out.append(f"| {p} | " + " | ".join(parts) + f" | {' / '.join(spent)} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted({r["family"] for r in rows})
    fig, axes = plt.subplots(1, len(fams), figsize=(6 * len(fams), 4), sharey=True, squeeze=False)
    for ax, fam in zip(axes[0], fams, strict=True):
        by: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        of: dict[int, int] = defaultdict(int)
        for r in rows:
            if r["family"] == fam:
                by[r["preset"]][r["budget"]] += r["kept"]
        for r in rows:
            if r["family"] == fam and r["preset"] == rows[0]["preset"]:
                of[r["budget"]] += r["of"]
        for preset, pts in sorted(by.items()):
            xs = sorted(pts)
            ax.plot([x / 1000 for x in xs], [pts[x] for x in xs], marker="o", label=preset)
        ax.set_xscale("log")
        ax.set_xlabel("budget (K tokens, o200k)")
        ax.set_title(f"{fam} family: facts kept of {max(of.values(), default=0)}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("planted facts kept in the context")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(quick: bool = False) -> list[Row]:
    """Rows for ``python -m benchmarks``: best LLM-free preset vs the window, val kernel session."""
    _tok_env()
    from ctxmem.context import History
    from ctxmem.evals.retention import compacting, evaluate, generate, presets_in

    s = generate("kernel", "val", turns=200 if quick else None)
    h = History.from_messages(s.messages, "o200k_base")
    presets = [p for p in presets_in(ROOT / "strategies") if compacting(p) and p.type != "summarization"]
    rows = []
    for budget in (100_000, 30_000):
        kept = {p.name: evaluate(s, p, budget, h) for p in presets}
        best = max(kept.values(), key=lambda r: (r.n_kept and r.valid and r.within_budget, r.n_kept))
        window = kept.get("window-200k")
        rows.append(Row(
            "retention", f"facts kept /12 at {budget // 1000}K (val kernel session, {best.preset})", best.n_kept,
            "window-200k", window.n_kept if window else float("nan"), "facts",
            note=f"valid={best.valid}, within budget={best.within_budget}",
        ))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_retention")
    ap.add_argument("--family", action="append", choices=["dev", "val"], help="default: both")
    ap.add_argument("--budgets", default=",".join(str(b) for b in BUDGETS), help="comma-separated token budgets")
    ap.add_argument("--preset", action="append", help="only these presets (by name)")
    ap.add_argument("--scale", type=float, default=1.0, help="session length multiplier (1.0: full size)")
    ap.add_argument("--out", default=None, help="directory for rows.json and retention.png")
    args = ap.parse_args(argv)
    _tok_env()
    budgets = [int(x) for x in args.budgets.split(",") if x.strip()]
    families = args.family or ["dev", "val"]
    rows = grid(families, budgets, scale=args.scale, presets=args.preset)
    for fam in families:
        print(f"\n### {fam} family — facts kept, all three sessions (/36), kernel session in brackets (/12)\n")
        print(table(rows, fam))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "rows.json").write_text(json.dumps(rows, indent=1))
        plot(rows, out / "retention.png")
        print(f"\nwrote {out / 'rows.json'} and {out / 'retention.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
