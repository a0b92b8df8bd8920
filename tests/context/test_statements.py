"""What the agent states in its own text, and what the user pastes into theirs, can be a
fact too: a finding written in an assistant message ("the NaNs come from …") or an error a
user pastes from their terminal survives compaction like a tool-output line; routine
narration ("Let me check the compile log …") does not crowd the facts section, and what the
standing instructions carry is not repeated as a fact."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from ctxmem.config import available_presets, load_preset
from ctxmem.context import BuildRequest, History
from ctxmem.context.salience import (
    COUNT_ONLY,
    STATEMENT,
    STATEMENT_PRIOR,
    USER_TEXT,
    SalienceIndex,
    assistant_lines,
    statement_lines,
)
from ctxmem.evals.retention import RetentionSession, compacting, evaluate, generate
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock, message_texts


def _stated_by_the_agent(s: RetentionSession) -> RetentionSession:
    """``s`` with each tool-output fact taken out of its output and written instead by the
    assistant, as one sentence of its next message (after its own first sentence)."""
    msgs = list(s.messages)
    for f in s.facts:
        if f.kind.startswith("instruction"):
            continue
        i = f.message_index
        msgs[i] = Message(msgs[i].role, tuple(
            ToolResultBlock(b.tool_use_id, "\n".join(x for x in b.text.split("\n") if x != f.text), b.is_error)
            if isinstance(b, ToolResultBlock) else b
            for b in msgs[i].content
        ))
        a = msgs[i + 1]
        assert a.role == "assistant" and isinstance(a.content[0], TextBlock)
        said = f"{a.content[0].text} {f.text[:1].upper()}{f.text[1:]}."
        msgs[i + 1] = Message("assistant", (TextBlock(said), *a.content[1:]))
    out = dataclasses.replace(s, messages=msgs)
    for f in s.facts:  # the facts are now nowhere but in the assistant's text (or the user's)
        where = {m.role for m in msgs if any(f.text[1:] in getattr(b, "text", "") for b in m.content)}
        assert where == ({"user"} if f.kind.startswith("instruction") else {"assistant"})
    return out


def _presets_that_carry_facts() -> list[Any]:
    """Every compacting preset but the plain windows (which carry the user's instructions only)."""
    return [p for p in (load_preset(n) for n in sorted(available_presets()))
            if compacting(p) and not p.name.startswith(("window-", "dump-"))]


def _assert_kept_by_every_preset_that_carries_facts(s: RetentionSession) -> None:
    """At 16K and 30K, each such preset keeps at least 11 of the 12 facts, validly and within budget."""
    h = History.from_messages(s.messages, "o200k_base")
    for preset in _presets_that_carry_facts():
        strategy = preset.strategy()
        for budget in (16_000, 30_000):
            row = evaluate(s, preset, budget, h, strategy)
            assert row.valid and row.within_budget, (preset.name, budget, row.error)
            lost = [k for k, kept in row.kept.items() if not kept]
            assert row.n_kept >= 11, (preset.name, budget, lost)


@pytest.mark.parametrize("domain", ["logs", "data"])
def test_a_finding_the_agent_states_survives_compaction_in_every_preset_that_carries_facts(domain: str) -> None:
    s = _stated_by_the_agent(generate(domain, "val", seed=3, turns=300))
    assert {p.name for p in _presets_that_carry_facts()} >= {
        "masking-200k", "masking-turns-128k", "pipeline-200k", "summarize-128k"}
    _assert_kept_by_every_preset_that_carries_facts(s)  # before: the two user instructions only


def _pasted_by_the_user(s: RetentionSession) -> RetentionSession:
    """``s`` with each output that holds a tool-output fact replaced by a one-line notice and
    pasted instead by the user, whole, into the same message ("here is what it printed")."""
    msgs = list(s.messages)
    for f in s.facts:
        if f.kind.startswith("instruction"):
            continue
        i = f.message_index
        blocks: list[Any] = []
        for b in msgs[i].content:
            if isinstance(b, ToolResultBlock) and f.text in b.text:
                blocks.append(ToolResultBlock(b.tool_use_id, "done (output sent to the user's terminal)", b.is_error))
                blocks.append(TextBlock(f"Here is what that printed on my terminal:\n{b.text}"))
            else:
                blocks.append(b)
        msgs[i] = Message("user", tuple(blocks))
    return dataclasses.replace(s, messages=msgs)


@pytest.mark.parametrize("domain", ["logs", "data"])
def test_a_fact_the_user_pastes_survives_compaction_in_every_preset_that_carries_facts(domain: str) -> None:
    s = _pasted_by_the_user(generate(domain, "val", seed=3, turns=300))
    assert not any(f.text in b.text for f in s.facts[:10] for m in s.messages for b in m.content
                   if isinstance(b, ToolResultBlock))
    _assert_kept_by_every_preset_that_carries_facts(s)


def test_what_the_standing_instructions_carry_is_not_repeated_as_a_fact() -> None:
    rule = "Never launch with num_warps=8 on these boards, the scheduler drops the second wave."
    error = "RuntimeError: CUDA error: an illegal memory access was encountered at attn_fwd.py:212 (tile 7)"
    pasted = "\n".join([f"step {k}: loss {k * 0.37:.2f} in {90 + k} ms" for k in range(30)] + [error])
    msgs = [Message.user("Make the attention kernel faster."),
            Message.user(f"I ran it myself first. {rule} Here is the end of my log:\n{pasted}")]
    for i in range(120):
        msgs.append(Message("assistant", (TextBlock(f"Round {i}."), ToolUseBlock(f"t{i}", "bench", {"n": i}))))
        msgs.append(Message("user", (ToolResultBlock(f"t{i}", f"case {i}: ok\nran in {100 + i} ms"),)))
    h = History.from_messages(msgs, "o200k_base")
    index = SalienceIndex()
    index.update(h)
    facts = [f for f in index.facts(1, len(h)) if f.tool == USER_TEXT]
    assert [f.text for f in facts] == [error]  # the rule is the instructions section's, not a fact
    preset = load_preset("masking-200k")
    built = preset.strategy().build(BuildRequest(h, preset.budget(8_000), pinned=preset.model.pinned, record=False))
    shown = "\n".join(t for m in built.messages for t in message_texts(m))
    assert built.report.sections.get("instructions", 0) > 0 and built.report.sections.get("facts", 0) > 0
    assert shown.count("num_warps=8") == 1 and shown.count("illegal memory access") == 1


_OPENERS = ["Let me", "Now I'll", "Next I will", "I should", "Time to", "I'm going to", "First I'll", "Then I'll",
            "I want to", "Going to"]
_STEPS = ["check", "open", "read", "inspect", "look at", "re-run", "grep", "diff", "profile", "scan"]
_THINGS = ["the compile log", "the kernel source", "the benchmark table", "the failing test", "the launch config",
           "the profiler report", "the git log", "the register limit", "the harness script", "the error trace"]
_WHY = ["to find the root cause", "for anything unusual", "before the next change", "to confirm the fix",
        "and compare with the baseline", "to narrow the regression down", "once more", "because it must pass"]


def test_routine_narration_is_not_kept_and_a_finding_among_it_is() -> None:
    # ~300 narration sentences, worded many ways (an LLM agent's "what I do next") and full
    # of cue words (root cause, limit, regression, must): nothing in them a later turn needs
    rng = random.Random(5)
    finding = "The mismatch comes from the epilogue writing rows past seq_len_k = 4093 when BLOCK_N is 128."
    msgs = [Message.user("Find why the kernel fails the correctness check.")]
    for i in range(300):
        said = f"{rng.choice(_OPENERS)} {rng.choice(_STEPS)} {rng.choice(_THINGS)} {rng.choice(_WHY)}."
        if i == 40:
            said = f"{said} {finding}"
        msgs.append(Message("assistant", (TextBlock(said), ToolUseBlock(f"t{i}", "run", {"cmd": "check", "n": i}))))
        msgs.append(Message("user", (ToolResultBlock(f"t{i}", f"case {i}: ok\nall cases ran in {100 + i} ms"),)))
    h = History.from_messages(msgs, "o200k_base")
    index = SalienceIndex()
    index.update(h)
    facts = index.facts(1, len(h))
    stated = [f for f in facts if f.tool == STATEMENT]
    assert [f.text for f in stated] == [finding]  # none of the narration
    assert stated[0].handle == "" and stated[0].render().startswith(f"- [msg 81 · {STATEMENT}] The mismatch")


def test_statement_lines_are_the_sentences_of_each_line() -> None:
    text = "Checked it. The limit is 48 KB per block!\nNext: retile?  Done\n结论：缓存不够。下一步"
    assert statement_lines(text) == [
        "Checked it.", "The limit is 48 KB per block!", "Next: retile?", "Done", "结论：缓存不够。", "下一步",
    ]
    assert statement_lines("version 1.2.3 and e.g.x stay whole") == ["version 1.2.3 and e.g.x stay whole"]


def test_a_statement_starts_behind_the_same_line_in_a_tool_output() -> None:
    line = "The epilogue writes rows past seq_len_k = 4093 when BLOCK_N is 128, so the last tile overflows."

    def session(said_by_agent: bool) -> History:
        msgs = [Message.user("Find the bug.")]
        for i in range(30):
            out = f"case {i}: ok\nran in {100 + i} ms"
            text = f"Step {i} done."
            if i == 5:
                text, out = (f"{text} {line}", out) if said_by_agent else (text, f"{out}\n{line}")
            msgs.append(Message("assistant", (TextBlock(text), ToolUseBlock(f"t{i}", "run", {"n": i}))))
            msgs.append(Message("user", (ToolResultBlock(f"t{i}", out),)))
        return History.from_messages(msgs, "o200k_base")

    scores = {}
    for said in (True, False):
        index = SalienceIndex()
        index.update(session(said))
        (fact,) = [f for f in index.facts(1, 62) if f.text == line]
        scores[said] = fact.score
        assert (fact.tool, fact.handle) == ((STATEMENT, "") if said else ("run", "t5"))
    assert scores[True] == pytest.approx(scores[False] - STATEMENT_PRIOR)


def test_announced_next_steps_are_not_statements_and_findings_and_rules_are() -> None:
    narration = ["Let me look at src/attn/kernel_v3.py:212 to see how the tail tile is masked.",
                 "Now I'll try BLOCK_N=128 with num_stages=3.", "Next, I will edit tile_mask_kq (commit 4e8a91c0).",
                 "OK, let's rerun the benchmark.", "I'm going to profile load_kv_abcd once more.", "Time to revert."]
    kept = ["I found that the limit is 48 KB per block.", "The NaNs come from mask_rows in src/attn/kernel.py.",
            "I'll keep fp32 accumulators from now on.", "We need to cap batches at 4096 rows.", "Letting it run longer changed nothing."]
    assert assistant_lines(" ".join(narration)) == [(x, COUNT_ONLY) for x in narration]  # counted, never kept
    assert assistant_lines(" ".join(kept)) == [(x, STATEMENT_PRIOR) for x in kept]


def test_narration_naming_new_paths_and_ids_every_turn_does_not_crowd_out_a_plain_fact() -> None:
    # each announced step names a new file, function and commit, so no two look alike once
    # numbers are blanked: scored as lines, they would outrank a plain-worded fact
    rng = random.Random(9)
    words = ["attn", "kern", "tile", "mask", "load", "store", "scale", "prefix", "bench", "tune", "warp", "grid"]
    fact = "Heads-up: the benchmark harness silently clamps batch sizes above 49 to 49, so larger-batch numbers are duplicates"
    msgs = [Message.user("Make the attention kernel faster.")]
    for i in range(400):
        path = f"src/{rng.choice(words)}/{rng.choice(words)}_{rng.choice(words)}_{rng.randint(1, 99)}.py"
        fn = f"{rng.choice(words)}_{rng.choice(words)}_{''.join(rng.choice('abcdefghij') for _ in range(4))}"
        said = (f"Next I will edit {path} to move the scale multiply out of the inner loop of {fn} "
                f"(commit {rng.getrandbits(32):08x}).")
        out = [f"case {k}: ok in {rng.randint(90, 200)} ms" for k in range(5)] + ([fact] if i == 50 else [])
        msgs.append(Message("assistant", (TextBlock(said), ToolUseBlock(f"t{i}", "bench", {"n": i}))))
        msgs.append(Message("user", (ToolResultBlock(f"t{i}", "\n".join(out)),)))
    h = History.from_messages(msgs, "o200k_base")
    index = SalienceIndex()
    index.update(h)
    top = index.facts(1, len(h), limit=5)
    assert fact in [f.text for f in top] and not any(f.tool == STATEMENT for f in top)
