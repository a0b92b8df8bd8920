"""The policy's stop rules, driven against the real tools: five rounds without progress end
the run (then it submits), and ``quitter`` stops after its first round."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ctxmem.store import MemoryStore
from ctxmem.workloads.kernel import SandboxLimits, Workspace
from ctxmem.workloads.kernel.kernel_tools import KernelTools
from ctxmem.workloads.kernel.policy import SCALES, Action, ScriptedPolicy
from ctxmem.workloads.kernel.run import run_scripted

# A scripted run measures every candidate in the interpreter; the first one in a fresh
# checkout fills SIMX-1's measurement cache (pytest's cache folder) and may take longer
# than the suite's default per-test timeout on a slow machine.
pytestmark = pytest.mark.timeout(2400)

LIMITS = SandboxLimits(timeout_s=60.0)
ROUND = re.compile(r"^Round (\d+): ")


def _drive(policy: ScriptedPolicy, tools: KernelTools, limit: int = 400) -> list[tuple[Action, str]]:
    done: list[tuple[Action, str]] = []
    while len(done) < limit:
        action = policy.step(None)
        if action is None:
            return done
        text, is_error = tools.call(action.tool, action.input)
        policy.observe(action, text, is_error)
        done.append((action, text))
    raise AssertionError(f"the policy did not finish within {limit} calls")


def test_five_rounds_without_progress_end_the_run_with_a_submit(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    tools = KernelTools(ws, seed=0, limits=LIMITS)
    # A wrong result the policy never diagnosed (it fixes only the bugs it wrote itself), committed so
    # that restoring "the best commit" cannot undo it: no round can pass its correctness check.
    kernel = ws.root / "kernel.py"
    source = kernel.read_text()
    assert source.count("    out = acc / l_safe[:, None]\n") == 1
    kernel.write_text(source.replace("    out = acc / l_safe[:, None]\n", "    out = 2.0 * acc / l_safe[:, None]\n"))
    assert not tools.call("git_commit", {"message": "scale the output"})[1]
    policy = ScriptedPolicy(0, "oracle", scale="small")
    # Eight rounds planned on the committed code (a new rung would rewrite kernel.py and with it
    # the planted error), so only the stop rule can end the run after five; small searches.
    policy.scale = dataclasses.replace(SCALES["small"], ladder=(("baseline", 8),),
                                       explore=1, autotune_size=8, profiles=0)
    done = _drive(policy, tools)
    rounds = [int(m.group(1)) for a, _ in done if (m := ROUND.match(a.text))]
    assert rounds == [1, 2, 3, 4, 5]
    assert policy.rounds == 5 and policy.rounds_without_progress == 5
    assert not any(a.tool == "git_commit" for a, _ in done)
    # every round's winning config failed its real correctness check
    finals = [t for a, t in done if a.text.startswith("Check correctness with the winning config")]
    assert len(finals) == 5 and all("FAILED" in t for t in finals)
    assert done[-1][0].tool == "submit"
    assert policy.step(None) is None


def test_quitter_makes_exactly_one_round() -> None:
    r = run_scripted(MemoryStore(), seed=0, mode="quitter", preset="window-200k", limits=LIMITS)
    rounds = [int(m.group(1)) for c in r.calls if (m := ROUND.match(c.reasoning))]
    assert rounds == [1] and r.extra["rounds"] == 1
    assert r.calls[-1].tool == "submit" and r.submission is not None
    oracle = run_scripted(MemoryStore(), seed=0, mode="oracle", preset="window-200k", limits=LIMITS)
    assert oracle.extra["rounds"] > 1  # the same seed and budget do allow more rounds


def test_a_planned_design_not_tried_yet_is_tried_after_a_plateau() -> None:
    """The full ladder's persistent and combined rounds may not beat split-KV; five rounds
    without progress across them must not end the run before the dispatch rung is tried.
    The stop rule counts rounds without progress since the last new design (the rounds
    themselves are stubbed here: which design each round works on is what is checked)."""
    policy = ScriptedPolicy(0, "oracle", scale="full")
    policy.scale = dataclasses.replace(SCALES["full"], max_refinement=14, ladder=(
        ("split_kv", 3), ("persistent_grid", 2), ("combined", 3), ("dispatch", 2)))
    progress = {"split_kv": [True, False, False], "dispatch": [True, False]}
    worked: list[str] = []

    def no_orientation():  # type: ignore[no-untyped-def]
        return
        yield

    def one_round(arch: str):  # type: ignore[no-untyped-def]
        yield Action(f"Round {policy.rounds + 1}: {arch}", "read_file", {"path": "kernel.py"})
        worked.append(arch)
        made = progress.get(arch, [])
        return made.pop(0) if made else False

    def finish():  # type: ignore[no-untyped-def]
        yield Action("Submit the kernel.", "submit", {})

    policy._orientation = no_orientation  # type: ignore[method-assign]
    policy._round = one_round  # type: ignore[method-assign]
    policy._finish = finish  # type: ignore[method-assign]
    while (action := policy.step(None)) is not None:
        policy.observe(action, "ok", False)
    # split_kv's last two, persistent's two and combined's three: seven rounds without progress,
    # yet each new design was tried; after dispatch, five refinement rounds on it without progress end the run
    assert worked == ["split_kv"] * 3 + ["persistent_grid"] * 2 + ["combined"] * 3 + ["dispatch"] * 2 + ["dispatch"] * 4
    assert policy.rounds_without_progress == 5
