"""BM25: the vectorized path (ids 0..n-1) equals an independent scoring of the spec and
the dictionary path (any ids), through incremental growth and exclusions."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from ctxmem.retrieval.lexical import MAX_SCORED_TERMS, BM25Index, terms

VOCAB = [f"w{i}" for i in range(24)]
docs_st = st.lists(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12).map(" ".join), min_size=1, max_size=60)


def reference(docs: list[str], query: str, k: int, exclude: set[int], k1: float = 1.2, b: float = 0.75) -> list[tuple[int, float]]:
    toks = [terms(d) for d in docs]
    n = len(docs)
    avgdl = sum(map(len, toks)) / n or 1.0
    df = Counter(t for ts in toks for t in set(ts))
    cands = sorted({t for t in terms(query) if df[t] and (df[t] <= n // 2 or n < 8)}, key=lambda t: (df[t], t))
    cands = cands[:MAX_SCORED_TERMS]
    scores: dict[int, float] = {}
    for t in cands:
        idf = math.log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5))
        for i, ts in enumerate(toks):
            tf = ts.count(t)
            if tf:
                scores[i] = scores.get(i, 0.0) + idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(ts) / avgdl))
    ranked = sorted(((d, s) for d, s in scores.items() if d not in exclude and s > 0), key=lambda x: (-x[1], x[0]))
    return ranked[:k]


@given(docs=docs_st, queries=st.lists(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=5).map(" ".join),
                                      min_size=1, max_size=4),
       k=st.integers(1, 8), data=st.data())
def test_search_matches_the_spec_as_the_index_grows(docs: list[str], queries: list[str], k: int, data: st.DataObject) -> None:
    dense, sparse = BM25Index(), BM25Index()
    for i, d in enumerate(docs):
        dense.add(i, d)
        sparse.add(1000 + 3 * i, d)  # not 0..n-1: the dictionary path
        if i % 7 == 6 or i == len(docs) - 1:  # search mid-growth too (buffers extend)
            n = i + 1
            exclude = set(data.draw(st.lists(st.integers(0, n - 1), max_size=n)))
            for q in queries:
                want = reference(docs[:n], q, k, exclude)
                got = dense.search(q, k, exclude=exclude)
                assert [d for d, _ in got] == [d for d, _ in want]
                assert all(math.isclose(a, b_, rel_tol=1e-9) for (_, a), (_, b_) in zip(got, want, strict=True))
                other = sparse.search(q, k, exclude={1000 + 3 * e for e in exclude})
                assert [(d - 1000) // 3 for d, _ in other] == [d for d, _ in got]


def test_many_excluded_top_hits_fall_back_to_the_full_ranking() -> None:
    idx = BM25Index()
    for i in range(300):  # "beta" in 100 documents, shorter ones first (they score higher)
        idx.add(i, "beta" + " pad" * i if i < 100 else "alpha gamma")
    assert [d for d, _ in idx.search("beta", 3)] == [0, 1, 2]
    # the best 98 are excluded: the few sorted first run out, the full ranking answers
    got = idx.search("beta", 3, exclude=set(range(98)))
    assert [d for d, _ in got] == [98, 99]


def test_long_postings_regrow_their_buffers_without_losing_entries() -> None:
    # "w1" sits in 40% of 400 documents: its buffers regrow several times between searches
    docs = [" ".join(["w1"] * (1 + i % 3) + [f"w{2 + i % 7}"] + ["w0"] * (i % 5)) if i % 5 < 2 else f"w{2 + i % 7} w0"
            for i in range(400)]
    idx = BM25Index()
    for i, d in enumerate(docs):
        idx.add(i, d)
        if i % 37 == 36:
            for q in ("w1", "w1 w3", "w0 w1 w5"):
                want = reference(docs[: i + 1], q, 10, set())
                assert [d_ for d_, _ in idx.search(q, 10)] == [d_ for d_, _ in want]
