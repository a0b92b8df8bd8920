"""Sweeps: ≥ 4 presets × 4 budgets write a Pareto plot and a recommended preset that validates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctxmem.config import load_preset
from ctxmem.errors import ConfigError, InputError
from ctxmem.tune.prices import load_prices
from ctxmem.tune.sweep import (
    Cell,
    pareto_front,
    parse_objective,
    parse_tokens,
    recommend,
    sweep_to_dir,
    to_toml,
)
from ctxmem.workloads.kernel.workload import kernel_score
from ctxmem.workloads.synthetic.workload import plant_needles

PRESETS = ["dump-truncate-200k", "window-200k", "masking-200k", "masking-turns-128k"]
BUDGETS = [6_000, 12_000, 24_000, 96_000]


def _cell(preset: str, budget: int, score: float | None, dollars: float) -> Cell:
    return Cell(preset, budget, score, dollars, 0, 0, 0.0, 0.0, 1)


@pytest.mark.parametrize("workload", ["synthetic"])
def test_sweep_writes_plot_json_and_a_valid_recommended_preset(tmp_path: Path, workload: str) -> None:
    price = load_prices(user=False).get("claude-sonnet-4-5")
    result = sweep_to_dir(workload, PRESETS, BUDGETS, price, tmp_path, objective="max-recall", seed=2,
                          settings={"turns": 50})
    assert len(result.cells) == 16
    ok = [c for c in result.cells if c.ok]
    assert len(ok) >= 12
    for c in ok:
        assert c.score is not None and 0.0 <= c.score <= 1.0
        assert c.dollars > 0 and c.tokens_sent > 0 and c.build_ms_median > 0
        assert c.peak_context <= c.budget
    png = Path(result.plot_path or "")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert len(data["cells"]) == 16 and data["front"]
    rec = result.recommendation
    assert rec is not None and rec.score == max(c.score or 0 for c in ok)
    preset = load_preset(result.preset_path or "")
    assert preset.type == load_preset(rec.preset).type
    assert preset.budget().context_window == rec.budget
    assert preset.model.params == load_preset(rec.preset).model.params
    assert preset.strategy() is not None
    # the largest budget keeps the whole (small) session: every needle survives verbatim
    assert max(c.score or 0 for c in ok if c.budget == 96_000) == 1.0
    # and the smallest window forgets early needles
    small = next(c for c in ok if c.preset == "window-200k" and c.budget == 6_000)
    assert (small.score or 0) < 1.0


def test_kernel_sweep_runs_the_real_workload_in_context_mode(tmp_path: Path) -> None:
    """2 presets × 2 budgets of real kernel-workload runs (30 calls each), scored with the
    workload's waste, regret and recall; Pareto plot and a preset that validates."""
    price = load_prices(user=False).get("claude-sonnet-4-5")
    result = sweep_to_dir("kernel", ["window-32k", "masking-turns-128k"], [6_000, 32_000], price, tmp_path,
                          objective="max-recall", settings={"max_calls": 30})
    assert len(result.cells) == 4 and all(c.ok for c in result.cells)
    assert result.session["workload"] == "kernel" and result.session["settings"]["max_calls"] == 30
    for c in result.cells:
        m = c.metrics
        for k in ("wasted_per_100", "regret", "recall", "final_speedup", "evaluations"):
            assert m[k] is not None, k
        assert c.score == pytest.approx(kernel_score(m))
        assert 0.0 <= (c.score or 0) <= 1.0 and 0 < m["tool_calls"] <= 30
        assert c.dollars > 0 and c.peak_context <= c.budget
    by = {(c.preset, c.budget): c for c in result.cells}
    # the policy decides from the built context: a 6k window forgets facts a 32k one keeps
    assert by["window-32k", 6_000].metrics["recall"] < by["window-32k", 32_000].metrics["recall"]
    assert by["window-32k", 6_000].tokens_sent < by["window-32k", 32_000].tokens_sent
    assert Path(result.plot_path or "").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = result.recommendation
    assert rec is not None and rec.score == max(c.score or 0 for c in result.cells)
    preset = load_preset(result.preset_path or "")
    assert preset.budget().context_window == rec.budget and preset.type == load_preset(rec.preset).type


