"""``ctxmem sessions`` and ``ctxmem demo`` end to end through click: every read command's
``--json``, both wire formats in and out, search, and the demo's exact totals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctxmem.cli import cli
from ctxmem.messages import from_openai, message_texts, to_anthropic, to_openai
from ctxmem.samples import synthetic_session
from support import tiktoken_encoding_or_skip


def run(*args: str, ok: bool = True) -> Any:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def conv() -> list[Any]:
    return synthetic_session(6, seed=3)


def _write(path: Path, objs: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


def test_import_list_show_export_search(tmp_path: Path, conv: list[Any]) -> None:
    db = str(tmp_path / "s.db")
    src = _write(tmp_path / "a.jsonl", to_anthropic(conv))
    sid = json.loads(run("sessions", "import", str(src), "--db", db, "--tokenizer", "heuristic",
                         "--title", "first", "--json").output)["id"]
    listed = json.loads(run("sessions", "list", "--db", db, "--json").output)
    assert [(r["id"], r["title"], r["tokenizers"]) for r in listed] == [(sid, "first", ["heuristic"])]
    assert listed[0]["events"] > len(conv)  # tool calls and results are events of their own
    shown = json.loads(run("sessions", "show", sid, "--db", db, "--json").output)
    assert shown["messages"] == len(conv)
    exported = run("sessions", "export", sid, "--db", db).output
    assert [json.loads(x) for x in exported.splitlines()] == to_anthropic(conv)
    # FTS5 over tool outputs: a word from one tool result finds that result's event
    result_text = next(b.text for m in conv for b in m.tool_results)
    word = max(re.findall(r"[A-Za-z]{5,}", result_text), key=len)
    hits = json.loads(run("sessions", "search", word, "--db", db, "--json").output)
    assert hits and all(h["session_id"] == sid for h in hits)
    assert run("sessions", "search", "zzqqxxnotthere", "--db", db, "--json").output.strip() == "[]"
    assert json.loads(run("sessions", "search", "a=b", "--db", db, "--json").output) == []  # plain text: no syntax
    bad = run("sessions", "search", "a=b", "--fts", "--db", db, ok=False)  # raw FTS5 syntax: one clear line
    assert bad.exit_code == 1 and "query" in bad.output and "Traceback" not in bad.output


def test_openai_format_in_and_out(tmp_path: Path, conv: list[Any]) -> None:
    db = str(tmp_path / "s.db")
    src = _write(tmp_path / "o.jsonl", to_openai(conv))
    sid = json.loads(run("sessions", "import", str(src), "--format", "openai", "--db", db,
                         "--tokenizer", "heuristic", "--json").output)["id"]
    out = run("sessions", "export", sid, "--format", "openai", "--db", db).output
    assert from_openai([json.loads(x) for x in out.splitlines()]) == from_openai(to_openai(conv))
    anth = run("sessions", "export", sid, "--db", db).output  # the same session, Anthropic-shaped
    _, msgs = from_openai(to_openai(conv))
    assert [json.loads(x) for x in anth.splitlines()] == to_anthropic(msgs)


def test_events_fork_and_rewind(tmp_path: Path, conv: list[Any]) -> None:
    db = str(tmp_path / "s.db")
    src = _write(tmp_path / "a.jsonl", to_anthropic(conv))
    sid = json.loads(run("sessions", "import", str(src), "--db", db, "--tokenizer", "heuristic", "--json").output)["id"]
    events = json.loads(run("sessions", "events", sid, "--db", db, "--last", "0", "--json").output)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events) and len(events) > 8
    call = next(e for e in events if e["kind"] == "tool_call")  # fork right after a tool call: it is pending there
    table_lines = run("sessions", "events", sid, "--db", db, "--last", "3").output.splitlines()
    assert table_lines[0].split() == ["id", "kind", "role", "content"]
    assert [int(line.split()[0]) for line in table_lines[2:]] == [e["id"] for e in events[-3:]]
    forked = json.loads(run("sessions", "fork", sid, "--at", str(call["id"]), "--title", "b", "--db", db,
                            "--json").output)
    assert (forked["parent_session_id"], forked["fork_event_id"], forked["title"]) == (sid, call["id"], "b")
    assert forked["events"] == events.index(call) + 1
    assert call["detail"].split("(")[1].rstrip(")") in [p["id"] for p in forked["pending_tool_uses"]]
    fork_export = [json.loads(x) for x in run("sessions", "export", forked["id"], "--db", db).output.splitlines()]
    full_export = [json.loads(x) for x in run("sessions", "export", sid, "--db", db).output.splitlines()]
    assert fork_export[:-1] == full_export[: len(fork_export) - 1]  # the shared history, untouched
    text = run("sessions", "fork", sid, "--at", str(call["id"]), "--db", db).output
    assert text.startswith(f"forked {sid} at event {call['id']} as session ") and "pending:" in text
    # rewind: the head moves back, later events stay stored (a fork at one brings it back)
    mid = events[len(events) // 2]["id"]
    rewound = json.loads(run("sessions", "rewind", sid, "--to", str(mid), "--db", db, "--json").output)
    assert (rewound["head_event_id"], rewound["events"], rewound["events_before"]) == (
        mid, [e["id"] for e in events].index(mid) + 1, len(events))
    back = json.loads(run("sessions", "fork", sid, "--at", str(mid), "--db", db, "--json").output)
    assert back["events"] == rewound["events"]
    # the session may be named by a unique prefix, as in every other sessions command
    by_prefix = json.loads(run("sessions", "rewind", sid[:8], "--to", str(mid), "--db", db, "--json").output)
    assert (by_prefix["id"], by_prefix["head_event_id"]) == (sid, mid)
    # errors: one line, exit 1, nothing changed
    for args in (("rewind", sid, "--to", str(events[-1]["id"])), ("fork", sid, "--at", "999999"),
                 ("rewind", "nosuch", "--to", "1"), ("fork", "nosuch", "--at", "1")):
        r = run("sessions", *args, "--db", db, ok=False)
        assert r.exit_code == 1 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
        assert "Traceback" not in r.output
    assert "ctxmem sessions events" in run("sessions", "rewind", sid, "--to", "999999", "--db", db, ok=False).output
    assert json.loads(run("sessions", "show", sid, "--db", db, "--json").output)["head_event_id"] == mid
    assert len(json.loads(run("sessions", "list", "--db", db, "--json").output)) == 4


def test_import_refusals_exit_1_and_create_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    cases = {
        "empty.jsonl": (b"", "no messages to import: the file is empty"),
        "blank.jsonl": (b"\n \n", "only blank lines"),
        "system.jsonl": (b'{"system": "s"}\n', "only a system prompt"),
        "nan.jsonl": (b'{"role": "user", "content": "q"}\n{"role": "assistant", "content": [{"type": "tool_use", '
                      b'"id": "a", "name": "f", "input": {"x": NaN}}]}\n', "line 2 field 'content[0].input.x'"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        r = run("sessions", "import", str(tmp_path / name), "--db", db, "--tokenizer", "heuristic", ok=False)
        assert r.exit_code == 1 and needle in r.output and r.output.count("\n") == 1, r.output
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"role": "user", "content": "hello"}\n')
    run("sessions", "import", str(tmp_path / "bom.jsonl"), "--db", db, "--tokenizer", "heuristic")
    assert len(json.loads(run("sessions", "list", "--db", db, "--json").output)) == 1


def test_with_json_an_error_is_json_on_stdout_too(tmp_path: Path) -> None:
    """A script reading --json output can parse a failure (type, message, and the place it
    names); the one-line message still goes to stderr, and without --json stdout stays empty."""
    db = str(tmp_path / "s.db")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"role": "user", "content": "q"}\n{"role": "assistant", "content": [{"type": "tool_use", '
                    b'"id": "", "name": "f", "input": {}}]}\n')
    r = CliRunner().invoke(cli, ["sessions", "import", str(bad), "--db", db, "--tokenizer", "heuristic", "--json"])
    assert r.exit_code == 1
    got = json.loads(r.stdout)["error"]
    assert got["type"] == "InputError" and got["line"] == 2 and got["field"] == "content[0].id"
    assert got["source"] == str(bad) and "must not be empty" in got["message"]
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    r = CliRunner().invoke(cli, ["sessions", "show", "nope", "--db", db, "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["type"] == "SessionNotFoundError"
    r = CliRunner().invoke(cli, ["sessions", "show", "nope", "--db", db])
    assert r.exit_code == 1 and r.stdout == "" and "no session 'nope'" in r.stderr


def test_list_on_an_empty_store(tmp_path: Path) -> None:
    assert json.loads(run("sessions", "list", "--db", str(tmp_path / "e.db"), "--json").output) == []
    assert "no sessions" in run("sessions", "list", "--db", str(tmp_path / "e.db")).output
    assert not (tmp_path / "e.db").exists()  # a read creates nothing


def test_demo_records_and_reports_exact_totals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = tiktoken_encoding_or_skip("o200k_base")
    monkeypatch.chdir(tmp_path)
    report = json.loads(run("demo", "--turns", "30", "--json").output)
    assert (tmp_path / "ctxmem-demo.db").is_file()
    # the demo's session is synthetic_session(turns, seed) at the demo's output scale
    assert (report["turns"], report["seed"], report["tokenizer"]) == (30, 0, "o200k_base")
    msgs = synthetic_session(30, seed=0, output_scale=report["output_scale"])
    assert report["messages"] == len(msgs)
    expected = sum(len(enc.encode_ordinary(t)) for m in msgs for t in message_texts(m))
    assert report["content_tokens"] == expected
    assert report["total_tokens"] == expected + report["overhead_tokens"] > expected
    # every shipped demo preset built a context (or said why not) within its budget
    built = {s["preset"]: s for s in report["strategies"]}
    assert built and all("error" in s or s["tokens_out"] > 0 for s in built.values())
