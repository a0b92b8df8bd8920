"""Every registered strategy and every preset, held to the same contract on generated sessions.

For hypothesis-generated conversations (tool loops, parallel calls, thinking blocks, huge
and empty outputs, error results), the budget is sized *from the conversation*: between
the smallest context any strategy could legally send (computed here, independently of the
library's invariant code) and somewhat more than the whole history. Most examples
therefore force a real compaction, a few are roomy, and a few are below the minimum.

A build either raises ContextOverflowError — accepted only when the overflow is justified:
system + tools + pinned content + the mandatory tail (from the last legal cut point) really
exceed the budget — or returns a context that:

* fits the budget, recounted from scratch by the request's tokenizer (system prompt and
  every tool definition sent, the strategy's extra tools included);
* passes every invariant, each checked on the output by this module's own code: tool
  pairing (each call answered in the next message, parallel batches whole, no orphan
  result), thinking kept with its tool loop, role alternation, no trailing assistant,
  pinned prefix verbatim; and the cut the report names is one every invariant object allows;
* is deterministic (fresh instances and a reused instance agree);
* keeps the pinned prefix and pinned facts verbatim;
* says what it did (its report's token count equals the recount, every message accounted).

Each case runs a derandomized (fixed-seed) set of examples whose size scales with the
active hypothesis profile, and asserts afterwards that most of them were real builds and
that the strategies really compacted (dropped, masked or summarized) in many of them: a
strategy that always raises, or a budget that never bites, fails here.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ctxmem.config import available_presets, load_preset
from ctxmem.context import (
    DEFAULT_INVARIANTS,
    STRATEGIES,
    BuildRequest,
    History,
    check_output,
    make_strategy,
)
from ctxmem.context.masking import RECALL_TOOL
from ctxmem.errors import ContextOverflowError
from ctxmem.messages import (
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    tool_to_anthropic,
)
from ctxmem.tokens import Budget, count_request
from generators import conversations, huge_outputs, tool_outputs

SYSTEM = "You optimize GPU kernels. Never change the reference."
TOOLS = (
    ToolSpec("compile", "Compile the kernel", {"type": "object", "properties": {"path": {"type": "string"}}}),
    ToolSpec("check", "Check correctness", {"type": "object", "properties": {}}),
)
RESERVE = 64
#: a recall handle as contexts show it: in a masked placeholder or a retrieved line
#: a recall handle a context shows: a masked placeholder's, a retrieved line's, or a line of
#: a facts section (``- [ev 5 · read_log · recall c1] ...``)
HANDLE = re.compile(r"handle [A-Za-z0-9_\-]+(?: \(recall it|\])|· recall [A-Za-z0-9_\-]+\]")
THRESHOLD = 0.9

# Strategies that need extra constructor arguments (an LLM client) are exercised by their own tests.
PARAM_SETS: dict[str, list[dict[str, Any]]] = {
    "dump": [{"on_overflow": "truncate"}, {"on_overflow": "raise"}],
    "window": [{}, {"keep_tokens": 300, "compaction_step": 0.3}],
    "masking": [
        {},
        {"mode": "turns", "keep_last": 1, "reducer": "first_error"},
        {"reversible": False, "tools": {"compile": {"mask": "never"}, "check": {"mask": "always"}}},
    ],
    "summarization": [
        {}, {"chunk_tokens": 64, "chunk_summary_tokens": 24, "summary_tokens": 64, "fanout": 2},
        # a facts section: its lines name recall handles, so the recall tool is offered
        {"chunk_tokens": 64, "chunk_summary_tokens": 24, "summary_tokens": 64, "facts_tokens": 400},
    ],
    "pipeline": [
        {},
        {"core": "summarization", "core_params": {"chunk_tokens": 64, "chunk_summary_tokens": 24, "summary_tokens": 64}},
        {"core": "window", "retriever": "lexical", "ledger_tokens": 0},
        {"core": "masking", "core_params": {"reversible": False}, "ledger_tokens": 0},
        {"core": "window", "retrieval_tokens": 0},
    ],
}

#: examples per case: half the profile's max_examples (40 → 20 by default, 400 → 200 thorough)
EXAMPLES = max(10, settings().max_examples // 2)


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


# ----------------------------------------------------------------------------- the minimum, independently


def _has_thinking(m: Message) -> bool:
    return any(isinstance(b, ThinkingBlock | RedactedThinkingBlock) for b in m.content)


def _uses(m: Message) -> list[str]:
    return [b.id for b in m.content if isinstance(b, ToolUseBlock)]


def _results(m: Message) -> list[str]:
    return [b.tool_use_id for b in m.content if isinstance(b, ToolResultBlock)]


def _last_assistant(conv: list[Message]) -> int | None:
    return next((i for i in range(len(conv) - 1, -1, -1) if conv[i].role == "assistant"), None)


def legal_cut(conv: list[Message], p: int, c: int) -> bool:
    """May a context keep conv[:p] and conv[c:] (nothing in between)? Written from the
    provider rules, not from the library's invariants."""
    n = len(conv)
    la = _last_assistant(conv)
    thinking_bound = la if la is not None and _has_thinking(conv[la]) else None
    if c < p or c > n:
        return False
    if thinking_bound is not None and c > thinking_bound:
        return False  # the last assistant turn carries thinking: it and its tool loop stay
    if c == n:
        return p > 0 and conv[p - 1].role == "user"  # the pinned prefix alone is a request
    first = conv[c]
    if p == 0:
        return first.role == "user" and not _results(first)
    if first.role == conv[p - 1].role:
        return False
    if _uses(conv[p - 1]):
        return c == p  # only the pinned calls' own results may follow them
    return not _results(first)


