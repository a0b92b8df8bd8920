"""Sweeps: strategy presets × budgets on any workload → score, dollars, tokens, latency, Pareto.

Every (preset, budget) cell runs the workload once in **context mode** through the
:class:`~ctxmem.workloads.Workload` protocol — the agent decides only from what the cell's
preset builds at the cell's budget, so a strategy that forgets shows in the workload's own
score (:attr:`~ctxmem.workloads.WorkloadRun.score`, in [0, 1]) — and prices the recorded
session with :func:`ctxmem.tune.replay.replay_cost` (same system prompt and tools as the
run), so dollars, tokens sent, cache hits and the per-turn build latency come from the same
model as ``ctxmem tune cost``. The workload is found by name in the ``ctxmem.workloads``
entry-point group: ``synthetic`` (needle recall on a planted transcript), ``kernel`` (the
kernel agent's recall × (1 − regret) × (1 − waste)), or any plugin; this module imports
none of them.

The Pareto front minimizes dollars and maximizes score. :func:`recommend` picks a cell for
an objective (``max-recall-under-cost<=5``, ``min-cost-at-recall>=0.9``, ``max-recall``,
``min-cost``) and :func:`write_preset` writes it as a preset TOML that
:func:`ctxmem.config.load_preset` validates. :func:`plot_pareto` draws the front (PNG,
matplotlib with the Agg backend, imported only when plotting).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ctxmem.config import load_preset
from ctxmem.errors import ConfigError, CtxmemError, InputError, MissingDependencyError
from ctxmem.tokens.budget import parse_token_size
from ctxmem.tune.prices import Price
from ctxmem.tune.replay import CostReport, replay_cost
from ctxmem.workloads.base import Workload

# ----------------------------------------------------------------------------- sizes


def parse_tokens(text: str) -> int:
    """``32k`` → 32,000, ``1m`` → 1,000,000 (decimal); ``32Ki`` → 32,768; plain integers as is."""
    try:
        return parse_token_size(text)
    except ValueError as exc:
        raise InputError(str(exc), field="budgets") from None


def token_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    if n % 1024 == 0:
        return f"{n // 1024}ki"
    return str(n)


# ----------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One (preset, budget) of a sweep."""

    preset: str
    budget: int
    score: float | None
    dollars: float
    tokens_sent: int
    peak_context: int
    cache_hit_ratio: float
    build_ms_median: float
    turns: int
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.preset}@{token_label(self.budget)}"

    @property
    def ok(self) -> bool:
        return self.error is None and self.score is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "preset": self.preset,
            "budget": self.budget,
            "score": None if self.score is None else round(self.score, 4),
            "dollars": round(self.dollars, 6),
            "tokens_sent": self.tokens_sent,
            "peak_context": self.peak_context,
            "cache_hit_ratio": round(self.cache_hit_ratio, 4),
            "build_ms_median": round(self.build_ms_median, 4),
            "turns": self.turns,
            "metrics": self.metrics,
            "error": self.error,
        }


@dataclass
class SweepResult:
    workload: str
    model: str
    cells: list[Cell]
    session: dict[str, Any]
    objective: str | None = None
    recommendation: Cell | None = None
    preset_path: str | None = None
    plot_path: str | None = None
    #: why no cell met the objective (the results are written all the same)
    unmet: str | None = None
    #: whether the cells were billed with prompt caching (the model has a cache and it was on)
    caching: bool = True
    #: what the score is, in words (the workload's own definition)
    score_label: str = "score"

    def front(self) -> list[Cell]:
        return pareto_front(self.cells)

    def to_json(self) -> dict[str, Any]:
        front = {c.key for c in self.front()}
        return {
            "workload": self.workload,
            "model": self.model,
            "session": self.session,
            "cells": [{**c.to_json(), "pareto": c.key in front} for c in self.cells],
            "front": [c.key for c in self.front()],
            "objective": self.objective,
            "recommendation": self.recommendation.to_json() if self.recommendation else None,
            "preset_path": self.preset_path,
            "plot_path": self.plot_path,
            "objective_unmet": self.unmet,
            "caching": self.caching,
            "score": self.score_label,
        }


