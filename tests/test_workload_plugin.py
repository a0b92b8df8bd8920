"""Workloads plug in: the example plugin (examples/plugin_workload) runs through `workload
run`, `tune sweep` and `eval session-needles` with no edit outside its folder, and an
installed plugin is listed by `workload list --json` in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctxmem.cli.evals import eval_group
from ctxmem.cli.tune import tune
from ctxmem.cli.workload import workload
from ctxmem.errors import ConfigError
from ctxmem.workloads import WORKLOADS, Workload, describe, get_workload

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin_workload"


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    meta = tomllib.loads((PLUGIN / "pyproject.toml").read_text())
    ref = meta["project"]["entry-points"]["ctxmem.workloads"]["log_triage"]
    if str(PLUGIN) not in sys.path:
        sys.path.insert(0, str(PLUGIN))
    if "log_triage" not in WORKLOADS:  # an installed plugin is found through its entry point
        WORKLOADS.register("log_triage", ref)


def _run(group: Any, *args: str) -> Any:
    return CliRunner().invoke(group, list(args))


def test_every_workload_satisfies_the_protocol() -> None:
    for name in WORKLOADS.names():
        wl = get_workload(name)
        assert isinstance(wl, Workload), name
        d = describe(name)
        assert d["modes"] and d["settings"] and d["score_columns"], name
    with pytest.raises(ConfigError, match="incidents"):
        get_workload("log_triage", {"incidents": "three"})


def test_the_plugin_runs_through_workload_run(tmp_path: Path) -> None:
    res = _run(workload, "run", "log_triage", "--set", "incidents=30", "--preset", "dump-1m", "--mode", "context",
               "--db", str(tmp_path / "w.db"), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{"):])
    assert data["workload"] == "log_triage" and data["score"] == 1.0 and data["scores"]["probes"] > 0
    res = _run(workload, "run", "log_triage", "--set", "incidents=30", "--preset", "window-32k", "--window", "6k",
               "--mode", "context", "--db", str(tmp_path / "w.db"), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["score"] < 1.0  # a small window forgets early facts


def test_the_plugin_runs_through_tune_sweep(tmp_path: Path) -> None:
    res = _run(tune, "sweep", "--workload", "log_triage", "--set", "incidents=30", "--presets",
               "dump-1m,window-32k", "--budgets", "6k,64k", "--objective", "max-recall", "--out", str(tmp_path),
               "--no-plot", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{"):])
    assert data["workload"] == "log_triage" and len(data["cells"]) == 4
    scores = {(c["preset"], c["budget"]): c["score"] for c in data["cells"]}
    assert scores[("window-32k", 64_000)] == 1.0 and (scores[("window-32k", 6_000)] or 0) < 1.0
    assert data["recommendation"] is not None


def test_the_plugin_runs_through_eval_session_needles(tmp_path: Path, o200k: Any) -> None:
    res = _run(eval_group, "session-needles", "--workload", "log_triage", "--set", "incidents=40",
               "--strategy", "dump-1m", "--strategy", "window-32k", "--depths", "0,50", "--out", str(tmp_path),
               "--no-progress", "--json")
    assert res.exit_code == 0, res.output
    from ctxmem.evals.store import ResultStore

    with ResultStore(tmp_path / "results.db") as store:
        rows = store.rows(status="done")
    natural = [r for r in rows if r["needle"] == "natural"]
    assert natural and {r["info"]["placed"][0]["fact"] for r in natural} <= {"root_cause", "error_code",
                                                                                "first_request"}
    assert all(r["survival"] == "verbatim" for r in natural if r["preset"] == "dump-1m")


def test_an_installed_plugin_is_listed_in_a_fresh_process(tmp_path: Path) -> None:
    meta = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    dist = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in meta["entry-points"]["ctxmem.workloads"].items())
    (dist / "entry_points.txt").write_text(f"[ctxmem.workloads]\n{eps}\n")
    code = "from ctxmem.cli import main; main(['workload', 'list', '--json'])"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{PLUGIN}"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = {d["name"]: d for d in json.loads(r.stdout)}
    assert {"kernel", "synthetic", "log_triage"} <= set(listed)
    assert listed["log_triage"]["source"] == "ctxmem-log-triage" and listed["kernel"]["source"] == "ctxmem"
    env["PYTHONPATH"] = str(PLUGIN)  # without the dist-info it is not listed: the test is not passing by accident
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "log_triage" not in {d["name"] for d in json.loads(r.stdout)}


def test_an_unknown_mode_is_refused_before_a_store_is_made(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    res = _run(workload, "run", "synthetic", "--mode", "nope", "--db", str(db))
    assert res.exit_code == 1 and "unknown mode 'nope'" in res.output and "choose record, context" in res.output
    assert not db.exists()
