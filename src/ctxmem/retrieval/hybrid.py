"""Hybrid retrieval over past tool calls: dense + lexical, fused by reciprocal rank.

:class:`HybridRetriever` keeps, for one session, the documents built from its tool calls
(:mod:`ctxmem.retrieval.documents`), their embeddings in a vector index, and a lexical
index, and answers a free-text query with the chunks most likely to hold what it asks for.

* **Dense**: the query's embedding against the chunk embeddings (cosine, through a
  :class:`~ctxmem.retrieval.base.VectorIndex`: FAISS exact, then HNSW past a size
  threshold; numpy exact without faiss). Embeddings go through a
  :class:`~ctxmem.retrieval.cache.CachedEmbedder`, stored with the session's store when
  it provides an embedding cache (SQLite file, PostgreSQL database), so re-opening a
  session never re-embeds it.
* **Lexical**: the store's full-text index over tool outputs when the store has the
  :class:`~ctxmem.store.base.FullTextSearch` capability (SQLite FTS5, PostgreSQL
  tsvector), else BM25 over the chunk texts. Retrieval never names a store class.
* **Fusion**: reciprocal rank fusion, ``score = Σ 1 / (rrf_k + rank)`` over the two ranked
  lists (rank from 1, ``rrf_k`` = 60 as in Cormack et al. 2009) of the top ``candidates``
  of each. RRF needs no score calibration between cosine and BM25. Ties are ordered by the
  document's position in the session (earlier first), so results are deterministic.

Indexing is incremental: :meth:`HybridRetriever.update` chunks and embeds only tool
results it has not indexed yet, so calling it every turn costs one embedding batch of the
new outputs. Event ids never change meaning, so an indexed result is never re-read. After a
rewind or fork, results outside the current chain are filtered out, not deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from ctxmem.errors import ConfigError, InputError
from ctxmem.events import StoredEvent, ToolResultEvent
from ctxmem.retrieval.base import Embedder, VectorIndex
from ctxmem.retrieval.cache import CachedEmbedder, EmbeddingCache
from ctxmem.retrieval.documents import (
    ToolCallChunks,
    ToolCallDocument,
    _events_of,
    iter_tool_call_chunks,
)
from ctxmem.retrieval.index import IndexKind, make_index
from ctxmem.retrieval.lexical import BM25Index, choose_terms_df, fts_event_hits, terms
from ctxmem.retrieval.session_terms import SessionTermIndex, TermPostings
from ctxmem.store.base import ChainView, EmbeddingCacheProvider, FullTextSearch, SessionStore
from ctxmem.store.codec import gc_paused_over

if TYPE_CHECKING:
    from ctxmem.context.base import SessionLike
    from ctxmem.session import Session

LexicalKind = Literal["auto", "fts", "bm25", "none"]


@dataclass(frozen=True, slots=True)
class RetrievalHit:
    """One retrieved chunk with its fused score and where each retriever ranked it."""

    document: ToolCallDocument
    score: float
    sources: tuple[str, ...]
    dense_rank: int | None = None
    dense_score: float | None = None
    lexical_rank: int | None = None
    lexical_score: float | None = None

    @property
    def event_id(self) -> int:
        return self.document.event_id


def rrf_fuse(rankings: dict[str, list[int]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked id lists; ties by ascending id. Returns (id, score)."""
    scores: dict[int, float] = {}
    for ranked in rankings.values():
        for rank, doc in enumerate(ranked, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda ds: (-ds[1], ds[0]))




