"""Speed comes from the code: declarations are not paid, cheats are refused, rungs are correct.

The measured tests run the real instrumented interpreter inside the sandbox; measurements
are cached in pytest's cache folder, so only a first run pays for the reference (the
original kernel at 16 tilings, several minutes on a loaded 2-core machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxmem.workloads.kernel.bugs import VARIANT_BUGS, Bug
from ctxmem.workloads.kernel.kernel_tools import KernelTools
from ctxmem.workloads.kernel.measure import Measurer, MeasureRefused
from ctxmem.workloads.kernel.sandbox import SandboxLimits
from ctxmem.workloads.kernel.simx import BENCH_SHAPES
from ctxmem.workloads.kernel.variants import RUNG_KEYS, RUNGS, rung_source
from ctxmem.workloads.kernel.workspace import Workspace

# As conftest's TEST_LIMITS ('from conftest import' is ambiguous across test folders).
TEST_LIMITS = SandboxLimits(timeout_s=120.0)


GQA = next(s for s in BENCH_SHAPES if s.name == "gqa_d64")
PREFILL = next(s for s in BENCH_SHAPES if s.name == "prefill_2k")
# The configs that made the old model pay 6.91x / 9.96x for a declaration.
FAVOURABLE = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK": 4, "SPLITS": 4}


def _declaration_game(source: str) -> str:
    """Pristine code + a best-design declaration + favourable CONFIG + a launch taking extra keys."""
    source = source.replace("import triton.language as tl\n", 'import triton.language as tl\n\n'
                            'ARCH = "combined"  # split-KV inside a persistent grid\n'
                            f"CONFIG = {FAVOURABLE!r}\n", 1)
    return source.replace("    num_stages: int = 1,\n) -> torch.Tensor:",
                          "    num_stages: int = 1,\n    PACK: int = 1,\n    SPLITS: int = 1,\n) -> torch.Tensor:", 1)


@pytest.mark.slow
def test_declaration_game_is_not_paid(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    game = _declaration_game((ws.root / "kernel.py").read_text())
    (ws.root / "kernel.py").write_text(game)
    tools = KernelTools(ws, seed=0, limits=TEST_LIMITS)
    text, is_error = tools.call("benchmark", {})
    assert not is_error, text
    geo = float(text.rsplit("geomean speedup ", 1)[1].split("x", 1)[0])
    assert geo <= 1.15, text
    assert "simulated" in text and "ARCH" not in text
    text, is_error = tools.call("submit", {})
    assert tools.last_submission is not None and tools.last_submission["speedup"] <= 1.15, text


def test_torch_attention_is_refused_before_it_runs(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    cheat = (ws.root / "kernel.py").read_text().replace(
        "    if total == 0 or max_extend == 0:\n        return out\n",
        "    if total == 0 or max_extend == 0:\n        return out\n"
        "    out.copy_(torch.nn.functional.scaled_dot_product_attention(q, k_new, v_new))\n"
        "    return out\n", 1)
    (ws.root / "kernel.py").write_text(cheat)
    tools = KernelTools(ws, seed=0, limits=TEST_LIMITS)
    for tool in ("benchmark", "compile", "profile"):
        text, is_error = tools.call(tool, {})
        assert is_error and "refused" in text and "torch.nn is refused" in text, (tool, text)
    assert tools.measurer.runs == 0  # never ran


def test_writing_an_input_is_refused_at_run_time(tmp_path: Path) -> None:
    """Restoring an overwritten input needs a write into it: refused, not hidden."""
    ws = Workspace.create(tmp_path / "ws")
    source = (ws.root / "kernel.py").read_text().replace(
        "    grid = (triton.cdiv(max_extend, BLOCK_M), batch, num_q_heads)\n",
        "    v_pool.mul_(1.0)\n    grid = (triton.cdiv(max_extend, BLOCK_M), batch, num_q_heads)\n", 1)
    with pytest.raises(MeasureRefused, match=r"writes the input tensor 'v_pool'"):
        Measurer(ws).measure(source, {"BLOCK_M": 32, "BLOCK_N": 32}, (GQA,))


def test_skipping_the_work_on_large_shapes_is_refused(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    source = (ws.root / "kernel.py").read_text().replace(
        "    if total == 0 or max_extend == 0:\n",
        "    if total == 0 or max_extend == 0 or total > 3000:\n", 1)
    with pytest.raises(MeasureRefused, match=r"prefill_2k: .* under the least a correct kernel does"):
        Measurer(ws).measure(source, {"BLOCK_M": 32, "BLOCK_N": 32}, (PREFILL,))


def _rung_config(rung: str) -> dict[str, int]:
    extra = {"PACK": 2, "SPLITS": 4, "PROGRAMS": 8}
    # split_kv splits a key range only past SPLIT_KEYS keys (1024 by default): the suites'
    # cases are shorter, so the split path and the reduce are forced here.
    forced = {"SPLIT_KEYS": 16} if rung in ("split_kv", "dispatch") else {}
    return {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1,
            **{k: extra[k] for k in RUNG_KEYS[rung]}, **forced}


@pytest.mark.slow
@pytest.mark.parametrize("rung", RUNGS)
def test_every_rung_passes_dev_and_heldout_in_the_interpreter(rung: str, tmp_path: Path) -> None:
    from ctxmem.workloads.kernel.correctness import CorrectnessChecker

    ws = Workspace.create(tmp_path / "ws")
    source = rung_source(rung)
    (ws.root / "kernel.py").write_text(source)
    checker = CorrectnessChecker(ws, limits=TEST_LIMITS)
    for split in ("dev", "heldout"):
        result = checker.check("kernel.py", source=source, config=_rung_config(rung), seed=0, split=split)
        assert result.passed, result.render()


@pytest.mark.slow
@pytest.mark.parametrize("bug", VARIANT_BUGS, ids=lambda b: b.name)
def test_variant_bugs_fail_as_documented_in_every_rung_they_apply_to(bug: Bug, tmp_path: Path) -> None:
    from ctxmem.workloads.kernel.correctness import CorrectnessChecker

    rungs = [r for r in RUNGS if rung_source(r).count(bug.old) == 1]
    assert rungs and "baseline" not in rungs
    rung = rungs[0]
    ws = Workspace.create(tmp_path / "ws")
    source = bug.apply(rung_source(rung))
    (ws.root / "kernel.py").write_text(source)
    result = CorrectnessChecker(ws, limits=TEST_LIMITS).check(
        "kernel.py", source=source, config=_rung_config(rung), seed=0, split="dev")
    assert not result.passed, result.render()
    text = result.render()
    if bug.symptom == "nan":
        assert "NaN" in text, text
    else:
        assert "mismatch" in text.lower() or "max abs" in text.lower(), text


def test_sample_order_visits_every_program_once_and_stratifies_its_prefixes() -> None:
    """Any 2^k-prefix of the order holds one program from each of 2^k equal stretches of
    the request-major line, at a scrambled place: no aliasing with a periodic grid."""
    import itertools

    from ctxmem.workloads.kernel.instrument import _sample_order

    grid = (128, 2, 32)  # tiles, requests, head groups x 4 splits (power-of-two periods)
    order = list(_sample_order(grid, "t"))
    assert len(order) == len(set(order)) == 128 * 2 * 32
    line = [y * 128 * 32 + x * 32 + z for x, y, z in order]
    n = len(line)
    for k in (1, 2, 4, 6):
        stretches = sorted(j * 2**k // n for j in line[: 2**k])
        assert stretches == list(range(2**k)), k
    first = list(itertools.islice(order, 64))
    assert {z % 4 for _, _, z in first} == {0, 1, 2, 3}  # a plain shifted sequence hit one
    assert {y for _, y, _ in first} == {0, 1} and sum(y for _, y, _ in first) == 32
    assert list(_sample_order(grid, "t"))[:50] == order[:50]
    assert list(_sample_order(grid, "u"))[:50] != order[:50]
    odd = list(_sample_order((7, 3, 5), "t"))
    assert sorted(odd) == sorted((x, y, z) for x in range(7) for y in range(3) for z in range(5))


def test_sample_stats_stop_on_smooth_work_and_not_on_an_unseen_one() -> None:
    from ctxmem.workloads.kernel.instrument import ZERO_PROGRAMS, _Program, _SampleStats

    def prog(flops: int, nbytes: int) -> _Program:
        p = _Program()
        p.dot_flops, p.ld_sector_bytes = flops, nbytes
        return p

    ramp = _SampleStats()  # a causal ramp: known precisely from neighbouring differences
    for pos in range(0, 4096, 128):
        ramp.add(pos, prog(1000 + pos, 10 * (1000 + pos)))
    assert ramp.rse() < 0.02
    ragged = _SampleStats()  # a few heavy programs among dead ones: not known yet
    for i, pos in enumerate(range(0, 4096, 128)):
        ragged.add(pos, prog(10**6 if i % 7 == 0 else 0, 10**6 if i % 7 == 0 else 64))
    assert ragged.rse() > 0.05
    empty = _SampleStats()
    for pos in range(ZERO_PROGRAMS - 1):
        empty.add(pos, prog(0, 0))
    assert empty.rse() == float("inf")
    empty.add(ZERO_PROGRAMS, prog(0, 0))
    assert empty.rse() == 0.0
