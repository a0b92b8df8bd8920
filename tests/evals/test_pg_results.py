"""Several evaluation workers on one grid, sharing a PostgreSQL results store.

Real worker processes (``pg_eval_worker.py``) on a real server (``tests/pg_server.py``):
two running at once do every cell exactly once between them; a worker SIGKILLed with
cells claimed leaves them to lapse and another worker runs them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import pg_server
from ctxmem.evals.pg_store import PgResultStore
from ctxmem.evals.store import open_results

WORKER = Path(__file__).with_name("pg_eval_worker.py")
CLI = [sys.executable, "-c", "import sys; from ctxmem.cli import main; sys.exit(main())"]
CELLS = 12


@pytest.fixture
def url(o200k: Any) -> str:  # the grid measures in o200k_base
    return pg_server.shared().fresh_url()


def _worker(url: str, delay: float, lease: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKER), url, str(delay), str(lease)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _calls(out: str) -> int:
    return int(out.strip().splitlines()[-1].split()[1])


def test_two_workers_do_every_cell_exactly_once(url: str) -> None:
    a, b = _worker(url, 0.5, 30), _worker(url, 0.5, 30)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    for p, (_, err) in zip((a, b), outs, strict=True):
        assert p.returncode == 0, err
        assert "serializ" not in err.lower() and "deadlock" not in err.lower(), err
    calls = [_calls(out) for out, _ in outs]
    assert sum(calls) == CELLS  # every cell answered once, by one of them
    with open_results(url) as store:
        assert isinstance(store, PgResultStore)
        rows = store.rows()
        assert len(rows) == CELLS and {r["status"] for r in rows} == {"done"}
        assert {r["attempts"] for r in rows} == {1}
        assert store.claims([r["key"] for r in rows]) == {}
        runs = {r["run_id"] for r in rows}
        assert len(runs) == 2 and all(calls)  # the grid was split between the two


def test_a_dead_workers_claimed_cells_are_run_by_another(url: str) -> None:
    dead = _worker(url, 5.0, 2)  # slow answers: killed while it holds claims
    assert dead.stdout is not None
    assert dead.stdout.readline().strip() == "answer"
    with PgResultStore(url) as store:
        deadline = time.monotonic() + 60
        held: dict[str, Any] = {}
        while not held and time.monotonic() < deadline:
            held = store.claims([r[0] for r in store.conn.execute("SELECT key FROM eval_claims").fetchall()])
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=60)
    assert held, "the worker held no claim when it was killed"
    live = _worker(url, 0.0, 2)
    out, err = live.communicate(timeout=600)
    assert live.returncode == 0, err
    assert _calls(out) == CELLS  # the dead worker finished none; every cell ran here, once
    with open_results(url) as store:
        rows = store.rows()
        assert len(rows) == CELLS and {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
        assert set(held) <= {r["key"] for r in rows}
        assert store.claims(list(held)) == {}


def test_two_cli_workers_share_a_grid_through_a_results_url(url: str) -> None:
    argv = [*CLI, "eval", "run", "--lengths", "1k,2k", "--depths", "0,0.5,1",
            "--seeds", "0,1", "--results", url, "--json"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    with open_results(url) as store:
        rows = store.rows()
        assert len(rows) == CELLS and {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
    shown = subprocess.run([*CLI, "eval", "show", "--results", url, "--json"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == {"done": CELLS}


def test_session_needles_reads_a_session_from_a_postgresql_store(url: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval session-needles --store postgresql://… --session latest`: the session is read
    from the server (it was looked up there, then opened as a SQLite file named after the URL)."""
    from click.testing import CliRunner

    import ctxmem.cli.evals as evals_cli
    from ctxmem.cli import cli
    from ctxmem.evals.cells import _agent_messages
    from ctxmem.evals.sources import SessionTextSource
    from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
    from ctxmem.session import Session
    from ctxmem.store import open_store

    msgs = [Message("user", (TextBlock("fix the kernel"),)),
            Message("assistant", (ToolUseBlock("t1", "run", {"cmd": "make"}),)),
            Message("user", (ToolResultBlock("t1", "error: shared memory 232448 > 101376"),))]
    with open_store(url) as store:
        s = Session.create(store, tokenizers=["o200k_base"])
        for m in msgs:
            s.record(m)
        sid = s.id
    monkeypatch.chdir(tmp_path)
    asked: list[list[str]] = []
    monkeypatch.setattr(evals_cli, "_execute", lambda **kw: asked.append(kw["sources"]))
    r = CliRunner().invoke(cli, ["eval", "session-needles", "--session", "latest", "--store", url,
                                 "--out", str(tmp_path / "sn"), "--no-progress"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert asked == [[f"agent:{url}#{sid}"]]
    assert _agent_messages(asked[0][0], 0) == msgs  # what the grid's cells read
    assert SessionTextSource(f"{url}#{sid}")._messages() == msgs
    assert list(tmp_path.iterdir()) == []  # no SQLite file named after the URL