def run_workload_cell(
    workload: Workload,
    preset: str,
    budget: int,
    price: Price,
    *,
    seed: int = 0,
    **replay_kwargs: Any,
) -> Cell:
    """One run of ``workload`` in context mode at ``preset`` × ``budget``, scored and priced."""
    from ctxmem.session import Session
    from ctxmem.store import MemoryStore

    store = MemoryStore()
    run = workload.run(store, preset=preset, window=budget, seed=seed, mode="context")
    messages = Session.open(store, run.session_id).messages()
    report: CostReport = replay_cost(messages, preset, price, budget=budget, system=run.system,
                                     tools=tuple(run.tools), **replay_kwargs)
    metrics: dict[str, Any] = {**run.scores, **run.metrics}
    if "wasted_per_100" in metrics:
        metrics.setdefault("waste_per_100", metrics["wasted_per_100"])
    metrics.update(cache_read=report.cache_read, cache_write=report.cache_write, history_tokens=run.history_tokens,
                   session=f"{workload.name} workload in context mode, seed {seed}")
    return _cell(preset, budget, run.score, report, metrics)


def _cell(preset: str, budget: int, score: float | None, report: CostReport, metrics: dict[str, Any]) -> Cell:
    """A sweep cell from a replay's cost report; an overflowing replay has no score."""
    error = f"context overflow at {report.overflow.split(':')[0]}" if report.overflow else None
    return Cell(
        preset=preset, budget=budget, score=None if error else score, dollars=report.dollars,
        tokens_sent=report.tokens_sent, peak_context=report.peak_context, cache_hit_ratio=report.hit_ratio,
        build_ms_median=report.build_ms_median, turns=len(report.turns), metrics=metrics, error=error,
    )


def run_sweep(
    workload: str | Workload,
    presets: Sequence[str],
    budgets: Sequence[int],
    price: Price,
    *,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[Cell], None] | None = None,
    **replay_kwargs: Any,
) -> SweepResult:
    """Every preset × budget on ``workload`` (a registered name, configured from
    ``settings``, or a :class:`~ctxmem.workloads.Workload` object)."""
    from ctxmem.workloads import get_workload

    if not presets or not budgets:
        raise ConfigError("a sweep needs at least one preset and one budget", field="presets")
    wl = get_workload(workload, settings) if isinstance(workload, str) else workload
    wl.check()
    for p in presets:
        load_preset(p)  # fail before any work on a bad name
    for k, b in enumerate(budgets):  # and on a budget that is not a positive whole number of tokens
        if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
            raise ConfigError(
                f"budgets[{k}] is {b!r}: a budget is a positive whole number of tokens (parse_tokens reads '32k')",
                field="budgets",
            )
    cells: list[Cell] = []
    for p in presets:
        for b in budgets:
            try:
                cell = run_workload_cell(wl, p, b, price, seed=seed, **replay_kwargs)
            except CtxmemError as exc:  # e.g. a budget smaller than the preset's reserve allows
                cell = Cell(p, b, None, 0.0, 0, 0, 0.0, 0.0, 0, error=str(exc))
            except Exception as exc:  # a workload's own bug: this cell fails, the cells done are kept
                cell = Cell(p, b, None, 0.0, 0, 0, 0.0, 0.0, 0,
                            error=f"the workload raised {type(exc).__name__}: {' '.join(str(exc).split())}")
            cells.append(cell)
            if progress is not None:
                progress(cell)
    session: dict[str, Any] = {"workload": wl.name, "settings": wl.config.model_dump(mode="json"), "seed": seed,
                               "mode": "context"}
    caching = bool(replay_kwargs.get("caching", True)) and price.caches
    return SweepResult(wl.name, price.name, cells, session, caching=caching, score_label=score_label(wl))


#: the score of the workloads ctxmem ships, in words (a plugin may declare ``score_label``)
_SCORE_LABELS = {
    "synthetic": "needle recall",
    "kernel": "recall × (1 − regret) × (1 − waste)",
}


def score_label(workload: Workload | str) -> str:
    """What a workload's sweep score is: its ``score_label`` attribute when it declares one,
    else the definition of a shipped workload, else "score (NAME's own, 0–1)"."""
    declared = None if isinstance(workload, str) else getattr(workload, "score_label", None)
    if isinstance(declared, str) and declared:
        return declared
    name = workload if isinstance(workload, str) else str(getattr(workload, "name", "workload"))
    return _SCORE_LABELS.get(name, f"score ({name}'s own, 0–1)")


# ----------------------------------------------------------------------------- Pareto, objectives


def pareto_front(cells: Sequence[Cell]) -> list[Cell]:
    """Cells no other cell beats on both axes (lower dollars, higher score), cheapest first."""
    ok = [c for c in cells if c.ok]
    front = []
    for n, c in enumerate(ok):
        assert c.score is not None
        # Ties on both axes keep one cell: the smallest budget (then the first listed).
        dominated = any(
            o is not c and o.score is not None and o.dollars <= c.dollars and o.score >= c.score
            and (o.dollars < c.dollars or o.score > c.score or (o.budget, m) < (c.budget, n))
            for m, o in enumerate(ok)
        )
        if not dominated:
            front.append(c)
    return sorted(front, key=lambda c: (c.dollars, -(c.score or 0.0)))


