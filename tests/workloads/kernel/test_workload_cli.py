"""``ctxmem workload kernel run|compare``: a recorded run and a per-preset table that differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxmem.cli.workload import workload

# A scripted run measures every candidate in the interpreter; the first one in a fresh
# checkout fills SIMX-1's measurement cache (pytest's cache folder) and may take longer
# than the suite's default per-test timeout on a slow machine.
pytestmark = pytest.mark.timeout(2400)

ROOT = Path(__file__).resolve().parents[3]
WINDOW = 12_000


def write_presets(folder: Path, window: int = WINDOW) -> dict[str, str]:
    """dump-truncate, window, masking and pipeline presets at ``window`` tokens: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    budget = f"[budget]\ncontext_window = {window}\nreserve_output = 1000\nthreshold = 0.9\n"
    files = {
        "dump-truncate": f'type = "dump"\n{budget}[params]\non_overflow = "truncate"\ncompaction_step = 0.1\n',
        "window": f'type = "window"\n{budget}[params]\ncompaction_step = 0.1\n',
    }
    for name, shipped in (("masking", "masking-200k"), ("pipeline", "pipeline-200k")):
        text = (ROOT / "strategies" / f"{shipped}.toml").read_text()
        files[name] = text.replace("context_window = 200000", f"context_window = {window}").replace(
            "reserve_output = 8000", "reserve_output = 1000")
    out = {}
    for name, text in files.items():
        path = folder / f"{name}-{window // 1000}k.toml"
        path.write_text(text)
        out[name] = str(path)
    return out


def test_run_records_and_prints_the_score_table(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    res = CliRunner().invoke(workload, ["kernel", "run", "--mode", "quitter", "--strategy", "window-200k",
                                        "--db", str(db), "--max-calls", "40"])
    assert res.exit_code == 0, res.output
    assert "speedup" in res.output and "waste/100" in res.output and "quitter" in res.output
    bad = CliRunner().invoke(workload, ["kernel", "run", "--mode", "forgetful", "--db", str(db)])
    assert bad.exit_code == 1 and "unknown mode" in bad.output


def test_compare_has_reference_rows_and_presets_that_differ(tmp_path: Path) -> None:
    """The default compare: oracle and amnesic-8 rows, then the four shipped 200k presets at the
    small-scale window (20k: the ~50k-token small session must overflow it).

    Oracle must beat amnesic-K on waste (speed depends on which configs a search happened to
    time, on measured work). The presets fall in three
    behaviours that must differ pairwise in what the probes find and not all tie on waste (recall, answered;
    at seed 0 window and pipeline happen to share recall 0.75 but not answered), and recall must
    not be the same for all three: the newest-suffix family
    (dump-truncate and window keep the same suffix once over the limit; dump-truncate only waits
    for the hard limit before its first cut, so the two differ in prompt tokens alone), masking
    (old tool outputs masked, more turns kept) and the pipeline.
    """
    res = CliRunner().invoke(workload, ["kernel", "compare", "--db", str(tmp_path / "c.db"), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("["):])
    assert [(r["role"], r["mode"]) for r in rows] == [
        ("reference", "oracle"), ("reference", "amnesic-8"), *[("preset", "context")] * 4]
    assert {r["window"] for r in rows} == {20_000} and {r["seed"] for r in rows} == {0}
    oracle, amnesic = (rows[0]["scores"], rows[1]["scores"])
    assert oracle["wasted_per_100"] < amnesic["wasted_per_100"]
    assert oracle["final_speedup"] > 1.0 and amnesic["final_speedup"] > 0
    by = {r["preset"]: r["scores"] for r in rows[2:]}
    assert set(by) == {"dump-truncate-200k", "window-200k", "masking-200k", "pipeline-200k"}
    assert by["dump-truncate-200k"]["prompt_tokens"] != by["window-200k"]["prompt_tokens"]
    families = [by["window-200k"], by["masking-200k"], by["pipeline-200k"]]
    for i, a in enumerate(families):
        for b in families[i + 1:]:
            # what the probes find always differs; waste may tie on the short small run
            # (measured on seed 0: window and masking both 2.08 per 100)
            assert (a["recall"], a["answered"]) != (b["recall"], b["answered"]), (a, b)
    assert len({f["wasted_per_100"] for f in families}) >= 2
    assert len({f["recall"] for f in families}) >= 2
    assert all(r["scores"]["tool_calls"] > 50 for r in rows)


def test_compare_table_and_a_preset_of_ones_own(tmp_path: Path) -> None:
    presets = write_presets(tmp_path / "presets")
    res = CliRunner().invoke(workload, ["kernel", "compare", "--presets", presets["window"], "--reference",
                                        "oracle", "--window", "0", "--max-calls", "30",
                                        "--db", str(tmp_path / "t.db")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    lines = lines[next(i for i, ln in enumerate(lines) if ln.startswith("seed 0 · small scale")):]
    assert "window of each preset" in lines[0]
    assert lines[1].split()[:3] == ["mode", "preset", "speedup"]
    assert lines[3].split()[:2] == ["oracle", "window-12k"]
    assert lines[4].split()[:2] == ["context", "window-12k"]
    bad = CliRunner().invoke(workload, ["kernel", "compare", "--reference", "amnesic-0", "--db",
                                        str(tmp_path / "t.db")])
    assert bad.exit_code == 1 and "positive K" in bad.output