def pinned_with_facts(conv: list[Message], p: int, facts: tuple[str, ...]) -> list[Message]:
    pinned = list(conv[:p])
    if facts and pinned:
        last = pinned[-1]
        pinned[-1] = Message(last.role, last.content + tuple(TextBlock(f) for f in facts))
    return pinned


def minimum_tokens(
    conv: list[Message], p: int, facts: tuple[str, ...], tok: Any, extra_tools: tuple[ToolSpec, ...] = ()
) -> int:
    """The smallest verbatim request a strategy could send: system + tools + pinned (with
    facts) + the history from the last legal cut (or from the pinned prefix if none is)."""
    cut = max((c for c in range(p, len(conv) + 1) if legal_cut(conv, p, c)), default=p)
    tools = [tool_to_anthropic(t) for t in (*TOOLS, *extra_tools)]
    return count_request([*pinned_with_facts(conv, p, facts), *conv[cut:]], tok, system=SYSTEM, tools=tools).total


def full_tokens(conv: list[Message], p: int, facts: tuple[str, ...], tok: Any, extra_tools: tuple[ToolSpec, ...] = ()) -> int:
    tools = [tool_to_anthropic(t) for t in (*TOOLS, *extra_tools)]
    return count_request([*pinned_with_facts(conv, p, facts), *conv[p:]], tok, system=SYSTEM, tools=tools).total


def inherent_extras(name: str, params: dict[str, Any]) -> tuple[tuple[ToolSpec, ...], int]:
    """What a strategy must add by design: the recall tool (reversible masking) and the
    pipeline's restated facts (counted by the caller, which knows the facts)."""
    core, core_params = (params.get("core", "masking"), params.get("core_params", {})) if name == "pipeline" else (name, params)
    retrieves = name == "pipeline" and params.get("retrieval_tokens", 1200) > 0  # retrieved lines name handles
    masks = core == "masking" and core_params.get("reversible", True)
    facts = name == "summarization" and params.get("reversible", True) and params.get("facts_tokens", 0) > 0
    tools = (RECALL_TOOL,) if retrieves or masks or facts else ()
    restates = int(name == "pipeline" and params.get("restate_facts", True))
    return tools, restates


# ----------------------------------------------------------------------------- invariants on the output


def assert_invariants(msgs: list[Message], conv: list[Message], p: int) -> None:
    """Every invariant, checked on the output by this module's own code."""
    assert msgs, "empty context"
    # role alternation, starting with a user message, no trailing assistant
    assert msgs[0].role == "user"
    for a, b in itertools.pairwise(msgs):
        assert a.role != b.role, "roles must alternate"
    assert msgs[-1].role == "user", "a context must end with a user message"
    # tool pairing, parallel batches whole: each call's result is in the very next message,
    # and every result answers a call of the message before it
    for i, m in enumerate(msgs):
        results = _results(m)
        if results:
            assert i > 0 and set(results) <= set(_uses(msgs[i - 1])), f"orphan tool_result in message {i}"
            assert len(results) == len(set(results)), "duplicated tool_result"
        uses = _uses(m)
        if uses:
            assert i + 1 < len(msgs), "tool_use without its result"
            assert set(uses) == set(_results(msgs[i + 1])), f"parallel batch of message {i} split"
    # thinking kept with its tool loop: the last assistant turn with thinking is sent
    # verbatim, followed by the results of its calls
    la = _last_assistant(conv)
    if la is not None and _has_thinking(conv[la]):
        assert conv[la] in msgs, "the last assistant turn's thinking was dropped or changed"
        j = max(i for i, m in enumerate(msgs) if m == conv[la])
        if la + 1 < len(conv):
            assert j + 1 < len(msgs) and _results(msgs[j + 1]) == _results(conv[la + 1])
    # pinned prefix verbatim (the last pinned message may carry appended facts)
    if p:
        assert msgs[: p - 1] == conv[: p - 1]
        assert msgs[p - 1].content[: len(conv[p - 1].content)] == conv[p - 1].content


