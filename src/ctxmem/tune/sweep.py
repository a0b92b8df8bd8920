"""Sweeps: strategy presets × budgets on a workload → score, dollars, tokens, latency, Pareto.

Every (preset, budget) cell replays one session with :func:`ctxmem.tune.replay.replay_cost`
(so dollars, tokens sent, cache hits and the per-turn build latency come from the same
model as ``ctxmem tune cost``) and scores it with probes run on the contexts the strategy
actually built:

``needles``
    Session needles: unguessable facts (``needle-3: the calibration key is 5f0c…``)
    planted at fixed depths in the tool results of a synthetic session. At probe points
    (half-way, three quarters, the last turn) each needle planted earlier either survives
    verbatim in the built context or not. Score = recall over (needle, probe) pairs; the
    cell also reports recall by needle depth at the last turn.
``kernel``
    The kernel-optimization workload (:mod:`ctxmem.workloads.kernel`) run for real in
    **context mode** once per cell: the scripted policy decides only from the context the
    cell's preset builds at the cell's budget (:func:`ctxmem.workloads.kernel.run.run_scripted`,
    ``scale="small"`` by default), so a strategy that forgets the shared-memory limit or a
    diagnosed bug makes the agent waste evaluations. The cell is scored with the workload's
    own scores (:mod:`ctxmem.workloads.kernel.scores`): ``wasted_per_100``, ``regret``
    (best seen vs submitted speedup), probe ``recall``, final speedup — all in the cell's
    metrics. The Pareto score is ``recall × (1 − regret) × (1 − wasted_per_100 / 100)``:
    the fraction of facts still answerable, discounted by what forgetting cost the run.
    Dollars, tokens and cache hits come from replaying the recorded session with
    :func:`ctxmem.tune.replay.replay_cost` (same system prompt and tools), like every
    other workload.

A fact counts as visible when its message is in the built context unchanged (identity with
the history's message), or when its exact text appears in a message the strategy rewrote
(a masked placeholder whose reducer kept the line, a summary).

The Pareto front minimizes dollars and maximizes score. :func:`recommend` picks a cell for
an objective (``max-recall-under-cost<=5``, ``min-cost-at-recall>=0.9``, ``max-recall``,
``min-cost``) and :func:`write_preset` writes it as a preset TOML that
:func:`ctxmem.config.load_preset` validates. :func:`plot_pareto` draws the front (PNG,
matplotlib with the Agg backend, imported only when plotting).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ctxmem.config import load_preset
from ctxmem.context import BuiltContext, History
from ctxmem.errors import ConfigError, InputError, MissingDependencyError
from ctxmem.messages import Message, ToolResultBlock, message_texts
from ctxmem.samples import synthetic_session
from ctxmem.tune.prices import Price
from ctxmem.tune.replay import CostReport, TurnContext, replay_cost

Workload = Literal["needles", "kernel"]
WORKLOADS: tuple[str, ...] = ("needles", "kernel")
NEEDLE_DEPTHS: tuple[float, ...] = (0.02, 0.1, 0.25, 0.4, 0.6)
PROBE_POINTS: tuple[float, ...] = (0.5, 0.75, 1.0)


# ----------------------------------------------------------------------------- sizes


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]i?)?\s*$")


def parse_tokens(text: str) -> int:
    """``32k`` → 32,000, ``1m`` → 1,000,000 (decimal); ``32Ki`` → 32,768; plain integers as is."""
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"not a token count: {text!r} (use e.g. 32k, 128000, 1m, 32Ki)", field="budgets")
    value = float(m.group(1))
    unit = (m.group(2) or "").lower()
    mult = {"": 1, "k": 1000, "m": 1_000_000, "ki": 1024, "mi": 1024**2}[unit]
    n = int(value * mult)
    if n <= 0:
        raise InputError(f"a budget must be positive: {text!r}", field="budgets")
    return n


def token_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    if n % 1024 == 0:
        return f"{n // 1024}ki"
    return str(n)


# ----------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class Fact:
    """A text that should stay visible: where it entered the history, and its label."""

    message_index: int
    text: str
    label: str
    depth: float = 0.0


def plant_needles(
    messages: Sequence[Message], *, seed: int = 0, depths: Sequence[float] = NEEDLE_DEPTHS
) -> tuple[list[Message], list[Fact]]:
    """Append one unguessable needle line to the first tool result at or after each depth."""
    rng = random.Random(f"needles-{seed}")
    out = list(messages)
    facts: list[Fact] = []
    n = len(out)
    used: set[int] = set()
    for k, d in enumerate(depths):
        start = min(n - 1, max(1, int(d * n)))
        idx = next((i for i in range(start, n) if i not in used and any(
            isinstance(b, ToolResultBlock) for b in out[i].content)), None)
        if idx is None:
            continue
        used.add(idx)
        needle = f"needle-{k}: the calibration key is {rng.getrandbits(64):016x}"
        blocks = list(out[idx].content)
        j = next(j for j, b in enumerate(blocks) if isinstance(b, ToolResultBlock))
        b = blocks[j]
        assert isinstance(b, ToolResultBlock)
        blocks[j] = ToolResultBlock(b.tool_use_id, b.text + "\n" + needle, b.is_error)
        out[idx] = Message(out[idx].role, tuple(blocks))
        facts.append(Fact(idx, needle, f"needle-{k}", depth=d))
    return out, facts


_FACT_PATTERNS = (
    ("limit", re.compile(r"^.*Hardware limit: \d+.*$", re.M)),
    ("speedup", re.compile(r"^geomean speedup: .*$", re.M)),
    ("error", re.compile(r"^.*(?:CompilationError|NameError): .*$", re.M)),
)


def kernel_facts(messages: Sequence[Message]) -> list[Fact]:
    """The natural facts of a kernel session's tool outputs (limits, speedups, errors)."""
    facts: list[Fact] = []
    n = max(1, len(messages))
    for i, m in enumerate(messages):
        for b in m.content:
            if not isinstance(b, ToolResultBlock):
                continue
            text = b.text
            for label, pat in _FACT_PATTERNS:
                for hit in pat.finditer(text):
                    facts.append(Fact(i, hit.group(0), label, depth=i / n))
    return facts


