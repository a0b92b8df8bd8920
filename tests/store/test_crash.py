"""Crash safety: a writer killed with SIGKILL at random points loses no committed event.

One database is reused across rounds; each round starts a writer (which resumes the
session like an agent would, answering an interrupted tool call), lets it append for a
random short time and kills it. After every kill the store is reopened and checked:
every event the writer printed (it prints only after commit) exists, the file passes
``PRAGMA integrity_check``, pending tool calls match the raw tables, and a tool call left
without its result is reported by ``pending_tool_uses``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
