"""Salience: the lines of tool output that matter later, found without a word list fitted to
one workload — shown on sessions unlike the kernel workload (log triage, data analysis), in
the validation phrasing the scorer was never tuned on."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ctxmem.clients.testing import FunctionClient
from ctxmem.context import BuildRequest, History, check_output
from ctxmem.context.masking import Masking, MaskingConfig
from ctxmem.context.salience import (
    FACTS_SECTION_HEADER,
    STATEMENT,
    SalienceIndex,
    is_code,
    is_table_row,
    shape,
)
from ctxmem.context.summarization import Summarization, SummarizationConfig
from ctxmem.evals.retention import KINDS, generate
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock, message_texts
from ctxmem.tokens import Budget

TOOL_KINDS = KINDS[:10]


def _found(session: Any, texts: list[str]) -> set[str]:
    low = [t.lower() for t in texts]
    return {f.kind for f in session.facts if f.kind in TOOL_KINDS and any(all(k.lower() in t for k in f.keys) for t in low)}


@pytest.mark.parametrize("domain", ["logs", "data"])
def test_planted_facts_rank_high_in_sessions_unlike_the_kernel_workload(domain: str, o200k: Any) -> None:
    s = generate(domain, "val", turns=300)
    h = History.from_messages(s.messages, o200k)
    index = SalienceIndex()
    index.update(h)
    top = index.facts(1, len(h), limit=25)
    assert len(_found(s, [f.text for f in top])) >= 8, [f.text for f in top]
    # and a routine line (a log line that repeats with other numbers) is not among them
    assert not any(f.text.endswith("backing off") or " rows, " in f.text for f in top)


def test_shape_code_and_table_detection() -> None:
    assert shape("request 8f3a9c21 took 120 ms") == shape("request 00ab12cd took 7 ms")
    assert shape("Root cause: x") != shape("Decision: x")
    assert is_code("    acc = acc * alpha[:, None] + tl.dot(p, v)")
    assert is_code('    raise OutOfResources(self.metadata.shared, max_shared, "shared memory")')
    assert not is_code("# note: the harness reuses the output buffer between cases")
    assert not is_code("Root cause: the row max is -inf when every key is masked, so exp() gives NaN")
    assert is_table_row("b1_h8_p512 1.204 0.611 1.97x")
    assert not is_table_row("the export API returns at most 5000 rows per page")


def test_incremental_updates_score_like_one_pass(o200k: Any) -> None:
    s = generate("logs", "dev", turns=120)
    h = History.from_messages(s.messages[:41], o200k)
    step = SalienceIndex()
    for k in range(41, len(s.messages) + 1, 37):
        h.extend(s.messages[len(h) : k])
        step.update(h)
    h.extend(s.messages[len(h) :])
    step.update(h)
    once = SalienceIndex()
    once.update(h)
    assert step.facts(1, len(h)) == once.facts(1, len(h))


def test_the_section_fits_its_cap_names_its_sources_and_is_stable(o200k: Any) -> None:
    s = generate("data", "val", turns=200)
    h = History.from_messages(s.messages, o200k)
    index = SalienceIndex()
    index.update(h)
    for cap in (60, 300, 1500):
        text, facts = index.section(1, len(h), o200k, cap)
        assert o200k.count(text) <= cap
        if facts:
            assert text.startswith(FACTS_SECTION_HEADER)
    text, facts = index.section(1, len(h), o200k, 1500)
    assert any(f.handle for f in facts)
    for f in facts:  # each line: its event (or message), its tool and the handle recall takes
        if not f.handle:  # a sentence the assistant wrote: no output to recall, the text is in its message
            assert f.tool == STATEMENT and f"· {STATEMENT}] {f.text}" in text
            m = h.messages[f.message_index]
            assert m.role == "assistant" and any(f.text in getattr(b, "text", "") for b in m.content)
            continue
        assert f"recall {f.handle}] " in text and h.tool_result(f.handle) is not None
        assert f.text in h.tool_result(f.handle)[1].text.replace("\n", " ")  # type: ignore[index]
    assert index.section(1, len(h), o200k, 1500) == (text, facts)


def test_masking_keeps_planted_facts_of_a_log_triage_session_within_budget(o200k: Any) -> None:
    s = generate("logs", "val", turns=300)
    h = History.from_messages(s.messages, o200k)
    strategy = Masking(MaskingConfig(keep_last=3, facts_tokens=3000, facts_fraction=0.1))
    plain = Masking(MaskingConfig(keep_last=3))
    budget = Budget(30_000, 4_000, 0.9)
    built = strategy.build(BuildRequest(h, budget))
    check_output(built.messages)
    assert built.report.tokens_out <= budget.available and built.report.sections["facts"] > 0
    texts = [t for m in built.messages for t in message_texts(m)]
    without = [t for m in plain.build(BuildRequest(h, budget)).messages for t in message_texts(m)]
    assert len(_found(s, texts)) >= 8 > len(_found(s, without))


def test_an_llm_summary_that_drops_a_salient_line_gets_it_re_pinned(o200k: Any) -> None:
    fact = "root cause: the retry loop in ingest_worker7 re-sends batches after a 504 (see /srv/logs/ingest.err)"
    msgs = [Message.user("Find why duplicates appear in the events table.")]
    for i in range(40):
        lines = [f"2026-03-0{1 + i % 9}T10:{i:02d}:00Z INFO worker request {i:04d} ok in {10 + i} ms" for _ in range(30)]
        if i == 7:
            lines.insert(12, fact)
        msgs.append(Message.assistant(ToolUseBlock(f"t{i}", "grep_logs", {"q": "dup"})))
        msgs.append(Message("user", (ToolResultBlock(f"t{i}", "\n".join(lines)),)))
    msgs.append(Message.user("Summarize the findings."))
    h = History.from_messages(msgs, o200k)
    client = FunctionClient(lambda req: "Looked at many worker logs; requests mostly succeed.")
    strat = Summarization(
        SummarizationConfig(summarizer="llm", chunk_tokens=2000, chunk_summary_tokens=300, summary_tokens=1200,
                            fact_tokens=200, compaction_step=0.2),
        client=client,
    )
    built = strat.build(BuildRequest(h, Budget(6_000, 500, 0.9)))
    assert strat.last_summary is not None
    assert fact in strat.last_summary.text  # the guard re-pinned the line the LLM dropped
    assert any(f.kind == "salient" and f.text == fact for f in strat.last_summary.repinned)
    assert built.report.tokens_out <= built.report.available


def test_a_cold_read_and_index_run_without_cyclic_collections_and_restore_the_gc() -> None:
    """A cold read (and the first key index) allocates objects for every tool-output line;
    each cyclic collection they trigger traverses every object the process holds (at 10M
    tokens the key index took 1.0 s with them, 0.4 s without). The GC is paused for such a
    batch (resumed with one young collection) and restored as it was."""
    import gc

    from ctxmem.context.salience import _BATCH, SalienceIndex
    from ctxmem.samples import synthetic_session

    msgs = synthetic_session(300, seed=4)
    assert len(msgs) > _BATCH
    h = History.from_messages(msgs, "heuristic")
    collections: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    ix = SalienceIndex()
    ix.update(h)
    assert gc.isenabled()
    gc.collect()
    gc.callbacks.append(on_gc)
    try:
        ix._catch_up()
        read = len(collections)
        ix._index(len(ix._cands))
        indexed = len(collections) - read
    finally:
        gc.callbacks.remove(on_gc)
    assert gc.isenabled()  # restored
    # at most the one young collection due when the GC resumes (unpaused: one per ~700 allocations)
    assert ix._cands and read <= 1 and indexed <= 1
    gc.disable()
    try:
        SalienceIndex.of_messages(msgs)._index(1)
        again = SalienceIndex()
        again.update(h)
        again.facts(0, len(h))
        assert not gc.isenabled()  # a caller's disabled GC stays disabled
    finally:
        gc.enable()


_ROW_PIECES = ["12", "3.5", "0x1f", "ms", "abc", "v2", "1e-3", "-7", "%", "GB/s", "x", " ", "  ", "\t", "١٢", "ab1",
               "1abc", "n=3", "|", "..."]


@given(st.lists(st.sampled_from(_ROW_PIECES), max_size=24).map("".join))
@settings(max_examples=400, deadline=None)
def test_is_table_row_is_its_plain_definition(line: str) -> None:
    """The shortcuts (no digit; too few numeric tokens before the worded ones are taken out;
    the count in C) give the written-out rule's answer."""
    from ctxmem.context.salience import _ALPHA3, _NUMERIC_TOKEN, is_table_row

    toks = line.split()
    plain = len(toks) >= 4 and sum(1 for t in _NUMERIC_TOKEN.findall(line) if not _ALPHA3.search(t)) / len(toks) >= 0.5
    assert is_table_row(line) == plain


