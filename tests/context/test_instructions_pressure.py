"""Standing instructions under pressure: many short user messages, a tight budget, rules
worded without the usual cue words. The two planted constraints survive; whatever cannot
be carried is said in the report, never lost silently."""

from __future__ import annotations

from typing import Any

import pytest

from ctxmem.config import available_presets, load_preset
from ctxmem.context import BuildRequest, History, check_output
from ctxmem.context.builtins import Window
from ctxmem.context.instructions import InstructionIndex, instructions_of
from ctxmem.context.masking import Masking
from ctxmem.evals.retention import compacting
from ctxmem.messages import Message, TextBlock, message_texts
from ctxmem.tokens import Budget

NEVER = "Never launch with num_warps=8 on these boards, it hangs the simulator."
FROM_NOW_ON = "From now on report every timing in microseconds."


def _rendered(built: Any) -> str:
    return "\n".join(t for m in built.messages for t in message_texts(m))


def _status_session(rounds: int) -> list[Message]:
    """A harness that posts a short status line after every round (the heldout "nudges"
    sessions): two real constraints, early, among ``rounds`` status lines."""
    msgs = [Message.user("Task: speed up the decode kernel and report the best speedup.")]
    for i in range(rounds):
        msgs.append(Message.assistant(f"Checkpoint {i}: ran the benchmark sweep and recorded the numbers."))
        if i == rounds // 5:
            msgs.append(Message.user(NEVER))
        elif i == rounds // 2:
            msgs.append(Message.user(FROM_NOW_ON))
        else:
            msgs.append(Message.user(f"[harness] {rounds - i} rounds left; best so far {1 + i % 97 / 100:.2f}x at call {3 * i + 7}."))
    return msgs


@pytest.fixture(scope="module")
def status_history(o200k: Any) -> History:
    return History.from_messages(_status_session(1500), o200k)  # ~60K tokens, ~35K of status lines


def test_a_status_line_every_turn_is_carried_once_by_its_latest(status_history: History, o200k: Any) -> None:
    index = InstructionIndex()
    index.update(status_history)
    sec = index.section(1, len(status_history) - 40, o200k)
    assert NEVER in sec.text and FROM_NOW_ON in sec.text
    assert sec.count == 3 and sec.merged > 1400  # the two rules and the latest status line
    assert o200k.count(sec.text) < 200
    assert "not shown: " in sec.text  # the section itself says that lines were merged
    # determinism: a fresh index over the same history gives the same section
    again = InstructionIndex()
    again.update(status_history)
    assert again.section(1, len(status_history) - 40, o200k) == sec


def test_a_rule_worded_a_few_ways_with_numbers_keeps_every_wording(o200k: Any) -> None:
    msgs = [Message.user("Task."), Message.assistant("ok")]
    rules = ["Never use num_warps=8 on these boards.", "Never use num_warps=16 on these boards."]
    for r in rules:
        msgs += [Message.user(r), Message.assistant("noted")]
    h = History.from_messages(msgs, o200k)
    index = InstructionIndex()
    index.update(h)
    sec = index.section(1, len(h), o200k)
    assert all(r in sec.text for r in rules) and sec.merged == 0


@pytest.mark.parametrize("preset_name", [p for p in available_presets() if compacting(load_preset(p))])
def test_both_constraints_survive_a_status_line_every_turn(preset_name: str, status_history: History) -> None:
    preset = load_preset(preset_name)
    strategy = preset.strategy()
    b = preset.budget(30_000)
    built = strategy.build(BuildRequest(status_history, b, pinned=preset.model.pinned))
    check_output(built.messages)
    assert built.report.tokens_out <= b.available
    text = _rendered(built)
    assert NEVER in text and FROM_NOW_ON in text, (preset_name, built.report.notes)


def _chatty_session() -> list[Message]:
    """Hundreds of different short cue-less user remarks (not a template) after two rules."""
    words = ["red", "blue", "green", "amber", "violet", "cyan", "ochre", "teal", "rust", "plum", "sand", "jade",
             "pearl", "slate", "coral", "lime", "mint", "navy", "olive", "peach"]
    msgs = [Message.user("Task: tidy the benchmark scripts.")]
    msgs += [Message.assistant("Looking."), Message.user(NEVER), Message.assistant("Noted."), Message.user(FROM_NOW_ON)]
    for i, (a, b) in enumerate((a, b) for a in words for b in words):
        msgs.append(Message.assistant(f"Step {i} done."))
        msgs.append(Message.user(f"The {a} run looked a bit like the {b} one, interesting."))
    return msgs


