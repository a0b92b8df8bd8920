"""The dispatch rung: each launch path is correct, and its shortcuts hold on hard inputs.

The dev/held-out suites (``test_measured_work.py``) hold every rung at one config; here the
dispatch rung is held at the configs that take each of its paths (tiles shrunk or not,
key ranges split or not), to a running max that keeps growing (the lazy rescale must fire),
and its measured launches are checked to be the ones its docstring promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctxmem.workloads.kernel.measure import Measurer
from ctxmem.workloads.kernel.sandbox import SandboxLimits
from ctxmem.workloads.kernel.simx import BENCH_SHAPES
from ctxmem.workloads.kernel.variants import rung_source
from ctxmem.workloads.kernel.workspace import Workspace, asset_path

# As conftest's TEST_LIMITS ('from conftest import' is ambiguous across test folders).
TEST_LIMITS = SandboxLimits(timeout_s=120.0)

# (config, what it exercises on the suites' small cases)
PATHS = [
    ({"BLOCK_M": 128, "BLOCK_N": 16, "PACK": 2, "SPLITS": 4, "SPLIT_KEYS": 16},
     "tiles shrunk to 64 rows, key ranges split, reduce"),
    ({"BLOCK_M": 128, "BLOCK_N": 16, "PACK": 2, "SPLITS": 4, "SPLIT_KEYS": 64},
     "some tiles split, the others write out themselves"),
    ({"BLOCK_M": 32, "BLOCK_N": 16, "PACK": 2, "SPLITS": 4}, "nothing split: no scratch, no reduce"),
    ({"BLOCK_M": 32, "BLOCK_N": 16, "PACK": 1, "SPLITS": 4, "SPLIT_KEYS": 16},
     "one head per row: more requests take the swapped-dot decode kernel"),
]


@pytest.mark.slow
@pytest.mark.parametrize("config,what", PATHS, ids=[w for _, w in PATHS])
def test_every_launch_path_passes_dev_and_heldout(config: dict[str, int], what: str, tmp_path: Path) -> None:
    from ctxmem.workloads.kernel.correctness import CorrectnessChecker

    ws = Workspace.create(tmp_path / "ws")
    source = rung_source("dispatch")
    (ws.root / "kernel.py").write_text(source)
    checker = CorrectnessChecker(ws, limits=TEST_LIMITS)
    for split in ("dev", "heldout"):
        result = checker.check("kernel.py", source=source, config=config, seed=1, split=split)
        assert result.passed, (what, result.render())


# Scores that grow by 13 (prefill) or 33 (decode) log2 units per 16-key tile: the running
# max moves past the lazy rescale's threshold on every tile, so a kernel that skipped the
# rescale would overflow fp16 (p = 2^39 and more) and write inf/NaN.
_GROWING = r"""
import importlib.util, json, sys, torch
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); return mod
ref = load("ref", sys.argv[1]); kern = load("kern", sys.argv[2])
case = {"name": "growing", "num_q_heads": 2, "num_kv_heads": 1, "head_dim": 32,
        "prefix_lens": [0, 40], "extend_lens": [96, 8], "dtype": "float16", "soft_cap": 0.0,
        "window": 0, "seed": 7}
cfg = json.loads(sys.argv[3])
if cfg.pop("decode_only", 0):
    case.update(prefix_lens=[72, 20], extend_lens=[8, 4])  # the growing keys are a prefix's
t = ref.build_inputs(case)
t["q"][:] = 1.0
pos = torch.arange(96, dtype=torch.float32)[:, None, None]
if case["prefix_lens"][0]:  # decode: the first request's prefix keys grow with position
    slots = t["req_to_token"][int(t["req_idx"][0]), :72].long()
    grow = torch.arange(72, dtype=torch.float32)[:, None, None]
    t["k_pool"][slots] = (0.25 * grow + 0.05 * t["k_pool"][slots].float()).to(torch.float16)
else:
    t["k_new"][:96] = (0.1 * pos + 0.05 * t["k_new"][:96].float()).to(torch.float16)
args = [t[n] for n in ref.INPUT_NAMES]
sm_scale, cap, window = ref.init_args(case)
want = ref.Model(sm_scale, cap, window)(*args).float()
out = torch.full_like(t["q"], float("nan"))
kern.launch(t["q"], t["k_new"], t["v_new"], out, t["k_pool"], t["v_pool"], t["req_to_token"],
            t["req_idx"], t["prefix_lens"], t["extend_lens"], t["extend_starts"],
            sm_scale=sm_scale, **cfg)
got = out.float()
print(json.dumps({"finite": bool(torch.isfinite(got).all()), "err": float((got - want).abs().max())}))
"""


@pytest.mark.parametrize("config", [
    {"BLOCK_M": 64, "BLOCK_N": 16, "PACK": 2, "SPLITS": 1},
    {"BLOCK_M": 64, "BLOCK_N": 16, "PACK": 2, "SPLITS": 4, "SPLIT_KEYS": 32},
    # a decode batch (8 and 4 new tokens x 2 heads): the swapped-dot decode kernel
    {"BLOCK_M": 64, "BLOCK_N": 16, "PACK": 2, "SPLITS": 1, "decode_only": 1},
])
def test_lazy_rescale_holds_when_the_running_max_keeps_growing(config: dict[str, int], tmp_path: Path) -> None:
    kernel = tmp_path / "kernel.py"
    kernel.write_text(rung_source("dispatch"))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _GROWING, str(asset_path("reference.py")), str(kernel),
                           json.dumps(config)], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["finite"] and got["err"] < 2e-2, got


@pytest.mark.slow
def test_measured_launches_follow_the_batch(tmp_path: Path) -> None:
    """Prefill: one kernel, no scratch. Decode-like: 64-row tiles, split, then the reduce."""
    shapes = tuple(s for s in BENCH_SHAPES if s.name in ("prefill_2k", "spec_decode"))
    ws = Workspace.create(tmp_path / "ws")
    cfg = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 1, "PACK": 8, "SPLITS": 4}
    measured = Measurer(ws).measure(rung_source("dispatch"), cfg, shapes)
    prefill = measured["prefill_2k"]["launches"]
    assert [la["kernel"] for la in prefill] == ["_extend_attention_kernel"]
    assert all(key.startswith("128x") for key in prefill[0]["dot_sites"])
    decode = measured["spec_decode"]["launches"]
    assert [la["kernel"] for la in decode] == ["_decode_kernel", "_reduce_splits_kernel"]
    # 4 tokens x 4 heads = 16 rows, on the dots' short side: K·Qᵀ is 64 keys x 128 x 16
    assert set(decode[0]["dot_sites"]) == {"64x128x16:16", "128x64x16:16"}
    # 16 requests x 8 head groups x 4 splits
    assert decode[0]["programs"] == 16 * 8 * 4
    # two torch reductions (longest extend, longest prefix), nothing else per launch
    assert len(measured["spec_decode"]["torch"]) == 2
