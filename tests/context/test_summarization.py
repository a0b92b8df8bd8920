"""Summarizers, the fidelity guard and the rolling/hierarchical summarization strategy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ctxmem.clients.base import ModelRequest
from ctxmem.clients.testing import FunctionClient, ScriptedClient
from ctxmem.context import BuildRequest, BuiltContext, History, check_output
from ctxmem.context.facts import extract_facts
from ctxmem.context.summarization import Summarization, SummarizationConfig, id_ranges
from ctxmem.context.summarize import (
    FACTS_HEADER,
    ExtractiveSummarizer,
    FidelityGuard,
    LLMSummarizer,
    SummarizationError,
)
from ctxmem.errors import ConfigError, ContextOverflowError, ProviderError
from ctxmem.events import CompactionEvent, NoteEvent
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolSpec, tool_to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.tokens import Budget, count_request
from generators import conversations, huge_outputs, tool_outputs

SYSTEM = "You optimize GPU kernels. Never change the reference."
TOOLS = (ToolSpec("compile", "Compile the kernel", {"type": "object", "properties": {"path": {"type": "string"}}}),)
BUDGET = Budget(24_000, reserve_output=2_000, threshold=0.9)


def _request(h: History, budget: Budget = BUDGET, **kw: Any) -> BuildRequest:
    return BuildRequest(h, budget, system=SYSTEM, tools=TOOLS, **kw)


def assert_valid(out: BuiltContext, request: BuildRequest) -> None:
    """Fits by a full recount, provider-valid, pinned prefix verbatim, report consistent."""
    msgs = list(out.messages)
    recount = count_request(msgs, request.tokenizer, system=out.system, tools=[tool_to_anthropic(t) for t in (*out.tools, *out.extra_tools)])
    assert recount.total <= request.budget.available
    assert recount.total == out.report.tokens_out
    check_output(msgs)
    p = request.pinned_count
    h = request.history
    if p:
        assert msgs[: p - 1] == h.messages[: p - 1]
        assert msgs[p - 1].content[: len(h.messages[p - 1].content)] == h.messages[p - 1].content
    r = out.report
    assert set(range(p)) | set(r.kept) | set(r.dropped) | set(r.summarized) == set(range(len(h)))


# ----------------------------------------------------------------------------- summarizers


@pytest.mark.parametrize("max_tokens", [8, 60, 300, 1500])
def test_extractive_summary_respects_max_tokens(o200k: Any, max_tokens: int) -> None:
    msgs = synthetic_session(40, seed=5)[1:]
    s = ExtractiveSummarizer().summarize(msgs, max_tokens=max_tokens, tokenizer=o200k)
    assert 0 < o200k.count(s) <= max_tokens or (max_tokens == 8 and o200k.count(s) <= 8)
    assert ExtractiveSummarizer().summarize(msgs, max_tokens=max_tokens, tokenizer=o200k) == s
    if max_tokens >= 300:
        assert "geomean speedup" in s and "Error" in s  # results and errors come first


def test_extractive_skips_lines_already_in_the_prior(o200k: Any) -> None:
    msgs = synthetic_session(20, seed=6)[1:]
    first = ExtractiveSummarizer().summarize(msgs, max_tokens=400, tokenizer=o200k)
    again = ExtractiveSummarizer().summarize(msgs, max_tokens=400, tokenizer=o200k, prior=first)
    assert not set(first.splitlines()) & set(again.splitlines())


def test_llm_summarizer_sends_text_only_and_clips_to_max_tokens(o200k: Any) -> None:
    client = ScriptedClient(["line one about kernel.py\n" * 400])
    msgs = synthetic_session(5, seed=1)[1:7]  # starts with tool calls: an orphan span on purpose
    out = LLMSummarizer(client, instructions="Summarize.").summarize(msgs, max_tokens=50, tokenizer=o200k, prior="P")
    assert 0 < o200k.count(out) <= 50
    [req] = client.requests
    assert req.max_tokens == 50 and not req.tools
    assert [m.role for m in req.messages] == ["user"]
    assert all(isinstance(b, TextBlock) for m in req.messages for b in m.content)
    prompt = req.messages[0].text
    assert prompt.startswith("Summarize.") and "[assistant calls" in prompt and "[result of" in prompt and "\nP" in prompt


def test_llm_summarizer_empty_reply_is_an_error(o200k: Any) -> None:
    with pytest.raises(SummarizationError, match="no text"):
        LLMSummarizer(ScriptedClient(["  "])).summarize([Message.user("hi")], max_tokens=20, tokenizer=o200k)
    with pytest.raises(SummarizationError, match="request failed"):
        LLMSummarizer(ScriptedClient([ProviderError("boom")])).summarize(
            [Message.user("hi")], max_tokens=20, tokenizer=o200k
        )


def test_guard_repins_only_the_dropped_facts_within_its_cap(o200k: Any) -> None:
    msgs = [
        Message.user("Edit src/attn/kernel.py only."),
        Message("user", (ToolResultBlock("t", "error: OutOfResources: out of resource, Hardware limit: 101376"),)),
    ]
    facts = extract_facts(msgs)
    g = FidelityGuard(max_facts=10, max_tokens=200).apply("We edited src/attn/kernel.py.", facts, o200k)
    assert FACTS_HEADER in g.text and "- 101376" in g.text
    assert not any(f.kind == "path" for f in g.repinned)  # the summary kept it
    assert {f.text for f in g.repinned} >= {"101376"}
    tiny = FidelityGuard(max_facts=10, max_tokens=12).apply("", facts, o200k)
    assert o200k.count(tiny.text) <= 12 and tiny.left_out


# ----------------------------------------------------------------------------- strategy


def test_builds_fit_the_budget_and_compact_rarely_with_stable_prefixes(o200k: Any) -> None:
    msgs = synthetic_session(150, seed=3)
    h = History.from_messages(msgs[:3], o200k)
    strat = Summarization(SummarizationConfig(chunk_tokens=3000, summary_tokens=1500))
    compactions = 0
    prev: BuiltContext | None = None
    for k in range(3, len(msgs) + 1, 2):
        h.extend(msgs[len(h) : k])
        calls = strat.calls
        req = _request(h)
        out = strat.build(req)
        assert_valid(out, req)
        if prev is not None and prev.report.summarized and list(out.report.summarized) == list(prev.report.summarized):
            # between compactions: no summarizer call, and the previous request is a byte-identical prefix
            assert strat.calls == calls
            assert not out.report.cache_invalidated
            assert list(out.messages[: len(prev.messages)]) == list(prev.messages)
        elif out.report.summarized:
            compactions += 1
            assert out.report.cache_invalidated or prev is None or not prev.report.summarized
        prev = out
    assert compactions >= 3
    assert prev is not None and prev.report.summarized and prev.report.sections["summary"] > 0
    # the same request again: identical, and no call
    calls = strat.calls
    again = strat.build(_request(h))
    assert list(again.messages) == list(prev.messages) and strat.calls == calls
    # a fresh instance gives the same context (determinism)
    fresh = Summarization(SummarizationConfig(chunk_tokens=3000, summary_tokens=1500)).build(_request(h))
    assert list(fresh.messages) == list(prev.messages)


def test_hierarchical_summaries_stay_within_the_summary_cap(o200k: Any) -> None:
    msgs = synthetic_session(300, seed=8)
    h = History.from_messages(msgs, o200k)
    cfg = SummarizationConfig(chunk_tokens=2000, chunk_summary_tokens=200, summary_tokens=600, fanout=3)
    strat = Summarization(cfg)
    req = _request(h, Budget(30_000, 2_000, 0.9))
    out = strat.build(req)
    assert_valid(out, req)
    block = strat.last_summary
    assert block is not None and block.level >= 1
    assert block.tokens <= 600 and o200k.count(block.text) == block.tokens
    assert out.report.sections["summary"] == block.tokens + 1
    assert any(n.children for n in block.nodes)


def test_nothing_pinned_puts_the_summary_in_the_first_kept_message(o200k: Any) -> None:
    # Without a pinned prefix the kept part must open with a user text message: a chat.
    msgs = [
        Message(("user", "assistant")[k % 2], (TextBlock(f"turn {k}: " + "tile the kernel at 64x64 " * 60),))
        for k in range(81)
    ]
    h = History.from_messages(msgs, o200k)
    req = _request(h, pinned=0)
    out = Summarization().build(req)
    assert_valid(out, req)
    first = out.messages[0]
    assert first.role == "user" and first.content[0].type == "text"
    assert first.content[0].text.startswith("[Summary of earlier messages 0-")  # type: ignore[union-attr]


def test_guard_repins_facts_an_llm_summary_dropped(o200k: Any) -> None:
    msgs = synthetic_session(60, seed=2)
    first, *rest = msgs[4].content
    assert isinstance(first, ToolResultBlock)
    msgs[4] = Message("user", (ToolResultBlock(first.tool_use_id, "wrote /opt/sim/limits.toml: smem 101376 bytes"), *rest))
    h = History.from_messages(msgs, o200k)
    client = FunctionClient(lambda req: "Tried several tile sizes; some compiles failed.")
    cfg = SummarizationConfig(
        summarizer="llm", chunk_tokens=100_000, chunk_summary_tokens=1200, fact_tokens=1000, max_facts=200
    )
    strat = Summarization(cfg, client=client)
    out = strat.build(_request(h))
    assert_valid(out, _request(h))
    block = strat.last_summary
    assert block is not None and not block.failures
    assert "Tried several tile sizes" in block.text and FACTS_HEADER in block.text
    assert "- /opt/sim/limits.toml" in block.text and "101376" in block.text.split(FACTS_HEADER)[1]
    assert any("fidelity guard re-pinned" in n for n in out.report.notes)
    assert client.requests and all(not r.tools for r in client.requests)


def _boom(req: ModelRequest) -> str:
    raise ProviderError("upstream 529 overloaded", status=529)


@pytest.mark.parametrize("fallback", ["extractive", "window", "masking"])
def test_a_failing_summarizer_falls_back_and_keeps_the_history(o200k: Any, sqlite_store: Any, fallback: str) -> None:
    msgs = synthetic_session(70, seed=4)
    session = Session.create(sqlite_store, tokenizers=["o200k_base"])
    session.record_many(msgs)
    h = History.from_session(session, "o200k_base")
    before = (list(h.messages), list(h.counts), h.version)
    client = FunctionClient(_boom)
    strat = Summarization(SummarizationConfig(summarizer="llm", fallback=fallback), client=client)
    req = _request(h, session=session)
    out = strat.build(req)
    assert_valid(out, req)
    assert (list(h.messages), list(h.counts), h.version) == before
    assert session.messages() == msgs
    assert any("upstream 529" in n and "fell back" in n for n in out.report.notes)
    notes = [se.event for se in session.events() if isinstance(se.event, NoteEvent)]
    assert len(notes) >= 1 and all("upstream 529" in n.text and "failure" in n.tags for n in notes)
    if fallback == "extractive":
        assert out.report.summarized and strat.last_summary is not None and strat.last_summary.failures
    else:
        assert not out.report.summarized and strat.last_summary is None
    # the next build at the same boundary neither retries nor records the failure again
    calls, n_notes = len(client.requests), len(notes)
    strat.build(req)
    assert len(client.requests) == calls
    assert len([se for se in session.events() if isinstance(se.event, NoteEvent)]) == n_notes


def test_a_compaction_is_recorded_once_with_its_source_events(o200k: Any, sqlite_store: Any) -> None:
    msgs = synthetic_session(70, seed=7)
    session = Session.create(sqlite_store, tokenizers=["o200k_base"])
    session.record_many(msgs)
    h = History.from_session(session, "o200k_base")
    req = _request(h, session=session)
    strat = Summarization()
    out = strat.build(req)
    strat.build(req)
    Summarization().build(req)  # another instance rebuilding the same context
    comps = [se.event for se in session.events() if isinstance(se.event, CompactionEvent)]
    assert len(comps) == 1
    [ev] = comps
    summarized = out.report.summarized
    expected = tuple(e for i in summarized for e in h.event_ids[i])
    assert ev.strategy == "summarization" and ev.source_event_ids == expected and expected
    assert ev.tokens_before == out.report.tokens_in > ev.tokens_after == out.report.tokens_out
    assert ev.summary is not None and ev.summary in out.messages[0].content[-1].text  # type: ignore[union-attr]
    assert f"source_event_ids: {id_ranges(expected)}" in out.report.notes
    assert session.messages() == msgs  # the log only grew by the compaction event


def test_under_the_trigger_nothing_is_summarized(o200k: Any) -> None:
    h = History.from_messages(synthetic_session(5, seed=1), o200k)
    req = _request(h, pinned_facts=("keep atol 2e-3",))
    strat = Summarization(SummarizationConfig(summarizer="llm"), client=ScriptedClient())
    out = strat.build(req)
    assert_valid(out, req)
    assert not out.report.summarized and strat.calls == 0
    assert TextBlock("keep atol 2e-3") in out.messages[0].content


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        SummarizationConfig(chunk_tokns=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="summary_tokens"):
        SummarizationConfig(chunk_summary_tokens=1000, summary_tokens=900)
    with pytest.raises(ConfigError, match="client"):
        Summarization(SummarizationConfig(summarizer="llm"))
    with pytest.raises(ValidationError):
        SummarizationConfig(fallback="drop")  # type: ignore[arg-type]
    assert all(f.description for f in SummarizationConfig.model_fields.values())


# ----------------------------------------------------------------------------- contract


@settings(max_examples=60)
@given(
    conv=conversations(min_turns=1, max_turns=8, outputs=st.one_of(tool_outputs(), huge_outputs(20, 120))),
    window=st.integers(150, 6000),
    pinned=st.integers(0, 2),
    facts=st.lists(st.sampled_from(["limit: 101376 bytes smem", "keep atol 2e-3"]), max_size=2, unique=True),
    params=st.sampled_from(
        [{}, {"chunk_tokens": 64, "chunk_summary_tokens": 24, "summary_tokens": 64, "fanout": 2, "compaction_step": 0.05}]
    ),
)
def test_summarization_keeps_the_strategy_contract(
    o200k: Any, conv: list[Message], window: int, pinned: int, facts: list[str], params: dict[str, Any]
) -> None:
    if conv[-1].role == "assistant":
        conv = conv[:-1] if conv[-1].tool_uses else [*conv, Message.user("continue")]
    assume(conv)
    h = History.from_messages(conv, o200k)
    budget = Budget(window, reserve_output=min(64, window // 4), threshold=0.9)
    req = BuildRequest(h, budget, system=SYSTEM, tools=TOOLS, pinned=pinned, pinned_facts=tuple(facts))
    strat = Summarization(SummarizationConfig(**params))
    try:
        out = strat.build(req)
    except ContextOverflowError as exc:
        assert exc.needed > exc.available == budget.available
        return
    assert_valid(out, req)
    p = req.pinned_count
    if p:
        for fact in facts:
            assert TextBlock(fact) in out.messages[p - 1].content
    assert list(Summarization(SummarizationConfig(**params)).build(req).messages) == list(out.messages)
    calls = strat.calls
    assert list(strat.build(req).messages) == list(out.messages) and strat.calls == calls


def test_a_history_past_the_trigger_that_fits_the_limit_is_kept_whole_when_no_cut_leaves_room(o200k: Any) -> None:
    # Found by the contract's property test: past the trigger, with no safe cut that leaves
    # room for a summary and the last tool loop, the strategy raised although the whole
    # history fit the budget (138 tokens, 138 available). It must build it as is.
    from ctxmem.messages import RedactedThinkingBlock, ThinkingBlock, ToolUseBlock

    conv = [
        Message.user("0"),
        Message("assistant", (ToolUseBlock("toolu_0001", "edit_file", {}),)),
        Message("user", (ToolResultBlock("toolu_0001", "", False), TextBlock("0"))),
        Message("assistant", (ThinkingBlock("0", ""), RedactedThinkingBlock("0"), TextBlock("0"))),
        Message.user("continue"),
    ]
    h = History.from_messages(conv, o200k)
    tools = (ToolSpec("edit_file", "Edit a file.", {"type": "object", "properties": {}}),)
    whole = count_request(conv, o200k, system="s", tools=[tool_to_anthropic(t) for t in tools]).total
    budget = Budget(whole + 10, 10, 0.5)  # exactly the whole request; the trigger far below it
    out = Summarization(SummarizationConfig()).build(BuildRequest(h, budget, system="s", tools=tools, pinned=0))
    assert list(out.messages) == conv and out.report.tokens_out == whole
    assert any("kept every message" in n for n in out.report.notes)
    with pytest.raises(ContextOverflowError):  # one token less: a real overflow still raises
        Summarization(SummarizationConfig()).build(
            BuildRequest(h, Budget(whole + 9, 10, 0.5), system="s", tools=tools, pinned=0))


_RESULT_PIECES = ["summary", "total", "mean", "best", "pass", "passed", "failed", "result", "#", "eval#12", "run#",
                  "x", " ", "3", "pass 3", "bypass 2", "a#1", "PASS", "Summary", "é", "::", "_"]


@given(st.lists(st.one_of(st.sampled_from(_RESULT_PIECES), st.text(max_size=3)), max_size=10).map("".join))
@settings(max_examples=400, deadline=None)
def test_the_result_line_shortcut_gives_the_patterns_answer(line: str) -> None:
    """The substring check before the result pattern never changes whether a line is a result."""
    from ctxmem.context.summarize import _RESULT, _RESULT_LOW, ExtractiveSummarizer

    low = line.lower()
    plain = bool(_RESULT_LOW.search(low) if line.isascii() else _RESULT.search(line))
    assert ExtractiveSummarizer()._is_result(line) == plain
