"""Retrieval over past tool calls: embedders, vector indexes, documents, hybrid search.

The pieces, each behind a protocol so plugins and server backends slot in:

* :class:`Embedder` (``id``, ``dim``, ``embed(texts)`` → L2-normalized float32 rows).
  Built-ins, registered in the ``ctxmem.embedders`` entry-point group: ``minilm``
  (all-MiniLM-L6-v2, bundled, offline) and ``hashing`` (numpy-only feature hashing, the
  fallback). :class:`CachedEmbedder` embeds each distinct text once per embedder, caching
  in the session's SQLite file or in memory.
* :class:`VectorIndex` (``add``, ``search``, ``len``): :class:`ExactIndex` (numpy) and
  :class:`FaissIndex` (exact below a size threshold, HNSW beyond).
* :class:`ToolCallDocument` and :func:`tool_call_documents`: tool call + result, chunked,
  with the event ids they came from.
* :class:`HybridRetriever`: dense + lexical (FTS5 or BM25), fused by reciprocal rank,
  indexing incrementally as the session grows.

Importing this package imports neither numpy nor faiss nor torch: they load on first use,
and a missing one raises :class:`~ctxmem.errors.MissingDependencyError` with the install
line.
"""

from __future__ import annotations

from typing import Any

from ctxmem.errors import ConfigError
from ctxmem.registry import Registry
from ctxmem.retrieval.base import Embedder, VectorIndex
from ctxmem.retrieval.cache import (
    CachedEmbedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    SQLiteEmbeddingCache,
)
from ctxmem.retrieval.documents import (
    ToolCallDocument,
    chunk_spans,
    iter_tool_call_documents,
    tool_call_documents,
)
from ctxmem.retrieval.embedders import HashingEmbedder, MiniLMEmbedder, minilm_available
from ctxmem.retrieval.hybrid import HybridRetriever, RetrievalHit, rrf_fuse
from ctxmem.retrieval.index import ExactIndex, FaissIndex, make_index
from ctxmem.retrieval.lexical import BM25Index

EMBEDDERS = Registry(
    "ctxmem.embedders",
    "embedder",
    {
        "minilm": "ctxmem.retrieval.embedders:MiniLMEmbedder",
        "hashing": "ctxmem.retrieval.embedders:HashingEmbedder",
    },
)


def get_embedder(name: str = "auto", **options: Any) -> Embedder:
    """An embedder by registered name, built with ``options``.

    ``"auto"`` is ``minilm`` when sentence-transformers and the bundled model are
    installed, else ``hashing`` (the returned embedder's ``id`` says which).
    """
    if name == "auto":
        name = "minilm" if minilm_available() else "hashing"
    factory = EMBEDDERS.get(name)
    embedder = factory(**options)
    if not isinstance(embedder, Embedder):
        raise ConfigError(f"embedder {name!r} does not implement the Embedder protocol (id, dim, embed)")
    return embedder


__all__ = [
    "EMBEDDERS",
    "BM25Index",
    "CachedEmbedder",
    "Embedder",
    "EmbeddingCache",
    "ExactIndex",
    "FaissIndex",
    "HashingEmbedder",
    "HybridRetriever",
    "MemoryEmbeddingCache",
    "MiniLMEmbedder",
    "RetrievalHit",
    "SQLiteEmbeddingCache",
    "ToolCallDocument",
    "VectorIndex",
    "chunk_spans",
    "get_embedder",
    "iter_tool_call_documents",
    "make_index",
    "rrf_fuse",
    "tool_call_documents",
]
