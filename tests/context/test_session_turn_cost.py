"""Per-turn builds over a session: a turn that keeps its boundary does no work that grows
with the history (no gathering of every dropped event id), and compactions are recorded
exactly when the boundary moves."""

from __future__ import annotations

from typing import Any

import pytest

from ctxmem.config import load_preset
from ctxmem.context import History
from ctxmem.context._assembly import CompactionRecorder
from ctxmem.events import CompactionEvent
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import Budget


@pytest.mark.parametrize("preset", ["window-200k", "masking-200k"])
def test_recorder_runs_only_when_the_boundary_moves(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = CompactionRecorder.record

    def spy(self: CompactionRecorder, *args: Any, **kw: Any) -> bool:
        calls.append(1)
        return real(self, *args, **kw)

    monkeypatch.setattr(CompactionRecorder, "record", spy)
    msgs = synthetic_session(160, seed=3)
    store = SQLiteStore(":memory:")
    session = Session.create(store, tokenizers=["heuristic"])
    session.record_many(msgs[:201])
    history = History.from_session(session, "heuristic")
    strategy = load_preset(preset).strategy()
    budget = Budget(40_000, 1_000, 0.9)
    boundaries = []
    for k in range(201, len(msgs) - 1, 2):
        pair = msgs[k : k + 2]
        history.extend(pair, event_ids=[session.record(m) for m in pair])
        built = strategy.build(strategy_request(history, budget, session))
        r = built.report
        boundaries.append((r.dropped, tuple(r.masked)))
    recorded = [se.event for se in session.events() if isinstance(se.event, CompactionEvent)]
    moves = sum(1 for a, b in zip([None, *boundaries], boundaries, strict=False) if a != b)
    assert recorded and len(recorded) <= moves
    assert len(calls) <= moves < len(boundaries)  # turns that kept the boundary never called it


def strategy_request(history: History, budget: Budget, session: Session) -> Any:
    from ctxmem.context import BuildRequest

    return BuildRequest(history, budget, pinned=1, session=session)


def test_summarize_turns_between_compactions_do_not_recount_or_rerecord_the_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between compactions every turn places the same summary block: a turn that reuses it
    does not count its text again (a 128K budget's summary is thousands of tokens) and the
    compaction is recorded once, however many turns reuse it."""
    from ctxmem.context import BuildRequest

    msgs = synthetic_session(160, seed=5)
    store = SQLiteStore(":memory:")
    session = Session.create(store, tokenizers=["heuristic"])
    session.record_many(msgs[:201])
    history = History.from_session(session, "heuristic")
    tok = history.tokenizer
    counted: list[str] = []
    real_count = tok.count

    def spy(text: str) -> int:
        counted.append(text)
        return real_count(text)

    monkeypatch.setattr(tok, "count", spy)
    strategy = load_preset("summarize-128k").strategy()
    budget = Budget(40_000, 1_000, 0.9)
    blocks = []
    recounted = 0  # turns that reused the previous turn's block yet counted its text
    for k in range(201, len(msgs) - 1, 2):
        pair = msgs[k : k + 2]
        history.extend(pair, event_ids=[session.record(m) for m in pair])
        before = len(counted)
        strategy.build(BuildRequest(history, budget, pinned=1, session=session))
        block = strategy.last_summary  # type: ignore[attr-defined]
        if block is not None and blocks and blocks[-1] is block:
            recounted += block.text in counted[before:]
        blocks.append(block)
    distinct = {id(b): b for b in blocks if b is not None}
    assert distinct and len(distinct) < len(blocks) - 5  # most turns reused a block
    assert recounted == 0, f"{recounted} turns recounted a summary block they reused"
    recorded = [se.event for se in session.events() if isinstance(se.event, CompactionEvent)]
    assert {e.summary for e in recorded} == {b.text for b in distinct.values()}
    assert len(recorded) == len({(b.text, b.event_ids) for b in distinct.values()})


@pytest.mark.parametrize("preset", ["masking-200k", "pipeline-200k", "summarize-128k"])
def test_a_cold_build_runs_with_the_gc_paused_and_a_turn_does_not(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first build over a long history takes in every message at once: it runs with the
    cyclic GC paused throughout (its allocations would trigger collections traversing the
    whole history), restored afterwards, also when the build raises; a turn's few messages
    do not toggle it. Observed where every strategy reads its history's token sums."""
    import gc

    from ctxmem.errors import ContextOverflowError
    from ctxmem.store import codec

    seen: list[bool] = []
    real = History.tokens

    def spy(self: History, *args: Any) -> int:
        seen.append(gc.isenabled())
        return real(self, *args)

    monkeypatch.setattr(History, "tokens", spy)
    msgs = synthetic_session(400, seed=5)
    store = SQLiteStore(":memory:")
    session = Session.create(store, tokenizers=["heuristic"])
    session.record_many(msgs[:-2])
    history = History.from_session(session, "heuristic")
    assert len(history) > codec.GC_BATCH
    strategy = load_preset(preset).strategy()
    budget = Budget(60_000, 2_000, 0.9)
    assert gc.isenabled()
    strategy.build(strategy_request(history, budget, session))
    assert seen and not any(seen) and gc.isenabled()  # paused throughout, on again after
    seen.clear()
    pair = msgs[-2:]
    history.extend(pair, event_ids=[session.record(m) for m in pair])
    strategy.build(strategy_request(history, budget, session))
    assert seen and all(seen) and gc.isenabled()
    fresh = load_preset(preset).strategy()
    real_build = fresh._build  # type: ignore[attr-defined]

    def failing(request: Any) -> Any:
        real_build(request)
        raise ContextOverflowError(1, 0)

    fresh._build = failing  # type: ignore[attr-defined]
    seen.clear()
    with pytest.raises(ContextOverflowError):
        fresh.build(strategy_request(history, budget, session))
    assert seen and not any(seen) and gc.isenabled()


def test_a_summarize_cold_build_reads_each_line_once_when_the_memo_is_smaller_than_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """summarize reads every chunk into its own per-chunk facts index and the session's facts
    index. Past ~7M tokens a session has more distinct lines than the feature memo holds, so
    two passes in a row (all chunks, then the session) found the memo emptied by the time the
    second began and computed every line twice (10M tokens: 33 s cold, 24 s read chunk by
    chunk). The session's index now reads each chunk right after the chunk's own index."""
    import ctxmem.context.salience as sal

    msgs = synthetic_session(160, seed=3, output_scale=1.16)
    store = SQLiteStore(":memory:")
    session = Session.create(store, tokenizers=["heuristic"])
    session.record_many(msgs[:301])

    def cold() -> tuple[Any, int]:
        sal._LINES.clear()
        sal._BODIES.clear()
        calls: list[int] = []
        real = sal._line_features

        def spy(ln: str) -> Any:
            calls.append(1)
            return real(ln)

        with monkeypatch.context() as m:
            m.setattr(sal, "_line_features", spy)
            fresh = load_preset("summarize-128k").builder(context_window=40_000, tokenizer="heuristic")
            built = fresh.build(fresh.history(session), session=session, record=False)
        return built, len(calls)

    first, _ = cold()
    distinct = len(sal._LINES)
    sections = first.report.sections
    assert sections.get("summary") and sections.get("facts") and distinct > 1_000  # both indexes read
    monkeypatch.setattr(sal, "_MEMO_MAX", distinct // 3)
    built, computed = cold()
    assert built.messages == first.messages  # the same context
    assert computed < 1.3 * distinct, (computed, distinct)
