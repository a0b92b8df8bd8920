"""User instructions are never silently lost: every compacting preset carries them in a
standing-instructions section, verbatim, with provenance, at every budget where the pinned
task fits."""

from __future__ import annotations

from typing import Any

import pytest

from ctxmem.config import available_presets, load_preset
from ctxmem.context import BuildRequest, History, check_output
from ctxmem.context.builtins import Window
from ctxmem.context.instructions import INSTRUCTIONS_HEADER, instructions_of
from ctxmem.evals.retention import compacting, generate, kept
from ctxmem.messages import Message, TextBlock, ToolResultBlock, message_texts
from ctxmem.tokens import Budget


def test_what_counts_as_an_instruction() -> None:
    long = ("I looked at the numbers you sent and they look plausible overall, thanks for the detailed breakdown "
            "of every stage and the graphs. From now on report timings in microseconds. The weather is nice "
            "here today and the office is quiet. Never push to the main branch without asking me first.")
    assert instructions_of(Message.user(long)) == [
        "From now on report timings in microseconds.", "Never push to the main branch without asking me first.",
    ]
    assert instructions_of(Message.user("use fp32 accumulators")) == ["use fp32 accumulators"]  # short: whole
    assert instructions_of(Message.user("ok, continue")) == []
    assert instructions_of(Message("user", (ToolResultBlock("t1", "never mind: output"),))) == []
    assert instructions_of(Message.assistant("Always be testing.")) == []


@pytest.fixture(scope="module")
def session() -> Any:
    return generate("kernel", "val", turns=260)  # ~170K tokens, instructions at 35% and 60%


@pytest.mark.parametrize("preset_name", [p for p in available_presets() if compacting(load_preset(p))])
def test_both_user_constraints_survive_every_compacting_preset(preset_name: str, session: Any, o200k: Any) -> None:
    preset = load_preset(preset_name)
    h = History.from_messages(session.messages, o200k)
    strategy = preset.strategy()
    rules = [f for f in session.facts if f.kind.startswith("instruction")]
    assert len(rules) == 2
    for budget in (8_000, 30_000, 100_000):
        b = preset.budget(budget)
        built = strategy.build(BuildRequest(h, b, pinned=preset.model.pinned))
        check_output(built.messages)
        assert built.report.tokens_out <= b.available
        rendered = " ".join(" ".join(t.casefold().split()) for m in built.messages for t in message_texts(m))
        assert all(kept(f, rendered) for f in rules), (preset_name, budget)
        if built.report.dropped and any(f.message_index in built.report.dropped for f in rules):
            # dropped from the recent window: carried verbatim, with provenance
            assert INSTRUCTIONS_HEADER in "\n".join(t for m in built.messages for t in message_texts(m))
            assert built.report.sections.get("instructions", 0) > 0


def test_the_section_names_message_and_event(o200k: Any) -> None:
    msgs = [Message.user("Task: tidy the repo.")]
    for i in range(30):
        msgs.append(Message.assistant(f"step {i}: " + "reading files " * 40))
        text = "Never delete files under data/." if i == 3 else f"fine {i}"
        msgs.append(Message.user(text))
    ids = [(k,) for k in range(100, 100 + len(msgs))]
    h = History.from_messages(msgs, o200k, event_ids=ids)
    built = Window().build(BuildRequest(h, Budget(2_000, 200, 0.9)))
    text = "\n".join(t for m in built.messages for t in message_texts(m))
    assert "- [message 8, event 108] Never delete files under data/." in text
    assert 8 in built.report.dropped
    assert any("standing user instructions" in n for n in built.report.notes)


def test_a_budget_too_small_for_them_says_so(o200k: Any) -> None:
    rule = "Never deploy on Fridays, and always page the release captain before any rollout " * 6
    msgs = [Message.user("Task."), Message.assistant("a " * 400), Message.user(rule), Message.assistant("b " * 400),
            Message("user", (TextBlock("go"),))]
    h = History.from_messages(msgs, o200k)
    built = Window().build(BuildRequest(h, Budget(60, 0, 1.0)))  # the pinned task fits, the rule (~90) not
    assert built.report.tokens_out <= 60 and 2 in built.report.dropped
    assert any("cannot hold the standing instructions" in n for n in built.report.notes)
