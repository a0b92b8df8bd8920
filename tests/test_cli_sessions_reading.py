"""Reading sessions from the CLI as a newcomer does: nothing created by a read, newest
first, id prefixes and `latest`, readable `show` and `--transcript`, plain search text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxmem.cli.sessions import sessions
from ctxmem.messages import Message, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import SQLiteStore


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(sessions, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        for i, title in enumerate(("first", "second")):
            s = Session.create(store, title=title, tokenizers=["o200k_base"], session_id=f"{'ab' if i else 'ac'}{i}f00d")
            s.record(Message.user("Make the kernel faster."))
            s.record(Message.assistant("Compiling.", ToolUseBlock("t1", "compile", {"path": "kernel.py"})))
            s.record_tool_result("t1", "OutOfResources in kernel.py: Required: 304128, Hardware limit: 101376",
                                 is_error=True)
            time.sleep(0.01)
    return path


def test_a_read_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "x.db"
    code, out, _ = run("list", "--db", str(missing))
    assert code == 0 and "no sessions (no store at" in out
    for cmd in (["show", "abc"], ["search", "x"], ["export", "abc"], ["events", "abc"]):
        code, _, err = run(*cmd, "--db", str(missing))
        assert code == 1 and err.startswith("error: ") and "no session store at" in err, cmd
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not missing.parent.exists()


def test_list_is_newest_first(db: Path) -> None:
    code, out, _ = run("list", "--db", str(db), "--json")
    assert code == 0 and [r["title"] for r in json.loads(out)] == ["second", "first"]


def test_prefixes_and_latest(db: Path) -> None:
    code, out, _ = run("show", "latest", "--db", str(db), "--json")
    assert code == 0 and json.loads(out)["title"] == "second"
    code, out, _ = run("show", "ac", "--db", str(db), "--json")
    assert code == 0 and json.loads(out)["title"] == "first"
    code, _, err = run("show", "a", "--db", str(db))
    assert code == 1 and "prefix of 2 sessions" in err
    code, _, err = run("show", "zz", "--db", str(db))
    assert code == 1 and "no session 'zz'" in err


def test_show_is_readable_text_and_transcript(db: Path) -> None:
    code, out, _ = run("show", "latest", "--db", str(db))
    assert code == 0 and "{" not in out and "'" not in out
    assert "2 user, 1 assistant" in out.replace("1 assistant, 2 user", "2 user, 1 assistant")
    code, out, _ = run("show", "latest", "--transcript", "--db", str(db))
    assert code == 0
    assert "user" in out and "Make the kernel faster." in out
    assert '→ compile({"path": "kernel.py"})' in out and "← [t1] ERROR" in out and "Hardware limit: 101376" in out
    code, out, _ = run("show", "latest", "--transcript", "--width", "10", "--db", str(db))
    assert "more characters]" in out
    code, out, _ = run("show", "latest", "--transcript", "--json", "--db", str(db))
    assert [m["role"] for m in json.loads(out)] == ["user", "assistant", "user"]


def test_search_takes_text_as_typed(db: Path) -> None:
    for query in ("kernel.py", "Required: 304128", '"OutOfResources"', "limit: 101376"):
        code, out, err = run("search", query, "--db", str(db), "--json")
        assert code == 0, (query, err)
        assert len(json.loads(out)) == 2, query
    code, out, _ = run("search", "OutOf*", "--fts", "--session", "latest", "--db", str(db), "--json")
    assert code == 0 and len(json.loads(out)) == 1
    code, _, err = run("search", "a AND", "--fts", "--db", str(db))
    assert code == 1 and "bad search query" in err and err.count("\n") == 1
    assert "FTS5 syntax:" in err and str(db) not in err  # how to write one, not the store's path
    code, _, err = run("search", "*", "--fts", "--db", str(db))
    assert code == 1 and "unknown special query (FTS5 syntax" in err  # was "unknown special query: " and nothing after


def test_an_empty_session_id_names_no_session(db: Path) -> None:
    """An empty id is a prefix of every id: a script with an unset $ID rewound the only session."""
    with SQLiteStore(db) as store:
        store.conn.execute("DELETE FROM sessions WHERE id LIKE 'ab%'")  # one session left: the risky case
    for cmd in (["rewind", "", "--to", "1"], ["show", ""], ["export", ""], ["events", ""], ["search", "x", "--session", ""]):
        code, _, err = run(*cmd, "--db", str(db))
        assert code == 1 and "empty session id" in err and "Traceback" not in err, cmd
    with SQLiteStore(db) as store:
        assert store.get_session("ac0f00d").head_event_id is not None  # not rewound


def test_a_search_with_many_words_is_refused_or_deduplicated_not_slow(db: Path) -> None:
    """A word repeated 500 times ran for minutes in FTS5 (its cost grows with the repeats);
    repeats are asked for once, and more distinct words than a lookup needs are one error."""
    t0 = time.perf_counter()
    code, out, _ = run("search", " ".join(["OutOfResources"] * 500), "--db", str(db), "--json")
    assert code == 0 and len(json.loads(out)) == 2
    assert time.perf_counter() - t0 < 30  # minutes before; generous for a loaded machine
    for args in ([" ".join(f"w{i}" for i in range(100))], ["--fts", " ".join(["x"] * 100)], ["   "], ["--fts", " "]):
        code, _, err = run("search", *args, "--db", str(db))
        assert code == 1 and err.startswith("error: field 'query'") and err.count("\n") == 1, args


def test_sqlite_urls_name_a_file_and_a_read_creates_none(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(db.parent)
    code, out, _ = run("list", "--db", f"sqlite:///{db.name}", "--json")  # relative, as SQLAlchemy
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = run("list", "--db", f"sqlite:///{db}", "--json")  # sqlite:////abs/path: absolute
    assert code == 0 and len(json.loads(out)) == 2
    # SQLite took "?mode=ro" as part of the name and created an empty store of that name
    code, _, err = run("list", "--db", f"sqlite:///{db.name}?mode=ro")
    assert code == 1 and "no query string" in err
    code, _, err = run("show", "latest", "--db", "sqlite:///nowhere/new.db")
    assert code == 1 and "no session store at" in err
    assert not (db.parent / "nowhere").exists() and not list(db.parent.glob("*mode=ro*"))


def test_path_and_output_errors_are_one_line(tmp_path: Path) -> None:
    """A folder that cannot be made, an output that cannot be written, a memory store: one
    line each, no traceback."""
    good = tmp_path / "t.jsonl"
    good.write_text('{"role": "user", "content": "hi"}\n')
    code, _, err = run("import", str(good), "--db", str(good / "x.db"))  # a file where a folder must be
    assert code == 1 and err.startswith("error: ") and "cannot create the folder" in err and "Traceback" not in err
    code, _, _ = run("import", str(good), "--db", str(tmp_path / "s.db"))
    assert code == 0
    code, _, err = run("export", "latest", "--db", str(tmp_path / "s.db"), "-o", str(tmp_path / "no" / "out.jsonl"))
    assert code == 1 and err.startswith("error: No such file or directory: ") and err.count("\n") == 1
    code, out, err = run("list", "--db", "memory://")
    assert code == 0 and out.strip() == "no sessions" and "Traceback" not in err


def test_several_system_lines_join_none_is_dropped(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"system": "a"}\n{"system": "b"}\n{"role": "user", "content": "hi"}\n')
    code, _, _ = run("import", str(f), "--db", str(tmp_path / "s.db"))
    assert code == 0
    code, out, _ = run("export", "latest", "--db", str(tmp_path / "s.db"))
    assert code == 0 and json.loads(out.splitlines()[0]) == {"system": "a\n\nb"}


def test_an_openai_file_imported_as_anthropic_says_which_format_to_use(tmp_path: Path) -> None:
    f = tmp_path / "oa.jsonl"
    f.write_text('{"role": "system", "content": "s"}\n{"role": "user", "content": "hi"}\n')
    code, _, err = run("import", str(f), "--db", str(tmp_path / "s.db"))
    assert code == 1 and "line 1" in err and "--format openai" in err
    assert not (tmp_path / "s.db").exists() or run("list", "--db", str(tmp_path / "s.db"))[1].strip() == "no sessions"


def test_a_search_without_matches_says_so_on_stderr(db: Path) -> None:
    code, out, err = run("search", "zzzqqq", "--db", str(db))
    assert code == 0 and out == "" and err.strip() == "no matches"
