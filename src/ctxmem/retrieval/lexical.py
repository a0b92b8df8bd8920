"""Lexical retrieval: the store's FTS5 index, or an in-process BM25 over the documents.

* :func:`fts_query` turns free text into an FTS5 query that ORs the quoted terms (bare
  words in FTS5 are ANDed, which would make a natural-language question match nothing),
  and :func:`fts_event_hits` runs it through :meth:`SQLiteStore.search
  <ctxmem.store.SQLiteStore.search>` restricted to a session's chain. FTS5 ranks whole tool
  outputs; the retriever maps each hit to the chunk of that output sharing the most query
  terms.
* :class:`BM25Index` — Okapi BM25 (k1=1.2, b=0.75) over chunk texts, incremental, for
  stores without FTS5 (:class:`~ctxmem.store.MemoryStore`) or no store at all. Same
  tokenization as FTS5's default ``unicode61`` tokenizer closely enough for recall: lower
  case, runs of letters and digits (``BLOCK_M`` → ``block``, ``m``).

Scores are "higher is better" in both; ties go to the earlier document.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from typing import Any

from ctxmem.store.base import SearchHit, SessionStore

_TERM = re.compile(r"[^\W_]+", re.UNICODE)
MAX_QUERY_TERMS = 32


def terms(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (underscores split words, as in FTS5)."""
    return _TERM.findall(text.lower())


def fts_query(text: str, max_terms: int = MAX_QUERY_TERMS) -> str | None:
    """An FTS5 query matching any of the distinct terms of ``text`` (None when it has none)."""
    uniq = list(dict.fromkeys(terms(text)))[:max_terms]
    if not uniq:
        return None
    return " OR ".join(f'"{t}"' for t in uniq)


def fts_event_hits(store: SessionStore, query: str, *, session_id: str | None, limit: int) -> list[SearchHit]:
    """Tool-output hits of the store's full-text index for free text, best first."""
    q = fts_query(query)
    if q is None:
        return []
    return store.search(q, session_id=session_id, limit=limit)


class BM25Index:
    """Okapi BM25 over documents added one by one, identified by increasing ints."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75):
        self.k1 = k1
        self.b = b
        self._postings: dict[str, list[tuple[int, int]]] = {}
        self._lengths: dict[int, int] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, doc_id: int, text: str) -> None:
        if doc_id in self._lengths:
            raise ValueError(f"document {doc_id} is already indexed")
        toks = terms(text)
        self._lengths[doc_id] = len(toks)
        self._total += len(toks)
        for t, tf in Counter(toks).items():
            self._postings.setdefault(t, []).append((doc_id, tf))

    def search(self, query: str, k: int, *, exclude: Any = frozenset()) -> list[tuple[int, float]]:
        """Top ``k`` ``(doc_id, score)``, best first; ``exclude`` is a container of doc ids."""
        n = len(self._lengths)
        if n == 0 or k < 1:
            return []
        avgdl = self._total / n or 1.0
        scores: dict[int, float] = {}
        k1, b = self.k1, self.b
        for t in dict.fromkeys(terms(query)):
            posting = self._postings.get(t)
            if not posting:
                continue
            df = len(posting)
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            for doc, tf in posting:
                dl = self._lengths[doc]
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        ranked = ((s, d) for d, s in scores.items() if d not in exclude)
        top = heapq.nsmallest(k, ranked, key=lambda sd: (-sd[0], sd[1]))
        return [(d, s) for s, d in top]
