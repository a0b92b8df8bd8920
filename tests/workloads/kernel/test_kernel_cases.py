from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest

from ctxmem.workloads.kernel import CaseSpec, dev_cases, heldout_cases, suite
from ctxmem.workloads.kernel.workspace import asset_path


def _reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kernel_reference_asset", asset_path("reference.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suites_are_deterministic_and_seed_dependent() -> None:
    assert dev_cases(3) == dev_cases(3)
    assert dev_cases(3) != dev_cases(4)
    assert heldout_cases(3) != dev_cases(3)
    assert suite(3, "heldout") == heldout_cases(3)
    with pytest.raises(ValueError):
        suite(3, "test")


@pytest.mark.parametrize("seed", range(5))
def test_suites_cover_the_edges(seed: int) -> None:
    for cases in (dev_cases(seed), heldout_cases(seed)):
        assert {c.dtype for c in cases} == {"float16", "float32"}
        assert any(0 in c.prefix_lens for c in cases)
        assert any(1 in c.extend_lens for c in cases)
        assert any(c.soft_cap > 0 for c in cases) and any(c.window > 0 for c in cases)
        assert any(c.soft_cap > 0 and c.window > 0 for c in cases)
        assert any(c.num_q_heads > c.num_kv_heads for c in cases)
        for c in cases:
            assert c.num_q_heads % c.num_kv_heads == 0
            assert c.head_dim in (16, 32, 64)
            assert all(e >= 1 for e in c.extend_lens)
            assert CaseSpec.from_dict(c.to_dict()) == c
    assert {c.head_dim for c in dev_cases(seed)} == {16, 32, 64}
    assert any(max(c.extend_lens) > 32 for c in dev_cases(seed))


def test_reference_is_kernelbench_shaped() -> None:
    torch = pytest.importorskip("torch")
    ref = _reference()
    model = ref.Model(*ref.get_init_inputs())
    inputs = ref.get_inputs()
    out = model(*inputs)
    q = inputs[0]
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    # Deterministic inputs, and NaN only in the poisoned pool rows (row 0 among them).
    again = ref.get_inputs()
    for a, b in zip(inputs, again, strict=True):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    k_pool = inputs[3]
    assert torch.isnan(k_pool[0]).all()


def test_reference_masks_match_the_math() -> None:
    """A brute-force recomputation, one query at a time, agrees with Model."""
    torch = pytest.importorskip("torch")
    ref = _reference()
    case = dict(ref.DEFAULT_CASE, dtype="float32", soft_cap=5.0, window=6)
    t = ref.build_inputs(case)
    out = ref.Model(*ref.init_args(case))(*[t[n] for n in ref.INPUT_NAMES])
    scale = case["head_dim"] ** -0.5
    group = case["num_q_heads"] // case["num_kv_heads"]
    for b, (p, e) in enumerate(zip(case["prefix_lens"], case["extend_lens"], strict=True)):
        start = int(t["extend_starts"][b])
        slots = t["req_to_token"][int(t["req_idx"][b]), :p].long()
        for i in range(e):
            pos = p + i
            for h in range(case["num_q_heads"]):
                kvh = h // group
                keys = [t["k_pool"][s, kvh] for s in slots] + [t["k_new"][start + j, kvh] for j in range(e)]
                vals = [t["v_pool"][s, kvh] for s in slots] + [t["v_new"][start + j, kvh] for j in range(e)]
                seen = [j for j in range(p + e) if pos - case["window"] < j <= pos]
                s = torch.stack([keys[j] @ t["q"][start + i, h] for j in seen]) * scale
                s = 5.0 * torch.tanh(s / 5.0)
                w = torch.softmax(s, 0)
                want = sum(w[n] * vals[j] for n, j in enumerate(seen))
                assert torch.allclose(out[start + i, h], want, atol=1e-5)


def test_importing_the_workload_loads_neither_torch_nor_triton() -> None:
    code = (
        "import sys, ctxmem, ctxmem.workloads.kernel as k, ctxmem.workloads.kernel.tools, "
        "ctxmem.workloads.kernel.bugs; "
        "bad = [m for m in ('torch', 'triton') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