def test_kernel_score_discounts_recall_by_regret_and_waste() -> None:
    assert kernel_score({"recall": 1.0, "regret": 0.0, "wasted_per_100": 0.0}) == 1.0
    assert kernel_score({"recall": 0.8, "regret": 0.5, "wasted_per_100": 25.0}) == pytest.approx(0.8 * 0.5 * 0.75)
    assert kernel_score({"recall": None, "regret": 0.0, "wasted_per_100": 0.0}) is None


def test_pareto_front_is_exactly_the_non_dominated_cells() -> None:
    cells = [
        _cell("a", 1, 0.5, 1.0),
        _cell("b", 1, 0.9, 2.0),
        _cell("c", 1, 0.4, 1.5),  # dominated by a
        _cell("d", 1, 1.0, 5.0),
        _cell("e", 1, 0.9, 3.0),  # dominated by b
        _cell("f", 1, None, 0.1),  # failed cell: never on the front
        _cell("g", 2, 0.5, 1.0),  # ties with a at a larger budget
    ]
    assert [c.preset for c in pareto_front(cells)] == ["a", "b", "d"]


def test_objectives() -> None:
    cells = [_cell("a", 1, 0.5, 1.0), _cell("b", 1, 0.9, 2.0), _cell("d", 1, 1.0, 5.0)]
    assert recommend(cells, "min-cost-at-recall>=0.9").preset == "b"
    assert recommend(cells, "max-recall-under-cost<=4").preset == "b"
    assert recommend(cells, "max-recall-under-cost:1.5").preset == "a"
    assert recommend(cells, "max-score").preset == "d"
    assert recommend(cells, "min-cost").preset == "a"
    with pytest.raises(ConfigError, match=r"no cell reaches a score ≥ 1\.1"):
        recommend(cells, "min-cost-at-recall>=1.1")
    with pytest.raises(ConfigError, match=r"no cell costs ≤ \$0.5; the cheapest is a@1"):
        recommend(cells, "max-recall-under-cost<=0.5")
    for bad in ("fastest", "min-cost-at-recall", "max-recall<=3"):
        with pytest.raises(InputError):
            parse_objective(bad)
    # a limit that is not a number: one error naming it (was a bare ValueError, or "unknown objective")
    for bad in ("max-recall-under-cost<=1-2", "min-cost-at-recall>=..", "max-recall-under-cost<=nan",
                "max-recall-under-cost<=-1"):
        with pytest.raises(InputError, match=r"the limit .* is not a") as exc:
            parse_objective(bad)
        assert exc.value.field == "objective"


def test_budget_parsing_and_needles() -> None:
    assert [parse_tokens(x) for x in ("32k", "1m", "128000", "32Ki")] == [32_000, 1_000_000, 128_000, 32_768]
    with pytest.raises(InputError):
        parse_tokens("big")
    from ctxmem.samples import synthetic_session

    msgs = synthetic_session(40, seed=1)
    planted, facts = plant_needles(msgs, seed=1)
    assert len(facts) == 5 and len(planted) == len(msgs)
    for f in facts:
        assert f.text in planted[f.message_index].content[0].text  # type: ignore[union-attr]
        assert planted[f.message_index] is not msgs[f.message_index]


def test_toml_writer_round_trips() -> None:
    import tomllib

    doc = {"description": 'say "hi" — ok', "type": "masking", "budget": {"context_window": 1, "threshold": 0.9},
           "params": {"keep_last": 3, "reversible": True, "tools": {"compile": {"reducer": "first_error"}},
                      "odd key": [1, 2]}}
    assert tomllib.loads(to_toml(doc)) == doc


