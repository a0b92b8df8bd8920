"""Lexical retrieval: the store's FTS5 index, or an in-process BM25 over the documents.

* :func:`fts_event_hits` turns free text into an FTS5 query that ORs the quoted terms
  (bare words in FTS5 are ANDed, which would make a natural-language question match
  nothing) — only its selective terms (:func:`selective_terms`: the rarest, by the store's
  document frequencies, with bounded postings) — and runs it through
  :meth:`SQLiteStore.search <ctxmem.store.SQLiteStore.search>` restricted to a session's
  chain (membership by id ranges, no chain walk). FTS5 ranks whole tool outputs; the
  retriever maps each hit to the chunk of that output sharing the most query terms.
  :func:`fts_query` (every distinct term) remains for callers that want them all.
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
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ctxmem.store.base import SearchHit, SessionStore

_TERM = re.compile(r"[^\W_]+", re.UNICODE)
_ASCII_TERM = re.compile(r"[a-z0-9]+")  # _TERM on lower-cased ASCII
MAX_QUERY_TERMS = 32
MAX_SCORED_TERMS = 8
#: FTS5 scores every posting of every scored term (bm25() costs ~1.5 µs per matching
#: output): the rarest terms are scored while their postings add up to at most this
#: many (the rarest one always), so a search costs the same at 1M and 30M tokens.
MAX_SCORED_POSTINGS = 1500


def terms(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (underscores split words, as in FTS5)."""
    low = text.lower()
    # ASCII text: the same runs through a plain class (about 30% faster than the Unicode one)
    return _ASCII_TERM.findall(low) if low.isascii() else _TERM.findall(low)


def fts_query(text: str, max_terms: int = MAX_QUERY_TERMS) -> str | None:
    """An FTS5 query matching any of the distinct terms of ``text`` (None when it has none)."""
    uniq = list(dict.fromkeys(terms(text)))[:max_terms]
    if not uniq:
        return None
    return " OR ".join(f'"{t}"' for t in uniq)


def selective_terms(store: Any, text: str) -> list[str]:
    """The terms of ``text`` worth scoring: at most :data:`MAX_SCORED_TERMS`, rarest first,
    each held by at least one indexed output and by at most a quarter of them.

    A term no output holds matches nothing, so it must not take one of the slots: a task
    statement's words are mostly absent from tool outputs, and when its first eight
    distinct terms all were, the kernel session's retrieval found nothing at all. The cut
    is a quarter, not :class:`BM25Index`'s half, because a store's ranker may have no idf:
    PostgreSQL's ``ts_rank_cd`` ranks by occurrences, so a term in 40% of the outputs
    ("block" in every autotune log) outweighed the rare terms of the one output asked for.
    For FTS5's bm25 a term in over a quarter of the outputs adds little (idf ≤ log 4).

    A term in most documents adds almost the same to every score (tiny idf) and costs a
    pass over its whole posting list: on a 1M-token session the 32-term OR query took
    ~9 ms in FTS5's bm25, the selective one ~0.5 ms. For the FTS path the scored terms'
    postings are also capped at :data:`MAX_SCORED_POSTINGS` together (rarest first), which
    keeps a search's cost from growing with the session. Document frequencies come from the
    store's :meth:`document_frequencies <ctxmem.store.SQLiteStore.document_frequencies>`
    (memoized per index epoch); a store without it gets every term.
    """
    return choose_terms(store, list(dict.fromkeys(terms(text))))


def choose_terms(store: Any, uniq: Sequence[str]) -> list[str]:
    """:func:`selective_terms` of a query already split into its distinct terms (in order):
    for a caller that needs the terms too, so the query is tokenized once."""
    return choose_terms_df(store, uniq)[0]