# ----------------------------------------------------------------------------- the contract


Outcome = str  # "built" | "compacted" | "overflow"


def assert_contract(
    strategy_factory: Callable[[], Any],
    conv: list[Message],
    budget: Budget,
    tokenizer: Any,
    pinned: int,
    facts: tuple[str, ...],
    *,
    floor: int,
    raises_when_over: bool = False,
) -> Outcome:
    """Hold one build to the contract. ``floor``: the smallest request this strategy could
    legally send (see :func:`minimum_tokens`); ``raises_when_over``: the strategy is
    configured to raise rather than cut (dump ``on_overflow = "raise"``)."""
    history = History.from_messages(conv, tokenizer)
    request = BuildRequest(history, budget, system=SYSTEM, tools=TOOLS, pinned=pinned, pinned_facts=facts)
    strategy = strategy_factory()
    p = min(pinned, len(conv))
    try:
        out = strategy.build(request)
    except ContextOverflowError as exc:
        assert exc.needed > exc.available == budget.available
        # justified only if the mandatory content really does not fit
        justified = floor > budget.available
        if raises_when_over:
            justified = full_tokens(conv, p, facts, tokenizer) > budget.available
        assert justified, (
            f"unjustified overflow: the minimum request is {floor} tokens, {budget.available} available ({exc})"
        )
        return "overflow"
    msgs = list(out.messages)
    # (a) fits, by a recount from scratch of everything that would be sent
    tools = [tool_to_anthropic(t) for t in (*out.tools, *out.extra_tools)]
    recount = count_request(msgs, tokenizer, system=out.system, tools=tools).total
    assert recount <= budget.available
    assert out.report.tokens_out == recount
    # every tool the context names is offered: a handle shown (masked placeholder or
    # retrieved line) promises the recall tool that expands it
    shown = "\n".join(b.text for m in msgs for b in m.content if isinstance(b, TextBlock | ToolResultBlock))
    if HANDLE.search(shown):
        assert "recall" in {t.name for t in (*out.tools, *out.extra_tools)}, "a handle is shown, recall not offered"
    # (b) provider-valid: the library's validator and this module's own invariant checks
    check_output(msgs)
    assert_invariants(msgs, conv, p)
    # (c) pinned prefix and facts verbatim
    if p:
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
    # the cut the report names is one every invariant object allows
    if r.kept:
        s = min(r.kept)
        if s > p:
            assert legal_cut(conv, p, s), f"cut at {s} breaks an invariant"
            assert all(inv.allows(history, s, p) for inv in DEFAULT_INVARIANTS)
    compacted = bool(r.dropped or r.masked or r.summarized)
    return "compacted" if compacted else "built"


# ----------------------------------------------------------------------------- generated runs

CONVS = conversations(min_turns=2, max_turns=7, outputs=st.one_of(tool_outputs(), huge_outputs(20, 120)))
FACTS = st.lists(st.sampled_from(["limit: 101376 bytes smem", "keep atol 2e-3"]), max_size=2, unique=True)
def positions(n: int) -> list[float]:
    """Where each example's budget sits between the minimum (0) and the whole history (1):
    a fixed schedule with the intended mix — 80% inside (the strategy must compact), 12%
    roomy, 8% below the minimum (at least one) — so the share of legitimate overflows does
    not depend on which examples hypothesis happens to generate."""
    rnd = random.Random(n)
    below = max(1, round(0.08 * n))
    roomy = max(1, round(0.12 * n))
    inside = max(1, n - below - roomy)
    out = [(k + rnd.random()) / inside for k in range(inside)]
    out += [1.0 + 0.5 * rnd.random() for _ in range(roomy)]
    out += [-0.2 * rnd.random() - 0.001 for _ in range(below)]
    rnd.shuffle(out)
    return out


