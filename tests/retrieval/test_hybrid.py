from __future__ import annotations

from pathlib import Path

import pytest
from retrieval_helpers import PLANTED_QUESTION, CountingEmbedder, planted_session

from ctxmem.errors import ConfigError
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.retrieval import CachedEmbedder, HashingEmbedder, HybridRetriever, rrf_fuse
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore


def test_rrf_fuses_ranks_with_k_60_and_breaks_ties_by_id() -> None:
    fused = rrf_fuse({"dense": [3, 1, 2], "lexical": [1, 4]}, k=60)
    assert fused[0] == (1, pytest.approx(1 / 62 + 1 / 61))
    assert [d for d, _ in fused] == [1, 3, 4, 2]  # 3 and 4 tie at 1/61: lower id first
    assert rrf_fuse({"a": [5, 2], "b": [2, 5]})[0][0] == 2


@pytest.mark.parametrize("backend", ["sqlite-file", "memory"])
def test_fusion_finds_a_fact_planted_in_an_early_tool_output(backend: str, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db") if backend == "sqlite-file" else MemoryStore()
    session = Session.create(store)
    session.record_many(planted_session(turns=200))
    retriever = HybridRetriever.for_session(session, HashingEmbedder())
    assert retriever.lexical == ("fts" if backend == "sqlite-file" else "bm25")
    assert retriever.update() > 200
    hits = retriever.search(PLANTED_QUESTION, k=5)
    assert hits[0].document.tool_use_id == "toolu_planted"
    assert hits[0].sources == ("dense", "lexical")
    assert hits[0].dense_rank is not None and hits[0].lexical_rank is not None
    assert hits[0].event_id == hits[0].document.event_id
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Same inputs, same answer (ties are ordered by session position).
    again = HybridRetriever.for_session(session, HashingEmbedder())
    again.update()
    assert [(h.document.key, h.score) for h in again.search(PLANTED_QUESTION, k=5)] == [
        (h.document.key, h.score) for h in hits
    ]
    store.close()


def test_each_retriever_alone_and_exclusion(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        session = Session.create(store)
        session.record_many(planted_session(turns=60))
        dense_only = HybridRetriever.for_session(session, HashingEmbedder(), lexical="none")
        lexical_only = HybridRetriever.for_session(session, None)
        for r, source in ((dense_only, "dense"), (lexical_only, "lexical")):
            r.update()
            top = r.search(PLANTED_QUESTION, k=3)
            assert top[0].document.tool_use_id == "toolu_planted" and top[0].sources == (source,)
            excluded = r.search(PLANTED_QUESTION, k=3, exclude={top[0].event_id})
            # the same ranking without the excluded output (lexical scores only the query's
            # selective terms, so fewer than k outputs may match at all)
            wider = [h.document.key for h in r.search(PLANTED_QUESTION, k=4) if h.event_id != top[0].event_id]
            assert excluded and [h.document.key for h in excluded] == wider[:3]
        with pytest.raises(ConfigError, match="dense or a lexical"):
            HybridRetriever(None, lexical="none")
        with pytest.raises(ConfigError, match="SQLiteStore"):
            HybridRetriever(HashingEmbedder(), store=MemoryStore(), session_id="x", lexical="fts")


def test_incremental_indexing_embeds_only_new_documents(tmp_path: Path) -> None:
    counting = CountingEmbedder()
    with SQLiteStore(tmp_path / "s.db") as store:
        session = Session.create(store)
        msgs = synthetic_session(30, seed=2)
        session.record_many(msgs[:21])
        retriever = HybridRetriever.for_session(session, counting)
        first = retriever.update()
        assert first == len(counting.texts) > 0
        assert retriever.update() == 0 and counting.calls == 1  # nothing new: no embedding call
        session.record_many(msgs[21:])
        new_docs = retriever.update()
        assert new_docs > 0 and len(counting.texts) == first + new_docs
        assert len(retriever) == first + new_docs
        assert len({d.key for d in retriever.documents}) == len(retriever)
        # A fresh retriever over the same file re-embeds nothing: the cache is in the store.
        fresh_inner = CountingEmbedder()
        fresh = HybridRetriever.for_session(session, fresh_inner)
        assert fresh.update() == len(retriever) and fresh_inner.calls == 0
        assert fresh.describe()["embedding_cache_hits"] == len(retriever)


def test_results_follow_the_current_chain_after_rewind() -> None:
    session = Session.create(MemoryStore())
    session.record(Message.user("task"))
    session.record(Message.assistant(ToolUseBlock("a", "read_file", {"path": "notes.md"})))
    keep = session.record(Message.user(ToolResultBlock("a", "the tile size is 64 and it fits")))[-1]
    session.record(Message.assistant(ToolUseBlock("b", "read_file", {"path": "limits.md"})))
    session.record(Message.user(ToolResultBlock("b", "the tile size limit is 128 on this device")))
    retriever = HybridRetriever.for_session(session, CachedEmbedder(HashingEmbedder()))
    retriever.update()
    assert {h.document.tool_use_id for h in retriever.search("tile size limit", k=5)} == {"a", "b"}
    session.rewind(keep)
    assert retriever.update() == 0
    assert [h.document.tool_use_id for h in retriever.search("tile size limit", k=5)] == ["a"]


def test_an_fts_ranked_retriever_builds_only_the_documents_it_is_asked_for(tmp_path: Path) -> None:
    """Lexical-only over FTS5 reads a hit's text alone: its documents are built on access,
    and are the documents an eager build makes (chunked outputs included)."""
    from ctxmem.retrieval import tool_call_documents

    with SQLiteStore(tmp_path / "s.db") as store:
        session = Session.create(store)
        msgs = planted_session(turns=60)
        # a long output: several chunks of one event, each its own position
        msgs += [Message.assistant(ToolUseBlock("long", "read_file", {"path": "big.log"})),
                 Message.user(ToolResultBlock("long", "\n".join(f"line {i} of the tile log" for i in range(300))))]
        session.record_many(msgs)
        eager = tool_call_documents(session)
        assert max(d.n_chunks for d in eager) > 1
        lazy = HybridRetriever.for_session(session, None)
        assert lazy.update() == len(eager) == len(lazy)
        built = lazy._docs._items
        assert not any(type(item) is type(eager[0]) for item in built)  # nothing built yet
        hits = lazy.search(PLANTED_QUESTION, k=3)
        assert hits[0].document.tool_use_id == "toolu_planted"
        assert 0 < sum(type(item) is type(eager[0]) for item in built) <= 3 + max(d.n_chunks for d in eager)
        assert lazy.documents == eager  # every position builds the document an eager build makes
        assert lazy._docs[-3:] == eager[-3:] and lazy._docs[len(eager) - 1] == eager[-1]
        # the same hits as a retriever whose documents were all built up front (a dense part
        # forces that): positions line up
        both = HybridRetriever.for_session(session, HashingEmbedder())
        both.update()
        assert [both.documents[lazy.documents.index(h.document)] for h in hits] == [h.document for h in hits]