def choose_terms_df(store: Any, uniq: Sequence[str]) -> tuple[list[str], tuple[int, dict[str, int]] | None]:
    """:func:`choose_terms`, and the ``(n, {term: df})`` it chose them by (None for a store
    without document frequencies): a scorer of the chosen terms reuses them instead of
    asking the store again."""
    uniq = list(uniq[:MAX_QUERY_TERMS])
    stats = getattr(store, "document_frequencies", None)
    if stats is None or not uniq:
        return uniq, None
    n, df = got = stats(uniq)
    ranked = sorted((df[t], t) for t in uniq if df[t] and (df[t] <= n // 4 or n < 8))
    chosen: list[str] = []
    postings = 0
    for d, t in ranked[:MAX_SCORED_TERMS]:
        if chosen and postings + d > MAX_SCORED_POSTINGS:
            break
        chosen.append(t)
        postings += d
    return chosen, got


def fts_event_hits(
    store: SessionStore, query: str, *, session_id: str | None, limit: int, snippets: bool = True
) -> list[SearchHit]:
    """Tool-output hits of the store's full-text index for free text, best first, scored
    by FTS5's bm25 over the query's selective terms (:func:`selective_terms`)."""
    chosen = selective_terms(store, query)
    if not chosen:
        return []
    q = " OR ".join(f'"{t}"' for t in chosen)
    if not snippets:  # a capability of the SQLite store: hits without snippet() text
        return store.search(q, session_id=session_id, limit=limit, snippets=False)  # type: ignore[call-arg]
    return store.search(q, session_id=session_id, limit=limit)


class BM25Index:
    """Okapi BM25 over documents added one by one, identified by increasing ints."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75):
        self.k1 = k1
        self.b = b
        # term -> (doc ids, term frequencies) as typed arrays: appended in C on add, read
        # by numpy without conversion (np.frombuffer) on search
        self._postings: dict[str, tuple[array[int], array[float]]] = {}
        self._lengths: dict[int, int] = {}
        self._total = 0
        self._len_arr: Any = None
        self._norm: tuple[int, int, Any] | None = None  # (n, total, per-document length norm)
        self._min_id: int | None = None
        self._max_id: int | None = None

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, doc_id: int, text: str) -> None:
        if doc_id in self._lengths:
            raise ValueError(f"document {doc_id} is already indexed")
        toks = terms(text)
        self._lengths[doc_id] = len(toks)
        self._min_id = doc_id if self._min_id is None else min(self._min_id, doc_id)
        self._max_id = doc_id if self._max_id is None else max(self._max_id, doc_id)
        self._total += len(toks)
        for t, tf in Counter(toks).items():
            posting = self._postings.get(t)
            if posting is None:
                posting = self._postings[t] = (array("q"), array("d"))
            posting[0].append(doc_id)
            posting[1].append(tf)

    @staticmethod
    def _arrays(posting: tuple[array[int], array[float]]) -> Any:
        """The posting as (doc ids, term frequencies) numpy views: no copy, no conversion.

        The views live only for one search (a typed array cannot grow while viewed)."""
        import numpy as np

        return np.frombuffer(posting[0], dtype=np.int64), np.frombuffer(posting[1], dtype=np.float64)

    @staticmethod
    def _take(np: Any, hits: Any, scores: Any, k: int, exclude: Any) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        ranked = hits[np.lexsort((hits, -scores[hits]))]
        # plain ints and floats up front: the loop reads no numpy scalars
        for doc, score in zip(ranked.tolist(), scores[ranked].tolist(), strict=True):
            if doc in exclude:
                continue
            out.append((doc, score))
            if len(out) == k:
                break
        return out

    def _length_norm(self, np: Any, n: int, avgdl: float) -> Any:
        """``k1 * (1 - b + b * dl / avgdl)`` per document, recomputed only when the index grew."""
        if self._norm is not None and self._norm[0] == n and self._norm[1] == self._total:
            return self._norm[2]
        have = 0 if self._len_arr is None else len(self._len_arr)
        if have != n:
            new = np.fromiter((self._lengths[i] for i in range(have, n)), dtype=np.float64, count=n - have)
            self._len_arr = new if self._len_arr is None else np.concatenate((self._len_arr, new))
        norm = self.k1 * (1 - self.b + self.b * self._len_arr / avgdl)
        self._norm = (n, self._total, norm)
        return norm

    def search(self, query: str, k: int, *, exclude: Any = frozenset()) -> list[tuple[int, float]]:
        """Top ``k`` ``(doc_id, score)``, best first; ``exclude`` is a container of doc ids.

        ``exclude`` is only asked about documents that scored, best first, so a large one
        (every output still verbatim in the context) costs nothing per search.
        """
        n = len(self._lengths)
        if n == 0 or k < 1:
            return []
        avgdl = self._total / n or 1.0
        k1, b = self.k1, self.b
        # Score only the most selective terms: a term in most documents adds almost the
        # same to every score (tiny idf) and costs a pass over its whole posting list.
        candidates = []
        for t in dict.fromkeys(terms(query)):
            posting = self._postings.get(t)
            if posting and (len(posting[0]) <= n // 2 or n < 8):
                candidates.append((len(posting[0]), t, posting))
        candidates.sort(key=lambda c: (c[0], c[1]))
        candidates = candidates[:MAX_SCORED_TERMS]
        if not candidates:
            return []
        try:
            import numpy as np
        except ImportError:
            np = None  # type: ignore[assignment]
        if np is not None and self._min_id == 0 and self._max_id == n - 1:
            # Vectorized: doc ids are 0..n-1 (how HybridRetriever numbers chunks).
            norm = self._length_norm(np, n, avgdl)
            scores = np.zeros(n)
            for df, _t, posting in candidates:
                idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                docs, tfs = self._arrays(posting)
                scores[docs] += idf * tfs * (k1 + 1) / (tfs + norm[docs])
            hits = np.flatnonzero(scores > 0)
            if not len(hits):
                return []
            # best first, ties by ascending id: sort by (-score, id); skip excluded ones.
            # Sort only the best few first; excluded documents can crowd the top, so widen
            # to the full sort when the few run out.
            few = 4 * k + 16
            if len(hits) > few:
                cut = -np.partition(-scores[hits], few - 1)[few - 1]  # the few-th best score
                top = hits[scores[hits] >= cut]
                out = self._take(np, top, scores, k, exclude)
                if len(out) == k or len(top) == len(hits):
                    return out
            return self._take(np, hits, scores, k, exclude)
        scores_d: dict[int, float] = {}
        for df, _t, posting in candidates:
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            for doc, tf in zip(posting[0], posting[1], strict=True):
                dl = self._lengths[doc]
                scores_d[doc] = scores_d.get(doc, 0.0) + idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        ranked = ((s, d) for d, s in scores_d.items() if d not in exclude)
        top = heapq.nsmallest(k, ranked, key=lambda sd: (-sd[0], sd[1]))
        return [(d, s) for s, d in top]
