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
        assert selective_terms(store, query) == ["never", "once", "sometimes", "often"]
        monkeypatch.setattr(lexical, "MAX_SCORED_POSTINGS", 30)
        assert selective_terms(store, query) == ["never", "once", "sometimes"]  # 0 + 1 + 20 <= 30 < 71
        monkeypatch.setattr(lexical, "MAX_SCORED_POSTINGS", 0)
        assert selective_terms(store, "often sometimes") == ["sometimes"]  # the rarest always
        hits = lexical.fts_event_hits(store, "sometimes everywhere", session_id=s.id, limit=50)
        assert len(hits) == 20  # scored on "sometimes" only: "everywhere" would match all 200


def test_a_store_without_frequencies_gets_every_term() -> None:
    assert selective_terms(MemoryStore(), "b a b c") == ["b", "a", "c"]