def test_bad_sweeps_fail_before_work(tmp_path: Path) -> None:
    price = load_prices(user=False).get("claude-sonnet-4-5")
    with pytest.raises(InputError, match="unknown objective"):
        sweep_to_dir("synthetic", PRESETS, BUDGETS, price, tmp_path, objective="best")
    with pytest.raises(ConfigError, match="unknown preset 'windw-200k'"):
        sweep_to_dir("synthetic", ["windw-200k"], BUDGETS, price, tmp_path)
    with pytest.raises(ConfigError, match="unknown workload"):
        sweep_to_dir("niah", PRESETS, BUDGETS, price, tmp_path)
    # a bad budget late in the list: refused before the first cell runs (it ran the cells
    # before it, then threw them away with an error naming context_window)
    from ctxmem.tune.sweep import run_sweep

    ran: list[str] = []
    for bad in (0, -5, "8k", 8000.5, True):
        with pytest.raises(ConfigError, match=r"budgets\[1\] is .*positive whole number") as exc:
            run_sweep("synthetic", PRESETS, [8000, bad], price, settings={"turns": 6}, progress=lambda c: ran.append(c.key))  # type: ignore[list-item]
        assert exc.value.field == "budgets"
    assert ran == []


def test_import_ctxmem_tune_loads_neither_numpy_nor_matplotlib() -> None:
    code = ("import sys, ctxmem, ctxmem.tune, ctxmem.cli.tune; "
            "print(sorted(m for m in ('numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_preset_given_as_a_path_wins_and_is_written_under_its_name(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "strategies" / "window-32k.toml"
    (tmp_path / "presets").mkdir()
    mine = tmp_path / "presets" / "mywin.toml"
    mine.write_text(src.read_text())
    price = load_prices(user=False).get("claude-sonnet-4-5")
    out = tmp_path / "out"
    result = sweep_to_dir("synthetic", [str(mine)], [8_000], price, out, objective="max-recall",
                          settings={"turns": 12}, plot=False)
    assert result.preset_path == str(out / "tuned-synthetic-mywin-8k.toml")
    assert load_preset(result.preset_path).budget().context_window == 8_000
    assert json.loads((out / "sweep.json").read_text())["preset_path"] == result.preset_path


def test_sweep_json_is_written_before_the_optional_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctxmem.tune.sweep as sweep_mod

    def broken(*a: object, **k: object) -> Path:
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "pareto.png"))

    monkeypatch.setattr(sweep_mod, "plot_pareto", broken)
    price = load_prices(user=False).get("claude-sonnet-4-5")
    with pytest.raises(OSError):
        sweep_to_dir("synthetic", ["window-32k"], [8_000], price, tmp_path / "out", objective="max-recall",
                     settings={"turns": 12})
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert len(data["cells"]) == 1 and data["objective"] == "max-recall"


def test_pareto_labels_follow_the_score_and_the_caching_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    labels: dict[str, str] = {}
    orig_x, orig_y = matplotlib.axes.Axes.set_xlabel, matplotlib.axes.Axes.set_ylabel

    def set_x(self: object, text: str, *a: object, **k: object) -> object:
        labels["x"] = text
        return orig_x(self, text, *a, **k)  # type: ignore[arg-type]

    def set_y(self: object, text: str, *a: object, **k: object) -> object:
        labels["y"] = text
        return orig_y(self, text, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", set_x)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylabel", set_y)
    price = load_prices(user=False).get("claude-sonnet-4-5")
    r = sweep_to_dir("synthetic", ["window-32k"], [8_000], price, tmp_path / "off", settings={"turns": 12},
                     caching=False)
    assert not r.caching and r.score_label == "needle recall"
    assert labels == {"x": "dollars per session (claude-sonnet-4-5, no prompt caching)", "y": "needle recall"}
    r = sweep_to_dir("synthetic", ["window-32k"], [8_000], price, tmp_path / "on", settings={"turns": 12})
    assert r.caching and labels["x"] == "dollars per session (claude-sonnet-4-5, prompt caching)"
    assert json.loads((tmp_path / "on" / "sweep.json").read_text())["score"] == "needle recall"
