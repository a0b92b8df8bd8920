"""The original kernel against the reference, in the real Triton interpreter, in the sandbox."""

from __future__ import annotations

import pytest

from ctxmem.workloads.kernel import CorrectnessChecker, Workspace, bwrap
from ctxmem.workloads.kernel.bugs import CATALOG, Bug

# These run agent-written code: only in the sandbox. Where bubblewrap cannot start they
# skip, and test_attacks.py::test_without_bwrap_nothing_runs_unless_allowed tests the refusal.
_SANDBOX = bwrap.probe()
needs_sandbox = pytest.mark.skipif(_SANDBOX is not None, reason=f"no sandbox here: {_SANDBOX}")
pytestmark = needs_sandbox

SMALL_TILES = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 2, "num_stages": 1}


def test_original_kernel_passes_every_dev_case(checker: CorrectnessChecker) -> None:
    result = checker.check()
    assert result.status == "ok", result.render()
    assert result.passed, result.render()
    assert len(result.cases) == result.cases_total == 6
    text = result.render()
    assert text.startswith("eval#1 · correctness · kernel.py")
    assert "PASSED 6/6 cases" in text
    # fp16 cases land well inside atol 2e-3, fp32 cases near float32 rounding.
    for case in result.cases:
        assert case.max_abs_err is not None
        limit = 1e-3 if "fp16" in case.shape else 1e-5
        assert case.max_abs_err < limit, case


@pytest.mark.parametrize(("seed", "split", "config"), [
    (1, "dev", SMALL_TILES),
    (2, "heldout", None),
    (3, "heldout", {"BLOCK_M": 64, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2}),
])
def test_original_kernel_passes_other_seeds_splits_and_tiles(
    checker: CorrectnessChecker, seed: int, split: str, config: dict[str, int] | None
) -> None:
    result = checker.check(seed=seed, split=split, config=config)
    assert result.passed, result.render()


@pytest.mark.parametrize("bug", CATALOG, ids=lambda b: b.name)
def test_each_catalogued_bug_shows_its_documented_failure(
    checker: CorrectnessChecker, kernel_source: str, bug: Bug
) -> None:
    # The shape bug only shows when the tiles differ.
    config = SMALL_TILES | {"BLOCK_N": 32} if bug.symptom == "error" else None
    result = checker.check(source=bug.apply(kernel_source), config=config)
    text = result.render()
    assert not result.passed, text
    if bug.symptom == "error":
        assert result.status == "error"
        assert "ERROR during case" in text and "kernel.py" in text
        assert result.error is not None and "incompatible dimensions" in result.error["message"]
        return
    assert result.status == "ok"  # it ran to the end, and failed on values
    first = result.first_failure
    assert first is not None
    assert "FAILED" in text and f"first failing case: {first.index} {first.name}" in text
    if bug.symptom == "oob_write":
        assert first.oob_writes > 0
        assert "out-of-bounds writes (guard band)" in text
    elif bug.symptom == "nan":
        assert any(c.nan_count for c in result.cases)
        assert "got nan" in text
    else:
        assert first.mismatches and not first.nan_count and not first.oob_writes


def test_unwritten_output_is_a_mismatch(checker: CorrectnessChecker, kernel_source: str) -> None:
    # Skipping the store leaves the NaN poison in out: every element is reported.
    source = kernel_source.replace("    tl.store(\n        Out +", "    if False:\n      tl.store(\n        Out +")
    result = checker.check(source=source)
    assert not result.passed
    assert all(c.nan_count == c.numel == c.mismatches for c in result.cases), result.render()


def test_writing_into_an_input_is_reported(checker: CorrectnessChecker, kernel_source: str) -> None:
    source = kernel_source.replace("    return out\n\n\n# The checker", "    q.zero_()\n    return out\n\n\n# The checker")
    result = checker.check(source=source)
    assert not result.passed
    assert result.cases[0].inputs_modified == ("q",)
    assert "wrote into inputs: q" in result.render()


def test_syntax_error_is_a_compile_error(checker: CorrectnessChecker, kernel_source: str) -> None:
    result = checker.check(source=kernel_source.replace("def _soft_cap(s, cap):", "def _soft_cap(s, cap)"))
    assert result.status == "compile_error"
    text = result.render()
    assert "COMPILE ERROR" in text and "SyntaxError" in text and 'File "kernel.py"' in text


def test_missing_entry_point(checker: CorrectnessChecker) -> None:
    result = checker.check(source="x = 1\n")
    assert result.status == "error"
    assert "defines neither launch() nor extend_attention()" in result.render()


def test_results_are_cached_by_source_config_and_seed(
    checker: CorrectnessChecker, workspace: Workspace, kernel_source: str
) -> None:
    first = checker.check(config=SMALL_TILES)
    again = checker.check(config=SMALL_TILES)
    assert first.cached_from is None and first.eval_id == 1
    assert again.eval_id == 2 and again.cached_from == 1
    assert again.cases == first.cases and again.status == first.status
    assert "identical source, config and seed as eval#1" in again.render()
    # The cache survives a new checker on the same workspace.
    reopened = CorrectnessChecker(Workspace(workspace.root), limits=checker.limits)
    third = reopened.check(source=kernel_source, config=SMALL_TILES)
    assert third.eval_id == 3 and third.cached_from == 1
    # Any change of source, config or seed is a fresh evaluation.
    assert checker.check(config=SMALL_TILES, seed=1).cached_from is None
    assert checker.check(config=SMALL_TILES | {"num_warps": 8}).cached_from is None
    assert checker.check(source=kernel_source + "\n# tweak\n", config=SMALL_TILES).cached_from is None


def test_the_workspace_reference_copy_cannot_move_the_goalposts(
    checker: CorrectnessChecker, workspace: Workspace, kernel_source: str
) -> None:
    # An agent that "fixes" the reference to match a buggy kernel gains nothing.
    (workspace.root / "reference.py").write_text("raise SystemExit('tampered')\n")
    assert checker.check().passed
    broken = CATALOG[1].apply(kernel_source)
    assert not checker.check(source=broken).passed
