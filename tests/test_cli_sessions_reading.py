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