def test_a_section_too_big_for_the_budget_leaves_out_the_lowest_ranked_and_says_so(o200k: Any) -> None:
    h = History.from_messages(_chatty_session(), o200k)  # 400 distinct remarks, ~7K tokens of them
    budget = Budget(3_000, 0, 1.0)
    built = Window().build(BuildRequest(h, budget))
    check_output(built.messages)
    assert built.report.tokens_out <= budget.available
    text = _rendered(built)
    assert NEVER in text and FROM_NOW_ON in text  # cue-bearing: ranked first
    assert built.report.sections.get("instructions", 0) > 0
    notes = " ".join(built.report.notes)
    assert "cannot hold the standing instructions of the left-out messages in full" in notes
    assert "lack of room" in text  # the section says so too
    # the same history gives the same section (a fresh strategy, the same bytes)
    assert _rendered(Window().build(BuildRequest(h, budget))) == text


def test_masking_reports_instructions_it_cannot_carry(o200k: Any) -> None:
    rule = "Never deploy on Fridays, and always page the release captain before any rollout " * 6
    msgs = [Message.user("Task."), Message.assistant("a " * 400), Message.user(rule), Message.assistant("b " * 400),
            Message("user", (TextBlock("go"),))]
    h = History.from_messages(msgs, o200k)
    built = Masking(on_overflow="truncate", reversible=False).build(BuildRequest(h, Budget(60, 0, 1.0)))  # the task fits, the rule not
    assert built.report.tokens_out <= 60 and 2 in built.report.dropped
    assert "Never deploy" not in _rendered(built)
    assert any("cannot hold the standing instructions" in n for n in built.report.notes), built.report.notes


PAD = ("The last sweep looked plausible but the variance between runs was large, so rerun the top three configs twice "
       "each before drawing conclusions about the decode path and the paged layout. Also push the branch when the "
       "suite is green and ping me with the table.")


@pytest.mark.parametrize(
    "rule",
    [
        "Let's stick to microseconds for all timings from here.",
        "I want timings in microseconds with three significant figures from here.",
        "Stay away from num_warps=8 on these boards, it hangs the simulator.",
        "Under no circumstances launch with num_warps=8 on these boards.",
        "Hard rule: no num_warps=8 launches on these boards.",
        "Steer clear of the shared scratch directory.",
        "I’d like every table sorted by latency.",  # a typographic apostrophe
        "Don’t touch the CI config.",
    ],
)
def test_rules_worded_without_the_common_cue_words_are_carried_from_long_messages(rule: str) -> None:
    got = instructions_of(Message.user(f"{PAD} {rule}"))
    assert rule in got
    assert not any(g.startswith("The last sweep") for g in got)  # the chatter around it is not


_PAD_EN = ("Quick status check: the numbers you posted for the last sweep look plausible but the variance between "
           "runs is large, so rerun the top three configs twice each before drawing conclusions about the decode path.")
_PAD_DE = ("Kurzer Statusabgleich: die Zahlen vom letzten Sweep sehen plausibel aus, aber die Streuung zwischen den "
           "Läufen ist groß, also die besten drei Konfigurationen je zweimal wiederholen, bevor wir Schlüsse ziehen.")
_PAD_ZH = "简单同步一下：上一轮扫描的数字看起来合理，但是每次运行之间的波动很大，所以请把前三个配置各重跑两次再下结论。" * 8
_PAD_JA = "前回のスイープの数値は妥当に見えますが、実行ごとのばらつきが大きいので、上位三つの設定をそれぞれ二回ずつ再実行してください。" * 8


@pytest.mark.parametrize("text", [
    _PAD_DE + " Auf diesen Boards niemals mit num_warps=8 starten, der Simulator hängt sich auf.",
    _PAD_EN.replace("Quick", "Petit") + " Ne lance jamais avec num_warps=8 sur ces cartes, le simulateur se bloque.",
    _PAD_EN + " Nunca lances con num_warps=8 en estas placas, el simulador se cuelga.",
    _PAD_ZH + "最后，这些板子上绝对不要用 num_warps=8 启动，模拟器会死锁。",
    _PAD_JA + "なお、このボードでは num_warps=8 で絶対に起動しないでください。",
    _PAD_EN + " Ab jetzt die Zeiten in Mikrosekunden melden.",
])
def test_a_rule_in_another_language_is_carried_from_a_long_message(text: str) -> None:
    """A long message (a Chinese or Japanese one has few spaces but many characters) yields
    its rule sentence: the cue in that language, or the concrete setting it names; the
    padding around it is not carried."""
    got = instructions_of(Message.user(text))
    assert any("num_warps=8" in g or "Mikrosekunden" in g for g in got), got
    assert len(got) == 1 and len(got[0]) < 120, got