def _budget(floor: int, full: int, position: float) -> Budget:
    if position < 0:  # below the minimum: a fraction of the minimum itself
        available = max(1, floor - max(1, math.ceil(-position * floor)))
    else:
        available = max(1, math.ceil(floor + position * max(0, full - floor)))
    return Budget(available + RESERVE, RESERVE, THRESHOLD)


def run_examples(
    factory: Callable[[], Any], extras: tuple[tuple[ToolSpec, ...], int], tok: Any, pinned: st.SearchStrategy[int],
    *, raises_when_over: bool = False,
) -> Counter[str]:
    """Run the contract over a fixed-seed set of generated examples; count the outcomes."""
    outcomes: Counter[str] = Counter()
    extra_tools, restates = extras

    schedule = positions(EXAMPLES)
    calls = iter(range(1 << 62))

    @settings(max_examples=EXAMPLES, derandomize=True, database=None)
    @given(conv=CONVS, pinned=pinned, facts=FACTS)
    def run(conv: list[Message], pinned: int, facts: list[str]) -> None:
        position = schedule[next(calls) % len(schedule)]
        conv = _ready(conv)
        p = min(pinned, len(conv))
        fs = tuple(facts)
        floor = minimum_tokens(conv, p, fs, tok, extra_tools)
        if restates and fs:
            floor += tok.count("Keep in mind: " + " · ".join(fs)) + 4
        full = full_tokens(conv, p, fs, tok, extra_tools)
        budget = _budget(floor, full, position)
        outcome = assert_contract(factory, conv, budget, tok, pinned, fs, floor=floor, raises_when_over=raises_when_over)
        event(outcome)
        if position >= 0 and budget.available < full:  # the whole history cannot fit
            outcomes[f"tight:{outcome}"] += 1
        outcomes[outcome] += 1

    run()
    return outcomes


def assert_mostly_real(outcomes: Counter[str], *, must_compact: bool = True) -> None:
    total = sum(outcomes[k] for k in ("built", "compacted", "overflow"))
    real = outcomes["built"] + outcomes["compacted"]
    assert real >= 0.75 * total, f"only {real} of {total} examples were real builds: {dict(outcomes)}"
    tight = sum(outcomes[f"tight:{k}"] for k in ("built", "compacted", "overflow"))
    if must_compact and tight:
        # with the budget below the whole history (and at or above the minimum), a build
        # must drop, mask or summarize something
        assert outcomes["tight:compacted"] >= 0.6 * tight, f"too few compactions: {dict(outcomes)}"


@pytest.mark.parametrize(("name", "params"), _cases(), ids=lambda x: str(x))
def test_every_strategy_keeps_the_contract(name: str, params: dict[str, Any], o200k: Any) -> None:
    raises = name == "dump" and params.get("on_overflow", "raise") == "raise"
    outcomes = run_examples(
        lambda: make_strategy(name, params), inherent_extras(name, params), o200k, st.integers(0, 2),
        raises_when_over=raises,
    )
    if raises:
        # dump(raise) never compacts: a tight budget must raise, a roomy one must build
        assert outcomes["compacted"] == 0 and outcomes["tight:overflow"] >= 1 and outcomes["built"] >= 1
    else:
        assert_mostly_real(outcomes)


@pytest.mark.parametrize("preset", sorted(available_presets()))
def test_every_preset_keeps_the_contract(preset: str, o200k: Any) -> None:
    p = load_preset(preset)
    params = dict(p.model.params)
    raises = p.type == "dump" and params.get("on_overflow", "raise") == "raise"
    outcomes = run_examples(
        p.strategy, inherent_extras(p.type, params), o200k, st.just(p.model.pinned), raises_when_over=raises
    )
    if raises:
        assert outcomes["compacted"] == 0 and outcomes["tight:overflow"] >= 1 and outcomes["built"] >= 1
    else:
        assert_mostly_real(outcomes)


def test_a_strategy_that_always_raises_fails_the_contract(o200k: Any) -> None:
    """The contract must be able to fail: an always-raising strategy is caught."""

    class AlwaysRaises:
        name = "always_raises"

        def build(self, request: BuildRequest) -> Any:
            raise ContextOverflowError(request.budget.available + 1, request.budget.available)

    conv = [Message.user("task"), Message.assistant("ok"), Message.user("go on")]
    floor = minimum_tokens(conv, 1, (), o200k)
    with pytest.raises(AssertionError, match="unjustified overflow"):
        assert_contract(AlwaysRaises, conv, _budget(floor, floor, 0.5), o200k, 1, (), floor=floor)
