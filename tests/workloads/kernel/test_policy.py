"""The scripted policy: knowledge parsed from text, modes that forget, deterministic schedule."""

from __future__ import annotations

import pytest

from ctxmem.messages import Message, TextBlock, ToolResultBlock
from ctxmem.workloads.kernel.policy import (
    Action,
    FactCache,
    ScriptedPolicy,
    config_key,
    parse_facts,
    parse_mode,
)

OOR = ("compile · kernel.py (sha 1234abcd) · BLOCK_M=32 BLOCK_N=128 num_warps=4 num_stages=4\n"
       "triton.runtime.errors.OutOfResources: out of resource: shared memory, Required: 272384, "
       "Hardware limit: 136192. Reducing block sizes or `num_stages` may help.")
BENCH = ("bench#3 · kernel.py (sha 1234abcd) · BLOCK_M=64 BLOCK_N=64 num_warps=4 num_stages=2\n"
         "device: SIMX-1 · simulated (times from the SIMX-1 cost model, not measured)\n\n"
         "geomean speedup 3.18x over the reference kernel (baseline, BLOCK_M=32 BLOCK_N=32 num_warps=4 num_stages=1)")


def test_facts_are_read_from_tool_output_text() -> None:
    f = parse_facts(OOR)
    assert f.smem_limit == 136192
    assert config_key("1234abcd", {"BLOCK_N": 128, "num_stages": 4}) in f.over_limit
    b = parse_facts(BENCH)
    key = config_key("1234abcd", {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2})
    assert b.measured == {key: 3.18} and b.benched == {key} and b.device == "SIMX-1"
    assert parse_facts("Root cause of eval#4: causal_strict — x").bugs == {"causal_strict"}
    assert parse_facts("[main abc1234] head_packing: 4.91x geomean (BLOCK_M=128)").commits == {"abc1234": 4.91}
    # a reducer's gist keeps what it keeps: summary_line of the benchmark still names config + geomean
    gist = "bench#3 · kernel.py (sha 1234abcd) · BLOCK_M=64 BLOCK_N=64 num_warps=4 num_stages=2 … " \
           "geomean speedup 3.18x over the reference kernel"
    assert parse_facts(gist).measured == {key: 3.18}


def test_modes_parse_and_reject() -> None:
    assert parse_mode("amnesic-8") == ("amnesic", 8)
    assert parse_mode("context") == ("context", 0)
    for bad in ("amnesic", "amnesic-0", "forgetful"):
        with pytest.raises(ValueError):
            parse_mode(bad)


def _drive(policy: ScriptedPolicy, outputs: list[str], view: list[Message] | None = None) -> list[Action]:
    actions = []
    for out in outputs:
        a = policy.step(view)
        assert a is not None
        actions.append(a)
        policy.observe(a, out, False)
    return actions


def test_amnesic_forgets_what_oracle_keeps() -> None:
    oracle, amnesic = ScriptedPolicy(0, "oracle"), ScriptedPolicy(0, "amnesic-2")
    outputs = [OOR, "ok", "ok", "ok"]
    _drive(oracle, outputs)
    _drive(amnesic, outputs)
    assert oracle.know().smem_limit == 136192
    assert amnesic.know().smem_limit is None  # the OOR output is three turns back


def test_context_mode_knows_only_the_rendered_messages() -> None:
    policy = ScriptedPolicy(0, "context")
    seen = [Message.user("task"), Message("user", (ToolResultBlock("t1", OOR),))]
    policy.step(seen)
    assert policy.know().smem_limit == 136192
    policy.step([Message.user("task"), Message("user", (TextBlock("nothing useful"),))])
    assert policy.know().smem_limit is None


def test_orientation_is_deterministic_and_probes_the_limits() -> None:
    a, b = ScriptedPolicy(3, "oracle"), ScriptedPolicy(3, "oracle")
    acts_a = _drive(a, ["ok"] * 10)
    acts_b = _drive(b, ["ok"] * 10)
    assert acts_a == acts_b
    tools = [x.tool for x in acts_a]
    assert tools[:2] == ["list_files", "read_file"] and "compile" in tools and "check" in tools
    assert {"BLOCK_N": 128, "num_stages": 4} in [x.input.get("config") for x in acts_a]


def test_fact_cache_parses_each_text_once() -> None:
    cache = FactCache()
    assert cache.facts(OOR) is cache.facts(OOR)
    assert cache.knowledge([OOR, BENCH]).smem_limit == 136192


def test_a_redesign_writes_real_triton_code_not_a_declaration() -> None:
    """Climbing a rung rewrites the kernel's tl. code; no ARCH line is ever written."""
    import difflib

    from ctxmem.workloads.kernel.policy import ScriptedPolicy
    from ctxmem.workloads.kernel.variants import RUNGS, rung_source

    policy = ScriptedPolicy(0)
    previous = rung_source("baseline")
    for rung in RUNGS[1:]:
        policy._written = "baseline" if rung == "unified_loop" else policy._written
        action = next(policy._declare(rung, {"BLOCK_M": 64, "BLOCK_N": 64, "PACK": 4}))
        assert action.tool == "write_file" and action.input["path"] == "kernel.py"
        content = action.input["content"]
        assert "ARCH" not in content and "CONFIG = {'BLOCK_M': 64, 'BLOCK_N': 64, 'PACK': 4}\n" in content
        changed = [ln[1:].strip() for ln in difflib.unified_diff(previous.splitlines(), content.splitlines(), n=0)
                   if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        assert sum("tl." in ln for ln in changed) >= 5, (rung, changed[:10])
        previous = content
