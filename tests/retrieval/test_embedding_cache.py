from __future__ import annotations

from pathlib import Path

import numpy as np
from retrieval_helpers import CountingEmbedder

from ctxmem.retrieval import CachedEmbedder, MemoryEmbeddingCache, SQLiteEmbeddingCache
from ctxmem.store import SQLiteStore


def test_memory_cache_embeds_each_distinct_text_once() -> None:
    counting = CountingEmbedder()
    cached = CachedEmbedder(counting)
    assert isinstance(cached.cache, MemoryEmbeddingCache)
    first = cached.embed(["a b c", "d e f", "a b c"])
    assert counting.texts == ["a b c", "d e f"]  # the duplicate is embedded once
    again = cached.embed(["d e f", "a b c"])
    assert counting.calls == 1 and cached.computed == 2
    np.testing.assert_array_equal(again, first[[1, 0]])
    cached.embed(["new text"])
    assert counting.texts[-1] == "new text" and counting.calls == 2
    assert cached.id == counting.id and cached.dim == counting.dim


def test_sqlite_cache_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    texts = [f"tool output number {i} with BLOCK_M={i * 16}" for i in range(30)]
    with SQLiteStore(path) as store:
        first_inner = CountingEmbedder()
        vecs = CachedEmbedder(first_inner, store).embed(texts)
        assert len(first_inner.texts) == 30
    with SQLiteStore(path) as store:
        assert "m005_embedding_cache" in {r[0] for r in store.conn.execute("SELECT name FROM _ctxmem_migrations")}
        cache = SQLiteEmbeddingCache(store)
        assert cache.count(first_inner.id) == 30
        second_inner = CountingEmbedder()
        again = CachedEmbedder(second_inner, store).embed(list(reversed(texts)))
        assert second_inner.calls == 0
        np.testing.assert_array_equal(again, vecs[::-1])  # float32 bytes round-trip exactly


def test_cache_is_keyed_by_embedder_id(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        a, b = CountingEmbedder(), CountingEmbedder()
        b.inner = type(b.inner)(128)  # a different embedder: different id and dim
        CachedEmbedder(a, store).embed(["same text"])
        out = CachedEmbedder(b, store).embed(["same text"])
        assert b.texts == ["same text"] and out.shape == (1, 128)
