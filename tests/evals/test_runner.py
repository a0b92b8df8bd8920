"""Runs: resume after a kill, retry of errored cells, response cache, budget cap,
bounded concurrency."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from ctxmem.clients import FunctionClient
from ctxmem.clients.base import ModelRequest, Response, Usage
from ctxmem.errors import ConfigError
from ctxmem.evals.grid import expand
from ctxmem.evals.readers import ExtractiveReader
from ctxmem.evals.runner import ModelPrice, run, run_sync
from ctxmem.evals.store import ResultStore
from ctxmem.messages import TextBlock

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tiktoken(o200k: Any) -> None:
    """Every test here measures in o200k_base (skips when it cannot be loaded)."""


def _cells(**kw: Any) -> list[Any]:
    args: dict[str, Any] = {"sources": ["prose"], "lengths": [1_000, 2_000], "depths": [0.0, 0.5, 1.0],
                            "needles": ["literal"], "seeds": [0, 1]}
    args.update(kw)
    return expand(**args)


class CountingReader(ExtractiveReader):
    def __init__(self) -> None:
        super().__init__("lexical")
        self.calls = 0

    def answer(self, messages: Any) -> str:
        self.calls += 1
        return super().answer(messages)


def test_rerun_skips_finished_and_retries_errored(tmp_path: Path) -> None:
    cells = _cells()
    fail_first = {"n": 0}

    def flaky(req: ModelRequest) -> str:
        fail_first["n"] += 1
        if fail_first["n"] <= 3:
            raise RuntimeError("provider hiccup")
        return ExtractiveReader().answer(req.messages)

    with ResultStore(tmp_path / "r.db") as store:
        s1 = run_sync(cells, {"extractive": FunctionClient(flaky)}, store, concurrency=1)
        assert (s1.done, s1.errors) == (len(cells) - 3, 3)
        assert len(store.rows(status="error")) == 3
        reader = CountingReader()
        s2 = run_sync(cells, {"extractive": reader}, store)
        assert s2.skipped == len(cells) - 3 and s2.done == 3 and reader.calls == 3
        assert {r["attempts"] for r in store.rows() if r["status"] == "done"} == {1, 2}
        s3 = run_sync(cells, {"extractive": reader}, store)
        assert s3.skipped == len(cells) and reader.calls == 3


def test_interrupted_run_keeps_finished_cells(tmp_path: Path) -> None:
    cells = _cells(lengths=[1_000, 2_000, 3_000])
    gate = {"n": 0}

    async def main(store: ResultStore) -> None:
        async def slow(req: ModelRequest) -> str:
            gate["n"] += 1
            if gate["n"] > 5:
                await asyncio.sleep(3600)  # the "kill" below arrives while these hang
            return ExtractiveReader().answer(req.messages)

        task = asyncio.create_task(run(cells, {"extractive": FunctionClient(slow)}, store, concurrency=2))
        while len(store.statuses()) < 5:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with ResultStore(tmp_path / "r.db") as store:
        asyncio.run(main(store))
        finished = len(store.rows(status="done"))
        assert finished == 5
        reader = CountingReader()
        s = run_sync(cells, {"extractive": reader}, store)
        assert s.skipped == 5 and reader.calls == len(cells) - 5 and s.done == len(cells) - 5


def test_killed_process_restart_runs_only_missing_cells(tmp_path: Path) -> None:
    """SIGKILL a real run in the middle; the rerun answers only what is missing."""
    db = tmp_path / "kill.db"
    script = textwrap.dedent(f"""
        from ctxmem.clients import FunctionClient
        from ctxmem.evals.grid import expand
        from ctxmem.evals.readers import ExtractiveReader
        from ctxmem.evals.runner import run_sync
        from ctxmem.evals.store import ResultStore
        cells = expand(sources=["prose"], lengths=[1000, 2000], depths=[0.0, 0.5, 1.0], needles=["literal"],
                       seeds=[0, 1])
        import asyncio
        async def slow(req):
            await asyncio.sleep(0.3)
            return ExtractiveReader().answer(req.messages)
        run_sync(cells, {{"extractive": FunctionClient(slow)}}, ResultStore({str(db)!r}), concurrency=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy(), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.exists():
                conn = sqlite3.connect(db)
                try:
                    n = conn.execute("SELECT count(*) FROM eval_results WHERE status = 'done'").fetchone()[0]
                except sqlite3.OperationalError:  # the table is not created yet
                    n = 0
                conn.close()
                if n >= 3:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    with ResultStore(db) as store:
        finished = len(store.rows(status="done"))
        assert 3 <= finished < 12
        reader = CountingReader()
        s = run_sync(_cells(), {"extractive": reader}, store)
        assert s.skipped == finished and reader.calls == 12 - finished
        assert len(store.rows(status="done")) == 12


def test_responses_are_cached(tmp_path: Path) -> None:
    cells = _cells(lengths=[1_000])
    with ResultStore(tmp_path / "r.db") as store:
        reader = CountingReader()
        run_sync(cells, {"extractive": reader}, store)
        store.conn.execute("DELETE FROM eval_results")  # forget results, keep the response cache
        s = run_sync(cells, {"extractive": reader}, store)
        assert reader.calls == len(cells) and s.cached == len(cells) and s.done == len(cells)


def test_budget_cap_stops_before_overspending(tmp_path: Path) -> None:
    cells = _cells(models=["paid-model"], window=200_000)  # 12 cells of 1K-2K tokens

    def answer(req: ModelRequest) -> Response:
        return Response((TextBlock(ExtractiveReader().answer(req.messages)),), "end_turn", Usage(1_500, 10))

    client = FunctionClient(answer, model="paid-model")
    prices = {"paid-model": ModelPrice(input=1_000.0, output=0.0)}  # $1.5 per answered cell
    with ResultStore(tmp_path / "r.db") as store:
        s = run_sync(cells, {"paid-model": client}, store, concurrency=1, budget_usd=5.0, prices=prices)
        assert s.stopped_by_budget and s.dollars <= 5.0
        assert s.done == len(client.requests) and 2 <= s.done <= 4 and s.not_started == len(cells) - s.done
        assert s.estimate["dollars"] > 5.0
        with pytest.raises(ConfigError, match="no price"):
            run_sync(cells, {"paid-model": client}, store, budget_usd=5.0)


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    live = {"now": 0, "max": 0}

    async def answer(req: ModelRequest) -> str:
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        await asyncio.sleep(0.01)
        live["now"] -= 1
        return "NOT FOUND"

    with ResultStore(tmp_path / "r.db") as store:
        s = run_sync(_cells(), {"extractive": FunctionClient(answer)}, store, concurrency=3)
    assert s.done == 12 and 1 < live["max"] <= 3


def test_refused_cells_are_recorded_and_not_retried(tmp_path: Path) -> None:
    cells = _cells(lengths=[1_000, 40_000], window=32_768, depths=[0.5], seeds=[0])
    with ResultStore(tmp_path / "r.db") as store:
        s = run_sync(cells, {"extractive": ExtractiveReader()}, store)
        assert (s.done, s.refused) == (1, 1)
        (row,) = store.rows(status="refused")
        assert row["label"] == "refused" and "32768" in row["error"] and row["info"]["available"] == 32_768
        s2 = run_sync(cells, {"extractive": ExtractiveReader()}, store)
        assert s2.skipped == 2


def test_cached_prompt_tokens_bill_at_the_cache_read_price(tmp_path: Path) -> None:
    """A reader's usage is billed as `tune cost` bills a request: cache reads at the cache price."""
    from ctxmem.cli.evals import _prices
    from ctxmem.tune.prices import load_prices

    cells = _cells(models=["openai:gpt-4.1"], window=200_000, lengths=[1_000], depths=[0.5], seeds=[0])

    def answer(req: ModelRequest) -> Response:
        text = ExtractiveReader().answer(req.messages)
        return Response((TextBlock(text),), "end_turn", Usage(100, 10, cache_read_tokens=900), model="gpt-4.1")

    client = FunctionClient(answer, model="gpt-4.1")
    p = load_prices(user=False).get("gpt-4.1").model
    assert p.cache_read is not None and p.cache_read < p.input
    with ResultStore(tmp_path / "r.db") as store:
        s = run_sync(cells, {"openai:gpt-4.1": client}, store)
        (row,) = store.rows()
    right = (100 * p.input + 900 * p.cache_read + 10 * p.output) / 1e6
    assert row["cost"] == pytest.approx(right) and s.dollars == pytest.approx(right)
    # --price takes cache prices too (cached tokens at the input price when not given)
    given = _prices(("m=2,8,0.5", "n=2,8"))
    usage = Usage(100, 10, cache_read_tokens=900, cache_write_tokens=50)
    assert given["m"].dollars(usage) == pytest.approx((100 * 2 + 900 * 0.5 + 50 * 2 + 10 * 8) / 1e6)
    assert given["n"].dollars(usage) == pytest.approx((1050 * 2 + 10 * 8) / 1e6)
    assert _prices(("w=3,15,0.3,3.75",))["w"].dollars(usage) == pytest.approx(
        (100 * 3 + 900 * 0.3 + 50 * 3.75 + 10 * 15) / 1e6)
    with pytest.raises(ConfigError, match="CACHE_READ"):
        _prices(("m=1,2,3,4,5",))


def _judge(usage: Usage, model: str = "claude-opus-4-1") -> Any:
    from ctxmem.evals.scoring import LLMJudge

    def verdict(req: ModelRequest) -> Response:
        return Response((TextBlock("CORRECT"),), "end_turn", usage, model=model)

    return LLMJudge(FunctionClient(verdict, model=model))


def test_the_judge_is_priced_in_rows_summary_and_budget(tmp_path: Path) -> None:
    from ctxmem.tune.prices import load_prices

    opus = load_prices(user=False).get("claude-opus-4-1").model
    cells = _cells(lengths=[1_000], depths=[0.0, 0.25, 0.5, 0.75, 1.0], seeds=[0])
    with ResultStore(tmp_path / "r.db") as store:
        # no cap: every cell judged, its dollars in the row (the offline reader costs 0) and the summary
        judge = _judge(Usage(1_000, 1))
        s = run_sync(cells, {"extractive": ExtractiveReader()}, store, judge=judge)
        one = (1_000 * opus.input + 1 * opus.output) / 1e6
        rows = store.rows()
        assert s.done == 5 and all(r["judge"] == 1 for r in rows)
        assert [r["cost"] for r in rows] == pytest.approx([one] * 5) and s.dollars == pytest.approx(5 * one)
        assert rows[0]["info"]["judge"]["model"] == "claude-opus-4-1"
        assert rows[0]["info"]["judge"]["usage"]["input_tokens"] == 1_000
        assert s.estimate["dollars"] > 0  # the judge's requests are in the estimate
    with ResultStore(tmp_path / "capped.db") as store:
        # a judge that spends $3 a call stops a $0.01 cap: at most the reservations that fit ran
        big = _judge(Usage(200_000, 1))
        s = run_sync(cells, {"extractive": ExtractiveReader()}, store, judge=big, budget_usd=0.01, concurrency=1)
        assert s.stopped_by_budget and s.done == 1 and s.not_started == 4
        assert s.dollars == pytest.approx((200_000 * opus.input + opus.output) / 1e6)


def test_an_unpriced_judge_is_refused_up_front_under_a_cap(tmp_path: Path) -> None:
    cells = _cells(lengths=[1_000], depths=[0.5], seeds=[0])
    judge = _judge(Usage(10, 1), model="no-such-judge-model")
    with ResultStore(tmp_path / "r.db") as store:
        with pytest.raises(ConfigError, match=r"no price for no-such-judge-model \(the judge\)"):
            run_sync(cells, {"extractive": ExtractiveReader()}, store, judge=judge, budget_usd=1.0)
        assert store.rows() == [] and not judge.client.requests
        # priced by prices=, it runs
        s = run_sync(cells, {"extractive": ExtractiveReader()}, store, judge=judge, budget_usd=1.0,
                     prices={"no-such-judge-model": ModelPrice(1.0, 1.0)})
        assert s.done == 1 and s.dollars == pytest.approx(11 / 1e6)
