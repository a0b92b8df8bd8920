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
tables, under a header with the run's configuration (cells, dates, tokenizer, presets,
sources, families, lengths, depths, trials) and what each reader is — and which needle
families it cannot answer, so a blind reader's misses are never read as forgetting. The
headline heatmaps are full width with ≥ 10 pt cell text and labelled colour scales;
refused cells stay on the grid, grey and labelled; annotation colours follow each cell's
luminance. Tables: accuracy per cell group with Wilson intervals and readable miss labels,
effective lengths (RULER and NoLiMa, bootstrap intervals), refused and errored cells
folded with counts, the LLM judge's agreement when a judge ran, and a per-sample table
(needle, placement, answer, attribution) to drill into.
"""

from __future__ import annotations

import base64
import html
import json
import re
import textwrap
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


#: reference model for the dollar axis when the readers are free (offline)
REFERENCE_PRICE_MODEL = "claude-sonnet-4-5"


def _text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba`` (WCAG luminance)."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(c)) for c in rgba[:3])
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.36 else "black"


def _heatmap(plt: Any, path: Path, title: str, depths: list[float], lengths: list[int],
             values: dict[tuple[float, int], float], counts: dict[tuple[float, int], int] | None, *,
             delta: bool = False, refused: set[tuple[float, int]] | frozenset[tuple[float, int]] = frozenset(),
             note: str = "") -> None:
    """One depth × length heatmap, sized to be read full-width: cell text ≥ 10 pt, a labelled
    colour bar, refused cells drawn grey and labelled rather than left out."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(7.5, 1.15 * len(lengths) + 3.0), max(3.2, 0.62 * len(depths) + 2.2)))
    grid = np.array([[values.get((d, length), np.nan) for length in lengths] for d in depths], dtype=float)
    cmap = plt.get_cmap("RdBu" if delta else "RdYlGn").with_extremes(bad="#d9d9d9")
    vmin, vmax = (-1.0, 1.0) if delta else (0.0, 1.0)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(lengths)), [_fmt_len(x) for x in lengths], fontsize=10)
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=10)
    ax.set_xlabel("context length (tokens)", fontsize=11)
    ax.set_ylabel("needle depth (0% = start)", fontsize=11)
    width_in = max(7.5, 1.15 * len(lengths) + 3.0)
    wrapped = "\n".join(textwrap.wrap(note, max(40, int(width_in * 11)))) if note else ""
    ax.set_title(title + (f"\n{wrapped}" if wrapped else ""), fontsize=12)
    for i, d in enumerate(depths):
        for j, length in enumerate(lengths):
            v = values.get((d, length))
            if v is None:
                if (d, length) in refused:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                               edgecolor="#8c8c8c", lw=0))
                    ax.text(j, i, "refused\n(too long)", ha="center", va="center", fontsize=9, color="#333333")
                continue
            label = f"{v:+.2f}" if delta else f"{v:.2f}"
            if counts:
                label += f"\nn={counts.get((d, length), 0)}"
            colour = _text_colour(cmap((v - vmin) / (vmax - vmin)))
            ax.text(j, i, label, ha="center", va="center", fontsize=10, color=colour)
    bar = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    bar.set_label("Δ accuracy (preset − baseline)" if delta else "accuracy (share of trials correct)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _baseline(presets: Sequence[str]) -> str:
    for p in ("none", "dump-1m"):
        if p in presets:
            return p
    return presets[0]


def write_report(rows: Sequence[Mapping[str, Any]], out: str | Path, *, title: str = "ctxmem NIAH report",
                 n_boot: int = 1000, meta: Mapping[str, Any] | None = None) -> Path:
    """Write the PNGs and ``index.html`` for ``rows`` (from :meth:`ResultStore.rows`) into ``out``.

    ``meta``: extra run facts for the page header (e.g. the command line, the results file).
    """
    from ctxmem.evals.readers import blind_families

    rows = list(rows)
    done = scored(rows)
    if not done:
        raise InputError("no finished cells to report on (run the grid first)", field="db")
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path, str]] = []  # (caption, file, "wide" | "chart")
    refused_by: dict[tuple[str, str, str], set[tuple[float, int]]] = defaultdict(set)
    for r in rows:
        if r["status"] == "refused":
            refused_by[(str(r["model"]), str(r["preset"]), str(r["needle"]))].add((float(r["depth"]), int(r["length"])))

    # Heatmaps per (model, preset, family); controls have no depth axis. Refused cells keep
    # their column (drawn grey and labelled) so a short window's heatmap is not narrower.
    for (model, preset, needle), rs in sorted(group(done, ("model", "preset", "needle")).items()):
        if needle == "nocontext":
            continue
        refused = refused_by.get((model, preset, needle), set())
        depths, lengths, cells = _grid(rs)
        depths = sorted({*depths, *(d for d, _ in refused)})
        lengths = sorted({*lengths, *(n for _, n in refused)})
        vals = {k: sum(v) / len(v) for k, v in cells.items()}
        counts = {k: len(v) for k, v in cells.items()}
        note = ("the reader cannot answer this needle family by design: misses here are the reader's, "
                "not the strategy's" if needle in blind_families(model) else "")
        p = out / f"heatmap-{_slug(model, preset, needle)}.png"
        _heatmap(plt, p, f"{model} · {preset} · {needle}: accuracy", depths, lengths, vals, counts,
                 refused=refused, note=note)
        figures.append((f"Accuracy: {model} · {preset} · {needle}", p, "wide"))

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
            refused = refused_by.get((model, preset, needle), set())
            depths, lengths, cells = _grid(by_preset[(preset,)])
            depths = sorted({*depths, *(d for d, _ in refused)})
            lengths = sorted({*lengths, *(n for _, n in refused)})
            delta = {k: sum(v) / len(v) - bvals[k] for k, v in cells.items() if k in bvals}
            p = out / f"delta-{_slug(model, needle, preset)}-vs-{_slug(base)}.png"
            _heatmap(plt, p, f"{model} · {needle}: {preset} minus {base}", depths, lengths, delta, None, delta=True,
                     refused=refused)
            figures.append((f"Strategy delta: {preset} − {base} ({model} · {needle})", p, "wide"))

    # Accuracy vs length, one line per (model, preset), controls excluded.
    from ctxmem.evals.needles import CONTROLS

    main = [r for r in done if r["needle"] not in CONTROLS]
    if main:
        fig, ax = plt.subplots(figsize=(9, 4.8))
        for row in _series(main):
            xs = row["lengths"]
            ax.errorbar(xs, row["acc"], yerr=[row["err_lo"], row["err_hi"]], marker="o", capsize=3,
                        label=f"{row['model']} · {row['preset']}")
        ax.set_xscale("log", base=2)
        lengths = sorted({int(r["length"]) for r in main})
        ax.set_xticks(lengths, [_fmt_len(x) for x in lengths])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("context length (tokens)", fontsize=11)
        ax.set_ylabel("accuracy", fontsize=11)
        ax.axhline(0.856, color="grey", lw=0.7, ls="--")
        ax.legend(fontsize=9)
        ax.set_title("Accuracy vs length (Wilson 95% intervals; dashed: RULER 85.6%)", fontsize=11)
        fig.tight_layout()
        p = out / "accuracy-vs-length.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        figures.append(("Accuracy vs length", p, "chart"))
        p = _cost_figure(plt, main, out / "accuracy-vs-cost.png")
        figures.append(("Accuracy vs cost", p, "chart"))

    eff = effective_lengths(rows, n_boot=n_boot)
    page = _html(title, rows, eff, figures, meta or {})
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    (out / "effective_length.json").write_text(json.dumps(eff, indent=2), encoding="utf-8")
    return index