class Visibility:
    """Is a fact visible in a built context? Identity with the history message, else text."""

    def __init__(self, history: History, built: BuiltContext):
        self.history = history
        self.ids = {id(m) for m in built.messages}
        hist_ids = {id(m) for m in history.messages}
        self._rewritten = [m for m in built.messages if id(m) not in hist_ids]
        self._text: str | None = None

    def __call__(self, fact: Fact) -> bool:
        if fact.message_index < len(self.history) and id(self.history.messages[fact.message_index]) in self.ids:
            return True
        if self._text is None:
            self._text = "\n".join(t for m in self._rewritten for t in message_texts(m))
        return fact.text in self._text


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


class _NeedleProbe:
    def __init__(self, facts: list[Fact], probe_turns: set[int], last_turn: int):
        self.facts = facts
        self.probe_turns = probe_turns
        self.last_turn = last_turn
        self.hits: list[bool] = []
        self.final: dict[str, bool] = {}

    def __call__(self, tc: TurnContext) -> None:
        if tc.turn not in self.probe_turns:
            return
        vis = Visibility(tc.history, tc.built)
        for f in self.facts:
            if f.message_index < tc.message_index:
                seen = vis(f)
                self.hits.append(seen)
                if tc.turn == self.last_turn:
                    self.final[f.label] = seen

    def score(self) -> float | None:
        return sum(self.hits) / len(self.hits) if self.hits else None

    def metrics(self, facts: list[Fact]) -> dict[str, Any]:
        return {
            "probes": len(self.hits),
            "recall_by_depth": {f"{f.depth:g}": self.final.get(f.label) for f in facts},
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
        }


def _session_for(workload: str, turns: int, seed: int, output_scale: float) -> tuple[list[Message], list[Fact]]:
    if workload != "needles":
        raise ConfigError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}", field="workload")
    return plant_needles(synthetic_session(turns, seed, output_scale=output_scale), seed=seed)


