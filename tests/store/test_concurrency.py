"""Several writer processes on one database file: nothing lost, never "database is locked".

4 processes × 1,000 single-event transactions, first on separate sessions, then all on
one shared session (every append races for the same head). Checked afterwards: every id a
writer printed (after commit) exists, counts add up, no writer saw a locking error, and
the shared chain is consistent (each parent exists, depth = parent depth + 1, running
token totals add up).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import count_messages, get_tokenizer

WRITER = Path(__file__).with_name("writer_proc.py")
WRITERS = 4
EVENTS = 1000


def _run_writers(db: Path, sessions: list[str]) -> list[list[int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), "bulk", str(db), sid, str(EVENTS), f"w{i}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i, sid in enumerate(sessions)
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "locked" not in err.lower() and "busy" not in err.lower(), err
        ids.append([int(line.split()[0]) for line in out.splitlines()])
    return ids


@pytest.mark.slow
def test_writers_on_separate_sessions(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    with SQLiteStore(db) as store:
        sids = [Session.create(store, session_id=f"s{i}", tokenizers=["heuristic"]).id for i in range(WRITERS)]
    ids = _run_writers(db, sids)
    with SQLiteStore(db) as store:
        assert store.integrity_check() == "ok"
        for sid, mine in zip(sids, ids, strict=True):
            assert len(mine) == EVENTS
            s = Session.open(store, sid)
            assert [e.id for e in s.events()] == mine  # exactly its own events, in order
            assert all(e.session_id == sid for e in s.events())
            assert s.pending_tool_uses() == []
            t = s.totals("heuristic")
            counts = count_messages(s.messages(), get_tokenizer("heuristic"))
            assert (t.content, t.overhead, t.events) == (
                sum(c.content for c in counts), sum(c.overhead for c in counts), EVENTS)
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == WRITERS * EVENTS


@pytest.mark.slow
def test_writers_on_one_shared_session(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    with SQLiteStore(db) as store:
        sid = Session.create(store, session_id="shared", tokenizers=["heuristic"]).id
    ids = _run_writers(db, [sid] * WRITERS)
    all_ids = sorted(i for mine in ids for i in mine)
    assert len(all_ids) == len(set(all_ids)) == WRITERS * EVENTS
    for mine in ids:
        assert mine == sorted(mine)
    with SQLiteStore(db) as store:
        assert store.integrity_check() == "ok"
        rows = store.conn.execute("SELECT id, parent_id, depth FROM events ORDER BY id").fetchall()
        assert [r[0] for r in rows] == all_ids
        depth = {r[0]: r[2] for r in rows}
        for eid, parent, d in rows:
            if parent is None:
                assert d == 1
            else:
                assert parent in depth and depth[parent] == d - 1 and parent < eid
        s = Session.open(store, sid)
        chain = s.events()
        assert [e.id for e in chain] == all_ids  # one linear chain holding every event
        view = s.chain(tokenizers=["heuristic"])
        c = o = 0
        for ec in view.counts["heuristic"]:
            c, o = c + ec.content, o + ec.overhead
            assert (ec.cum_content, ec.cum_overhead) == (c, o)
        assert s.totals("heuristic").content == c
        assert s.totals("heuristic").events == WRITERS * EVENTS
