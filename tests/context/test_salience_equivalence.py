"""The fast salience reader (memoized per line and per candidate, case-folding-free cue
patterns on ASCII text, a path pre-filter) reads exactly what the plain per-line reader
reads: same counters, same candidates with the same float scores, same facts.

The reference below is the plain algorithm written out line by line with the original
IGNORECASE patterns and no memo; it is the specification the fast path must match.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

import ctxmem.context.salience as sal
from ctxmem.context import History
from ctxmem.context.facts import _PATH
from ctxmem.context.profile import FactProfile
from ctxmem.context.salience import (
    SalienceIndex,
    anchors,
    is_code,
    is_table_row,
    lead,
    shape,
    tail,
)
from ctxmem.evals.retention import generate
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.samples import synthetic_session


def _ref_static(line: str, cues: Any) -> float:
    s = 0.0
    s += min(2, len(_PATH.findall(line))) * 1.2
    s += min(2, len(sal._SHA.findall(line))) * 1.0
    s += min(3, len(sal._UNIT.findall(line)) + len(sal._SCI.findall(line))) * 0.7
    s += min(2, len(sal._BIGINT.findall(line))) * 0.4
    s += min(3, len(sal._IDENT.findall(line))) * 0.3
    s += min(2, len(sal._KEYVAL.findall(line))) * 0.3
    s += 0.8 if sal._TESTID.search(line) else 0.0
    s += min(2, len({m.group(0).lower() for m in sal._CUE_WEAK.finditer(line)})) * 0.5
    if cues is not None and cues.search(line):
        s += 1.0
    words = sal.word_count(line)
    if words < 4:
        s -= 1.0
    elif words >= 7:
        s += 0.4
    return s


def _ref_anchors(line: str) -> list[str]:
    out = [m.group(0).rstrip(".") for m in _PATH.finditer(line)]
    out += sal._SHA.findall(line)
    out += [m.group(0) for m in sal._BIGINT.finditer(line) if len(m.group(0)) >= 5]
    out += [t for t in sal._IDENT.findall(line) if any(ch.isdigit() for ch in t) or ("_" in t and len(t) >= 8)]
    return out


class _Reference(SalienceIndex):
    """The plain reader: every line through every pattern, nothing memoized."""

    def _read_lines(self, i: int, eid: int | None, lines: Any, handle: str, tool: str, priors: Any = None) -> None:
        prev = ""
        for ln, pr in zip(lines, [0.0] * len(lines) if priors is None else priors, strict=True):
            text = ln.strip()
            if not text:
                prev = ""
                continue
            label = text if text.endswith(":") and len(text) < 80 else ""
            if len(text) < 16 or is_code(ln) or is_table_row(text):
                prev = label
                continue
            sh = shape(text)
            ld, st, tl = lead(sh), lead(sh, 5), tail(sh)
            self._shapes[sh] += 1
            self._leads[ld] += 1
            self._stems[st] += 1
            self._stems[tl] += 1
            low = text.lower()
            self._word_df.update(set(sal._CONTENT_WORD.findall(low)))
            self._cue_df.update({m.group(0).lower() for m in sal._CUE_STRONG.finditer(low)})
            if self._stems[st] > sal.ROUTINE or self._stems[tl] > sal.ROUTINE or pr == math.inf:
                prev = label
                continue
            body = sal._COMMENT.sub("", text)
            if prev:
                body = f"{prev} {body}"
            prev = label
            cues = tuple(sorted({m.group(0).lower() for m in sal._CUE_STRONG.finditer(body)}))
            words = tuple(set(sal._CONTENT_WORD.findall(body.lower())))
            score = _ref_static(body, self._cues) + 1.6 * min(2, len(cues))
            if score < 0.0:
                continue
            k = len(self._cands)
            self._cands.append(
                sal._Cand(body, sh, ld, st, tl, i, eid, handle, tool,
                          score - 1.6 * min(2, len(cues)) - pr, cues=cues, words=words)
            )
            for a in set(_ref_anchors(body)):
                self._by_anchor.setdefault(a, []).append(k)


def _state(index: SalienceIndex) -> tuple[Any, ...]:
    index._catch_up()  # update() only takes the messages in; they are read when a ranking needs them
    cands = [
        (c.text, c.shape, c.lead, c.stem, c.tail, c.message_index, c.event_id, c.handle, c.tool, c.static, c.refs, c.cues, frozenset(c.words))
        for c in index._cands
    ]
    return (cands, index._shapes, index._leads, index._stems, index._word_df, index._cue_df, index._anchor_df, index._by_anchor)


def _facts(index: SalienceIndex, start: int, stop: int) -> list[tuple[Any, ...]]:
    return [(f.text, f.score, f.message_index, f.event_id, f.handle, f.tool) for f in index.facts(start, stop)]


def _ref_facts(index: SalienceIndex, start: int, stop: int, limit: int = 200) -> list[tuple[Any, ...]]:
    """facts() written plainly: score every candidate with _score, best per shape, then rank."""
    index._catch_up()
    best: dict[str, tuple[float, Any]] = {}
    latest: dict[str, Any] = {}  # the shape's last passing candidate: the one shown
    for c in index._cands:
        if start <= c.message_index < stop:
            sc = index._score(c)
            if sc >= sal.MIN_SCORE:
                latest[c.shape] = c
                if c.shape not in best or sc >= best[c.shape][0]:
                    best[c.shape] = (sc, c)
    ranked = sorted(((sc, latest[c.shape], c.message_index) for sc, c in best.values()), key=lambda p: (-p[0], p[2]))
    out: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    for sc, c, _ in ranked:
        key = " ".join(c.text.lower().split())
        if key not in seen:
            seen.add(key)
            out.append((c.text, sc, c.message_index, c.event_id, c.handle, c.tool))
        if len(out) >= limit:
            break
    return out


# Non-ASCII lines take the IGNORECASE path: the long s and the Kelvin sign fold to ASCII cue
# letters ("muſt", "KNOWN"), which a lower-cased, case-sensitive match would miss.
_ODD = [
    "note: the runner muſt not exceed 4 GiB on node-17 (see /etc/runner/limits.toml)",
    "Root cause: \u212aNOWN ISSUE in libfoo 2.3.1, caused by the İstanbul locale; workaround in fix_locale.py",
    "décision: we chose the golden file data/golden_v2.jsonl because the old one drifted by 0.3%",
    "  value = compute(a, b) * 2",
    "col_a  12.5  13.1  99  0.4",
    "Reason:",
    "the worker crashed because commit 4e8a91c0 changed the default batch size to 4096 rows",
]


def _odd_session(n: int = 40) -> list[Message]:
    out: list[Message] = [Message("user", (TextBlock("triage the failing runner"),))]
    for i in range(n):
        call = f"call_{i}"
        lines = [_ODD[(i + k) % len(_ODD)].replace("17", str(i)) for k in range(5)]
        said = (f"Checked node-{i}. The runner muſt stay under 4 GiB because commit 4e8a91c0 doubled the batch. "
                "Next I'll look at the locale.")  # the assistant's sentences are read too (prior applied)
        out.append(Message("assistant", (TextBlock(said), ToolUseBlock(call, "run", {"cmd": f"check node-{i} 4e8a91c0"}))))
        user: list[Any] = [ToolResultBlock(call, "\n".join(lines))]
        if i % 5 == 2:  # a long user message: a paragraph (sentences, prior) and a pasted block (lines, none)
            pasted = "\n".join(_ODD[(i + k) % len(_ODD)] for k in range(4))
            user.append(TextBlock(" ".join(["I looked at the runner on my side too and it seems to be the same."] * 4)
                                  + f" Never raise the batch above 4096 rows.\n{pasted}"))
        out.append(Message("user", tuple(user)))
    return out


def _sessions() -> list[tuple[str, list[Message]]]:
    return [
        ("kernel", list(synthetic_session(60, 3))),
        ("logs-dev", generate("logs", "dev", turns=150).messages),
        ("data-val", generate("data", "val", turns=150).messages),
        ("odd", _odd_session()),
    ]


@pytest.mark.parametrize("profile", [FactProfile("generic"), FactProfile("cued", cue_words=("runner", "golden"))])
def test_fast_reader_matches_the_plain_reader(profile: FactProfile, o200k: Any) -> None:
    for name, messages in _sessions():
        h = History.from_messages(messages, o200k)
        ref = _Reference(profile)
        ref.update(h)
        for warm in (False, True):  # a cold memo, then one filled by the first read
            if not warm:
                sal._LINES.clear()
                sal._BODIES.clear()
            fast = SalienceIndex(profile)
            fast.update(h)
            assert _state(fast) == _state(ref), (name, warm)
            assert ref._cands, name
            for start, stop in ((1, len(h) // 3), (1, len(h)), (len(h) // 2, len(h))):
                got = _facts(fast, start, stop)
                assert got == _facts(ref, start, stop) == _ref_facts(ref, start, stop), (name, warm, start, stop)


def test_public_helpers_match_their_plain_definitions() -> None:
    for line in [*_ODD, "see ./build/out.log and src/kernel.cu", "no path here, 12 ms only", "v1.2 of foo.bar_baz"]:
        assert sorted(anchors(line)) == sorted(_ref_anchors(line))
        assert sal.static_score(line) == _ref_static(line, None)
        assert sal.strong_cues(line) == tuple(sorted({m.group(0).lower() for m in sal._CUE_STRONG.finditer(line)}))
    assert sal.strong_cues("it muſt fit") == ("muſt",)
    assert not math.isnan(sal.static_score("x"))


def _ref_scan_tool_output(c: Any, text: str, index: int) -> None:
    import ctxmem.context.facts as fm

    lines = text.splitlines()
    informative = [ln for k, ln in enumerate(lines) if k == 0 or fm._INFORMATIVE.search(ln)]
    fm._scan_errors(c, "\n".join(informative), index)
    fm._scan_paths(c, text, index)
    for k, ln in enumerate(informative):
        fm._scan_numbers(c, ln, index, shas=k == 0 or fm._COMMIT.search(ln) is not None)


def test_case_fold_free_result_and_informative_patterns_match_the_ignorecase_ones() -> None:
    import ctxmem.context.facts as fm
    import ctxmem.context.summarize as summ

    outputs = [b.text for _, msgs in _sessions() for m in msgs for b in m.content if isinstance(b, ToolResultBlock)]
    odd = [*_ODD, "PASS 24/24 in 3 s", "Best: 1.9x at BLOCK_M=64", "eval#12 FAILED", "ſummary ok", "Total: \u212a", "LIMIT hit: 4 GiB"]
    outputs.append("\n".join(odd))
    extractive = summ.ExtractiveSummarizer()
    hits = 0
    for text in outputs:
        for ln in text.splitlines():
            want = bool(summ._RESULT.search(ln))
            assert extractive._is_result(ln) == want, ln
            hits += want
        got, ref = fm._Collector(), fm._Collector()
        fm._scan_tool_output(got, text, 3)
        _ref_scan_tool_output(ref, text, 3)
        assert got.facts == ref.facts
    assert hits > 10


def test_saturation_points_hold_every_score_term_constant_past_them() -> None:
    # _touch marks a key only while its count is at or below these points: past them the
    # term a count feeds must not change, or an unmarked candidate would keep a stale score
    def shape_term(n: int) -> tuple[float, float]:
        return (1.5 if n == 1 else -min(2.5, 0.8 * math.log2(n)), 1.0 if n <= 3 else 0.3)

    def stem_term(m: int) -> float:
        return 1.0 if m <= 2 else -min(2.0, 0.5 * math.log2(m))

    def lead_term(m: int) -> float:
        return 0.5 if m <= 2 else -min(1.0, 0.25 * math.log2(m))

    for term, sat in ((shape_term, sal._SAT_SHAPE), (stem_term, sal._SAT_STEM), (lead_term, sal._SAT_LEAD),
                      (sal._common, sal._SAT_CUE)):
        assert all(term(n) == term(sat) for n in range(sat, sat + 5000)), term  # type: ignore[operator]
        assert term(sat - 1) != term(sat), term  # type: ignore[operator]


@pytest.mark.parametrize("name", ["kernel", "logs-dev", "odd"])
def test_incremental_facts_between_updates_match_a_fresh_index(name: str, o200k: Any) -> None:
    """facts() after each append (rescoring only what the new lines touched, updating the
    previous ranking) equals a fresh index's facts and the plain reference, for growing,
    fixed and moved spans."""
    messages = dict(_sessions())[name]
    h = History.from_messages(messages[:9], o200k)
    step = SalienceIndex()
    step.update(h)
    step.facts(1, 5)
    calls = 0
    for k in range(9, len(messages) + 1, 7):
        h.extend(messages[len(h) : k])
        step.update(h)
        for start, stop in ((1, len(h) - 4), (1, len(h)), (1, len(h) - 4), (len(h) // 2, len(h))):
            fresh = SalienceIndex()
            fresh.update(h)
            got = _facts(step, start, stop)
            assert got == _facts(fresh, start, stop) == _ref_facts(fresh, start, stop), (k, start, stop)
            calls += bool(got)
    assert calls >= 4  # the spans held facts (the odd session has few scoring ones)


@pytest.mark.parametrize("name", ["kernel", "logs-dev", "data-val"])
def test_a_rescore_after_a_long_gap_matches_a_fresh_index(name: str, o200k: Any) -> None:
    """Scored once on a quarter of the session, then the rest appended at once: the keys
    whose counts crossed a point in between (a word no longer rare, a cue now common) are
    found again when the lazily built index is made, so no score stays stale."""
    messages = dict(_sessions())[name]
    cut = len(messages) // 4
    h = History.from_messages(messages[:cut], o200k)
    step = SalienceIndex()
    step.update(h)
    assert step.facts(1, len(h))
    h.extend(messages[cut:])
    step.update(h)
    fresh = SalienceIndex()
    fresh.update(h)
    for start, stop in ((1, len(h)), (1, len(h) // 2), (1, len(h))):
        assert _facts(step, start, stop) == _facts(fresh, start, stop) == _ref_facts(fresh, start, stop)


def test_a_word_that_stops_being_rare_rescores_the_lines_that_held_it(o200k: Any) -> None:
    """Only the word's count changes (the later lines have other shapes, stems and leads):
    the first line's score must still drop by the rare-word term."""
    def out(i: int, text: str) -> list[Message]:
        call = f"call_{i}"
        return [Message("assistant", (ToolUseBlock(call, "run", {"n": i}),)),
                Message("user", (ToolResultBlock(call, text),))]

    first = "root cause: the zorblax quota in /etc/quota.toml is at most 4096 rows per page"
    # its content words (rare: once each) come back twice more in lines of other shapes, stems
    # and leads and without strong cues, so only word counts change
    later = ["warning zorblax quota toml rows page cause root seen near node seven",
             "summary zorblax quota toml rows page cause root drained after restart today"]
    messages = [Message("user", (TextBlock("triage"),)), *out(0, first)]
    h = History.from_messages(messages, o200k)
    step = SalienceIndex()
    step.update(h)
    before = _facts(step, 1, len(h))
    for k, text in enumerate(later, 1):
        h.extend(out(k, text))
    step.update(h)
    fresh = SalienceIndex()
    fresh.update(h)
    after = _facts(step, 1, 3)
    assert after == _facts(fresh, 1, 3) == _ref_facts(fresh, 1, 3)
    assert before[0][0] == after[0][0] == first and after[0][1] < before[0][1]


