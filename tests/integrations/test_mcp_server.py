"""``ctxmem mcp serve`` driven by the official MCP SDK's own stdio client."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from ctxmem import Message, Session, SQLiteStore, ToolUseBlock
from ctxmem.errors import InputError
from ctxmem.integrations.mcp import MemoryFiles
from support import chain_counting_store

CTXMEM = shutil.which("ctxmem") or str(Path(sys.executable).with_name("ctxmem"))
LOG = "\n".join(f"step {i}: ok" for i in range(60)) + "\nerror: shared memory limit 101376 bytes exceeded\n"


def make_db(path: Path) -> str:
    with SQLiteStore(str(path)) as store:
        s = Session.create(store, session_id="run-1", title="kernel run", tokenizers=["o200k_base"])
        s.record(Message.user("Optimize the kernel."))
        for k in range(8):
            s.record(Message.assistant(ToolUseBlock(f"toolu_{k}", "compile", {"attempt": k})))
            s.record_tool_result(f"toolu_{k}", LOG if k == 2 else f"attempt {k}: " + "compiled fine " * 300)
            s.record(Message.assistant(f"Attempt {k} done."))
            s.record(Message.user("Continue."))
        return s.id


def text_of(result: Any) -> str:
    assert not result.is_error, result.content
    return "".join(getattr(c, "text", "") for c in result.content)


def payload(result: Any) -> Any:
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if isinstance(data, dict) and set(data) == {"result"} else data
    return json.loads(text_of(result))


async def session_calls(args: list[str], calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[Any]]:
    params = StdioServerParameters(
        # the console script a user (or an MCP host's config) runs
        command=CTXMEM, args=["mcp", "serve", *args],
        env={k: v for k, v in os.environ.items() if k.startswith(("TIKTOKEN", "HF_", "PYTHON", "CTXMEM", "PATH", "XDG_"))},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        tools = await client.list_tools()
        results = [await client.call_tool(name, arguments) for name, arguments in calls]
    return sorted(t.name for t in tools.tools), results


def test_stdio_server_lists_and_answers_its_tools(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sid = make_db(db)
    names, (listing, found, dense, recalled, grepped, built, view, refused) = anyio.run(session_calls, [
        "--db", str(db)], [
        ("list_sessions", {}),
        ("search", {"query": "shared memory", "session_id": sid}),
        ("search", {"query": "shared memory limit exceeded", "session_id": sid, "dense": True, "limit": 3}),
        ("recall", {"session_id": sid, "handle": "toolu_2", "lines": "2-3"}),
        ("recall", {"session_id": sid, "handle": "toolu_2", "grep": "limit \\d+"}),
        ("build_context", {"session_id": sid, "preset": "masking-200k", "context_window": 6000}),
        ("memory", {"session_id": sid, "command": "view", "path": "/memories"}),
        ("memory", {"session_id": sid, "command": "create", "path": "/memories/notes.md", "file_text": "x"}),
    ])
    assert names == ["build_context", "list_sessions", "memory", "recall", "search"]
    sessions = payload(listing)
    assert [s["id"] for s in sessions] == [sid] and sessions[0]["title"] == "kernel run"
    assert sessions[0]["events"] == 1 + 8 * 4  # the task, then call, result, answer, next prompt
    hits = payload(found)["hits"]
    assert [h["handle"] for h in hits] == ["toolu_2"] and "shared" in hits[0]["snippet"]
    fused = payload(dense)
    assert fused["mode"] == "hybrid" and fused["embedder"] and fused["hits"][0]["handle"] == "toolu_2"
    assert "dense" in fused["hits"][0]["sources"]
    assert text_of(recalled) == "2: step 1: ok\n3: step 2: ok"
    assert text_of(grepped) == "61: error: shared memory limit 101376 bytes exceeded"
    report = payload(built)
    r = report["report"]
    assert r["tokens_out"] <= r["available"] < r["tokens_in"] and (r["masked"] or r["dropped"])
    assert report["messages"][0]["content"][0]["text"] == "Optimize the kernel."
    assert text_of(view).startswith("Directory /memories")
    assert refused.is_error and "read-only" in text_of_error(refused)
    # a read-only server never wrote the store: no compaction recorded, no embedding cached
    with SQLiteStore(str(db)) as store:
        assert all(se.kind != "compaction" for se in store.chain(sid).events)
    assert _embedding_rows(db) == 0
    assert not (tmp_path / "s-memories" / sid / "notes.md").exists()


def _embedding_rows(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables if "embed" in t)
    finally:
        con.close()


def test_streamable_http_transport(tmp_path: Path) -> None:
    import socket
    import subprocess
    import time

    from mcp.client.streamable_http import streamable_http_client

    db = tmp_path / "s.db"
    sid = make_db(db)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([CTXMEM, "mcp", "serve", "--db", str(db), "--transport", "http", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)

        async def call() -> tuple[list[str], Any]:
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write), \
                    ClientSession(read, write) as client:
                await client.initialize()
                tools = await client.list_tools()
                return sorted(t.name for t in tools.tools), await client.call_tool(
                    "recall", {"session_id": sid, "handle": "toolu_2", "grep": "limit"})

        names, recalled = anyio.run(call)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "recall" in names and "101376" in text_of(recalled)


def text_of_error(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def test_memory_commands_with_writes_allowed(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sid = make_db(db)
    mem = tmp_path / "mem"
    _, results = anyio.run(session_calls, ["--db", str(db), "--allow-writes", "--memory-dir", str(mem)], [
        ("memory", {"session_id": sid, "command": "create", "path": "/memories/notes/a.md",
                    "file_text": "limit: 96KB\nbest: v3\n"}),
        ("memory", {"session_id": sid, "command": "str_replace", "path": "/memories/notes/a.md",
                    "old_str": "96KB", "new_str": "99KB"}),
        ("memory", {"session_id": sid, "command": "insert", "path": "/memories/notes/a.md",
                    "insert_line": 1, "insert_text": "device: SIMX-1"}),
        ("memory", {"session_id": sid, "command": "rename", "old_path": "/memories/notes/a.md",
                    "new_path": "/memories/facts.md"}),
        ("memory", {"session_id": sid, "command": "view", "path": "/memories/facts.md"}),
        ("memory", {"session_id": sid, "command": "view", "path": "/memories/../../s.db"}),
        ("memory", {"session_id": "../x", "command": "view", "path": "/memories"}),
        ("memory", {"session_id": sid, "command": "delete", "path": "/memories/facts.md"}),
    ])
    assert all(not r.is_error for r in results[:5])
    assert text_of(results[4]) == "     1\tlimit: 99KB\n     2\tdevice: SIMX-1\n     3\tbest: v3"
    assert results[5].is_error and "may not contain" in text_of_error(results[5])
    assert results[6].is_error and "no session '../x'" in text_of_error(results[6])  # and no folder made
    assert sorted(p.name for p in mem.iterdir()) == [sid]
    assert not results[7].is_error and not (mem / sid / "facts.md").exists()


def test_memory_paths_cannot_escape_through_symlinks(tmp_path: Path) -> None:
    mem = MemoryFiles(tmp_path / "mem", writable=True)
    mem.run("s1", "create", {"path": "/memories/ok.txt", "file_text": "fine"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "mem" / "s1" / "link").symlink_to(outside)
    with pytest.raises(InputError, match="escapes"):
        mem.run("s1", "create", {"path": "/memories/link/evil.txt", "file_text": "x"})
    with pytest.raises(InputError, match="must start with /memories"):
        mem.run("s1", "view", {"path": "/etc/passwd"})
    assert not list(outside.iterdir())
    assert mem.run("s1", "view", {"path": "/memories/ok.txt"}) == "     1\tfine"


# --------------------------------------------------------------------------- any store URL


def _record_run(store: Any) -> str:
    s = Session.create(store, session_id="run-1", title="kernel run", tokenizers=["o200k_base"])
    s.record(Message.user("Optimize the kernel."))
    for k in range(8):
        s.record(Message.assistant(ToolUseBlock(f"toolu_{k}", "compile", {"attempt": k})))
        s.record_tool_result(f"toolu_{k}", LOG if k == 2 else f"attempt {k}: " + "compiled fine " * 300)
        s.record(Message.assistant(f"Attempt {k} done."))
        s.record(Message.user("Continue."))
    return s.id


STORE_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("list_sessions", {}),
    ("search", {"query": "shared memory", "session_id": "run-1"}),
    ("recall", {"session_id": "run-1", "handle": "toolu_2", "grep": "limit \\d+"}),
    ("build_context", {"session_id": "run-1", "preset": "masking-200k", "context_window": 6000,
                       "messages": False}),
]


def _check_store_answers(results: list[Any]) -> None:
    listing, found, grepped, built = results
    assert [s["id"] for s in payload(listing)] == ["run-1"] and payload(listing)[0]["events"] == 33
    assert [h["handle"] for h in payload(found)["hits"]] == ["toolu_2"]
    assert text_of(grepped) == "61: error: shared memory limit 101376 bytes exceeded"
    r = payload(built)["report"]
    assert r["tokens_out"] <= r["available"] < r["tokens_in"]


def test_a_sqlite_url_and_the_environment_name_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.db"
    make_db(db)
    _, results = anyio.run(session_calls, ["--store", f"sqlite:///{db}"], STORE_CALLS)  # sqlite:////abs
    _check_store_answers(results)
    monkeypatch.setenv("CTXMEM_STORE", f"sqlite:///{db}")
    _, results = anyio.run(session_calls, [], STORE_CALLS)
    _check_store_answers(results)


def test_a_postgresql_url_serves_the_shared_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pg_server
    from ctxmem.store import open_store

    url = pg_server.shared().fresh_url()
    with open_store(url) as store:
        _record_run(store)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    _, results = anyio.run(session_calls, ["--store", url], STORE_CALLS)
    _check_store_answers(results)
    # with writes allowed, memory files land in a per-database folder under XDG_DATA_HOME
    _, (created,) = anyio.run(session_calls, ["--store", url, "--allow-writes"], [
        ("memory", {"session_id": "run-1", "command": "create", "path": "/memories/a.md", "file_text": "x"})])
    assert not created.is_error
    (note,) = (tmp_path / "xdg" / "ctxmem" / "memories").glob("*/run-1/a.md")
    assert note.read_text() == "x" and "@" not in str(note) and "search_path" not in str(note)


def test_a_missing_store_file_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    import subprocess

    for option in (str(tmp_path / "nope.db"), f"sqlite:///{tmp_path / 'nope.db'}"):
        proc = subprocess.run([CTXMEM, "mcp", "serve", "--store", option], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            f"error: field 'store': no session store at {tmp_path / 'nope.db'}; pass --store (or --db) "
            "naming an existing ctxmem database"]
        assert not (tmp_path / "nope.db").exists()


def test_build_context_of_a_live_session_waiting_on_tools_and_memory_for_any_session_id(tmp_path: Path) -> None:
    """build_context refused a session whose agent was running tools ("record their
    results", which a reader cannot); the memory tool refused ids such as user@example.com
    and made folders for ids of no session, even on a read-only server."""
    db = tmp_path / "s.db"
    sid = make_db(db)
    with SQLiteStore(str(db)) as store:
        s = Session.open(store, sid)
        s.record(Message.assistant("checking", ToolUseBlock("toolu_live", "compile", {"attempt": 9})))
        Session.create(store, session_id="user@example.com").record(Message.user("hi"))
    mem = tmp_path / "mem"
    _, results = anyio.run(session_calls, ["--db", str(db), "--memory-dir", str(mem)], [
        ("build_context", {"session_id": sid, "preset": "masking-200k", "context_window": 20000}),
        ("memory", {"session_id": "user@example.com", "command": "view", "path": "/memories"}),
        ("memory", {"session_id": "no-such-session", "command": "view", "path": "/memories"}),
    ])
    built = payload(results[0])
    assert built["waiting_tool_calls"] == ["toolu_live"]
    last = built["messages"][-1]
    assert last["role"] == "assistant" and last["content"][-1]["id"] == "toolu_live"
    assert text_of(results[1]) == "Directory /memories:"
    assert results[2].is_error and "no session 'no-such-session'" in text_of_error(results[2])
    assert not mem.exists() or list(mem.iterdir()) == []  # read-only: no folder made


def test_build_context_asked_every_turn_builds_incrementally(tmp_path: Path) -> None:
    """A host asking build_context each turn: the server keeps the builder and follows the
    session (no whole-chain read per call), and each answer is the one a new server gives
    for the first call, then follows the session as it grows, a waiting call included."""
    from ctxmem.integrations.mcp import create_server
    from ctxmem.samples import synthetic_session

    msgs = synthetic_session(20, seed=2)
    store = chain_counting_store(str(tmp_path / "c.db"))
    session = Session.create(store, tokenizers=["o200k_base"])
    session.record_many(msgs[:21])
    server = create_server(store)
    args = {"session_id": session.id, "preset": "masking-200k", "context_window": 6000}

    async def call() -> Any:
        return payload(await server.call_tool("build_context", args))

    first = anyio.run(call)
    assert first["messages"] == anyio.run(lambda: _fresh_build(tmp_path, args))["messages"]
    chains = store.chains
    for k in range(21, len(msgs) - 1, 2):
        session.record_many(msgs[k : k + 2])
        got = anyio.run(call)
        # the turn just recorded ends the context, and the context fits the window
        ends = {b.get("tool_use_id") for b in got["messages"][-1]["content"]}
        assert {r.tool_use_id for r in msgs[k + 1].tool_results} <= ends
        assert got["report"]["tokens_out"] <= got["report"]["available"]
    assert store.chains == chains  # followed, not re-read
    session.record(Message.assistant(ToolUseBlock("toolu_wait", "compile", {})))
    waiting = anyio.run(call)
    assert waiting["waiting_tool_calls"] == ["toolu_wait"]
    assert waiting["messages"][-1]["content"][-1]["id"] == "toolu_wait"


async def _fresh_build(tmp_path: Path, args: dict[str, Any]) -> Any:
    from ctxmem.integrations.mcp import create_server

    server = create_server(SQLiteStore(str(tmp_path / "c.db")))
    return payload(await server.call_tool("build_context", args))
