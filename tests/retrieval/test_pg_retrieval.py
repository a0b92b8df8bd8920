"""Retrieval on a PostgreSQL store, through the store's capabilities alone.

The retriever names no store class: a PostgresStore has FullTextSearch (tsvector/GIN) and
EmbeddingCacheProvider (a table in the database), so it gets the same lexical and cached
dense retrieval as SQLite, on a real server (``tests/pg_server.py``).
"""

from __future__ import annotations

from retrieval_helpers import PLANTED_QUESTION, CountingEmbedder, planted_session

import pg_server
from ctxmem.retrieval import HybridRetriever
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore, open_store
from ctxmem.store.base import EmbeddingCacheProvider, FullTextSearch


def test_capabilities_by_backend() -> None:
    assert isinstance(SQLiteStore(":memory:"), FullTextSearch | EmbeddingCacheProvider)
    assert not isinstance(MemoryStore(), FullTextSearch) and not isinstance(MemoryStore(), EmbeddingCacheProvider)


def test_hybrid_retrieval_on_postgres_uses_its_index_and_cache() -> None:
    url = pg_server.shared().fresh_url()
    with open_store(url) as store:
        assert isinstance(store, FullTextSearch) and isinstance(store, EmbeddingCacheProvider)
        session = Session.create(store)
        session.record_many(planted_session(turns=120))
        counting = CountingEmbedder()
        retriever = HybridRetriever.for_session(session, counting)
        assert retriever.lexical == "fts"
        n = retriever.update()
        assert n > 120 and len(counting.texts) == n
        hits = retriever.search(PLANTED_QUESTION, k=5)
        assert hits[0].document.tool_use_id == "toolu_planted" and hits[0].sources == ("dense", "lexical")
        lexical = HybridRetriever.for_session(session, None)
        lexical.update()
        assert lexical.search(PLANTED_QUESTION, k=3)[0].document.tool_use_id == "toolu_planted"
    with open_store(url) as store:  # another handle (another process would do the same): no re-embedding
        fresh_inner = CountingEmbedder()
        fresh = HybridRetriever.for_session(Session.open(store, session.id), fresh_inner)
        assert fresh.update() == n and fresh_inner.calls == 0
        assert store.embedding_cache().count() == n
        top = fresh.search(PLANTED_QUESTION, k=1)[0]
        assert top.document.tool_use_id == "toolu_planted"
