"""Scores of one kernel-workload run, as JSON and as a table row.

Everything is computed from the *record* of the run — the tool calls in order with their
outputs and the agent's reasoning notes — so a scripted run and an LLM run are scored the
same way, by the same parser the policy uses (:func:`ctxmem.workloads.kernel.policy.parse_facts`).

``final_speedup``       the submission's speedup (0 if held-out correctness failed or no submit)
``best_seen``           the best geomean of any ``benchmark`` whose correctness line did not
                        say FAILED; ``regret`` = (best_seen − final) / best_seen
``evaluations``         calls of compile/check/benchmark/autotune/profile/submit
``wasted_per_100``      evaluations per 100 that were wasted: a benchmark of a config already
                        benchmarked, an autotune whose configs were mostly measured already, a
                        config over the shared-memory limit once that limit had been revealed,
                        or a failing compile/check caused by a bug already diagnosed earlier
                        (the diagnosis that follows the failure names a known root cause)
``limit_violations``    out-of-resource hits (calls and autotune rows) after the limit was revealed
``recall_by_distance``  probe recall (present verbatim or normalized) per bucket of tokens since
                        the fact appeared, and extractive-answer accuracy per bucket
``prompt_tokens``       Σ tokens of the contexts the strategy built (what an LLM would be sent)
``cache_hit_ratio``     Σ stable_prefix_tokens / Σ tokens_out over those builds
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxmem.workloads.kernel.needles import ProbeResult
from ctxmem.workloads.kernel.policy import EVAL_TOOLS, Knowledge, parse_facts

DISTANCE_BUCKETS: tuple[tuple[str, int], ...] = (
    ("<8k", 8_000), ("8k-32k", 32_000), ("32k-128k", 128_000), ("128k-512k", 512_000), (">=512k", 1 << 62),
)
_ROOT = re.compile(r"Root cause(?: of eval#\d+)?: ([a-z_]+)")
# The verdict lines the tools print, matched as lines: a bare "FAILED" anywhere in an output
# could come from text the agent chose (a file name, a printed message) and hide a benchmark
# from best_seen.
_CHECK_FAILED = re.compile(r"^FAILED \d+/\d+ cases", re.M)
_BENCH_FAILED = re.compile(r"^correctness: eval#\d+ FAILED", re.M)
_OOR_ROW = re.compile(r"^\s*\d+\s+(?:\w+=\d+ )+\s*out of resource", re.M)


@dataclass(frozen=True)
class CallRecord:
    """One tool call of a run, as recorded."""

    turn: int
    tool: str
    input: Mapping[str, Any]
    output: str
    is_error: bool
    reasoning: str = ""


def bucket(distance: int) -> str:
    return next(name for name, hi in DISTANCE_BUCKETS if distance < hi)


def waste(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """Classify every evaluation: wasted or not, and why (see the module docstring)."""
    seen = Knowledge()
    diagnosed: set[str] = set()
    counts = {"repeated_config": 0, "over_known_limit": 0, "reintroduced_bug": 0}
    wasted = evaluations = violations = 0
    for i, c in enumerate(calls):
        facts = parse_facts(c.output)
        reasons: set[str] = set()
        if c.tool in EVAL_TOOLS:
            evaluations += 1
            if c.tool == "benchmark" and facts.benched & seen.benched:
                reasons.add("repeated_config")
            if c.tool == "autotune" and facts.measured:
                rows = len(facts.measured)
                if sum(k in seen.measured for k in facts.measured) * 2 >= rows:
                    reasons.add("repeated_config")
            hits = len(_OOR_ROW.findall(c.output)) if c.tool == "autotune" else int(facts.smem_limit is not None)
            if seen.smem_limit is not None and hits:
                reasons.add("over_known_limit")
                violations += hits
            failed = (c.tool == "check" and _CHECK_FAILED.search(c.output) is not None) or (c.tool == "compile" and c.is_error
                                                                       and "out of resource" not in c.output)
            if failed:
                cause = _next_diagnosis(calls, i)
                if cause is not None and cause in diagnosed:
                    reasons.add("reintroduced_bug")
        for r in reasons:
            counts[r] += 1
        wasted += bool(reasons)
        diagnosed.update(_ROOT.findall(c.reasoning))
        seen.add(facts)
    return {"evaluations": evaluations, "wasted": wasted,
            "wasted_per_100": round(100 * wasted / evaluations, 2) if evaluations else 0.0,
            "limit_violations": violations, **counts}


def _next_diagnosis(calls: Sequence[CallRecord], i: int, lookahead: int = 6) -> str | None:
    for c in calls[i + 1: i + 1 + lookahead]:
        found = _ROOT.findall(c.reasoning)
        if found:
            return found[0]
        if c.tool in ("check", "benchmark", "autotune"):
            return None
    return None


def recall_by_distance(probes: Sequence[ProbeResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, _ in DISTANCE_BUCKETS:
        ps = [p for p in probes if bucket(p.distance_tokens) == name]
        if ps:
            out[name] = {"probes": len(ps),
                         "recall": round(sum(p.presence != "absent" for p in ps) / len(ps), 4),
                         "verbatim": round(sum(p.presence == "verbatim" for p in ps) / len(ps), 4),
                         "answered": round(sum(p.correct for p in ps) / len(ps), 4)}
    return out


def score_run(calls: Sequence[CallRecord], probes: Sequence[ProbeResult], builds: Sequence[tuple[int, int]],
              submission: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scores of one run. ``builds`` holds (tokens_out, stable_prefix_tokens) per build."""
    final = float(submission["speedup"]) if submission else 0.0
    best_seen = 0.0
    for c in calls:
        if c.tool == "benchmark" and not c.is_error and _BENCH_FAILED.search(c.output) is None:
            m = re.search(r"geomean speedup (\d+\.\d+)x", c.output)
            if m:
                best_seen = max(best_seen, float(m.group(1)))
    w = waste(calls)
    prompt = sum(t for t, _ in builds)
    stable = sum(s for _, s in builds)
    return {
        "final_speedup": round(final, 4),
        "heldout_passed": bool(submission and submission.get("heldout_passed")),
        "best_seen": round(best_seen, 4),
        "regret": round(max(0.0, best_seen - final) / best_seen, 4) if best_seen else 0.0,
        "tool_calls": len(calls),
        **w,
        "probes": len(probes),
        "recall": round(sum(p.presence != "absent" for p in probes) / len(probes), 4) if probes else None,
        "answered": round(sum(p.correct for p in probes) / len(probes), 4) if probes else None,
        "recall_by_distance": recall_by_distance(probes),
        "prompt_tokens": prompt,
        "cache_hit_ratio": round(stable / prompt, 4) if prompt else 0.0,
    }


TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("speedup", "final_speedup"), ("regret", "regret"), ("calls", "tool_calls"), ("evals", "evaluations"),
    ("waste/100", "wasted_per_100"), ("viol", "limit_violations"), ("recall", "recall"),
    ("answered", "answered"), ("prompt_tok", "prompt_tokens"), ("cache_hit", "cache_hit_ratio"),
)


def table_row(scores: Mapping[str, Any]) -> list[Any]:
    return [scores.get(key) for _, key in TABLE_COLUMNS]


__all__ = ["DISTANCE_BUCKETS", "TABLE_COLUMNS", "CallRecord", "bucket", "recall_by_distance", "score_run",
           "table_row", "waste"]