_CUE_PIECES = ["root cause", "root-causes", "caused by", "regressed", "erratum", "never", "mustn't", "don't", "note",
               "warning", "failed", "error", "slowest", "a_b", "word", "Word", "x", " ", "-", "'", "é", "ß", "_", "9"]


@given(st.lists(st.one_of(st.sampled_from(_CUE_PIECES), st.text(max_size=3)), max_size=12).map("".join))
@example(" ".join(f"{c}{c}ord_x" for c in "abcdefghijklmnopqrstuvwxyz") + " Root cause: a regression; never do not.")
@settings(max_examples=400, deadline=None)
def test_the_cue_and_word_patterns_find_what_the_plain_patterns_find(text: str) -> None:
    import re

    from ctxmem.context.salience import (
        _CONTENT_WORD,
        _CUE_STRONG,
        _CUE_STRONG_LOW,
        _CUE_WEAK,
        _CUE_WEAK_LOW,
    )

    for fast, plain in ((_CUE_STRONG_LOW, _CUE_STRONG.pattern), (_CUE_WEAK_LOW, _CUE_WEAK.pattern),
                        (_CONTENT_WORD, r"\b[a-z][a-z_]{3,}\b")):
        for s in (text, text.lower()):
            assert fast.findall(s) == re.compile(plain).findall(s)


