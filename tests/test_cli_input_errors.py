"""Bad command-line input is one clear line (and ``{"error": ...}`` with ``--json``), exit 1,
never a traceback and never a half-written session: non-UTF-8 arguments, a repeated
``--tokenizer``, an unknown event, an interrupt at the import's commit, an empty transcript
for an eval, a reversed seed range, a config.json that is not UTF-8."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctxmem.cli import cli
from ctxmem.store import SQLiteStore

_LINES = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a b c"}]},
    {"role": "assistant", "content": "done"},
]


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    src = tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps(o) + "\n" for o in _LINES), encoding="utf-8")
    path = str(tmp_path / "s.db")
    r = run("sessions", "import", str(src), "--tokenizer", "heuristic", "--db", path)
    assert r.exit_code == 0, r.output
    return path


def _one_line(r: Any, *needles: str) -> None:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.output.count("error:") == 1, r.output
    for n in needles:
        assert n in r.output, r.output


# ------------------------------------------------------------------ non-UTF-8 arguments

@pytest.mark.parametrize(("args", "field"), [
    (["sessions", "search", "\udcff"], "query"),
    (["sessions", "search", "\udcff", "--fts"], "query"),
    (["sessions", "search", "ok", "--session", "\udcff"], "session"),
    (["sessions", "fork", "latest", "--at", "1", "--title", "t\udcff"], "title"),
    (["sessions", "show", "\udcff"], "session"),
    (["tune", "cost", "--session", "\udcff", "--preset", "window-32k"], "session"),
], ids=["search", "search-fts", "search-session", "fork-title", "show", "tune-cost-session"])
def test_a_non_utf8_argument_is_one_line_naming_the_field(db: str, args: list[str], field: str) -> None:
    with SQLiteStore(db) as store:
        before = [s.id for s in store.list_sessions()]
    _one_line(run(*args, "--db", db), f"field {field!r}", "not UTF-8")
    with SQLiteStore(db) as store:
        assert [s.id for s in store.list_sessions()] == before


def test_a_non_utf8_argument_with_json_is_json_on_stdout(db: str) -> None:
    r = run("sessions", "search", "\udcff", "--json", "--db", db)
    assert r.exit_code == 1
    assert json.loads(r.stdout)["error"]["field"] == "query"


# ------------------------------------------------------------------ a repeated --tokenizer

def test_a_repeated_tokenizer_counts_once(tmp_path: Path, db: str) -> None:
    src = tmp_path / "b.jsonl"
    src.write_text("".join(json.dumps(o) + "\n" for o in _LINES), encoding="utf-8")
    r = run("sessions", "import", str(src), "--tokenizer", "heuristic", "--tokenizer", "heuristic", "--json",
            "--db", db)
    assert r.exit_code == 0, r.output
    with SQLiteStore(db) as store:
        assert list(store.get_session(json.loads(r.stdout)["id"]).tokenizers) == ["heuristic"]


# ------------------------------------------------------------------ an unknown event

@pytest.mark.parametrize("args", [["fork", "latest", "--at", "9999"], ["rewind", "latest", "--to", "9999"]],
                         ids=["fork", "rewind"])
def test_an_unknown_event_with_json_prints_the_error_as_json(db: str, args: list[str]) -> None:
    r = run("sessions", *args, "--json", "--db", db)
    assert r.exit_code == 1 and "Traceback" not in r.output
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "EventNotFoundError" and "no event 9999" in err["message"]
    assert "ctxmem sessions events latest" in err["message"]
    plain = run("sessions", *args, "--db", db)  # without --json: the same one line as before
    _one_line(plain, "no event 9999 in the current chain of session 'latest'")


# ------------------------------------------------------------------ Ctrl-C at the commit

def test_an_interrupt_after_the_commit_says_the_session_was_imported(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctxmem.cli.sessions as mod

    real = mod.import_file

    def commit_then_interrupt(*a: Any, **kw: Any) -> Any:
        real(*a, **kw)  # the transaction commits ...
        raise KeyboardInterrupt  # ... and Ctrl-C lands before import_file returns

    monkeypatch.setattr(mod, "import_file", commit_then_interrupt)
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(o) + "\n" for o in _LINES), encoding="utf-8")
    with SQLiteStore(db) as store:
        before = {s.id for s in store.list_sessions()}
    r = run("sessions", "import", str(src), "--tokenizer", "heuristic", "--db", db)
    with SQLiteStore(db) as store:
        new = {s.id for s in store.list_sessions()} - before
    assert len(new) == 1
    assert r.exit_code == 0 and "nothing was imported" not in r.output
    assert f"imported as session {new.pop()}" in r.output


def test_an_interrupt_before_the_commit_says_nothing_was_imported(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctxmem.cli.sessions as mod

    def interrupt(*a: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "import_file", interrupt)
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(o) + "\n" for o in _LINES), encoding="utf-8")
    with SQLiteStore(db) as store:
        before = {s.id for s in store.list_sessions()}
    r = run("sessions", "import", str(src), "--tokenizer", "heuristic", "--db", db)
    assert r.exit_code == 130 and "interrupted: nothing was imported" in r.output
    with SQLiteStore(db) as store:
        assert {s.id for s in store.list_sessions()} == before


# ------------------------------------------------------------------ tune kv: a config that is not UTF-8

def test_tune_kv_refuses_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_bytes('{"model_type": "llama", "name": "caf\u00e9"}'.encode("latin-1"))
    _one_line(run("tune", "kv", "--config", str(cfg)), str(cfg), "not UTF-8", "re-encode")


# ------------------------------------------------------------------ eval input

def test_an_eval_on_an_empty_transcript_is_refused_up_front(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    r = run("eval", "session-needles", "--jsonl", str(empty), "--out", str(tmp_path / "sn"), "--lengths", "1k",
            "--no-progress")
    _one_line(r, "no messages to import", "the file is empty")


def test_an_eval_on_a_transcript_with_a_5000_digit_integer_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "big.jsonl"
    bad.write_bytes(b'{"role": "user", "content": "q"}\n{"role": "assistant", "content": "x", "n": '
                    + b"9" * 5000 + b"}\n")
    r = run("eval", "session-needles", "--jsonl", str(bad), "--out", str(tmp_path / "sn"), "--lengths", "1k",
            "--no-progress")
    _one_line(r, "line 2", "write the number as a string")


@pytest.mark.parametrize(("seeds", "needle"), [("5-1", "runs backwards"), ("0-1,9-3", "'9-3' runs backwards"),
                                               ("x", "use 0,1,2 or 0-9")])
def test_eval_run_refuses_bad_seeds(tmp_path: Path, seeds: str, needle: str) -> None:
    r = run("eval", "run", "--seeds", seeds, "--out", str(tmp_path / "r"), "--no-progress")
    _one_line(r, "field 'seeds'", needle)


def test_seed_ranges_still_expand() -> None:
    from ctxmem.cli.evals import _seeds

    assert _seeds("0-2,5") == [0, 1, 2, 5] and _seeds("3") == [3] and _seeds("2-2") == [2]


# ------------------------------------------------------------------ another program's database

@pytest.mark.parametrize("args", [
    ["sessions", "list", "--db"],
    ["sessions", "show", "latest", "--db"],
    ["sessions", "import", "--db"],
    ["eval", "show", "--results"],
], ids=["sessions-list", "sessions-show", "sessions-import", "eval-show"])
def test_a_database_that_is_not_ctxmems_is_refused_untouched(tmp_path: Path, args: list[str]) -> None:
    import sqlite3

    theirs = tmp_path / "theirs.db"
    conn = sqlite3.connect(theirs)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'a')")
    conn.commit()
    conn.close()
    before = theirs.read_bytes()
    if args[1] == "import":
        src = tmp_path / "a.jsonl"
        src.write_text("".join(json.dumps(o) + "\n" for o in _LINES), encoding="utf-8")
        args = [*args[:2], str(src), *args[2:]]
    _one_line(run(*args, str(theirs)), str(theirs), "(customers)", "not a ctxmem", "left untouched")
    assert theirs.read_bytes() == before


# ------------------------------------------------------------------ --session: latest and id prefixes everywhere

def test_tune_cost_takes_latest_and_a_prefix_and_never_creates_a_store(tmp_path: Path, db: str) -> None:
    with SQLiteStore(db) as store:
        sid = store.list_sessions()[0].id
    for given in ("latest", sid[:6]):
        r = run("tune", "cost", "--session", given, "--preset", "window-32k", "--db", db)
        assert r.exit_code == 0, r.output
        assert f"session {sid}" in r.output
    new = tmp_path / "new.db"
    _one_line(run("tune", "cost", "--session", "abc", "--preset", "window-32k", "--db", str(new)),
              "no session store at", str(new))
    assert not new.exists()


def test_eval_session_needles_takes_latest_and_a_prefix(tmp_path: Path, db: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import ctxmem.cli.evals as evals_cli

    with SQLiteStore(db) as store:
        sid = store.list_sessions()[0].id
    asked: list[list[str]] = []
    monkeypatch.setattr(evals_cli, "_execute", lambda **kw: asked.append(kw["sources"]))
    for given in ("latest", sid[:6]):
        r = run("eval", "session-needles", "--session", given, "--db", db, "--out", str(tmp_path / "sn"),
                "--no-progress")
        assert r.exit_code == 0, r.output
    assert asked == [[f"agent:{db}#{sid}"]] * 2
    new = tmp_path / "new.db"
    _one_line(run("eval", "session-needles", "--session", "latest", "--db", str(new), "--out", str(tmp_path / "sn"),
                  "--no-progress"), "no session store at", str(new))
    assert not new.exists()