@dataclass(frozen=True)
class Objective:
    kind: Literal["max-score-under-cost", "min-cost-at-score", "max-score", "min-cost"]
    limit: float | None = None
    text: str = ""


_OBJ = re.compile(
    r"^(?P<kind>max-(?:recall|score)-under-cost|min-cost-at-(?:recall|score)|max-(?:recall|score)|min-cost)"
    r"\s*(?:(?:<=|>=|=|:)\s*(?P<limit>\S+))?$"
)


def parse_objective(text: str) -> Objective:
    """``max-recall-under-cost<=5``, ``min-cost-at-recall>=0.9``, ``max-recall``, ``min-cost``."""
    m = _OBJ.match(text.strip())
    usage = ("use max-recall-under-cost<=DOLLARS, min-cost-at-recall>=SCORE, max-recall or min-cost "
             "('score' may replace 'recall')")
    if not m:
        raise InputError(f"unknown objective {text!r}; {usage}", field="objective")
    kind = m.group("kind").replace("recall", "score")
    limit = None
    if m.group("limit"):
        try:
            limit = float(m.group("limit"))
        except ValueError:
            limit = math.nan
        if not math.isfinite(limit) or (kind == "max-score-under-cost" and limit < 0):
            bound = "a score" if kind == "min-cost-at-score" else "a dollar amount, 0 or more"
            raise InputError(f"objective {text!r}: the limit {m.group('limit')!r} is not {bound}", field="objective")
    if kind in ("max-score-under-cost", "min-cost-at-score") and limit is None:
        raise InputError(f"objective {text!r} needs a limit; {usage}", field="objective")
    if kind in ("max-score", "min-cost") and limit is not None:
        raise InputError(f"objective {text!r} takes no limit; {usage}", field="objective")
    return Objective(kind, limit, text.strip())  # type: ignore[arg-type]


def recommend(cells: Sequence[Cell], objective: Objective | str) -> Cell:
    """The cell that best meets the objective (ties: cheaper, then higher score, then smaller budget)."""
    obj = parse_objective(objective) if isinstance(objective, str) else objective
    ok = [c for c in cells if c.ok]
    if not ok:
        raise ConfigError("no cell of the sweep completed; nothing to recommend", field="objective")

    def cheap(c: Cell) -> tuple[float, float, int]:
        return (c.dollars, -(c.score or 0.0), c.budget)

    def good(c: Cell) -> tuple[float, float, int]:
        return (-(c.score or 0.0), c.dollars, c.budget)

    if obj.kind == "max-score":
        return min(ok, key=good)
    if obj.kind == "min-cost":
        return min(ok, key=cheap)
    assert obj.limit is not None
    if obj.kind == "max-score-under-cost":
        fit = [c for c in ok if c.dollars <= obj.limit]
        if not fit:
            cheapest = min(ok, key=cheap)
            raise ConfigError(f"no cell costs ≤ ${obj.limit:g}; the cheapest is {cheapest.key} at "
                              f"${cheapest.dollars:.4f}. Raise the limit.", field="objective")
        return min(fit, key=good)
    fit = [c for c in ok if (c.score or 0.0) >= obj.limit]
    if not fit:
        best = min(ok, key=good)
        raise ConfigError(f"no cell reaches a score ≥ {obj.limit:g}; the best is {best.key} at {best.score:.3f}. "
                          "Lower the target or add larger budgets.", field="objective")
    return min(fit, key=cheap)


# ----------------------------------------------------------------------------- preset output


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {type(v).__name__} values to a preset", field="params")


