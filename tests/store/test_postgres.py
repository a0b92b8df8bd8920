"""The PostgreSQL store on a real server (started by ``tests/pg_server.py``), beyond the contract.

The shared contract (``test_store_contract.py``) runs on PostgreSQL through the ``store``
fixture's ``postgres`` param. Here: what only a server backend has to show —

* 8 writer *processes* appending to one session lose nothing and leave one linear chain;
* writers SIGKILLed mid-run lose nothing they reported committed, the chain stays linear,
  and a resumed writer answers the calls the killed one left pending;
* a fresh process reloads exactly what was written;
* text PostgreSQL cannot hold (NUL) round-trips;
* opening by URL, concurrent first opens migrating once, one-line errors.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ctxmem.errors import StoreError
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import PostgresStore, open_store
from ctxmem.tokens import count_messages, get_tokenizer

WRITER = Path(__file__).with_name("writer_proc.py")


def _writer(mode: str, url: str, sid: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), mode, url, sid, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _check_linear(store: PostgresStore, sid: str) -> list[int]:
    """Every event of the database is in ``sid``'s chain, each the child of the one before."""
    with store.pool.connection() as conn:
        rows = conn.execute("SELECT id, parent_id, depth FROM events ORDER BY id").fetchall()
    prev = None
    for depth, (eid, parent, d) in enumerate(rows, start=1):
        assert (parent, d) == (prev, depth), (eid, parent, d)
        prev = eid
    chain = [e.id for e in store.chain(sid).events]
    assert chain == [r[0] for r in rows]
    return chain


def _check_totals(store: Any, sid: str) -> None:
    s = Session.open(store, sid)
    counts = count_messages(s.messages(), get_tokenizer("heuristic"))
    t = s.totals("heuristic")
    assert (t.content, t.overhead) == (sum(c.content for c in counts), sum(c.overhead for c in counts))
    view = s.chain(tokenizers=["heuristic"])
    c = o = 0
    for ec in view.counts["heuristic"]:
        c, o = c + ec.content, o + ec.overhead
        assert (ec.cum_content, ec.cum_overhead) == (c, o)


def test_eight_writer_processes_on_one_session_lose_nothing(pg_url: str) -> None:
    with open_store(pg_url) as store:
        sid = Session.create(store, session_id="shared", tokenizers=["heuristic"]).id
    events = 120
    procs = [_writer("bulk", pg_url, sid, str(events), f"w{i}") for i in range(8)]
    printed = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "serializ" not in err.lower() and "deadlock" not in err.lower(), err
        mine = [int(line.split()[0]) for line in out.splitlines()]
        assert len(mine) == events and mine == sorted(mine)
        printed.extend(mine)
    with PostgresStore(pg_url) as store:
        chain = _check_linear(store, sid)
        assert sorted(printed) == chain  # every committed event, once, in one chain
        assert store.event_count(sid) == 8 * events
        assert Session.open(store, sid).pending_tool_uses() == []
        _check_totals(store, sid)


