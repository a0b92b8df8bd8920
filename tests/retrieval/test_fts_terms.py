"""The FTS path scores only a query's selective terms, chosen from the store's document
frequencies: rarest first, none in more than half the outputs, postings bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.retrieval import lexical
from ctxmem.retrieval.lexical import selective_terms
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore


def _outputs(session: Session, texts: list[str]) -> None:
    for i, text in enumerate(texts):
        session.record_many([
            Message("assistant", (ToolUseBlock(f"t{i}", "run", {"i": i}),)),
            Message("user", (ToolResultBlock(f"t{i}", text),)),
        ])


def test_rarest_first_common_dropped_postings_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        s = Session.create(store)
        # "everywhere" in all 200, "often" in 50, "sometimes" in 20, "once" in 1
        _outputs(s, [" ".join([f"item{i}", "everywhere"] + (["often"] if i % 4 == 0 else []) + (["sometimes"] if i % 10 == 0 else [])
                              + (["once"] if i == 7 else [])) for i in range(200)])
        query = "everywhere often sometimes once never"  # (outputs are distinct: item0, item1, ...)
        assert selective_terms(store, query) == ["once", "sometimes", "often"]  # "never" matches nothing
        monkeypatch.setattr(lexical, "MAX_SCORED_POSTINGS", 30)
        assert selective_terms(store, query) == ["once", "sometimes"]  # 1 + 20 <= 30 < 71
        monkeypatch.setattr(lexical, "MAX_SCORED_POSTINGS", 0)
        assert selective_terms(store, "often sometimes") == ["sometimes"]  # the rarest always
        hits = lexical.fts_event_hits(store, "sometimes everywhere", session_id=s.id, limit=50)
        assert len(hits) == 20  # scored on "sometimes" only: "everywhere" would match all 200


def test_terms_no_output_holds_do_not_crowd_out_those_that_match(tmp_path: Path) -> None:
    # a long task statement whose words mostly appear in no tool output: the first eight
    # distinct terms are all absent, the ninth is in one output — it must still be found
    with SQLiteStore(tmp_path / "s.db") as store:
        s = Session.create(store)
        _outputs(s, [f"log line {i} ok" for i in range(20)] + ["OutOfResources: shared memory 101376"])
        query = "alpha beta gamma delta epsilon zeta eta theta OutOfResources"
        assert selective_terms(store, query) == ["outofresources"]
        hits = lexical.fts_event_hits(store, query, session_id=s.id, limit=5)
        assert len(hits) == 1 and "101376" in hits[0].snippet


def test_a_store_without_frequencies_gets_every_term() -> None:
    assert selective_terms(MemoryStore(), "b a b c") == ["b", "a", "c"]
