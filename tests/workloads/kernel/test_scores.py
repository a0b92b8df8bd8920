"""Scores from a run's record: waste classes, violations, regret, recall by distance."""

from __future__ import annotations

from ctxmem.workloads.kernel.needles import ProbeResult
from ctxmem.workloads.kernel.scores import CallRecord, bucket, recall_by_distance, score_run, waste

OOR = ("compile · kernel.py (sha 1) · BLOCK_M=32 BLOCK_N=128 num_warps=4 num_stages=4\n"
       "triton.runtime.errors.OutOfResources: out of resource: shared memory, Required: 272384, Hardware limit: 136192.")
BENCH = ("bench#1 · kernel.py (sha 1) · BLOCK_M=64 BLOCK_N=64 num_warps=4 num_stages=1\n"
         "correctness: eval#1 PASSED (this source and config, dev suite)\ngeomean speedup 2.16x over the reference")
NAN = "eval#2 · correctness · kernel.py\nFAILED 1/6 cases · first failing case: 0 gqa_fp16 (NaN in 256)"


def _c(turn: int, tool: str, out: str, err: bool = False, note: str = "") -> CallRecord:
    return CallRecord(turn, tool, {}, out, err, note)


def test_waste_classes() -> None:
    calls = [
        _c(1, "compile", OOR, True),  # reveals the limit: not waste
        _c(2, "benchmark", BENCH),
        _c(3, "benchmark", BENCH),  # repeated config
        _c(4, "compile", OOR, True),  # over the known limit
        _c(5, "check", NAN),
        _c(6, "edit_file", "edited", note="Root cause of eval#2: prefix_value_load_unmasked — x"),
        _c(7, "check", NAN),  # the same bug again
        _c(8, "edit_file", "edited", note="Root cause of eval#3: prefix_value_load_unmasked — x"),
    ]
    w = waste(calls)
    assert w["evaluations"] == 6
    assert (w["repeated_config"], w["over_known_limit"], w["reintroduced_bug"]) == (1, 1, 1)
    assert w["wasted"] == 3 and w["wasted_per_100"] == 50.0 and w["limit_violations"] == 1


def test_regret_and_zero_speedup_without_submission() -> None:
    calls = [_c(1, "benchmark", BENCH)]
    s = score_run(calls, [], [(100, 50), (120, 100)], None)
    assert s["final_speedup"] == 0.0 and s["regret"] == 1.0
    assert s["prompt_tokens"] == 220 and s["cache_hit_ratio"] == round(150 / 220, 4)
    s = score_run(calls, [], [], {"speedup": 2.16, "heldout_passed": True})
    assert s["regret"] == 0.0 and s["heldout_passed"]


def test_recall_by_distance_buckets() -> None:
    probes = [ProbeResult("a", 10, 100, "verbatim", "1", "1", True),
              ProbeResult("b", 10, 50_000, "absent", None, "2", False),
              ProbeResult("c", 10, 60_000, "normalized", "3", "3", True)]
    r = recall_by_distance(probes)
    assert bucket(100) == "<8k" and bucket(50_000) == "32k-128k"
    assert r["<8k"]["recall"] == 1.0 and r["32k-128k"] == {"probes": 2, "recall": 0.5, "verbatim": 0.0,
                                                           "answered": 0.5}


def test_a_failed_verdict_is_read_from_its_line_not_from_any_text() -> None:
    """best_seen skipped any benchmark whose output held "FAILED" anywhere: benchmarking a
    copy named FAILED.py hid the best result and erased the run's regret."""
    named = BENCH.replace("kernel.py", "FAILED.py")
    s = score_run([_c(1, "benchmark", named)], [], [], {"speedup": 1.0, "heldout_passed": True})
    assert s["best_seen"] == 2.16 and s["regret"] == round((2.16 - 1.0) / 2.16, 4)
    failed = BENCH.replace("eval#1 PASSED (this source and config, dev suite)",
                           "eval#1 FAILED — these are timings of an incorrect kernel")
    s = score_run([_c(1, "benchmark", failed)], [], [], {"speedup": 1.0, "heldout_passed": True})
    assert s["best_seen"] == 0.0
    # a check is failed by its verdict line, not by a file name
    passed = "eval#2 · correctness · FAILED.py\nPASSED 6/6 cases · max_abs_err 1e-3"
    calls = [_c(1, "check", NAN), _c(2, "edit_file", "edited", note="Root cause of eval#2: stale_max — x"),
             _c(3, "check", passed)]
    assert waste(calls)["reintroduced_bug"] == 0
