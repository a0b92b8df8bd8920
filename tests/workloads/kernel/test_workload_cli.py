"""``ctxmem workload kernel run|compare``: a recorded run and a per-preset table that differs."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ctxmem.cli.workload import workload

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


def test_compare_presets_differ_in_waste_and_recall(tmp_path: Path) -> None:
    presets = write_presets(tmp_path / "presets")
    names = ",".join(presets[k] for k in ("dump-truncate", "window", "masking", "pipeline"))
    res = CliRunner().invoke(workload, ["kernel", "compare", "--presets", names, "--db", str(tmp_path / "c.db"),
                                        "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("["):])
    assert len(rows) == 4
    waste = {r["scores"]["wasted_per_100"] for r in rows}
    recall = {r["scores"]["recall"] for r in rows}
    assert len(waste) >= 2 and len(recall) >= 2
    assert all(r["scores"]["tool_calls"] > 50 for r in rows)
