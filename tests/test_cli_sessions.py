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
    bad = run("sessions", "search", "a=b", "--db", db, ok=False)  # FTS5 syntax: one clear line
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


def test_list_on_an_empty_store(tmp_path: Path) -> None:
    assert json.loads(run("sessions", "list", "--db", str(tmp_path / "e.db"), "--json").output) == []
    assert "no sessions" in run("sessions", "list", "--db", str(tmp_path / "e.db")).output


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
