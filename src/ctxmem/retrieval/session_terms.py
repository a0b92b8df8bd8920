"""BM25 over one session's tool outputs, seeded by the store's full-text index, kept per term.

Why not FTS5's own ``bm25()``: an agent loop searches once per turn, and FTS5 scores every
matching output of every query term on every search (its ``bm25()`` reads each match's
size record and position lists: ~1.5 µs per match, ~1.9 ms per turn on a 1M-token session
with the join that restricts hits to the session), although between two turns almost
nothing changed: one new tool output, and the same query terms. :class:`SessionTermIndex`
keeps what a search needs and only ever adds to it:

* **Membership**: the session's tool-result events and their blob ids (content-addressed
  outputs: identical outputs share a blob). Events are registered as the retriever indexes
  them; one indexed read per batch.
* **Postings, per query term, over the session's outputs only**: on a term's first use,
  the store's full-text index names the outputs that hold it (``term_blob_ids``), and the
  term's frequency in each comes from tokenizing the output with
  :func:`~ctxmem.retrieval.lexical.terms` (memoized per output). From then on a new output
  is tokenized once and added to every term already kept. The store's index is the
  candidate generator, this module's tokenizer the counter, for cold and warm alike, so
  the scores are a function of the stored data whichever path built them.
* **Statistics frozen per epoch**: the number of indexed outputs, each term's document
  frequency (``document_frequencies``) and the mean output size (``output_stats``) come
  from the store at its *epoch boundary* (a geometric grid of blob ids, ~3% apart), so they
  change every ~3% of growth, not every turn, and a fresh process reads the same values.
  Document length is the output's stored size in bytes, normalized by that mean.

Scoring is Okapi BM25 (``k1`` = 1.2, ``b`` = 0.75) with the non-negative idf
``log(1 + (n − df + 0.5) / (df + 0.5))``. The ranking of one query is memoized until a
kept term's postings or the epoch change, so a turn whose new output holds none of the
query's terms costs a dictionary lookup. Ties go to the older output (lower blob id), then
to the earlier event.

A search costs the postings of the query's selective terms (at most
:data:`~ctxmem.retrieval.lexical.MAX_SCORED_POSTINGS` together), not the session's size;
memory is the membership map plus the postings of the terms queried so far.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ctxmem.retrieval.lexical import terms as _terms

__all__ = ["SessionTermIndex", "TermPostings"]

#: Term counts of this many outputs are memoized (the outputs queries keep hitting).
_COUNTS_KEPT = 4096


@runtime_checkable
class TermPostings(Protocol):
    """A store whose full-text index a :class:`SessionTermIndex` can read (SQLite)."""

    def document_frequencies(self, terms: Sequence[str]) -> tuple[int, dict[str, int]]: ...

    def output_stats(self) -> tuple[int, float]: ...

    def term_blob_ids(self, term: str) -> list[int]: ...

    def result_blobs(self, event_ids: Sequence[int]) -> list[tuple[int, int]]: ...

    def blob_texts(self, blob_ids: Sequence[int]) -> list[tuple[int, int, str]]: ...


class _Posting:
    """One term over the session's outputs: blob ids, term frequencies, output sizes."""

    __slots__ = ("blobs", "sizes", "tfs", "version")

    def __init__(self) -> None:
        self.blobs: list[int] = []
        self.tfs: list[int] = []
        self.sizes: list[int] = []
        self.version = 0

    def add(self, blob: int, tf: int, size: int) -> None:
        self.blobs.append(blob)
        self.tfs.append(tf)
        self.sizes.append(size)
        self.version += 1


