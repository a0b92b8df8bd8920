"""Every registered strategy and every preset, held to the same contract on generated sessions.

For hypothesis-generated conversations (tool loops, parallel calls, thinking blocks, huge
and empty outputs, error results) and budgets from tiny to roomy, a build either raises
ContextOverflowError honestly (needed > available) or returns a context that:

* fits the budget, recounted from scratch by the request's tokenizer (system prompt and
  every tool definition sent, the strategy's extra tools included);
* passes every invariant (no orphan tool blocks, ends with a user message);
* is deterministic (fresh instances and a reused instance agree);
* keeps the pinned prefix and pinned facts verbatim;
* says what it did (its report's token count equals the recount).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ctxmem.config import available_presets, load_preset
from ctxmem.context import STRATEGIES, BuildRequest, History, check_output, make_strategy
from ctxmem.errors import ContextOverflowError
from ctxmem.messages import Message, TextBlock, ToolSpec, tool_to_anthropic
from ctxmem.tokens import Budget, count_request
from generators import conversations, huge_outputs, tool_outputs

SYSTEM = "You optimize GPU kernels. Never change the reference."
TOOLS = (
    ToolSpec("compile", "Compile the kernel", {"type": "object", "properties": {"path": {"type": "string"}}}),
    ToolSpec("check", "Check correctness", {"type": "object", "properties": {}}),
)

# Strategies that need extra constructor arguments (an LLM client) are exercised by their own tests.
PARAM_SETS: dict[str, list[dict[str, Any]]] = {
    "dump": [{"on_overflow": "truncate"}, {"on_overflow": "raise"}],
    "window": [{}, {"keep_tokens": 300, "compaction_step": 0.3}],
    "masking": [
        {},
        {"mode": "turns", "keep_last": 1, "reducer": "first_error"},
        {"reversible": False, "tools": {"compile": {"mask": "never"}, "check": {"mask": "always"}}},
    ],
    "summarization": [{}, {"chunk_tokens": 64, "chunk_summary_tokens": 24, "summary_tokens": 64, "fanout": 2}],
    "pipeline": [
        {},
        {"core": "summarization", "core_params": {"chunk_tokens": 64, "chunk_summary_tokens": 24, "summary_tokens": 64}},
        {"core": "window", "retriever": "lexical", "ledger_tokens": 0},
    ],
}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for name in STRATEGIES.names():
        for params in PARAM_SETS.get(name, [{}]):
            cases.append((name, params))
    return cases


def _ready(conv: list[Message]) -> list[Message]:
    """A history a request can be built from: it must end with a user message."""
    if conv[-1].role == "assistant":
        conv = conv[:-1] if conv[-1].tool_uses else [*conv, Message.user("continue")]
    return conv


def assert_contract(
    strategy_factory: Any, conv: list[Message], window: int, tokenizer: Any, pinned: int, facts: tuple[str, ...]
) -> None:
    history = History.from_messages(conv, tokenizer)
    budget = Budget(window, reserve_output=min(64, window // 4), threshold=0.9)
    request = BuildRequest(history, budget, system=SYSTEM, tools=TOOLS, pinned=pinned, pinned_facts=facts)
    strategy = strategy_factory()
    try:
        out = strategy.build(request)
    except ContextOverflowError as exc:
        assert exc.needed > exc.available == budget.available
        return
    msgs = list(out.messages)
    # (a) fits, by a recount from scratch of everything that would be sent
    tools = [tool_to_anthropic(t) for t in (*out.tools, *out.extra_tools)]
    recount = count_request(msgs, tokenizer, system=out.system, tools=tools).total
    assert recount <= budget.available
    assert out.report.tokens_out == recount
    # (b) provider-valid
    check_output(msgs)
    # (c) pinned prefix and facts verbatim
    p = min(pinned, len(conv))
    if p:
        assert msgs[: p - 1] == conv[: p - 1]
        assert msgs[p - 1].content[: len(conv[p - 1].content)] == conv[p - 1].content
        for fact in facts:
            assert TextBlock(fact) in msgs[p - 1].content
    # (d) deterministic: a fresh instance and the same instance agree
    again = strategy_factory().build(request)
    assert list(again.messages) == msgs and again.report.tokens_out == out.report.tokens_out
    assert list(strategy.build(request).messages) == msgs
    # (e) the report accounts for every message of the history
    r = out.report
    assert set(r.kept).isdisjoint(r.dropped)
    assert set(r.masked) <= set(r.kept)
    assert set(range(p)) | set(r.kept) | set(r.dropped) | set(r.summarized) == set(range(len(conv)))


@pytest.mark.parametrize(("name", "params"), _cases(), ids=lambda x: str(x))
@settings(max_examples=25)
@given(
    conv=conversations(min_turns=1, max_turns=7, outputs=st.one_of(tool_outputs(), huge_outputs(20, 120))),
    window=st.integers(150, 6000),
    pinned=st.integers(0, 2),
    facts=st.lists(st.sampled_from(["limit: 101376 bytes smem", "keep atol 2e-3"]), max_size=2, unique=True),
)
def test_every_strategy_keeps_the_contract(
    name: str, params: dict[str, Any], o200k: Any, conv: list[Message], window: int, pinned: int, facts: list[str]
) -> None:
    conv = _ready(conv)
    assume(conv)
    assert_contract(lambda: make_strategy(name, params), conv, window, o200k, pinned, tuple(facts))


@pytest.mark.parametrize("preset", sorted(available_presets()))
@settings(max_examples=10)
@given(conv=conversations(min_turns=2, max_turns=6), window=st.integers(200, 4000))
def test_every_preset_keeps_the_contract(preset: str, o200k: Any, conv: list[Message], window: int) -> None:
    p = load_preset(preset)
    conv = _ready(conv)
    assert_contract(p.strategy, conv, window, o200k, p.model.pinned, ())
