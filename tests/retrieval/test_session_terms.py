"""The session term index (FTS-seeded BM25 kept per term): the same ranking whether it grew
turn by turn or was built cold in a fresh process, BM25's order, and only the session's
own results, minus what the caller skips."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.retrieval import HybridRetriever
from ctxmem.retrieval.lexical import selective_terms, terms
from ctxmem.retrieval.session_terms import SessionTermIndex, TermPostings
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore

WORDS = ["kernel", "tile", "latency", "oom", "shared", "memory", "block", "warp", "nan", "mismatch", "speedup",
         "config", "autotune", "stage", "reduce", "split", "pack", "grid", "ok", "error"]


def _record(session: Session, i: int, text: str) -> None:
    session.record_many([
        Message("assistant", (ToolUseBlock(f"t{i}", "run", {"i": i}),)),
        Message("user", (ToolResultBlock(f"t{i}", text),)),
    ])


def _text(rng: random.Random, i: int) -> str:
    """A few common words, and each of the rare ones in about 1 output of 20."""
    common = [rng.choice(WORDS[:8]) for _ in range(rng.randint(3, 60))]
    rare = [w for w in WORDS[8:] if rng.random() < 0.05] * rng.randint(1, 3)
    return f"run {i}: " + " ".join(common + rare)


def _result_ids(store: SQLiteStore, sid: str) -> list[int]:
    return [se.id for se in store.chain(sid).events if se.kind == "tool_result"]


def test_grown_turn_by_turn_equals_built_cold(tmp_path: Path) -> None:
    rng = random.Random(7)
    with SQLiteStore(tmp_path / "s.db") as store:
        s = Session.create(store)
        assert isinstance(store, TermPostings)
        warm = SessionTermIndex(store)
        query = "latency oom mismatch nan"
        for i in range(300):
            _record(s, i, _text(rng, i))
            warm.add_events(_result_ids(store, s.id)[-1:])
            if i % 25 == 24:  # searched now and then while it grows (postings kept, then extended)
                warm.search(selective_terms(store, query), 5, lambda e: False)
        cold = SessionTermIndex(store)
        cold.add_events(_result_ids(store, s.id))
        for q in (query, "split reduce", "grid error ok", "config autotune stage warp"):
            chosen = selective_terms(store, q)
            assert chosen
            got = warm.search(chosen, 40, lambda e: False)
            assert got == cold.search(chosen, 40, lambda e: False)
            assert len(got) >= 10 and [sc for _, sc in got] == sorted((sc for _, sc in got), reverse=True)


def test_bm25_order_rare_term_and_repetition_first(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        s = Session.create(store)
        for i in range(40):
            _record(s, i, f"step {i} compiled fine in {i} ms")
        _record(s, 40, "step 40 OutOfResources shared memory 101376 exceeds 99 KB")
        _record(s, 41, "step 41 compiled fine; shared memory shared memory shared memory")
        _record(s, 42, "step 42 compiled fine; shared memory")
        idx = SessionTermIndex(store)
        ids = _result_ids(store, s.id)
        idx.add_events(ids)
        got = idx.search(["outofresources", "shared"], 10, lambda e: False)
        assert [e for e, _ in got] == [ids[40], ids[41], ids[42]]  # the rare term, then more repetitions
        assert idx.search(["outofresources"], 10, lambda e: e == ids[40]) == []  # skipped by the caller


def test_only_this_sessions_results_even_when_an_output_is_shared(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        a, b = Session.create(store), Session.create(store)
        _record(a, 0, "segfault in tile loop")
        _record(b, 0, "segfault in tile loop")  # the same output: one stored blob, two events
        _record(b, 1, "segfault again, other words")
        idx = SessionTermIndex(store)
        mine = _result_ids(store, a.id)
        idx.add_events(mine)
        assert [e for e, _ in idx.search(["segfault"], 10, lambda e: False)] == mine
        both = SessionTermIndex(store)
        both.add_events(_result_ids(store, a.id) + _result_ids(store, b.id))
        got = [e for e, _ in both.search(["segfault"], 10, lambda e: False)]
        shared = sorted(_result_ids(store, a.id) + _result_ids(store, b.id)[:1])
        assert got[:2] == shared and len(got) == 3  # the shorter shared output ranks first, both events


def test_hybrid_retriever_uses_it_on_sqlite_and_finds_the_same_as_a_fresh_one(tmp_path: Path) -> None:
    rng = random.Random(3)
    with SQLiteStore(tmp_path / "s.db") as store:
        s = Session.create(store)
        r = HybridRetriever.for_session(s, embedder=None)
        assert r.lexical == "fts" and r._terms is not None
        for i in range(120):
            _record(s, i, _text(rng, i))
            r.update(append_only=False)
            r.search("oom mismatch", k=3)
        fresh = HybridRetriever.for_session(s, embedder=None)
        fresh.update()
        ids = lambda hits: [h.event_id for h in hits]  # noqa: E731
        assert ids(r.search("oom mismatch", k=8)) == ids(fresh.search("oom mismatch", k=8))
        got = r.search("oom mismatch nan speedup", k=8)
        assert len(got) == 8 and all({"oom", "mismatch", "nan", "speedup"} & set(h.document.text.split()) for h in got)
        assert ids(got) == ids(fresh.search("oom mismatch nan speedup", k=8))
    assert HybridRetriever.for_session(Session.create(MemoryStore()), embedder=None)._terms is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from([*"ab_1 -.\n", "é", "İ", "ß", "ǅ", "٣", "\u0301", "日", "Ω", "ﬁ"]),
               max_size=60))
def test_one_regex_per_term_counts_what_terms_counts(text: str) -> None:
    # a term's postings are counted with one regex per output (cold), a new output's with
    # Counter(terms(text)) (warm): the two must agree on any text, or warm and cold differ
    counts = Counter(terms(text))
    for term in counts:
        run = re.compile(r"(?<![^\W_])" + re.escape(term) + r"(?![^\W_])")
        assert len(run.findall(text.lower())) == counts[term], term


def test_a_ranking_grown_output_by_output_is_the_full_ranking_bit_for_bit(tmp_path: Path) -> None:
    # Between two turns with the same query terms and statistics, the outputs that joined the
    # kept postings are scored alone and inserted; the ranking must be exactly (same floats,
    # same order) what scoring every posting again gives, and the reference BM25 below.
    rng = random.Random(11)
    with SQLiteStore(tmp_path / "s.db") as store:
        s = Session.create(store)
        idx = SessionTermIndex(store)
        chosen = ["latency", "oom", "block"]
        inserted = []
        insert_new = idx._insert_new

        def spy(*args: object) -> None:
            inserted.append(1)
            insert_new(*args)  # type: ignore[arg-type]

        idx._insert_new = spy  # type: ignore[method-assign]
        for i in range(400):
            _record(s, i, _text(rng, i) + (" block" * (i % 3)))
            idx.add_events(_result_ids(store, s.id)[-1:])
            idx._register()
            got = list(idx._rank(chosen))
            full = idx._ranked
            idx._ranked = None  # the full computation, for reference
            assert got == idx._rank(chosen), f"after output {i}"
            idx._ranked = full  # go on growing the kept one
        assert len(inserted) > 200  # grown in place, not recomputed, on most outputs (the rest: a new epoch)
        # the reference: Okapi BM25 written out over the stored texts
        n, mean = store.output_stats()
        _, df = store.document_frequencies(chosen)
        texts = {bid: (size, text) for bid, size, text in store.blob_texts(sorted(idx._events_of))}
        want: dict[int, float] = {}
        for t in chosen:
            d = max(df[t], 1)
            idf = __import__("math").log(1.0 + (max(n, d) - d + 0.5) / (d + 0.5))
            for bid, (size, text) in texts.items():
                tf = Counter(terms(text))[t]
                if tf:
                    want[bid] = want.get(bid, 0.0) + idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * size / mean))
        assert idx._rank(chosen) == sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))


def test_restored_postings_rank_as_the_index_that_never_stopped(tmp_path: Path) -> None:
    # A resuming process adopts the postings of the last ranking's terms (saved in the store
    # by the pipeline) before registering any event; outputs they cover are not joined again,
    # later ones are. Its searches must equal those of the index that kept running, and of one
    # built cold.
    import pytest

    from ctxmem.context.derived import pack, unpack

    rng = random.Random(5)
    query = selective_terms
    with SQLiteStore(tmp_path / "s.db") as store:
        s = Session.create(store)
        warm = SessionTermIndex(store)
        for i in range(150):
            _record(s, i, _text(rng, i))
        warm.add_events(_result_ids(store, s.id))
        chosen = query(store, "latency oom mismatch nan")
        warm.search(chosen, 5, lambda e: False)
        state = unpack(pack(warm.postings_state()))
        assert set(state["postings"]) == set(chosen) and len(state["covered"]) == 150
        resumed = SessionTermIndex(store)
        resumed.restore_postings(state)
        with pytest.raises(ValueError):
            warm.restore_postings(state)  # only into an empty index
        resumed.add_events(_result_ids(store, s.id))
        for i in range(150, 230):  # more outputs: joined into the restored postings
            _record(s, i, _text(rng, i))
            new = _result_ids(store, s.id)[-1:]
            warm.add_events(new)
            resumed.add_events(new)
            if i % 20 == 0:
                assert resumed.search(chosen, 30, lambda e: False) == warm.search(chosen, 30, lambda e: False)
        cold = SessionTermIndex(store)
        cold.add_events(_result_ids(store, s.id))
        for q in ("latency oom mismatch nan", "split reduce", "grid error ok"):
            c = query(store, q)
            assert resumed.search(c, 40, lambda e: False) == warm.search(c, 40, lambda e: False) \
                == cold.search(c, 40, lambda e: False)