class HybridRetriever:
    """Dense + lexical retrieval over one session's tool calls (see the module docstring).

    ``embedder``: an :class:`~ctxmem.retrieval.base.Embedder`, a registered name
    (``"minilm"``, ``"hashing"``), ``"auto"`` (MiniLM when installed, else hashing) or
    ``None`` for lexical only. Unless it already is one, it is wrapped in a
    :class:`~ctxmem.retrieval.cache.CachedEmbedder` over ``cache`` — by default the
    store's own table when it has the :class:`~ctxmem.store.base.EmbeddingCacheProvider`
    capability (SQLite, PostgreSQL), else memory. The lexical part uses the store's index
    when it has :class:`~ctxmem.store.base.FullTextSearch`, else in-process BM25.
    """

    def __init__(
        self,
        embedder: Embedder | str | None = "auto",
        *,
        store: SessionStore | None = None,
        session_id: str | None = None,
        cache: EmbeddingCache | EmbeddingCacheProvider | None = None,
        index: IndexKind | VectorIndex = "auto",
        lexical: LexicalKind = "auto",
        rrf_k: int = 60,
        candidates: int = 50,
        max_chars: int = 1000,
        overlap_chars: int = 150,
        header_chars: int = 300,
    ):
        if rrf_k < 1:
            raise ConfigError("must be at least 1", field="rrf_k")
        if candidates < 1:
            raise ConfigError("must be at least 1", field="candidates")
        if lexical not in ("auto", "fts", "bm25", "none"):
            raise ConfigError(f"unknown lexical retriever {lexical!r}; expected auto, fts, bm25 or none", field="lexical")
        self.store = store
        self.session_id = session_id
        if lexical == "auto":
            lexical = "fts" if isinstance(store, FullTextSearch) and session_id is not None else "bm25"
        if lexical == "fts" and not (isinstance(store, FullTextSearch) and session_id is not None):
            raise ConfigError("full-text search needs a store with the FullTextSearch capability "
                              "(SQLiteStore, PostgresStore) and a session id", field="lexical")
        if embedder is None and lexical == "none":
            raise ConfigError("a retriever needs a dense or a lexical part", field="lexical")
        self.lexical: Literal["fts", "bm25", "none"] = lexical
        self.embedder: CachedEmbedder | None = None
        self.index: VectorIndex | None = None
        if embedder is not None:
            if isinstance(embedder, str):
                from ctxmem.retrieval import get_embedder

                embedder = get_embedder(embedder)
            if cache is None and isinstance(store, EmbeddingCacheProvider):
                cache = store
            self.embedder = embedder if isinstance(embedder, CachedEmbedder) else CachedEmbedder(embedder, cache)
            self.index = make_index(self.embedder.dim, index) if isinstance(index, str) else index
            if self.index.dim != self.embedder.dim:
                raise ConfigError(
                    f"index dimension {self.index.dim} != embedder dimension {self.embedder.dim}", field="index"
                )
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.chunking = {"max_chars": max_chars, "overlap_chars": overlap_chars, "header_chars": header_chars}
        self._docs = _Documents()
        self._by_event: dict[int, list[int]] = {}
        self._bm25 = BM25Index() if self.lexical == "bm25" else None
        # FTS-seeded BM25 kept per term between searches (SQLite); other stores rank in the store
        self._terms = SessionTermIndex(store) if self.lexical == "fts" and isinstance(store, TermPostings) else None
        self._inactive: set[int] = set()  # positions of chunks outside the current chain
        self._query_memo: dict[str, Any] = {}
        self._chunk_terms: dict[int, frozenset[str]] = {}  # position -> its terms (see _best_chunk)

    @classmethod
    def for_session(cls, session: SessionLike, embedder: Embedder | str | None = "auto", **options: Any) -> HybridRetriever:
        """A retriever bound to a session (FTS5 and the embedding cache of its store)."""
        return cls(embedder, store=session.store, session_id=session.id, **options)

    # ------------------------------------------------------------------ indexing

    @property
    def documents(self) -> list[ToolCallDocument]:
        """Indexed documents in indexing order (their position is their index id)."""
        return list(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    def update(
        self, source: Session | ChainView | Iterable[StoredEvent] | None = None, *, append_only: bool = False
    ) -> int:
        """Index the tool results of ``source`` not indexed yet; returns the new chunk count.

        ``source`` defaults to the bound session's current chain. It also becomes the set
        of results searches may return (what a rewind or fork left out is filtered) —
        unless ``append_only``: then ``source`` holds only events appended since the last
        update, and everything indexed stays searchable (an agent loop's per-turn update).
        """
        if source is None:
            if self.store is None or self.session_id is None:
                raise InputError("update() needs events, or a retriever bound to a session", field="source")
            source = self.store.chain(self.session_id)
        events = list(_events_of(source))
        if not append_only:
            active = {se.id for se in events if isinstance(se.event, ToolResultEvent)}
            self._inactive = {p for eid, ps in self._by_event.items() if eid not in active for p in ps}
        calls = list(iter_tool_call_chunks(events, skip_event_ids=self._by_event.keys(), **self.chunking))
        with gc_paused_over(len(calls)):  # a resumed session's first update: every output at once
            return self._add(calls)

    def _add(self, calls: list[ToolCallChunks]) -> int:
        first = len(self._docs)
        if self.embedder is None and self._bm25 is None:
            # Ranked by the store's index: only a hit's text is ever read, so its document
            # is built when asked for (a resumed 1M-token session: ~3 MB of output text not
            # copied into documents, ~15 ms less on the first update).
            for call in calls:
                self._by_event.setdefault(call.event_id, []).extend(range(len(self._docs), self._docs.add(call)))
        else:
            new = [call.document(i) for call in calls for i in range(len(call.spans))]
            if self.embedder is not None and self.index is not None and new:
                vectors = self.embedder.embed([d.text for d in new])
                self.index.add(list(range(first, first + len(new))), vectors)
            for d in new:
                pos = len(self._docs)
                self._docs.append(d)
                self._by_event.setdefault(d.event_id, []).append(pos)
                if self._bm25 is not None:
                    self._bm25.add(pos, d.text)
        if self._terms is not None:
            self._terms.add_events(call.event_id for call in calls)
        return len(self._docs) - first

    def postings_state(self) -> dict[str, Any] | None:
        """The kept postings of the last search's terms, to save for a process that resumes
        the session (SQLite's kept postings only; None otherwise): see
        :meth:`SessionTermIndex.postings_state <ctxmem.retrieval.session_terms.SessionTermIndex.postings_state>`."""
        return self._terms.postings_state() if self._terms is not None else None

    def restore_postings(self, state: dict[str, Any]) -> bool:
        """Adopt saved postings before the first search; False when this retriever keeps none
        (raises ValueError on a damaged state or once events were registered)."""
        if self._terms is None:
            return False
        self._terms.restore_postings(state)
        return True

    # ------------------------------------------------------------------ search

    def _hidden(self, exclude: Collection[int]) -> set[int]:
        """Positions a search must skip: outside the current chain, or excluded events."""
        if not exclude:
            return self._inactive
        return self._inactive | {p for eid in exclude for p in self._by_event.get(eid, ())}

    def _query_vector(self, query: str) -> Any:
        # Queries bypass the persistent cache (a search must not write to the store); a
        # small in-process memo serves probes repeated turn after turn.
        assert self.embedder is not None
        vec = self._query_memo.get(query)
        if vec is None:
            vec = self.embedder.inner.embed([query])
            if len(self._query_memo) >= 1024:
                self._query_memo.clear()
            self._query_memo[query] = vec
        return vec

    def dense_search(self, query: str, k: int, *, exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        """Top ``k`` ``(position, cosine)`` by embedding."""
        if self.embedder is None or self.index is None or not self._docs:
            return []
        hidden = self._hidden(exclude)
        fetch = min(len(self._docs), k + len(hidden))
        scores, ids = self.index.search(self._query_vector(query), fetch)
        out = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0 and int(i) not in hidden]
        return out[:k]

    def lexical_search(self, query: str, k: int, *, exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        """Top ``k`` ``(position, score)`` by FTS5 (one chunk per tool output) or BM25."""
        if not self._docs:
            return []
        if self._bm25 is not None:
            # asked only about documents that scored: no per-search set of every excluded chunk
            return self._bm25.search(query, k, exclude=_Hidden(self._inactive, exclude, self._docs))
        if self.lexical != "fts":
            return []
        assert self.store is not None
        qterms = list(dict.fromkeys(terms(query)))
        out: list[tuple[int, float]] = []
        if self._terms is not None:
            inactive, by_event = self._inactive, self._by_event

            def skip(eid: int) -> bool:
                positions = by_event.get(eid)
                return eid in exclude or not positions or positions[0] in inactive

            # selective_terms(store, query), tokenized once; the scorer reuses their frequencies
            chosen, stats = choose_terms_df(self.store, qterms)
            hits = self._terms.search(chosen, k, skip, df=stats[1] if stats is not None else None)
            return [(self._best_chunk(by_event[eid], qterms), score) for eid, score in hits]
        hidden = self._hidden(exclude)
        limit = k + len(exclude)  # the store already restricts hits to the session's chain
        for hit in fts_event_hits(self.store, query, session_id=self.session_id, limit=limit, snippets=False):
            positions = self._by_event.get(hit.event_id)
            if not positions or positions[0] in hidden:
                continue  # not indexed yet (call update()), or excluded
            out.append((self._best_chunk(positions, qterms), hit.score))
            if len(out) >= k:
                break
        return out

    def _best_chunk(self, positions: list[int], qterms: list[str]) -> int:
        if len(positions) == 1:
            return positions[0]

        def matched(pos: int) -> int:
            words = self._chunk_terms.get(pos)
            if words is None:  # memoized: the same outputs are hit turn after turn
                if len(self._chunk_terms) > 4096:
                    self._chunk_terms.clear()
                words = self._chunk_terms[pos] = frozenset(terms(self._docs[pos].text))
            return sum(1 for t in qterms if t in words)

        return max(positions, key=lambda p: (matched(p), -p))

    def search(self, query: str, k: int = 10, *, exclude: Collection[int] = ()) -> list[RetrievalHit]:
        """The ``k`` best chunks for ``query``, fused; ``exclude`` lists result event ids
        to leave out (for instance those already visible in the context)."""
        if k < 1:
            raise InputError("k must be at least 1", field="k")
        n = max(k, self.candidates)
        if self.embedder is None:
            # One ranking: fusion keeps its order (scores 1/(rrf_k + rank) strictly fall), and
            # the lexical top k (BM25 or FTS5) is a prefix of its top n, so the k best need
            # only k candidates.
            n = k
        dense = self.dense_search(query, n, exclude=exclude)
        lexical = self.lexical_search(query, n, exclude=exclude)
        rankings = {"dense": [p for p, _ in dense], "lexical": [p for p, _ in lexical]}
        d_info = {p: (r, s) for r, (p, s) in enumerate(dense, start=1)}
        l_info = {p: (r, s) for r, (p, s) in enumerate(lexical, start=1)}
        hits: list[RetrievalHit] = []
        for pos, score in rrf_fuse(rankings, self.rrf_k)[:k]:
            dr, ds = d_info.get(pos, (None, None))
            lr, ls = l_info.get(pos, (None, None))
            sources = tuple(name for name, info in (("dense", dr), ("lexical", lr)) if info is not None)
            hits.append(RetrievalHit(self._docs[pos], score, sources, dr, ds, lr, ls))
        return hits

    def describe(self) -> dict[str, Any]:
        """What this retriever is made of and has done (for strategy reports)."""
        kind = getattr(self.index, "kind", type(self.index).__name__ if self.index is not None else None)
        return {
            "embedder": self.embedder.id if self.embedder is not None else None,
            "index": kind,
            "lexical": self.lexical,
            "documents": len(self._docs),
            "tool_results": len(self._by_event),
            "embedded": self.embedder.computed if self.embedder is not None else 0,
            "embedding_cache_hits": self.embedder.hits if self.embedder is not None else 0,
        }


class _Documents(Sequence[ToolCallDocument]):
    """The indexed chunks by position: built documents, or chunks of a call whose document is
    built on first access (then kept)."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[ToolCallDocument | tuple[ToolCallChunks, int]] = []

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, pos: int) -> ToolCallDocument: ...
    @overload
    def __getitem__(self, pos: slice) -> list[ToolCallDocument]: ...
    def __getitem__(self, pos: int | slice) -> ToolCallDocument | list[ToolCallDocument]:
        if isinstance(pos, slice):
            return [self[i] for i in range(*pos.indices(len(self._items)))]
        item = self._items[pos]
        if type(item) is tuple:
            call, chunk = item
            item = self._items[pos] = call.document(chunk)
        return item  # type: ignore[return-value]

    def append(self, document: ToolCallDocument) -> None:
        self._items.append(document)

    def add(self, call: ToolCallChunks) -> int:
        """Hold the chunks of ``call`` (built on access); returns the new length."""
        self._items.extend((call, i) for i in range(len(call.spans)))
        return len(self._items)


class _Hidden:
    """Membership in "outside the chain, or a chunk of an excluded result event", answered
    per position without materializing the set."""

    __slots__ = ("_docs", "_exclude", "_inactive")

    def __init__(self, inactive: set[int], exclude: Collection[int], docs: Sequence[Any]):
        self._inactive, self._exclude, self._docs = inactive, exclude, docs

    def __contains__(self, pos: object) -> bool:
        return pos in self._inactive or (
            isinstance(pos, int) and 0 <= pos < len(self._docs) and self._docs[pos].event_id in self._exclude
        )
