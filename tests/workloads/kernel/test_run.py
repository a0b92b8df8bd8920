"""Recorded runs: byte-identical sessions per seed, read-only probes, oracle beats amnesic, LLM mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxmem.clients import ModelRequest
from ctxmem.clients.anthropic import AnthropicClient
from ctxmem.clients.base import RetryPolicy
from ctxmem.clients.loopback import LoopbackServer
from ctxmem.clients.testing import override_allow_model_requests
from ctxmem.jsonl import export_lines
from ctxmem.messages import TextBlock, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore
from ctxmem.workloads.kernel import SandboxLimits
from ctxmem.workloads.kernel.run import run_llm, run_scripted

# A scripted run measures every candidate in the interpreter; the first one in a fresh
# checkout fills SIMX-1's measurement cache (pytest's cache folder) and may take longer
# than the suite's default per-test timeout on a slow machine.
pytestmark = pytest.mark.timeout(2400)

LIMITS = SandboxLimits(timeout_s=60.0)


def test_same_seed_gives_the_identical_session_and_probes_do_not_append(tmp_path: Path) -> None:
    exports = []
    for name in ("a", "b"):
        store = SQLiteStore(tmp_path / f"{name}.db")
        r = run_scripted(store, seed=1, mode="oracle", preset="window-200k", max_calls=25, limits=LIMITS)
        session = Session.open(store, r.session_id)
        exports.append("\n".join(export_lines(session)))
        # probes ran, and the session holds exactly the task plus three events per call
        assert r.probes and len(session.events()) == 1 + 3 * len(r.calls)
        stamps = [e.created_at for e in session.events()]
        assert stamps == sorted(stamps) and stamps[0] == 1_700_000_000.0 + 1_000_000
        store.close()
    assert exports[0] == exports[1]
    assert '"toolu_0001_00001"' in exports[0]


def test_context_mode_is_byte_identical_across_runs(tmp_path: Path) -> None:
    """Context mode decides from what the strategy rendered; with a window the strategy has to cut
    (12k, under the ~25k tokens of 40 calls) the whole chain must still be deterministic."""
    exports, results = [], []
    for name in ("a", "b"):
        store = SQLiteStore(tmp_path / f"ctx-{name}.db")
        r = run_scripted(store, seed=2, mode="context", preset="masking-200k", window=12_000, max_calls=40,
                         limits=LIMITS)
        exports.append("\n".join(export_lines(Session.open(store, r.session_id))))
        results.append(r)
        store.close()
    assert len(results[0].calls) >= 38
    assert exports[0] == exports[1]
    assert results[0].scores == results[1].scores
    assert [p.to_json() for p in results[0].probes] == [p.to_json() for p in results[1].probes]
    assert results[0].builds == results[1].builds
    # the strategy did cut: some built context is smaller than the history it came from
    assert min(t for t, _ in results[0].builds[-5:]) < results[0].history_tokens


def test_oracle_beats_amnesic(tmp_path: Path) -> None:
    scores = {}
    for mode in ("oracle", "amnesic-4"):
        r = run_scripted(MemoryStore(), seed=0, mode=mode, preset="window-200k", max_calls=80, limits=LIMITS)
        scores[mode] = r.scores
    o, a = scores["oracle"], scores["amnesic-4"]
    assert o["wasted_per_100"] == 0 and a["wasted_per_100"] > 0
    # Memory shows in waste and limit violations. The speed each reaches depends on which
    # configs its search happened to time (measured: oracle 1.34x, amnesic-4 1.51x on seed 0,
    # the forgetful search re-trying a config the oracle had skipped); both beat re-tuning.
    assert o["final_speedup"] > 1.0 and a["final_speedup"] > 1.0
    assert a["limit_violations"] > 0 and o["limit_violations"] == 0


@pytest.mark.slow
def test_small_oracle_run_beats_one_and_a_half_with_real_code_edits() -> None:
    """The issue's must-show, on seed 2 (the tightest of seeds 0-4: 1.54x when measured)."""
    from ctxmem.workloads.kernel.variants import rung_source

    r = run_scripted(MemoryStore(), seed=2, mode="oracle", preset="window-200k", limits=LIMITS)
    assert r.submission is not None and r.submission["heldout_passed"]
    assert r.scores["final_speedup"] > 1.5, r.scores
    base = {ln.strip() for ln in rung_source("baseline").splitlines() if "tl." in ln}
    written = [c.input["content"] for c in r.calls if c.tool == "write_file"]
    assert written and "def _decode_kernel(" in written[-1]
    assert sum(ln.strip() not in base for ln in written[-1].splitlines() if "tl." in ln) >= 20


def test_full_scale_checks_every_candidate_for_real_before_timing_it() -> None:
    r = run_scripted(MemoryStore(), seed=0, mode="oracle", preset="window-200k", scale="full", max_calls=110,
                     limits=LIMITS)
    checked: dict[str, str] = {}
    timed = 0
    for c in r.calls:
        if c.tool == "check" and "config" in c.input:
            checked[repr(sorted(c.input["config"].items()))] = c.output
        if c.tool == "benchmark" and c.reasoning.startswith(("Explore", "Confirm")):
            timed += 1
            prior = checked.get(repr(sorted(c.input["config"].items())))
            assert prior is not None and "PASSED" in prior
            assert "correctness: eval#" in c.output and "PASSED" in c.output
    real = [c for c in r.calls if c.tool == "check" and "result reused" not in c.output]
    assert timed >= 10 and len(real) >= timed


FAST = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.01)
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("read_file", {"path": "HARNESS.md"}),
    ("compile", {"config": {"BLOCK_N": 128, "num_stages": 4}}),
    ("benchmark", {"config": {"BLOCK_M": 64, "BLOCK_N": 64}}),
    ("submit", {}),
]


def model(req: ModelRequest) -> list[TextBlock | ToolUseBlock]:
    done = sum(len(m.tool_results) for m in req.messages)
    if done < len(SCRIPT):
        name, args = SCRIPT[done]
        return [TextBlock(f"step {done + 1}: {name}"), ToolUseBlock(f"toolu_llm_{done}", name, args)]
    return [TextBlock("Submitted.")]


def test_llm_mode_through_the_anthropic_sdk_and_the_loopback_server() -> None:
    with override_allow_model_requests(False), LoopbackServer(model) as server:
        client = AnthropicClient("claude-test", base_url=server.url, retry=FAST)
        store = MemoryStore()
        r = run_llm(store, client, seed=0, preset="masking-200k", max_calls=10, limits=LIMITS)
        assert not server.rejected and len(server.requests) == len(SCRIPT) + 1
    assert [c.tool for c in r.calls] == [name for name, _ in SCRIPT]
    assert r.calls[1].is_error and "Hardware limit" in r.calls[1].output
    assert r.submission is not None and r.scores["final_speedup"] > 0
    assert r.scores["evaluations"] == 3 and r.scores["tool_calls"] == 4
    assert r.extra["stop_reason"] == "end_turn"
