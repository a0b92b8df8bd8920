"""``ctxmem eval`` end to end, offline with the extractive reader: grids, reports, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctxmem.cli.evals import eval_group
from ctxmem.evals.store import ResultStore


@pytest.fixture(autouse=True)
def _tiktoken(o200k: Any) -> None:
    """Every test here measures in o200k_base (skips when it cannot be loaded)."""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(eval_group, list(args), catch_exceptions=False)


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def test_small_grid_end_to_end_writes_png_and_html(tmp_path: Path) -> None:
    db, out = tmp_path / "r.db", tmp_path / "report"
    res = invoke("run", "--sources", "prose,code", "--lengths", "1k,2k,4k", "--depths", "0,50,100",
                 "--needles", "literal,multikey,absent,nocontext", "--seeds", "0-1", "--db", str(db),
                 "--report", str(out), "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    # 2 sources × 3 lengths × 3 depths × 3 families × 2 seeds + nocontext (2 sources × 2 seeds)
    assert summary["done"] == 2 * 3 * 3 * 3 * 2 + 4 and summary["errors"] == 0
    pngs = _pngs(out)
    assert any(p.name.startswith("heatmap-extractive-none-literal") for p in pngs)
    assert (out / "accuracy-vs-length.png").is_file() and (out / "accuracy-vs-cost.png").is_file()
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)  # self-contained
    assert "Effective length" in page and "NoLiMa" in page
    with ResultStore(db) as store:
        rows = store.rows()
    by: dict[str, list[int]] = {r["needle"]: [] for r in rows}
    for r in rows:
        by[r["needle"]].append(r["correct"])
    assert all(by["literal"]) and all(by["multikey"]) and all(by["absent"])  # the lexical reader's strengths
    assert not any(by["nocontext"])  # unguessable
    res = invoke("show", "--db", str(db), "--json", "--bootstrap", "50")
    shown = json.loads(res.stdout)
    assert shown["status"] == {"done": summary["done"]}
    (eff,) = shown["effective_length"]
    assert eff["ruler"]["point"] == 4_000 and eff["nolima"]["point"] == 4_000
    res = invoke("report", "--db", str(db), "--out", str(tmp_path / "again"), "--bootstrap", "20")
    assert res.exit_code == 0 and (tmp_path / "again" / "index.html").is_file()
    # rerun: everything is already finished
    res = invoke("run", "--sources", "prose,code", "--lengths", "1k,2k,4k", "--depths", "0,50,100",
                 "--needles", "literal,multikey,absent,nocontext", "--seeds", "0-1", "--db", str(db), "--no-progress")
    assert "0 to run" in res.output and f"{summary['done']} skipped" in res.output


def test_session_needles_show_strategy_differences(tmp_path: Path) -> None:
    """8 lengths × 11 depths × 3 strategies on session needles, offline: the strategies differ."""
    out = tmp_path / "sess"
    res = invoke("session-needles", "--workload", "synthetic", "--lengths", "2k,4k,8k,12k,16k,24k,32k,48k",
                 "--depths", "0,10,20,30,40,50,60,70,80,90,100", "--strategy", "dump-1m", "--strategy", "window-32k",
                 "--strategy", "masking-turns-128k", "--out", str(out), "--no-progress", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["done"] == 8 * 11 * 3
    with ResultStore(out / "results.db") as store:
        rows = store.rows()
    acc: dict[str, list[int]] = {}
    for r in rows:
        acc.setdefault(r["preset"], []).append(r["correct"])
    mean = {k: sum(v) / len(v) for k, v in acc.items()}
    assert mean["dump-1m"] == 1.0
    assert mean["window-32k"] < mean["dump-1m"] and mean["masking-turns-128k"] < mean["window-32k"]
    missed = [r for r in rows if not r["correct"]]
    assert missed and {r["label"] for r in missed} == {"dropped-by-strategy"}
    # window-32k loses only early needles in sessions longer than its window
    for r in rows:
        if r["preset"] == "window-32k" and r["length"] <= 24_000:
            assert r["correct"]
    deltas = {p.name for p in _pngs(out) if p.name.startswith("delta-")}
    assert deltas == {"delta-extractive-literal-window_32k-vs-dump_1m.png",
                      "delta-extractive-literal-masking_turns_128k-vs-dump_1m.png"}


def test_user_folder_source_and_niah_command(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"f{i}.md").write_text("\n\n".join(
            f"Section {i}.{j}. The pump in room {j} was serviced on schedule. Pressure stayed nominal." for j in range(40)
        ), encoding="utf-8")
    out = tmp_path / "niah"
    res = invoke("niah", "--source", f"folder:{docs}", "--lengths", "1k,3k", "--depths", "0,100",
                 "--needles", "literal", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    assert "4 done" in res.output and (out / "index.html").is_file()


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    res = CliRunner().invoke(eval_group, ["run", "--tokenizer", "o201k_base", "--db", db])
    assert res.exit_code == 1 and "unknown tokenizer 'o201k_base'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(eval_group, ["run", "--needles", "literall", "--db", db])
    assert res.exit_code == 1 and "Did you mean 'literal'" in res.output
    res = CliRunner().invoke(eval_group, ["run", "--lengths", "4q", "--db", db])
    assert res.exit_code == 1 and "bad length" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(eval_group, ["run", "--sources", f"folder:{empty}", "--db", db])
    assert res.exit_code == 1 and "no non-empty UTF-8 text" in res.output


def test_length_above_window_is_refused_and_partial_results_kept(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    res = CliRunner().invoke(eval_group, ["run", "--lengths", "2k,40k", "--depths", "50", "--window", "32768",
                                          "--db", str(db), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "1 done, 1 refused" in res.output
    assert "refused: context needs" in res.output and "32768" in res.output
    with ResultStore(db) as store:
        assert {r["status"] for r in store.rows()} == {"done", "refused"}


def test_dry_run_estimates_and_runs_nothing(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    res = invoke("run", "--lengths", "4k,16k", "--depths", "0,1", "--models", "gpt-4o-mini", "--db", str(db),
                 "--dry-run", "--json")
    plan = json.loads(res.stdout)
    assert plan["pending"] == 4 and plan["estimate"]["dollars"] > 0 and plan["estimate"]["unpriced_models"] == []
    with ResultStore(db) as store:
        assert store.rows() == []
