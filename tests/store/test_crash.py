"""Crash safety: a writer killed with SIGKILL at random points loses no committed event.

One database is reused across rounds; each round starts a writer (which resumes the
session like an agent would, answering an interrupted tool call), lets it append for a
random short time and kills it. After every kill the store is reopened and checked:
every event the writer printed (it prints only after commit) exists, the file passes
``PRAGMA integrity_check``, pending tool calls match the raw tables, and a tool call left
without its result is reported by ``pending_tool_uses``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctxmem.messages import Message, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import count_messages, get_tokenizer

WRITER = Path(__file__).with_name("writer_proc.py")
ROUNDS = 55


def _wait_ready(out: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while b"ready\n" not in out.read_bytes():
        if proc.poll() is not None:
            raise AssertionError(f"writer exited early ({proc.returncode}): {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "writer never became ready"
        time.sleep(0.005)


def _committed_lines(out: Path) -> list[tuple[int, str, str]]:
    rows = []
    for line in out.read_bytes().decode().split("\n")[:-1]:  # a torn last line has no newline
        parts = line.split(" ")
        if len(parts) == 3:
            rows.append((int(parts[0]), parts[1], parts[2]))
    return rows


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_committed_event(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    with SQLiteStore(db) as store:
        Session.create(store, session_id="crash", tokenizers=["heuristic"])
    rng = random.Random(20240611)
    printed: dict[int, tuple[str, str]] = {}
    interrupted_seen = 0
    for rnd in range(ROUNDS):
        out = tmp_path / f"round-{rnd}.out"
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), "crash", str(db), "crash", str(rnd)], stdout=fh, stderr=subprocess.PIPE
            )
        if rng.random() < 0.85:
            _wait_ready(out, proc)
            time.sleep(rng.uniform(0.0, 0.06))
        else:  # sometimes during start-up: opening, migrating, resuming
            time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        assert proc.returncode == -signal.SIGKILL, f"writer died on its own: {stderr}"
        for eid, kind, tid in _committed_lines(out):
            printed[eid] = (kind, tid)

        with SQLiteStore(db) as store:
            assert store.integrity_check() == "ok"
            present = {r[0] for r in store.conn.execute("SELECT id FROM events WHERE session_id = 'crash'")}
            missing = set(printed) - present
            assert not missing, f"round {rnd}: committed events lost: {sorted(missing)[:10]}"
            s = Session.open(store, "crash")
            pending = [u.id for u in s.pending_tool_uses()]
            # independently, from the raw table (the session never forks: its rows are its chain)
            calls = [r[0] for r in store.conn.execute(
                "SELECT tool_use_id FROM events WHERE session_id = 'crash' AND kind = 'tool_call' ORDER BY id")]
            answered = {r[0] for r in store.conn.execute(
                "SELECT tool_use_id FROM events WHERE session_id = 'crash' AND kind = 'tool_result'")}
            assert pending == [c for c in calls if c not in answered]
            last = store.conn.execute(
                "SELECT kind, tool_use_id FROM events WHERE session_id = 'crash' AND role IS NOT NULL "
                "ORDER BY id DESC LIMIT 1").fetchone()
            if last is not None and last[0] == "tool_call":
                assert last[1] in pending
                interrupted_seen += 1
            if rnd % 10 == 9 or rnd == ROUNDS - 1:
                msgs = s.messages()
                t = s.totals("heuristic")
                counts = count_messages(msgs, get_tokenizer("heuristic"))
                assert (t.content, t.overhead) == (sum(c.content for c in counts), sum(c.overhead for c in counts))
    assert len(printed) > ROUNDS  # the writers really wrote
    assert interrupted_seen > 0  # and some kills really landed between a call and its result


# --------------------------------------------------------------------------- import under SIGKILL

IMPORT_ROUNDS = 16


def _import_cmd(path: Path, db: Path, fmt: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from ctxmem.cli import main; sys.exit(main())",
            "sessions", "import", str(path), "--db", str(db), "--format", fmt]


def _session_state(store: SQLiteStore, sid: str) -> tuple[int, int, int, list[str]]:
    s = Session.open(store, sid)
    msgs = s.messages()
    return store.event_count(sid), len(msgs), s.totals("o200k_base").content, [u.id for u in s.pending_tool_uses()]


@pytest.mark.slow
def test_sigkill_during_import_leaves_the_whole_session_or_none(tmp_path: Path) -> None:
    """``ctxmem sessions import`` (a real process, both formats, the default tokenizer)
    killed at random moments, half of them the moment the WAL starts growing (the commit
    is being written). After every kill: the file is intact, and every session in it is
    exactly the clean import of its file; no empty or partial session, ever."""
    from ctxmem.messages import to_anthropic, to_openai
    from ctxmem.samples import synthetic_session

    conv = synthetic_session(150, seed=7)
    files = {"anthropic": tmp_path / "k.jsonl", "openai": tmp_path / "ko.jsonl"}
    files["anthropic"].write_text("".join(json.dumps(m) + "\n" for m in to_anthropic(conv)))
    files["openai"].write_text("".join(json.dumps(m) + "\n" for m in to_openai(conv)))
    expected: dict[str, tuple[int, int, int, list[str]]] = {}
    took: dict[str, float] = {}
    for fmt, path in files.items():  # clean imports: what a complete session is, and how long one takes
        clean = tmp_path / f"clean-{fmt}.db"
        t0 = time.monotonic()
        subprocess.run(_import_cmd(path, clean, fmt), check=True, capture_output=True)
        took[fmt] = time.monotonic() - t0
        with SQLiteStore(clean) as store:
            (only,) = store.list_sessions()
            expected[path.name] = _session_state(store, only.id)
    db = tmp_path / "killed.db"
    rng = random.Random(20261204)
    outcomes = {"killed": 0, "finished": 0, "complete": 0}
    for rnd in range(IMPORT_ROUNDS):
        fmt = ("anthropic", "openai")[rnd % 2]
        wal = Path(str(db) + "-wal")
        base = wal.stat().st_size if wal.exists() else 0  # a kill leaves its WAL behind
        proc = subprocess.Popen(_import_cmd(files[fmt], db, fmt), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if rnd % 4 < 2:  # the moment the first transaction's pages reach the WAL
            deadline = time.monotonic() + took[fmt] * 3 + 10
            while proc.poll() is None and time.monotonic() < deadline:
                if wal.exists() and wal.stat().st_size > base:
                    break
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0.2, 1.1) * took[fmt])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        if proc.returncode == -signal.SIGKILL:
            outcomes["killed"] += 1
        else:
            assert proc.returncode == 0, stderr
            outcomes["finished"] += 1
        with SQLiteStore(db) as store:
            assert store.integrity_check() == "ok"
            sessions = store.list_sessions()
            for info in sessions:
                state = _session_state(store, info.id)
                assert state == expected[info.metadata["source"]], f"round {rnd}: half-imported session {info.id}"
            assert store.conn.execute(  # no orphan event rows either
                "SELECT count(*) FROM events WHERE session_id NOT IN (SELECT id FROM sessions)").fetchone()[0] == 0
            outcomes["complete"] = len(sessions)
    assert outcomes["killed"] >= IMPORT_ROUNDS // 2, outcomes  # the kills really landed during imports
    assert outcomes["complete"] < IMPORT_ROUNDS, outcomes  # some imports were cut off
    # One more import, let run to its end, into the file the kills left behind (its WAL
    # included): it commits exactly one whole session. Deterministic, unlike the random
    # rounds, which on a slow or busy machine may all be cut off.
    subprocess.run(_import_cmd(files["anthropic"], db, "anthropic"), check=True, capture_output=True)
    with SQLiteStore(db) as store:
        assert store.integrity_check() == "ok"
        sessions = store.list_sessions()
        assert len(sessions) == outcomes["complete"] + 1, outcomes
        for info in sessions:
            assert _session_state(store, info.id) == expected[info.metadata["source"]]


# --------------------------------------------------------------------------- fork and rewind under SIGKILL

BRANCH_ROUNDS = 30
BRANCHER = Path(__file__).with_name("branch_proc.py")


def _check_chain(store: SQLiteStore, sid: str) -> list[int]:
    """The session's view is one unbroken chain with consistent counts; returns its ids."""
    s = Session.open(store, sid)
    view = s.chain()
    ids = [e.id for e in view.events]
    assert [e.parent_id for e in view.events] == [None, *ids[:-1]], f"{sid}: broken chain"
    assert view.session.head_event_id == (ids[-1] if ids else None)
    assert store.event_count(sid) == len(ids)
    t = s.totals("heuristic")
    counts = count_messages(s.messages(), get_tokenizer("heuristic"))
    assert (t.content, t.overhead) == (sum(c.content for c in counts), sum(c.overhead for c in counts)), sid
    calls = [e.event.tool_use.id for e in view.events if e.kind == "tool_call"]  # type: ignore[union-attr]
    answered = {e.event.result.tool_use_id for e in view.events if e.kind == "tool_result"}  # type: ignore[union-attr]
    assert [u.id for u in s.pending_tool_uses()] == [c for c in calls if c not in answered]
    return ids