@pytest.mark.parametrize("name", ["kernel", "logs-dev"])
def test_reading_ahead_in_pieces_matches_one_read(name: str, o200k: Any) -> None:
    """read_ahead (a summarizer reads each chunk into the session's index right after its
    own per-chunk one) reads the same messages in the same order as one catch-up: the same
    state and facts, before and after a ranking, and a stop behind what was read is a no-op."""
    messages = dict(_sessions())[name]
    h = History.from_messages(messages, o200k)
    third = len(h) // 3
    ahead = SalienceIndex()
    ahead.update(h)
    for stop in range(7, third, 11):
        ahead.read_ahead(stop)
        assert ahead._seen == stop
    ahead.read_ahead(3)  # behind: nothing read again
    assert ahead._seen == max(range(7, third, 11))
    fresh = SalienceIndex()
    fresh.update(h)
    assert _facts(ahead, 1, len(h)) == _facts(fresh, 1, len(h)) == _ref_facts(fresh, 1, len(h))
    assert _state(ahead) == _state(fresh)
    # more messages, read ahead after a ranking (the incremental path), then ranked again
    h2 = History.from_messages(messages[: 2 * third], o200k)
    ahead, fresh = SalienceIndex(), SalienceIndex()
    ahead.update(h2)
    ahead.facts(1, third)
    h2.extend(messages[2 * third :])
    ahead.update(h2)
    for stop in range(2 * third + 5, len(h2) + 9, 9):
        ahead.read_ahead(stop)
    fresh.update(h2)
    for start, stop in ((1, len(h2)), (third, len(h2))):
        assert _facts(ahead, start, stop) == _facts(fresh, start, stop) == _ref_facts(fresh, start, stop)