def _reference_price() -> tuple[str, float] | None:
    """(model, $ per input MTok) of the reference model, when the price table knows it."""
    from ctxmem.evals.runner import price_for

    p = price_for(REFERENCE_PRICE_MODEL)
    return (REFERENCE_PRICE_MODEL, p.input) if p is not None and p.input > 0 else None


def _cost_figure(plt: Any, main: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Accuracy against mean dollars per cell, with the Pareto front always drawn.

    Priced readers: the dollars they cost. Free (offline) readers: the request tokens priced
    at the reference model's input rate, said so on the axis — what the same context would
    cost a real model, which is what a strategy saves.
    """
    pts = []
    for (model, preset), rs in sorted(group(main, ("model", "preset")).items()):
        acc = sum(float(r["score"]) for r in rs) / len(rs)
        dollars = [float(r["cost"]) for r in rs if r.get("cost") is not None]
        tokens = [float((r.get("info") or {}).get("request_tokens") or 0) for r in rs]
        pts.append((model, preset, acc, sum(dollars) / len(rs) if dollars else 0.0, sum(tokens) / len(rs)))
    use_dollars = any(p[3] > 0 for p in pts)
    ref = None if use_dollars else _reference_price()
    if use_dollars:
        xlabel = "mean $ per cell (the readers' prices)"
        xy = [(p[3], p[2], f"{p[0]} · {p[1]}") for p in pts]
    elif ref is not None:
        xlabel = f"mean $ per cell at {ref[0]} input price (${ref[1]:g}/MTok; the offline readers are free)"
        xy = [(p[4] * ref[1] / 1e6, p[2], f"{p[0]} · {p[1]}") for p in pts]
    else:
        xlabel = "mean request tokens per cell (no price known)"
        xy = [(p[4], p[2], f"{p[0]} · {p[1]}") for p in pts]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for x, y, name in xy:
        ax.scatter([x], [y], s=36, zorder=3)
        ax.annotate(name, (x, y), fontsize=9, xytext=(5, 4), textcoords="offset points")
    front = _pareto([(x, y) for x, y, _ in xy])
    fx = [x for x, _ in front]
    fy = [y for _, y in front]
    ax.step(fx, fy, where="post", ls="--", color="#555555", lw=1.2, label="Pareto front", zorder=2)
    ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="#555555", lw=1.2, zorder=4)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel("accuracy", fontsize=11)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title("Accuracy vs cost (ringed and dashed: the Pareto front)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
        # Clipped at 0: Wilson's bound at 100% can sit 1e-16 *below* the point estimate,
        # and matplotlib refuses a negative error bar.
        out.append({"model": model, "preset": preset, "lengths": xs, "acc": acc,
                    "err_lo": [max(0.0, a - lo) for a, (lo, _) in zip(acc, ci, strict=True)],
                    "err_hi": [max(0.0, hi - a) for a, (_, hi) in zip(acc, ci, strict=True)]})
    return out


def _pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated (lower cost and higher accuracy), sorted by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str], *, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                v = f"{v:.3f}"
            elif isinstance(v, dict):
                v = " · ".join(f"{k} {n}" for k, n in v.items())
            elif isinstance(v, list):
                v = ", ".join(str(x) for x in v)
            cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f" class='{cls}'" if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return sorted({r[key] for r in rows if r.get(key) is not None}, key=lambda v: (str(type(v)), v))


def _header(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The run's configuration: what was run, when, counted how, read by whom."""
    from datetime import UTC, datetime

    from ctxmem.evals.readers import blind_families, reader_description

    status: dict[str, int] = defaultdict(int)
    for r in rows:
        status[str(r["status"])] += 1
    stamps = [float(r["updated_at"]) for r in rows if r.get("updated_at")]
    when = (datetime.fromtimestamp(max(stamps), UTC).strftime("%Y-%m-%d %H:%M UTC") if stamps else "unknown")
    facts: list[tuple[str, str]] = [
        ("cells", f"{len(rows)}: " + ", ".join(f"{v} {k}" for k, v in sorted(status.items()))),
        ("last result", when),
        ("report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("runs", ", ".join(str(x)[:8] for x in _values(rows, "run_id")) or "-"),
        ("tokenizer", ", ".join(_values(rows, "tokenizer"))),
        ("presets", ", ".join(_values(rows, "preset"))),
        ("sources", ", ".join(_values(rows, "source"))),
        ("needle families", ", ".join(_values(rows, "needle"))),
        ("lengths", ", ".join(_fmt_len(int(x)) for x in _values(rows, "length"))),
        ("depths", ", ".join(f"{float(x):.0%}" for x in _values(rows, "depth"))),
        ("trials per cell", str(len(_values(rows, "seed")))),
    ]
    facts += [(str(k), str(v)) for k, v in meta.items()]
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts)
    readers = []
    families = set(_values(rows, "needle"))
    for model in _values(rows, "model"):
        blind = sorted(blind_families(str(model)) & families)
        mark = (f" <strong>Cannot answer: {html.escape(', '.join(blind))}</strong> — those cells are labelled "
                "<code>reader-cannot-answer</code>, not counted as forgetting." if blind else "")
        readers.append(f"<li><code>{html.escape(str(model))}</code>: {html.escape(reader_description(str(model)))}."
                       f"{mark}</li>")
    return (f"<section class='header'><h2>Run</h2><dl>{dl}</dl>"
            f"<h3>Readers (who answered each cell)</h3><ul>{''.join(readers)}</ul></section>")


def _problems(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Refused and errored cells, identical ones folded into one row with a count."""
    folded: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r["status"] == "done":
            continue
        key = (r["status"], r["model"], r["preset"], r["source"], r["needle"], r["length"])
        entry = folded.setdefault(key, {"status": r["status"], "model": r["model"], "preset": r["preset"],
                                        "source": r["source"], "needle": r["needle"],
                                        "length": _fmt_len(int(r["length"])), "cells": 0, "depths": set(),
                                        "reasons": []})
        entry["cells"] += 1
        entry["depths"].add(float(r["depth"]))
        reason = str(r.get("error") or "")
        if reason not in entry["reasons"]:
            entry["reasons"].append(reason)
    out = []
    for e in folded.values():
        e["depths"] = ", ".join(f"{d:.0%}" for d in sorted(e["depths"]))
        reasons = e.pop("reasons")
        # the same refusal differs only in its token count from cell to cell: show one
        e["reason"] = reasons[0] + (f" (and {len(reasons) - 1} similar)" if len(reasons) > 1 else "")
        out.append(e)
    return out


def _samples(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished trial: the needle, where it was, the answer, the attribution."""
    out = []
    for r in scored(rows):
        info = r.get("info") or {}
        placed = [p for p in info.get("placed") or [] if p.get("role") != "distractor"]
        where = ", ".join(f"{float(p['depth']):.0%} (token {p.get('token_offset', '?')})" for p in placed
                          if p.get("depth") is not None)
        out.append({"model": r["model"], "preset": r["preset"], "needle": r["needle"], "source": r["source"],
                    "length": _fmt_len(int(r["length"])), "depth": f"{float(r['depth']):.0%}",
                    "placed at": where or "-", "question": info.get("question", ""),
                    "expected": " | ".join(str(a) for a in info.get("answers") or []) or "(no answer: control)",
                    "answer": str(r.get("response") or "")[:200], "survival": r.get("survival") or "",
                    "fate": r.get("fate") or "", "attribution": r.get("label") or ""})
    return out


_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em;color:#1a1a1a}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:13px;margin:.8em 0}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f3f3;position:sticky;top:0}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:14px}dt{font-weight:600}dd{margin:0}
figure{margin:1em 0}figure.wide img{width:100%;height:auto}figure.chart{display:inline-block;width:49%;
vertical-align:top;margin:.5em 0}figure.chart img{width:100%;height:auto}
figcaption{font-size:13px;color:#444;margin-top:.2em}details{margin:1em 0}summary{cursor:pointer;font-weight:600}
.samples{font-size:12px}@media (max-width:900px){figure.chart{width:100%}}
"""


def _html(title: str, rows: Sequence[Mapping[str, Any]], eff: list[dict[str, Any]],
          figures: list[tuple[str, Path, str]], meta: Mapping[str, Any]) -> str:
    table = cell_table(rows, ("model", "preset", "source", "needle", "length"))
    for t in table:
        t["length"] = _fmt_len(int(t["length"]))
    eff_rows = [
        {"model": e["model"], "preset": e["preset"],
         "RULER (85.6%)": _len_ci(e["ruler"]),
         "NoLiMa (85% of base)": _len_ci(e["nolima"]),
         "base score": e["nolima"]["base_score"]}
        for e in eff
    ]
    problems = _problems(rows)
    samples = _samples(rows)
    judged = [r for r in scored(rows) if r.get("judge") is not None]
    judge_html = ""
    if judged:
        ag = agreement([bool(r["correct"]) for r in judged], [bool(r["judge"]) for r in judged])
        judge_html = (f"<h2>LLM judge vs rule scorer</h2><p>{ag['n']} cells: agreement {ag['agreement']:.3f}, "
                      f"Cohen's kappa {ag['kappa']:.3f}.</p>")

    def fig(t: str, p: Path, kind: str) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return (f"<figure class='{kind}'><img src='data:image/png;base64,{data}' alt='{html.escape(t)}'>"
                f"<figcaption>{html.escape(t)}</figcaption></figure>")

    heat = "".join(fig(t, p, k) for t, p, k in figures if k == "wide" and t.startswith("Accuracy:"))
    deltas = "".join(fig(t, p, k) for t, p, k in figures if k == "wide" and not t.startswith("Accuracy:"))
    charts = "".join(fig(t, p, k) for t, p, k in figures if k == "chart")
    sample_cols = ["model", "preset", "needle", "source", "length", "depth", "placed at", "question", "expected",
                   "answer", "survival", "fate", "attribution"]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>"
        + _header(rows, meta)
        + "<h2>Accuracy by depth × length</h2><p>Each cell: share of trials answered correctly (n = trials). "
        "Grey hatched cells were refused: the request would not fit the reader's window.</p>" + heat
        + ("<h2>Strategy deltas</h2><p>Accuracy of a preset minus the baseline's on the same cells: red lost, "
           "blue gained.</p>" + deltas if deltas else "")
        + "<h2>Accuracy vs length and cost</h2>" + charts
        + "<h2>Effective length</h2><p>Largest tested length at which every tested length up to it meets the "
        "threshold; 95% percentile-bootstrap intervals in brackets. Controls excluded.</p>"
        + _table(eff_rows, ["model", "preset", "RULER (85.6%)", "NoLiMa (85% of base)", "base score"])
        + "<h2>Accuracy per group (Wilson 95%) and miss attribution</h2>"
        + _table(table, ["model", "preset", "source", "needle", "length", "n", "accuracy", "low", "high", "labels"])
        + judge_html
        + ("<h2>Refused and errored cells</h2>"
           + _table(problems, ["status", "model", "preset", "source", "needle", "length", "cells", "depths",
                               "reason"]) if problems else "")
        + f"<h2>Per-sample results</h2><details id='samples'><summary>{len(samples)} trials: the needle, where it "
        "was placed, what the reader answered, and the attribution of each miss</summary>"
        + _table(samples, sample_cols, cls="samples") + "</details>"
        + "</body></html>"
    )


def _len_ci(d: Mapping[str, Any]) -> str:
    def f(x: Any) -> str:
        return "none" if x is None else _fmt_len(int(x))

    return f"{f(d['point'])} [{f(d['low'])}, {f(d['high'])}]"