class SessionTermIndex:
    """BM25 over the tool outputs of one session (see the module docstring)."""

    def __init__(self, store: TermPostings, *, k1: float = 1.2, b: float = 0.75):
        self.store = store
        self.k1 = k1
        self.b = b
        self._pending: list[int] = []  # event ids handed in, not registered yet
        self._seen: set[int] = set()
        self._events_of: dict[int, list[int]] = {}  # blob id -> the session's result events, ascending
        self._size: dict[int, int] = {}  # blob id -> bytes (known once its text was read)
        self._postings: dict[str, _Posting] = {}
        self._counts: dict[int, Counter[str]] = {}
        #: outputs the restored postings cover (see restore_postings)
        self._covered: set[int] = set()
        #: the last ranking: (terms and statistics, posting lengths, ranking, its sort keys)
        self._ranked: tuple[Any, tuple[int, ...], list[tuple[int, float]], list[tuple[float, int]]] | None = None

    # ------------------------------------------------------------------ saved postings
    #
    # A process that resumes a session would build its first query's postings again: FTS5
    # names the outputs holding each term and each is counted (~70 ms at 1M tokens). The
    # postings of the last ranking's terms can be saved instead (the pipeline keeps them in
    # the session's store, see ctxmem.context.derived) with the outputs they cover; a new
    # index adopts them before registering any event, and those outputs are then not joined
    # again. A posting built from the store and one grown output by output hold the same
    # counts (tests/retrieval/test_session_terms.py), so the ranking is the same either way.

    def postings_state(self) -> dict[str, Any] | None:
        """The postings of the last ranking's terms and the outputs registered (plain JSON
        types), for :meth:`restore_postings`; None before a ranking, or while events wait to
        be registered (the covered outputs would not be known)."""
        if self._pending or self._ranked is None:
            return None
        chosen = self._ranked[0][0]
        return {
            "covered": sorted(self._events_of),
            "postings": {t: [p.blobs, p.tfs, p.sizes] for t in chosen if (p := self._postings.get(t)) is not None},
        }

    def restore_postings(self, state: dict[str, Any]) -> None:
        """Adopt postings saved by :meth:`postings_state`, on an index that has registered no
        event yet (else ValueError); the outputs they covered are not joined again when their
        events are registered. Raises KeyError, TypeError or ValueError on a damaged state."""
        if self._events_of or self._postings:
            raise ValueError("postings can only be restored into an empty index")
        postings: dict[str, _Posting] = {}
        sizes: dict[int, int] = {}
        for t, (blobs, tfs, lens) in state["postings"].items():
            p = _Posting()
            p.blobs, p.tfs, p.sizes = [int(x) for x in blobs], [int(x) for x in tfs], [int(x) for x in lens]
            if not len(p.blobs) == len(p.tfs) == len(p.sizes):
                raise ValueError("posting columns differ in length")
            p.version = len(p.blobs)
            postings[str(t)] = p
            sizes.update(zip(p.blobs, p.sizes, strict=True))
        self._covered = {int(b) for b in state["covered"]}
        self._postings.update(postings)
        self._size.update(sizes)

    def add_events(self, event_ids: Iterable[int]) -> None:
        """Make these tool-result events searchable (others are ignored); read lazily."""
        for eid in event_ids:
            if eid not in self._seen:
                self._seen.add(eid)
                self._pending.append(eid)

    # ------------------------------------------------------------------ internals

    def _register(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        fresh: list[int] = []
        covered = self._covered
        for eid, blob in self.store.result_blobs(pending):
            events = self._events_of.get(blob)
            if events is None:
                self._events_of[blob] = [eid]
                if blob not in covered:  # (an output of restored postings is in them already)
                    fresh.append(blob)
            else:
                events.append(eid)
                events.sort()
        if fresh and self._postings:  # a new output joins every term already kept
            postings = self._postings
            for blob, counts in self._read_counts(fresh):
                size = self._size[blob]
                # walk the smaller side: an output's distinct terms, or the terms kept so far
                # (the same postings either way; each kept term gets the blob at most once)
                if len(counts) < len(postings):
                    hits = [(postings[t], tf) for t, tf in counts.items() if t in postings]
                else:
                    hits = [(p, tf) for t, p in postings.items() if (tf := counts.get(t))]
                for posting, tf in hits:
                    if tf:
                        posting.add(blob, tf, size)

    def _read_counts(self, blobs: Sequence[int]) -> list[tuple[int, Counter[str]]]:
        """Term counts of these outputs: memoized, else read and tokenized once."""
        out: list[tuple[int, Counter[str]]] = []
        missing = [b for b in blobs if b not in self._counts]
        if missing:
            if len(self._counts) + len(missing) > _COUNTS_KEPT:
                self._counts.clear()
            for blob, size, text in self.store.blob_texts(missing):
                self._size[blob] = int(size)
                self._counts[blob] = Counter(_terms(str(text)))
        for blob in blobs:
            counts = self._counts.get(blob)
            if counts is None:  # evicted by this very batch (more outputs than are kept)
                ((_, size, text),) = self.store.blob_texts([blob])
                self._size[blob] = int(size)
                counts = Counter(_terms(str(text)))
            out.append((blob, counts))
        return out

    def _posting(self, term: str) -> _Posting:
        posting = self._postings.get(term)
        if posting is None:
            posting = _Posting()
            mine = [b for b in self.store.term_blob_ids(term) if b in self._events_of]
            # One term over many outputs: count its whole-run occurrences with one regex per
            # output (~30x cheaper than tokenizing each, the same number: a run of letters and
            # digits that equals the term, as terms() splits any text).
            known = {b: c[term] for b in mine if (c := self._counts.get(b)) is not None}
            todo = [b for b in mine if b not in known]
            if todo:
                run = re.compile(r"(?<![^\W_])" + re.escape(term) + r"(?![^\W_])")
                for blob, size, text in self.store.blob_texts(todo):
                    self._size[blob] = int(size)
                    known[blob] = len(run.findall(str(text).lower()))
            for blob in mine:
                if known[blob]:
                    posting.add(blob, known[blob], self._size[blob])
            self._postings[term] = posting
        return posting

    def _rank(self, chosen: Sequence[str], df: Mapping[str, int] | None = None) -> list[tuple[int, float]]:
        """``(blob id, score)`` of every output holding a chosen term, best first; ``df``:
        the store's ``document_frequencies`` of (at least) the chosen terms, if the caller
        has them already.

        Kept between calls: while the chosen terms and the epoch's statistics stay the same,
        a turn whose new outputs joined their postings (postings only grow, and a new output
        joins every kept term at once) scores those outputs alone and inserts them into the
        ranking (a bisection), instead of scoring every posting again. Both paths compute a
        score with the same float operations in the same order (term by term), so the
        ranking is the one a full computation gives, bit for bit.
        """
        n, mean = self.store.output_stats()
        if df is None or any(t not in df for t in chosen):
            _, df = self.store.document_frequencies(chosen)
        postings = [self._posting(t) for t in chosen]
        k1, b = self.k1, self.b
        mean = mean or 1.0
        idfs = []
        for t in chosen:
            d = max(df.get(t, 0), 1)
            idfs.append(math.log(1.0 + (max(n, d) - d + 0.5) / (d + 0.5)))
        key = (tuple(chosen), n, mean, tuple(idfs))
        lengths = tuple(len(p.blobs) for p in postings)
        memo = self._ranked
        if memo is not None and memo[0] == key:
            if memo[1] == lengths:
                return memo[2]
            if all(a <= c for a, c in zip(memo[1], lengths, strict=True)):
                self._ranked = (key, lengths, memo[2], memo[3])
                self._insert_new(postings, idfs, memo[1], memo[2], memo[3], mean)
                return memo[2]
        acc: dict[int, float] = {}
        get = acc.get
        omb, k1p1 = 1.0 - b, k1 + 1.0
        for p, idf in zip(postings, idfs, strict=True):
            for blob, tf, size in zip(p.blobs, p.tfs, p.sizes, strict=True):
                acc[blob] = get(blob, 0.0) + idf * tf * k1p1 / (tf + k1 * (omb + b * size / mean))
        keys = sorted((-score, blob) for blob, score in acc.items())
        ranked = [(blob, -neg) for neg, blob in keys]
        self._ranked = (key, lengths, ranked, keys)
        return ranked

    def _insert_new(
        self, postings: Sequence[_Posting], idfs: Sequence[float], before: Sequence[int],
        ranked: list[tuple[int, float]], keys: list[tuple[float, int]], mean: float,
    ) -> None:
        """Score the outputs that joined ``postings`` past the lengths ``before`` and insert
        them into ``ranked`` (and its sort keys ``keys``): what :meth:`_rank` computes for them."""
        k1, b = self.k1, self.b
        omb, k1p1 = 1.0 - b, k1 + 1.0
        tails = [
            {blob: (tf, size) for blob, tf, size in zip(p.blobs[k:], p.tfs[k:], p.sizes[k:], strict=True)}
            for p, k in zip(postings, before, strict=True)
        ]
        for blob in dict.fromkeys(blob for tail in tails for blob in tail):
            score = 0.0
            for tail, idf in zip(tails, idfs, strict=True):
                got = tail.get(blob)
                if got is not None:
                    tf, size = got
                    score = score + idf * tf * k1p1 / (tf + k1 * (omb + b * size / mean))
            at = bisect_left(keys, (-score, blob))
            keys.insert(at, (-score, blob))
            ranked.insert(at, (blob, score))

    # ------------------------------------------------------------------ search

    def search(
        self, chosen: Sequence[str], k: int, skip: Callable[[int], bool], *, df: Mapping[str, int] | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best ``(event id, score)`` for the query terms ``chosen``; ``skip(event
        id)`` leaves an event out (outside the chain, or already in the context). ``df``: the
        store's document frequencies of the chosen terms when the caller read them already
        (:func:`~ctxmem.retrieval.lexical.choose_terms_df`), else they are read here."""
        if k < 1 or not chosen:
            return []
        self._register()
        out: list[tuple[int, float]] = []
        for blob, score in self._rank(chosen, df):
            for eid in self._events_of.get(blob, ()):  # (a restored posting names only registered outputs)
                if not skip(eid):
                    out.append((eid, score))
                    if len(out) >= k:
                        return out
        return out

    def describe(self) -> dict[str, int]:
        return {"outputs": len(self._events_of), "terms_kept": len(self._postings), "counted": len(self._counts)}