def kernel_score(scores: Mapping[str, Any]) -> float | None:
    """The Pareto score of a kernel run: recall × (1 − regret) × (1 − wasted_per_100 / 100)."""
    recall = scores.get("recall")
    if recall is None:
        return None
    return float(recall) * (1.0 - float(scores.get("regret") or 0.0)) * (
        1.0 - float(scores.get("wasted_per_100") or 0.0) / 100.0)


def run_kernel_cell(
    preset: str,
    budget: int,
    price: Price,
    *,
    seed: int = 0,
    scale: str = "small",
    max_calls: int | None = None,
    **replay_kwargs: Any,
) -> Cell:
    """One real kernel-workload run in context mode at ``preset`` × ``budget``, scored and priced."""
    from ctxmem.session import Session
    from ctxmem.store import MemoryStore
    from ctxmem.workloads.kernel.kernel_tools import kernel_tool_specs
    from ctxmem.workloads.kernel.run import SYSTEM, run_scripted

    if scale not in ("small", "full"):
        raise ConfigError(f"unknown kernel scale {scale!r}; choose small or full", field="scale")
    store = MemoryStore()
    run = run_scripted(store, seed=seed, mode="context", preset=preset, scale=scale,  # type: ignore[arg-type]
                       max_calls=max_calls, window=budget)
    messages = Session.open(store, run.session_id).messages()
    report: CostReport = replay_cost(messages, preset, price, budget=budget, system=SYSTEM,
                                     tools=tuple(kernel_tool_specs()), **replay_kwargs)
    sc = run.scores
    keep = ("final_speedup", "best_seen", "regret", "tool_calls", "evaluations", "wasted", "wasted_per_100",
            "limit_violations", "repeated_config", "over_known_limit", "reintroduced_bug", "probes", "recall",
            "answered", "recall_by_distance", "heldout_passed")
    metrics: dict[str, Any] = {k: sc.get(k) for k in keep}
    metrics["waste_per_100"] = sc.get("wasted_per_100")
    metrics.update(cache_read=report.cache_read, cache_write=report.cache_write, history_tokens=run.history_tokens,
                   session=f"kernel workload, scripted policy in context mode, scale {scale}, seed {seed}")
    return _cell(preset, budget, kernel_score(sc), report, metrics)


def run_cell(
    workload: str,
    messages: Sequence[Message],
    facts: list[Fact],
    preset: str,
    budget: int,
    price: Price,
    **replay_kwargs: Any,
) -> Cell:
    """Replay one (preset, budget) of the needles workload with its probes and score it."""
    if workload != "needles":
        raise ConfigError(f"run_cell replays the needles workload; got {workload!r} (kernel cells: run_kernel_cell)",
                          field="workload")
    n_turns = sum(1 for m in messages[1:] if m.role == "assistant")
    probe_turns = {max(0, round(f * n_turns) - 1) for f in PROBE_POINTS}
    probe = _NeedleProbe(facts, probe_turns, n_turns - 1)
    report: CostReport = replay_cost(messages, preset, price, budget=budget, on_build=probe, **replay_kwargs)
    score = probe.score()
    metrics = probe.metrics(facts)
    metrics["cache_read"] = report.cache_read
    metrics["cache_write"] = report.cache_write
    return _cell(preset, budget, score, report, metrics)


def _cell(preset: str, budget: int, score: float | None, report: CostReport, metrics: dict[str, Any]) -> Cell:
    """A sweep cell from a replay's cost report; an overflowing replay has no score."""
    error = f"context overflow at {report.overflow.split(':')[0]}" if report.overflow else None
    return Cell(
        preset=preset, budget=budget, score=None if error else score, dollars=report.dollars,
        tokens_sent=report.tokens_sent, peak_context=report.peak_context, cache_hit_ratio=report.hit_ratio,
        build_ms_median=report.build_ms_median, turns=len(report.turns), metrics=metrics, error=error,
    )


