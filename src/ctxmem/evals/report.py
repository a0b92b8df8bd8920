"""Reports: PNG figures and one self-contained HTML page from a results store.

Figures (matplotlib, Agg backend, imported only when a report is written):

* ``heatmap-<model>-<preset>-<family>.png`` — accuracy by depth (rows) × length
  (columns), each cell annotated with its accuracy and trial count;
* ``delta-<model>-<preset>-vs-<baseline>.png`` — the strategy delta: accuracy of a preset
  minus the baseline preset's, on the same grid (diverging colours, 0 in white). The
  baseline is ``none`` or ``dump-1m`` when present, else the first preset;
* ``accuracy-vs-length.png`` — one line per (model, preset) with Wilson intervals;
* ``accuracy-vs-cost.png`` — mean accuracy against mean cost per cell (dollars when the
  readers are priced and cost something, else request tokens, which is what a strategy
  saves), with the Pareto front.

``index.html`` embeds every PNG as base64 (one file to mail or attach to a PR) beside the
tables: accuracy per cell group with Wilson intervals, effective lengths (RULER and
NoLiMa, bootstrap intervals), miss attribution, refused and errored cells, and the LLM
judge's agreement with the rule scorer when a judge ran.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctxmem.errors import InputError, MissingDependencyError
from ctxmem.evals.analysis import cell_table, effective_lengths, group, scored
from ctxmem.evals.scoring import agreement


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("matplotlib", "evals", "writing evaluation reports") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _slug(*parts: Any) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", str(p)).strip("_") for p in parts)


def _fmt_len(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}K"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}Ki"
    return str(n)


def _grid(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[int], dict[tuple[float, int], list[float]]]:
    cells: dict[tuple[float, int], list[float]] = defaultdict(list)
    for r in rows:
        cells[(float(r["depth"]), int(r["length"]))].append(float(r["score"]))
    depths = sorted({d for d, _ in cells})
    lengths = sorted({length for _, length in cells})
    return depths, lengths, cells


def _heatmap(plt: Any, path: Path, title: str, depths: list[float], lengths: list[int],
             values: dict[tuple[float, int], float], counts: dict[tuple[float, int], int] | None, *,
             delta: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(1.1 * len(lengths) + 2.5, 0.45 * len(depths) + 1.8))
    grid = [[values.get((d, length), float("nan")) for length in lengths] for d in depths]
    if delta:
        im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    else:
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [_fmt_len(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title, fontsize=9)
    for i, d in enumerate(depths):
        for j, length in enumerate(lengths):
            v = values.get((d, length))
            if v is None:
                continue
            label = f"{v:+.2f}" if delta else f"{v:.2f}"
            if counts:
                label += f"\nn={counts.get((d, length), 0)}"
            ax.text(j, i, label, ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _baseline(presets: Sequence[str]) -> str:
    for p in ("none", "dump-1m"):
        if p in presets:
            return p
    return presets[0]


def write_report(rows: Sequence[Mapping[str, Any]], out: str | Path, *, title: str = "ctxmem NIAH report",
                 n_boot: int = 1000) -> Path:
    """Write the PNGs and ``index.html`` for ``rows`` (from :meth:`ResultStore.rows`) into ``out``."""
    rows = list(rows)
    done = scored(rows)
    if not done:
        raise InputError("no finished cells to report on (run the grid first)", field="db")
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path]] = []

    # Heatmaps per (model, preset, family); controls have no depth axis.
    for (model, preset, needle), rs in sorted(group(done, ("model", "preset", "needle")).items()):
        if needle == "nocontext":
            continue
        depths, lengths, cells = _grid(rs)
        vals = {k: sum(v) / len(v) for k, v in cells.items()}
        counts = {k: len(v) for k, v in cells.items()}
        p = out / f"heatmap-{_slug(model, preset, needle)}.png"
        _heatmap(plt, p, f"{model} · {preset} · {needle}: accuracy", depths, lengths, vals, counts)
        figures.append((f"Accuracy: {model} · {preset} · {needle}", p))

    # Strategy deltas against the baseline preset, per (model, family).
    for (model, needle), rs in sorted(group(done, ("model", "needle")).items()):
        if needle == "nocontext":
            continue
        by_preset = group(rs, ("preset",))
        presets = sorted(p for (p,) in by_preset)
        if len(presets) < 2:
            continue
        base = _baseline(presets)
        _, _, bcells = _grid(by_preset[(base,)])
        bvals = {k: sum(v) / len(v) for k, v in bcells.items()}
        for preset in presets:
            if preset == base:
                continue
            depths, lengths, cells = _grid(by_preset[(preset,)])
            delta = {k: sum(v) / len(v) - bvals[k] for k, v in cells.items() if k in bvals}
            p = out / f"delta-{_slug(model, needle, preset)}-vs-{_slug(base)}.png"
            _heatmap(plt, p, f"{model} · {needle}: {preset} minus {base}", depths, lengths, delta, None, delta=True)
            figures.append((f"Strategy delta: {preset} − {base} ({model} · {needle})", p))

    # Accuracy vs length, one line per (model, preset), controls excluded.
    from ctxmem.evals.needles import CONTROLS

    main = [r for r in done if r["needle"] not in CONTROLS]
    if main:
        fig, ax = plt.subplots(figsize=(7, 4))
        for row in _series(main):
            xs = row["lengths"]
            ax.errorbar(xs, row["acc"], yerr=[row["err_lo"], row["err_hi"]], marker="o", capsize=3,
                        label=f"{row['model']} · {row['preset']}")
        ax.set_xscale("log", base=2)
        lengths = sorted({int(r["length"]) for r in main})
        ax.set_xticks(lengths, [_fmt_len(x) for x in lengths])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("accuracy")
        ax.axhline(0.856, color="grey", lw=0.7, ls="--")
        ax.legend(fontsize=7)
        ax.set_title("Accuracy vs length (Wilson 95% intervals; dashed: RULER 85.6%)", fontsize=9)
        fig.tight_layout()
        p = out / "accuracy-vs-length.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        figures.append(("Accuracy vs length", p))

        # Accuracy vs cost with the Pareto front.
        pts = []
        for (model, preset), rs in sorted(group(main, ("model", "preset")).items()):
            acc = sum(float(r["score"]) for r in rs) / len(rs)
            dollars = [float(r["cost"]) for r in rs if r.get("cost") is not None]
            tokens = [float((r.get("info") or {}).get("request_tokens") or 0) for r in rs]
            pts.append((model, preset, acc, sum(dollars) / len(rs) if dollars else 0.0, sum(tokens) / len(rs)))
        use_dollars = any(p[3] > 0 for p in pts)
        fig, ax = plt.subplots(figsize=(6, 4))
        xy = [((p[3] if use_dollars else p[4]), p[2], f"{p[0]} · {p[1]}") for p in pts]
        for x, y, name in xy:
            ax.scatter([x], [y])
            ax.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        front = _pareto([(x, y) for x, y, _ in xy])
        if len(front) > 1:
            ax.plot([x for x, _ in front], [y for _, y in front], ls="--", color="grey", lw=0.8)
        ax.set_xlabel("mean $ per cell" if use_dollars else "mean request tokens per cell")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("Accuracy vs cost (dashed: Pareto front)", fontsize=9)
        fig.tight_layout()
        p = out / "accuracy-vs-cost.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        figures.append(("Accuracy vs cost", p))

    eff = effective_lengths(rows, n_boot=n_boot)
    page = _html(title, rows, eff, figures)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    (out / "effective_length.json").write_text(json.dumps(eff, indent=2), encoding="utf-8")
    return index


def _series(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    from ctxmem.evals.analysis import wilson

    out = []
    for (model, preset), rs in sorted(group(rows, ("model", "preset")).items()):
        per: dict[int, list[float]] = defaultdict(list)
        for r in rs:
            per[int(r["length"])].append(float(r["score"]))
        xs = sorted(per)
        acc = [sum(per[x]) / len(per[x]) for x in xs]
        ci = [wilson(sum(per[x]), len(per[x])) for x in xs]
        out.append({"model": model, "preset": preset, "lengths": xs, "acc": acc,
                    "err_lo": [a - lo for a, (lo, _) in zip(acc, ci, strict=True)],
                    "err_hi": [hi - a for a, (_, hi) in zip(acc, ci, strict=True)]})
    return out


def _pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated (lower cost and higher accuracy), sorted by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                v = f"{v:.3f}"
            elif isinstance(v, dict | list):
                v = json.dumps(v)
            cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _html(title: str, rows: Sequence[Mapping[str, Any]], eff: list[dict[str, Any]],
          figures: list[tuple[str, Path]]) -> str:
    status: dict[str, int] = defaultdict(int)
    for r in rows:
        status[str(r["status"])] += 1
    table = cell_table(rows, ("model", "preset", "source", "needle", "length"))
    eff_rows = [
        {"model": e["model"], "preset": e["preset"],
         "RULER (85.6%)": _len_ci(e["ruler"]),
         "NoLiMa (85% of base)": _len_ci(e["nolima"]),
         "base score": e["nolima"]["base_score"]}
        for e in eff
    ]
    problems = [
        {"status": r["status"], "source": r["source"], "length": r["length"], "depth": r["depth"],
         "needle": r["needle"], "preset": r["preset"], "model": r["model"], "reason": r.get("error") or ""}
        for r in rows if r["status"] != "done"
    ]
    judged = [r for r in scored(rows) if r.get("judge") is not None]
    judge_html = ""
    if judged:
        ag = agreement([bool(r["correct"]) for r in judged], [bool(r["judge"]) for r in judged])
        judge_html = (f"<h2>LLM judge vs rule scorer</h2><p>{ag['n']} cells: agreement {ag['agreement']:.3f}, "
                      f"Cohen's kappa {ag['kappa']:.3f}.</p>")
    imgs = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}' alt='{html.escape(t)}'>"
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in figures
    )
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
             "figure{display:inline-block;margin:0.5em;vertical-align:top}img{max-width:560px}"
             "figcaption{font-size:12px;color:#444}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(rows)} cells: " + ", ".join(f"{v} {html.escape(k)}" for k, v in sorted(status.items())) + "</p>"
        "<h2>Effective length</h2><p>Largest tested length at which every tested length up to it meets the "
        "threshold; 95% percentile-bootstrap intervals in brackets. Controls excluded.</p>"
        + _table(eff_rows, ["model", "preset", "RULER (85.6%)", "NoLiMa (85% of base)", "base score"])
        + "<h2>Figures</h2>" + imgs
        + "<h2>Accuracy per group (Wilson 95%) and miss attribution</h2>"
        + _table(table, ["model", "preset", "source", "needle", "length", "n", "accuracy", "low", "high", "labels"])
        + judge_html
        + ("<h2>Refused and errored cells</h2>" + _table(problems, list(problems[0])) if problems else "")
        + "</body></html>"
    )


def _len_ci(d: Mapping[str, Any]) -> str:
    def f(x: Any) -> str:
        return "none" if x is None else _fmt_len(int(x))

    return f"{f(d['point'])} [{f(d['low'])}, {f(d['high'])}]"