_SHAPE_PIECES = ["0x1f", "deadbeef12", "3.5e-3", "12,345", "'q'", '"dq"', "١٢٣", "abc", "g", " ", "f00", "1:2", "x"]


@given(st.lists(st.one_of(st.sampled_from(_SHAPE_PIECES), st.text(max_size=3)), max_size=12).map("".join))
@example("0x1F 0xbeef deadbeef12 v1.2.3 3.5e-3 '١٢٣' \"x\" abcdef123456 x9")
@settings(max_examples=400, deadline=None)
def test_the_shape_pattern_replaces_what_the_plain_pattern_replaces(text: str) -> None:
    import re

    from ctxmem.context.salience import _SHAPE_BODY, _SHAPE_SUB

    for s in (text, text.lower()):
        assert _SHAPE_SUB.sub("#", s) == re.compile(_SHAPE_BODY).sub("#", s)


@given(st.lists(st.one_of(st.sampled_from(_CUE_PIECES + _SHAPE_PIECES), st.text(max_size=4)), min_size=4,
                max_size=16).map(" ".join))
@example("Root cause: the kernel's tile_size 128 overflowed ./src/kern.py at 0xdeadbeef (3.2 ms)")
@example("ÉCHEC: la racine du problème est never the cache; régression à 12 ms")
@settings(max_examples=300, deadline=None)
def test_a_body_reuses_its_lines_cues_and_words_only_where_they_are_its_own(line: str) -> None:
    from ctxmem.context import salience as S

    f = S._line_features(line)
    if f.shape is None or f.body != f.text:
        return
    S._BODIES.pop(f.body, None)
    hinted = S._body_features(f.body, f)
    S._BODIES.pop(f.body, None)
    assert hinted == S._body_features(f.body)


def test_search_hits_share_one_lead_however_their_text_varies() -> None:
    from ctxmem.context.salience import LOCATION, lead

    for hit in ("src/kernel/attn_bwd.py:135: head unroll batch pass", "attn.py:12:4: error: too many registers",
                "src/x.py-12- a context line", "  lib/a.py:7: x = 1"):
        sh = shape(hit)
        assert sh.startswith(LOCATION + " ") and lead(sh) == LOCATION, (hit, sh)
    assert lead(shape("Root cause: the tile is 232448 bytes")) == "root cause:"
    for plain in ("see https://x.org/a:80: no", "ERROR 12:30:45 worker died", "a/b.py:12:foo"):
        assert not shape(plain).startswith(LOCATION), plain