def to_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """A small TOML writer for preset documents (scalars, lists, nested tables)."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, Mapping)]
    for k, v in data.items():
        if isinstance(v, Mapping):
            name = f"{_prefix}.{_toml_key(k)}" if _prefix else _toml_key(k)
            body = to_toml(v, name)
            lines.append("")
            lines.append(f"[{name}]")
            if body:
                lines.append(body)
    return "\n".join(lines).strip("\n")


def write_preset(cell: Cell, out_dir: str | Path, *, workload: str, objective: str, model: str) -> Path:
    """Write the recommended cell as a preset TOML and validate it with ``load_preset``."""
    base = load_preset(cell.preset)
    budget = base.budget(cell.budget)
    # the preset's name (a file's stem), not what was typed: a path would name a folder here
    name = f"tuned-{workload}-{base.name}-{token_label(cell.budget)}"
    doc: dict[str, Any] = {
        "description": (
            f"{base.description} — tuned: {cell.preset} at {token_label(cell.budget)} for {objective} on the "
            f"{workload} workload (score {cell.score:.3f}, ${cell.dollars:.4f} with {model})"
        ),
        "type": base.type,
        "tokenizer": base.model.tokenizer,
        "pinned": base.model.pinned,
        "budget": {"context_window": budget.context_window, "reserve_output": budget.reserve_output,
                   "threshold": budget.threshold},
        "params": dict(base.model.params),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.toml"
    header = f"# Written by `ctxmem tune sweep` (workload {workload}, objective {objective}).\n"
    path.write_text(header + to_toml(doc) + "\n", encoding="utf-8")
    load_preset(path)  # validates: type, params, budget
    return path


# ----------------------------------------------------------------------------- plot


def plot_pareto(result: SweepResult, path: str | Path) -> Path:
    """Score vs dollars for every cell, the Pareto front as a line, the pick starred (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "plots", "Plotting the Pareto front") from None
    cells = [c for c in result.cells if c.ok]
    front = result.front()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    presets = sorted({c.preset for c in cells})
    cmap = plt.get_cmap("tab10")
    budgets = sorted({c.budget for c in cells}) or [1]
    for k, p in enumerate(presets):
        pts = [c for c in cells if c.preset == p]
        ax.scatter([c.dollars for c in pts], [c.score or 0.0 for c in pts], color=cmap(k % 10), label=p, alpha=0.8,
                   s=[30 + 90 * budgets.index(c.budget) / max(1, len(budgets) - 1) for c in pts])
        for c in pts:
            ax.annotate(token_label(c.budget), (c.dollars, c.score or 0.0), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    if front:
        ax.step([c.dollars for c in front], [c.score or 0.0 for c in front], where="post", color="black", lw=1,
                label="Pareto front")
    if result.recommendation is not None and result.recommendation.ok:
        r = result.recommendation
        ax.scatter([r.dollars], [r.score or 0.0], marker="*", s=300, facecolor="none", edgecolor="red", lw=1.5,
                   label=f"pick: {r.key}")
    dollars = [c.dollars for c in cells if c.dollars > 0]
    if dollars and max(dollars) / min(dollars) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(f"dollars per session ({result.model}, "
                  f"{'prompt caching' if result.caching else 'no prompt caching'})")
    ax.set_ylabel(result.score_label)
    ax.set_title(f"ctxmem tune sweep: {result.workload} — presets × budgets"
                 + (f" (objective {result.objective})" if result.objective else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def sweep_to_dir(
    workload: str | Workload,
    presets: Sequence[str],
    budgets: Sequence[int],
    price: Price,
    out_dir: str | Path,
    *,
    objective: str | None = None,
    plot: bool = True,
    **kwargs: Any,
) -> SweepResult:
    """Run a sweep and write ``sweep.json``, ``pareto.png`` and the recommended preset to ``out_dir``.

    The cells are written whatever the objective says: a sweep is expensive (a kernel cell
    runs a whole agent), so when no cell meets the objective ``result.unmet`` says why and
    only the recommended preset is missing.
    """
    obj = parse_objective(objective) if objective else None  # reject a bad objective before the work
    result = run_sweep(workload, presets, budgets, price, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if obj is not None:
        result.objective = obj.text
    # The cells first: a failure writing the preset or the plot must not lose the sweep.
    _write_json(result, out)
    if obj is not None:
        result.objective = obj.text
        try:
            result.recommendation = recommend(result.cells, obj)
        except ConfigError as exc:
            result.unmet = str(exc).removeprefix("field 'objective': ")
        else:
            result.preset_path = str(write_preset(result.recommendation, out, workload=result.workload,
                                                  objective=obj.text, model=price.name))
    if plot:
        result.plot_path = str(plot_pareto(result, out / "pareto.png"))
    _write_json(result, out)  # again, with the recommendation and the plot
    return result


def _write_json(result: SweepResult, out: Path) -> None:
    (out / "sweep.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")


__all__ = [
    "Cell",
    "Objective",
    "SweepResult",
    "pareto_front",
    "parse_objective",
    "parse_tokens",
    "plot_pareto",
    "recommend",
    "run_sweep",
    "run_workload_cell",
    "score_label",
    "sweep_to_dir",
    "to_toml",
    "token_label",
    "write_preset",
]