@pytest.mark.slow
def test_sigkill_during_fork_and_rewind_leaves_each_done_or_not_started(tmp_path: Path) -> None:
    """A process forking, rewinding and appending on branches is killed at random points.
    After every kill: the file is intact; every reported fork exists, at its event, with the
    parent's history up to there; every branch's head is what its last reported operation
    left, or what the one in flight would leave; every view is an unbroken chain whose
    running totals and pending tool calls match the events."""
    db = tmp_path / "branch.db"
    base = "base"
    with SQLiteStore(db) as store:
        s = Session.create(store, session_id=base, tokenizers=["heuristic"])
        for k in range(6):
            s.record(Message.user(f"step {k}"))
            s.record(Message.assistant(ToolUseBlock(f"base{k}", "run", {"k": k})))
            s.record_tool_result(f"base{k}", f"out {k}")
    rng = random.Random(7)
    heads: dict[str, int | None] = {}  # session -> head its last reported operation left
    fork_at: dict[str, tuple[int, str]] = {}  # fork title -> (event, parent)
    for rnd in range(BRANCH_ROUNDS):
        out = tmp_path / f"branch-{rnd}.out"
        with out.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, str(BRANCHER), str(db), base, str(rnd)], stdout=fh,
                                    stderr=subprocess.PIPE)
        _wait_ready(out, proc)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        assert proc.returncode == -signal.SIGKILL, f"brancher died on its own: {stderr}"
        lines = [ln.split(" ") for ln in out.read_bytes().decode().split("\n")[:-1] if ln != "ready"]
        in_flight = lines[-1] if lines and lines[-1][0] == "I" else None
        for ln in lines:
            if ln[0] != "D":
                continue
            if ln[1] == "fork":
                fork_at[ln[2]] = (int(ln[3]), ln[4])
                heads[ln[5]] = int(ln[3])
            else:
                heads[ln[2]] = int(ln[3])
        with SQLiteStore(db) as store:
            assert store.integrity_check() == "ok"
            by_title = {i.title: i for i in store.list_sessions() if i.parent_session_id is not None}
            chains = {i.id: _check_chain(store, i.id) for i in store.list_sessions()}
            for tag, (at, parent) in fork_at.items():
                info = by_title[tag]  # every reported fork exists
                assert (info.fork_event_id, info.parent_session_id) == (at, parent)
            for title, info in by_title.items():  # and every fork, reported or not, is whole
                if title not in fork_at:  # committed, not reported: only the fork in flight
                    assert in_flight is not None and in_flight[1:3] == ["fork", title], f"round {rnd}: stray {title}"
                    at, parent = int(in_flight[3]), in_flight[4]
                    assert (info.fork_event_id, info.parent_session_id) == (at, parent)
                    assert chains[info.id][-1] == at  # created at its event, nothing else done to it yet
            for sid, head in heads.items():
                actual = store.get_session(sid).head_event_id
                if actual == head:
                    continue
                # only the operation in flight on this session may have committed unreported
                assert in_flight is not None and in_flight[2] == sid, f"round {rnd}: {sid} head {actual} != {head}"
                if in_flight[1] == "rewind":
                    assert actual == int(in_flight[3])
                else:  # an append: the new head's chain continues from the reported head
                    assert head in chains[sid] and chains[sid][-1] == actual
                heads[sid] = actual
            if in_flight is not None and in_flight[1] == "fork" and in_flight[2] in by_title:
                fork_at[in_flight[2]] = (int(in_flight[3]), in_flight[4])
                heads[by_title[in_flight[2]].id] = int(in_flight[3])
    assert len(fork_at) >= BRANCH_ROUNDS // 2  # the writers really forked
    assert any(h is not None for h in heads.values())
