"""``ctxmem tune``: cost, sweep, kv and prices through click, with --json and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ctxmem.cli._common import CtxmemGroup
from ctxmem.cli.tune import tune
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore


@click.group(cls=CtxmemGroup)
def root() -> None:
    """Stands in for the ctxmem group until `tune` is registered there."""


root.add_command(tune)


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(root, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_cost_on_a_stored_session_json(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        session = Session.create(store, tokenizers=["o200k_base"])
        session.record_many(synthetic_session(20, seed=4, output_scale=0.3))
    code, out, err = run("tune", "cost", "--session", session.id, "--db", str(db), "--presets",
                         "dump-1m,window-32k", "--price-model", "gpt-4.1", "--json", "--pace", "10")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == f"session {session.id}" and data["price"]["name"] == "gpt-4.1"
    labels = [r["label"] for r in data["reports"]]
    assert labels == ["dump-1m (no cache)", "dump-1m", "window-32k (no cache)", "window-32k"]
    assert all(r["turns"] == 20 and r["curve"] for r in data["reports"])
    assert data["reports"][1]["dollars"] < data["reports"][0]["dollars"]


def test_a_note_shared_by_every_preset_is_said_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        session = Session.create(store, tokenizers=["o200k_base"])
        session.record_many(synthetic_session(12, seed=4, output_scale=0.3))  # one bulk write: no spacing
    code, out, err = run("tune", "cost", "--session", session.id, "--db", str(db), "--presets",
                         "dump-1m,window-32k,masking-200k")
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note")]
    assert notes == ["note: recorded timestamps carry no spacing (bulk import?): assumed a pace instead"], out


def test_cost_table_on_a_synthetic_session() -> None:
    code, out, err = run("tune", "cost", "--synthetic", "30", "--presets", "dump-1m,masking-turns-128k",
                         "--caching", "on", "--pace", "5")
    assert code == 0, err
    assert "dump-1m" in out and "masking-turns-128k" in out and "dollars" in out and "$" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tune", "cost", "--synthetic", "3", "--presets", "dump-1m", "--price-model", "gpt-4.2"],
         "unknown priced model 'gpt-4.2'. Did you mean 'gpt-4.1'"),
        (["tune", "cost", "--presets", "dump-1m"], "exactly one of --session ID or --synthetic TURNS"),
        (["tune", "cost", "--synthetic", "3", "--presets", "dumpp-1m"], "unknown preset 'dumpp-1m'"),
        (["tune", "sweep", "--workload", "synthetic", "--out", "x", "--objective", "cheapest"], "unknown objective"),
        (["tune", "sweep", "--workload", "needles", "--out", "x"], "unknown workload 'needles'"),
        (["tune", "sweep", "--workload", "synthetic", "--set", "turnz=3", "--out", "x"], "field 'turnz'"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str) -> None:
    code, _out, err = run(*args)
    assert code == 1
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_missing_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    SQLiteStore(db).close()  # a store without that session (a path with no store: see below)
    code, _, err = run("tune", "cost", "--session", "nope", "--db", str(db), "--presets", "dump-1m")
    assert code == 1 and "no session 'nope'" in err
    missing = tmp_path / "none.db"  # a replay only reads: it never creates a store
    code, _, err = run("tune", "cost", "--session", "nope", "--db", str(missing), "--presets", "dump-1m")
    assert code == 1 and f"no session store at {missing}" in err and not missing.exists()


def test_sweep_cli(tmp_path: Path) -> None:
    out_dir = tmp_path / "sweep"
    code, out, err = run("tune", "sweep", "--workload", "synthetic", "--set", "turns=24", "--budgets", "4k,8k,16k,64k",
                         "--objective", "max-recall", "--out", str(out_dir), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert len(data["cells"]) == 16
    assert Path(data["plot_path"]).is_file() and Path(data["preset_path"]).is_file()
    from ctxmem.config import load_preset

    assert load_preset(data["preset_path"]).budget().context_window == data["recommendation"]["budget"]


def test_sweep_with_an_unmet_objective_still_writes_its_results(tmp_path: Path) -> None:
    out_dir = tmp_path / "sweep"
    code, out, err = run("tune", "sweep", "--workload", "synthetic", "--set", "turns=12", "--budgets", "4k,8k",
                         "--presets", "window-32k", "--objective", "min-cost-at-recall>=1.5",
                         "--out", str(out_dir), "--no-plot")
    assert code == 1
    assert "objective min-cost-at-recall>=1.5 not met" in err and "Traceback" not in err
    assert "window-32k" in out and str(out_dir / "sweep.json") in out
    data = json.loads((out_dir / "sweep.json").read_text())
    assert len(data["cells"]) == 2 and data["recommendation"] is None
    assert "no cell reaches a score" in data["objective_unmet"]
    assert not list(out_dir.glob("*.toml"))


def test_kv_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                               "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                               "vocab_size": 128256, "max_position_embeddings": 131072}))
    code, out, err = run("tune", "kv", "--config", str(cfg), "--gpu-mem", "24GiB", "--kv-dtype", "q8_0",
                         "--weights-gib", "16", "--context", "32k", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["full_bytes_per_token"] == 69_632
    # (24 − 16 − 1) GiB / 69,632 bytes
    assert data["max_context"] == 7 * 1024**3 // 69_632
    assert data["memory_at_context"]["kv_cache"] == 32_000 * 69_632 and data["fits"] is True
    code, out, err = run("tune", "kv", "--config", str(cfg), "--gpu-mem", "24GiB", "--kv-dtype", "q8_0")
    assert code == 0 and "max context on 24.00 GiB" in out
    code, _, err = run("tune", "kv", "--config", str(cfg), "--gpu-mem", "12GiB")
    assert code == 1 and "weights alone take 14.96 GiB" in err
    # a bad config is reported first, whatever else is missing (it was "give --gpu-mem")
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    code, _, err = run("tune", "kv", "--config", str(bad))
    assert code == 1 and "not valid JSON" in err and "--gpu-mem" not in err
    code, _, err = run("tune", "kv", "--config", str(cfg))
    assert code == 1 and "give --gpu-mem" in err


def test_prices_cli() -> None:
    code, out, _ = run("tune", "prices")
    assert code == 0 and "qwen3.6-max" in out and "claude-sonnet-4-5" in out
    code, out, _ = run("tune", "prices", "--json")
    models = {m["name"]: m for m in json.loads(out)["models"]}
    assert models["qwen3.6-max"]["input"] == 1.3 and models["qwen3.6-max"]["source"]


def test_an_os_error_under_json_is_json_on_stdout(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run("tune", "sweep", "--workload", "synthetic", "--set", "turns=8", "--budgets", "8k",
                         "--presets", "window-32k", "--out", str(blocker / "sweep"), "--no-plot", "--json")
    assert code == 1 and "error: " in err and "Traceback" not in err
    data = json.loads(out)
    assert data["error"]["type"] in ("NotADirectoryError", "FileExistsError") and str(blocker) in data["error"]["message"]


def test_cost_refuses_an_eval_results_database_untouched(tmp_path: Path) -> None:
    from ctxmem.evals.store import ResultStore

    db = tmp_path / "results.db"
    ResultStore(db).close()
    before = db.read_bytes()
    code, _, err = run("tune", "cost", "--session", "latest", "--db", str(db), "--presets", "dump-1m")
    assert code == 1 and "is a ctxmem results store" in err and "not a ctxmem session store" in err
    assert err.count("\n") == 1 and db.read_bytes() == before