def run_sweep(
    workload: str,
    presets: Sequence[str],
    budgets: Sequence[int],
    price: Price,
    *,
    turns: int = 300,
    seed: int = 0,
    output_scale: float = 1.0,
    kernel_scale: str = "small",
    kernel_calls: int | None = None,
    progress: Callable[[Cell], None] | None = None,
    **replay_kwargs: Any,
) -> SweepResult:
    """Every preset × budget on the workload (``turns``/``output_scale``: needles session;
    ``kernel_scale``/``kernel_calls``: the kernel runs)."""
    if not presets or not budgets:
        raise ConfigError("a sweep needs at least one preset and one budget", field="presets")
    if workload not in WORKLOADS:
        raise ConfigError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}", field="workload")
    if workload == "kernel" and kernel_scale not in ("small", "full"):
        raise ConfigError(f"unknown kernel scale {kernel_scale!r}; choose small or full", field="kernel_scale")
    for p in presets:
        load_preset(p)  # fail before any work on a bad name
    messages: list[Message] = []
    facts: list[Fact] = []
    if workload == "needles":
        messages, facts = _session_for(workload, turns, seed, output_scale)
        if not facts:
            raise InputError(
                f"the {workload} session (turns={turns}, output_scale={output_scale:g}) has no facts to probe; "
                "use more turns or output_scale=1 (scaling down cuts the lines the probes look for)",
                field="turns",
            )
    cells: list[Cell] = []
    for p in presets:
        for b in budgets:
            try:
                if workload == "kernel":
                    cell = run_kernel_cell(p, b, price, seed=seed, scale=kernel_scale, max_calls=kernel_calls,
                                           **replay_kwargs)
                else:
                    cell = run_cell(workload, messages, facts, p, b, price, **replay_kwargs)
            except ConfigError as exc:  # e.g. a budget smaller than the preset's reserve allows
                cell = Cell(p, b, None, 0.0, 0, 0, 0.0, 0.0, 0, error=str(exc))
            cells.append(cell)
            if progress is not None:
                progress(cell)
    if workload == "kernel":
        session: dict[str, Any] = {"generator": "ctxmem.workloads.kernel.run.run_scripted (context mode)",
                                   "scale": kernel_scale, "max_calls": kernel_calls, "seed": seed}
    else:
        session = {"generator": "ctxmem.samples.synthetic_session", "turns": turns, "seed": seed,
                   "output_scale": output_scale, "messages": len(messages), "facts": len(facts)}
    return SweepResult(workload, price.name, cells, session)


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
    r"\s*(?:(?:<=|>=|=|:)\s*(?P<limit>[0-9.eE+-]+))?$"
)


def parse_objective(text: str) -> Objective:
    """``max-recall-under-cost<=5``, ``min-cost-at-recall>=0.9``, ``max-recall``, ``min-cost``."""
    m = _OBJ.match(text.strip())
    usage = ("use max-recall-under-cost<=DOLLARS, min-cost-at-recall>=SCORE, max-recall or min-cost "
             "('score' may replace 'recall')")
    if not m:
        raise InputError(f"unknown objective {text!r}; {usage}", field="objective")
    kind = m.group("kind").replace("recall", "score")
    limit = float(m.group("limit")) if m.group("limit") else None
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
    name = f"tuned-{workload}-{cell.preset}-{token_label(cell.budget)}"
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
    ax.set_xlabel(f"dollars per session ({result.model}, prompt caching)")
    ax.set_ylabel("recall" if result.workload == "needles" else "recall × (1 − regret) × (1 − waste)")
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
    workload: str,
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
        try:
            result.recommendation = recommend(result.cells, obj)
        except ConfigError as exc:
            result.unmet = str(exc).removeprefix("field 'objective': ")
        else:
            result.preset_path = str(write_preset(result.recommendation, out, workload=workload,
                                                  objective=obj.text, model=price.name))
    if plot:
        result.plot_path = str(plot_pareto(result, out / "pareto.png"))
    (out / "sweep.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    return result


__all__ = [
    "NEEDLE_DEPTHS",
    "PROBE_POINTS",
    "WORKLOADS",
    "Cell",
    "Fact",
    "Objective",
    "SweepResult",
    "Visibility",
    "kernel_facts",
    "kernel_score",
    "pareto_front",
    "parse_objective",
    "parse_tokens",
    "plant_needles",
    "plot_pareto",
    "recommend",
    "run_cell",
    "run_kernel_cell",
    "run_sweep",
    "sweep_to_dir",
    "to_toml",
    "token_label",
    "write_preset",
]
