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
                 "--needles", "literal,multikey,absent,nocontext", "--seeds", "0-1", "--results", str(db),
                 "--out", str(out), "--json", "--no-progress")
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
    res = invoke("show", "--results", str(db), "--json", "--bootstrap", "50")
    shown = json.loads(res.stdout)
    assert shown["status"] == {"done": summary["done"]}
    (eff,) = shown["effective_length"]
    assert eff["ruler"]["point"] == 4_000 and eff["nolima"]["point"] == 4_000
    res = invoke("report", "--results", str(db), "--out", str(tmp_path / "again"), "--bootstrap", "20")
    assert res.exit_code == 0 and (tmp_path / "again" / "index.html").is_file()
    # rerun: everything is already finished
    res = invoke("run", "--sources", "prose,code", "--lengths", "1k,2k,4k", "--depths", "0,50,100",
                 "--needles", "literal,multikey,absent,nocontext", "--seeds", "0-1", "--results", str(db), "--no-progress")
    assert "0 to run" in res.output and f"{summary['done']} skipped" in res.output


def test_session_needles_show_strategy_differences(tmp_path: Path) -> None:
    """8 lengths × 11 depths × 3 strategies on session needles, offline: the strategies differ."""
    out = tmp_path / "sess"
    res = invoke("session-needles", "--workload", "synthetic", "--needles", "literal",
                 "--lengths", "2k,4k,8k,12k,16k,24k,32k,48k", "--depths", "0,10,20,30,40,50,60,70,80,90,100", "--strategy", "dump-1m", "--strategy", "window-32k",
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
    assert mean["window-32k"] < mean["dump-1m"]
    # masking keeps the needle lines it masks in its salient-facts section: it forgets less
    # than the window that drops them
    assert mean["masking-turns-128k"] > mean["window-32k"]
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
    res = CliRunner().invoke(eval_group, ["run", "--tokenizer", "o201k_base", "--results", db])
    assert res.exit_code == 1 and "unknown tokenizer 'o201k_base'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(eval_group, ["run", "--needles", "literall", "--results", db])
    assert res.exit_code == 1 and "Did you mean 'literal'" in res.output
    res = CliRunner().invoke(eval_group, ["run", "--lengths", "4q", "--results", db])
    assert res.exit_code == 2 and "not a token count: '4q'" in res.output  # a usage error
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(eval_group, ["run", "--sources", f"folder:{empty}", "--results", db])
    assert res.exit_code == 1 and "no non-empty UTF-8 text" in res.output
    # 0.5 beside 50: half the context, or half a percent? Refused, not guessed
    res = CliRunner().invoke(eval_group, ["run", "--depths", "0.5,50", "--results", db])
    assert res.exit_code == 1 and "mix fractions (0.5) and percents" in res.output


def test_depths_are_fractions_or_percents() -> None:
    from ctxmem.errors import ConfigError
    from ctxmem.evals.grid import parse_depths

    assert parse_depths("0,0.5,1") == parse_depths("0,50,100") == [0.0, 0.5, 1.0]
    assert parse_depths("1,50") == [0.01, 0.5]  # beside 50, 1 is a percent
    with pytest.raises(ConfigError, match=r"mix fractions \(0.25, 0.5\)"):
        parse_depths("0.25,0.5,75")


def test_length_above_window_is_refused_and_partial_results_kept(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    res = CliRunner().invoke(eval_group, ["run", "--lengths", "2k,40k", "--depths", "50", "--window", "32768",
                                          "--results", str(db), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "1 done, 1 refused" in res.output
    assert "refused: context needs" in res.output and "32768" in res.output
    with ResultStore(db) as store:
        assert {r["status"] for r in store.rows()} == {"done", "refused"}


def test_dry_run_estimates_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    db = tmp_path / "r.db"
    res = invoke("run", "--lengths", "4k,16k", "--depths", "0,1", "--model", "openai:gpt-4o-mini", "--results", str(db),
                 "--dry-run", "--json")
    plan = json.loads(res.stdout)
    assert plan["pending"] == 4 and plan["estimate"]["dollars"] > 0 and plan["estimate"]["unpriced_models"] == []
    with ResultStore(db) as store:
        assert store.rows() == []


def test_unplaceable_needle_is_refused_for_good_and_other_cells_are_kept(tmp_path: Path) -> None:
    """A length too short for the needle is refused (not an error): a rerun skips it, and
    --dry-run says up front which cells will be refused."""
    db = tmp_path / "r.db"
    args = ["run", "--lengths", "20,2k", "--depths", "0,100", "--needles", "literal,multikey", "--results", str(db),
            "--no-progress"]
    res = invoke(*args, "--dry-run", "--json")
    plan = json.loads(res.stdout)
    assert plan["pending"] == 8
    refused = plan["will_refuse"]
    assert len(refused) == 4 and {r["cell"]["length"] for r in refused} == {20}
    assert all("needles need" in r["reason"] or "no room" in r["reason"] for r in refused)
    res = invoke(*args, "--dry-run")
    assert "4 of the 8 cells to run will be refused" in res.output and "will refuse prose 20" in res.output
    res = invoke(*args)
    assert res.exit_code == 0, res.output  # refusals are outcomes, not errors
    assert "4 done, 4 refused, 0 errors" in res.output
    with ResultStore(db) as store:
        rows = store.rows()
    assert {(r["length"], r["status"]) for r in rows} == {(20, "refused"), (2000, "done")}
    assert all(r["correct"] == 1 for r in rows if r["status"] == "done")
    res = invoke(*args)
    assert "0 to run" in res.output and "8 skipped" in res.output  # refused cells are not retried
    res = invoke(*args, "--dry-run", "--json")
    assert json.loads(res.stdout)["will_refuse"] == []


def test_session_needles_on_a_recorded_kernel_workload_run(tmp_path: Path) -> None:
    """--workload kernel records a scripted kernel run once (small, 30 calls) and asks planted
    literal needles and natural ones (facts of its own tool results) across strategies."""
    out = tmp_path / "kernel"
    window = tmp_path / "window-8k.toml"
    window.write_text('type = "window"\n[budget]\ncontext_window = 8192\nreserve_output = 1024\n', encoding="utf-8")
    args = ["session-needles", "--workload", "kernel", "--set", "max_calls=30", "--lengths", "6k,12k,400k",
            "--depths", "0,50,100", "--strategy", "dump-1m", "--strategy", str(window), "--out", str(out),
            "--no-progress"]
    res = CliRunner().invoke(eval_group, [*args[:-1], "--strategy", "window-8kk", "--no-progress"])
    assert res.exit_code == 1 and "unknown preset 'window-8kk'" in res.output and "recording" not in res.output
    res = invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    # 2 lengths × 3 depths × {literal, natural} × 2 presets run; the 400k cells exceed the session: refused
    assert summary["done"] == 24 and summary["refused"] == 12 and summary["errors"] == 0
    assert len(list(out.glob("kernel-seed0-*.db"))) == 1
    with ResultStore(out / "results.db") as store:
        rows = store.rows(status="done")
    assert all(r["source"].startswith("agent:") and "#kernel-" in r["source"] for r in rows)
    natural = [r for r in rows if r["needle"] == "natural"]
    facts = {r["info"]["placed"][0]["fact"] for r in natural}
    assert len(facts) >= 2  # different depths pick different facts by tool-call index
    for r in natural:
        p = r["info"]["placed"][0]
        assert p["tool_call"] < p["calls"] and r["info"]["answers"][0]
        if r["preset"] == "dump-1m":
            assert r["survival"] == "verbatim" and r["fate"] == "kept"
    assert {r["preset"] for r in rows} == {"dump-1m", str(window)}
    # the strategies differ: window-8k drops early needles of the 12k session, dump keeps all
    dump = [r["correct"] for r in rows if r["needle"] == "literal" and r["preset"] == "dump-1m"]
    assert all(dump)
    win = [r for r in rows if r["preset"] == str(window) and r["length"] == 12_000 and r["depth"] == 0.0
           and r["needle"] == "literal"]
    assert win and all(r["survival"] == "absent" and r["fate"] == "dropped" for r in win)
    # a rerun reuses the recorded run and resumes: nothing to record or run
    res = invoke(*args)
    assert "recording" not in res.output and "0 to run" in res.output


def test_readers_are_checked_before_any_cell_is_priced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "o"
    res = invoke("niah", "--out", str(out), "--model", "gpt-4o", "--lengths", "1k", "--no-progress")
    assert res.exit_code == 1 and "names no provider" in res.output and "openai:gpt-4o" in res.output
    assert "estimated" not in res.output and "Traceback" not in res.output
    res = invoke("niah", "--out", str(out), "--model", "openai:gpt-4o", "--lengths", "1k", "--no-progress")
    assert res.exit_code == 1 and "no API key for 'openai:gpt-4o': set OPENAI_API_KEY" in res.output
    assert "estimated" not in res.output


def test_dry_run_does_not_price_cells_that_will_be_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    args = ["--model", "openai:gpt-4.1", "--depths", "0,100", "--window", "32000", "--dry-run", "--json",
            "--no-progress"]
    small = json.loads(invoke("niah", "--out", str(tmp_path / "a"), "--lengths", "1k", *args).stdout)
    both = json.loads(invoke("niah", "--out", str(tmp_path / "b"), "--lengths", "1k,64k", *args).stdout)
    assert len(both["will_refuse"]) == 2 and both["pending"] == 4
    assert both["estimate"]["prompt_tokens"] == small["estimate"]["prompt_tokens"] > 0
    assert both["estimate"]["dollars"] == small["estimate"]["dollars"] > 0


def test_show_and_report_never_create_or_convert_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ctxmem.store import SQLiteStore

    monkeypatch.chdir(tmp_path)
    for cmd in (["show"], ["report", "--out", str(tmp_path / "rep")]):
        res = CliRunner().invoke(eval_group, [*cmd, "--results", "sqlite:///typo.db"])
        assert res.exit_code == 1 and "no results database sqlite:///typo.db" in res.output, res.output
        assert not (tmp_path / "typo.db").exists()
    sessions = tmp_path / "sessions.db"
    SQLiteStore(sessions).close()
    before = sessions.read_bytes()
    res = CliRunner().invoke(eval_group, ["show", "--results", str(sessions)])
    assert res.exit_code == 1 and "is a ctxmem session store" in res.output and "not a ctxmem results store" in res.output
    assert sessions.read_bytes() == before