def test_a_plain_fact_outranks_a_thousand_varied_search_hits(o200k: Any) -> None:
    """Each grep hit's text differs (so its shape and stem are one of a kind), but a search
    output is routine: the hits share one lead, and a one-off fact without any cue word
    ranks above all of them."""
    import random

    rng = random.Random(3)
    words = ["head", "unroll", "batch", "pass", "page", "prefetch", "transpose", "omega", "guard", "fence", "lane",
             "fuse", "tile", "warp", "stride", "mask", "scale", "block", "vector", "queue"]
    msgs = [Message.user("Speed up the attention kernel.")]
    for k in range(40):
        hits = "\n".join(f"src/{rng.choice(['kernel', 'utils', 'ops'])}/{rng.choice(words)}_{rng.choice(words)}.py:"
                         f"{rng.randrange(1, 900)}: " + " ".join(rng.sample(words, 7)) for _ in range(30))
        msgs += [Message("assistant", (ToolUseBlock(f"g{k}", "grep", {"q": rng.choice(words)}),)),
                 Message("user", (ToolResultBlock(f"g{k}", hits),))]
        if k == 20:
            msgs += [Message("assistant", (ToolUseBlock("note", "bash", {"cmd": "cat NOTES"}),)),
                     Message("user", (ToolResultBlock(
                         "note", "FYI the timing harness counts the first 4 warmup iterations in the mean, so short "
                                 "runs look slow"),))]
    h = History.from_messages(msgs, "o200k_base")
    idx = SalienceIndex()
    idx.update(h)
    ranked = [f.text for f in idx.facts(1, len(h), limit=20)]
    assert ranked and "warmup iterations" in ranked[0], ranked[:3]


def test_a_value_stated_again_later_is_shown_as_it_now_stands(o200k: Any) -> None:
    """The old limit earned references (the agent quoted it), the revised one none yet: the
    shape ranks by its best instance but shows its latest, never the superseded value."""
    from ctxmem.messages import TextBlock

    def out(k: int, text: str) -> list[Message]:
        return [Message("assistant", (ToolUseBlock(f"t{k}", "bash", {"cmd": f"probe {k}"}),)),
                Message("user", (ToolResultBlock(f"t{k}", text),))]

    msgs = [Message.user("Tune the kernel for this board.")]
    msgs += out(0, "device query: max shared memory per block on this board is 101376 bytes (sm_90a)")
    for k in range(1, 4):  # the agent quotes the old value: references raise that instance's score
        msgs += [Message("assistant", (TextBlock(f"Keeping the tile under 101376 bytes (attempt {k})."),
                                       ToolUseBlock(f"r{k}", "bash", {"cmd": f"build {k}"}))),
                 Message("user", (ToolResultBlock(f"r{k}", f"build {k} ok"),))]
    msgs += out(9, "device query: max shared memory per block on this board is 232448 bytes (sm_90a)")
    msgs += out(10, "done")
    h = History.from_messages(msgs, "o200k_base")
    idx = SalienceIndex()
    idx.update(h)
    texts = [f.text for f in idx.facts(1, len(h))]
    assert any("232448" in t for t in texts), texts
    assert not any("101376 bytes (sm_90a)" in t for t in texts), texts


@pytest.mark.parametrize("indent", [None, 2])
def test_a_fact_in_a_json_field_is_found_one_line_or_pretty_printed(indent: int | None, o200k: Any) -> None:
    """Hundreds of JSON responses: quoted sentences are not blanked like quoted tokens, and a
    one-line response too long to show is read field by field."""
    import json
    import random

    rng = random.Random(5)
    words = ["queue", "drain", "retry", "batch", "shard", "lease", "token", "cache", "epoch", "slot"]
    msgs = [Message.user("Find out why the nightly job is slow.")]
    for k in range(60):
        note = ("FYI the timing harness counts the first 4 warmup iterations in the mean" if k == 30
                else " ".join(rng.sample(words, 6)))
        body: dict[str, Any] = {"id": k, "status": "ok", "latency_ms": rng.randrange(5, 90), "note": note,
                                "items": list(range(100))}
        msgs += [Message("assistant", (ToolUseBlock(f"j{k}", "api", {"q": k}),)),
                 Message("user", (ToolResultBlock(f"j{k}", json.dumps(body, indent=indent)),))]
    h = History.from_messages(msgs, "o200k_base")
    idx = SalienceIndex()
    idx.update(h)
    ranked = [f.render() for f in idx.facts(1, len(h), limit=5)]  # as shown: clipped at MAX_FACT_CHARS
    assert ranked and "warmup iterations" in ranked[0], ranked


def test_a_chinese_sentence_is_not_scored_as_a_bare_label() -> None:
    from ctxmem.context.salience import static_score, word_count

    fact = "根本原因：共享内存每个块最多 101376 字节，超过后内核启动失败。"
    assert word_count(fact) >= 7 and word_count("ok then") == 2
    assert word_count("root cause: the tile overflows shared memory") == 7
    assert static_score(fact) > static_score(fact.replace("，", " ").split()[0])  # the sentence, not its first label
    assert static_score(fact) >= static_score("根本原因") + 1.0  # the length term: +0.4, not -1.0