def test_sigkilled_writers_lose_nothing_committed(pg_url: str) -> None:
    with open_store(pg_url) as store:
        sid = Session.create(store, session_id="shared", tokenizers=["heuristic"]).id
    rng = random.Random(7)
    procs = [_writer("bulk", pg_url, sid, "100000", f"k{i}") for i in range(8)]
    printed: dict[int, list[int]] = {i: [] for i in range(8)}

    def read(i: int, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            printed[i].append(int(line.split()[0]))

    readers = [threading.Thread(target=read, args=(i, p)) for i, p in enumerate(procs)]
    for t in readers:
        t.start()
    deadline = time.monotonic() + 120
    while min(len(v) for v in printed.values()) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in procs:  # at different moments, mid-append for most of them
        time.sleep(rng.uniform(0, 0.05))
        p.send_signal(signal.SIGKILL)
    for p, t in zip(procs, readers, strict=True):
        p.wait(timeout=60)
        t.join(timeout=60)
        assert p.returncode == -signal.SIGKILL
    with PostgresStore(pg_url) as store:
        chain = _check_linear(store, sid)
        ids = set(chain)
        for mine in printed.values():
            assert len(mine) >= 20 and set(mine) <= ids  # reported after commit: never lost
        # at most one committed-but-unprinted event per killed writer
        assert len(chain) - sum(len(v) for v in printed.values()) <= 8
        _check_totals(store, sid)


def test_a_resumed_writer_answers_what_the_killed_one_left_pending(pg_url: str) -> None:
    kills = 3
    pending_at_kill = 0
    for round_ in range(kills + 1):
        p = _writer("crash", pg_url, "agent", str(round_))
        assert p.stdout is not None
        answered = 0
        while (line := p.stdout.readline().strip()) != "ready":  # interrupted calls answered first
            assert line.endswith(tuple("0123456789")) and "tool_result" in line, line
            answered += 1
        assert (answered > 0) == (round_ > 0 and pending_at_kill > 0)
        for _ in range(15 + 10 * round_):
            p.stdout.readline()
        if round_ < kills:
            p.send_signal(signal.SIGKILL)
        else:
            p.terminate()
        p.wait(timeout=60)
        with PostgresStore(pg_url, pool_size=1) as store:
            pending_at_kill = len(Session.open(store, "agent").pending_tool_uses())
    with PostgresStore(pg_url) as store:
        _check_linear(store, "agent")
        s = Session.open(store, "agent")
        interrupted = [e for e in s.events() if e.kind == "tool_result" and "interrupted" in store.tool_output(e.id)]
        assert len(s.events()) > 50
        # every call but those of the last (terminated) run got a result
        results = {e.event.result.tool_use_id for e in s.events() if e.kind == "tool_result"}
        calls = [e.event.tool_use.id for e in s.events() if e.kind == "tool_call"]
        assert [c for c in calls if c not in results] == [u.id for u in s.pending_tool_uses()]
        assert len(interrupted) <= 3 * kills
        _check_totals(store, "agent")


def test_a_fresh_process_reloads_what_was_written(pg_url: str) -> None:
    with open_store(pg_url) as store:
        s = Session.create(store, session_id="r", tokenizers=["heuristic"])
        s.record(Message.user("optimize the kernel"))
        s.record(Message.assistant("compiling", ToolUseBlock("c1", "compile", {"cfg": {"BLOCK": 64}})))
        s.record_tool_result("c1", "OutOfResources: shared memory 196608 > 101376", tool_name="compile")
        expected = s.messages()
    code = (
        "import sys, json\nfrom ctxmem.store import open_store\nfrom ctxmem.session import Session\n"
        "s = Session.open(open_store(sys.argv[1]), 'r')\n"
        "print(json.dumps([len(s.messages()), s.totals('heuristic').total, s.store.search('OutOfResources')[0].tool_use_id]))"
    )
    out = subprocess.run([sys.executable, "-c", code, pg_url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    total = sum(c.total for c in count_messages(expected, get_tokenizer("heuristic")))
    assert out.stdout.strip() == f'[{len(expected)}, {total}, "c1"]'


def test_text_postgres_cannot_hold_round_trips(pg_url: str) -> None:
    odd = "nul\x00here \x01 and a surrogate pair \U0001f600"
    with open_store(pg_url) as store:
        s = Session.create(store)
        s.record(Message.user(odd))
        s.record(Message.assistant(ToolUseBlock("t\x00", "to\x00ol", {"k": odd})))
        s.record(Message.user(ToolResultBlock("t\x00", odd)))
        s.record(Message.assistant(ToolUseBlock("t2", "cat", {})))
        s.record(Message.user(ToolResultBlock("t2", (TextBlock(odd), TextBlock("b")))))
        msgs = s.messages()
    with open_store(pg_url) as store:
        again = Session.open(store, s.id)
        assert again.messages() == msgs
        assert msgs[1].content[0] == ToolUseBlock("t\x00", "to\x00ol", {"k": odd})
        hit = store.search("surrogate", session_id=s.id)
        assert sorted(h.tool_use_id for h in hit) == ["t\x00", "t2"]
        assert {store.tool_output(h.event_id) for h in hit} == {odd, msgs[4].content[0].text}


def test_concurrent_first_opens_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PostgresStore(pg_url, pool_size=1).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with PostgresStore(pg_url, pool_size=1) as store, store.pool.connection() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM _ctxmem_migrations ORDER BY name")]
    from ctxmem.store.pg_migrations import MIGRATIONS

    assert names == [n for n, _ in MIGRATIONS]


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    with pytest.raises(StoreError) as exc:
        open_store("postgresql://u:secret@127.0.0.1:1/db")
    msg = str(exc.value)
    assert "secret" not in msg and "u:***@127.0.0.1:1" in msg and "\n" not in msg


def test_cli_reads_and_writes_a_postgres_store_by_url(pg_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ctxmem.cli import cli

    with open_store(pg_url) as store:
        s = Session.create(store, title="pg run")
        s.record(Message.user("hello from postgres"))
    listed = CliRunner().invoke(cli, ["sessions", "list", "--store", pg_url, "--json"])
    assert listed.exit_code == 0, listed.output
    assert s.id in listed.output and "pg run" in listed.output
    shown = CliRunner(env={"CTXMEM_STORE": pg_url, "CTXMEM_DB": None}).invoke(cli, ["sessions", "show", "latest"])
    assert shown.exit_code == 0 and "(pg run)" in shown.output and "messages: 1" in shown.output, shown.output
    # an export from Postgres imports into SQLite (--db, the shorthand) unchanged
    out = tmp_path / "s.jsonl"
    exported = CliRunner().invoke(cli, ["sessions", "export", s.id, "--store", pg_url, "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    imported = CliRunner().invoke(cli, ["sessions", "import", str(out), "--db", str(tmp_path / "x.db"), "--json"])
    assert imported.exit_code == 0, imported.output
    bad = CliRunner().invoke(cli, ["sessions", "list", "--store", "postgresql://u:pw@127.0.0.1:1/x"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "pw" not in bad.output
