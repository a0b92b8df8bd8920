"""Calibrate SIMX-1 against a real GPU: every rung and a config sweep, timed and checked.

    python -m benchmarks.gpu_kernels [--seed 0] [--json out.json]

On a CUDA machine (one command, a few minutes on one H200):

1. **correctness on the GPU** — every rung at its config, and every swept config of the
   original kernel, on all six benchmark shapes, against an fp32 reference computed on the
   GPU (``reference.Model`` in fp32); max abs error and NaN rows are reported, and a run
   with any failure exits non-zero;
2. **timing** — ``triton.testing.do_bench`` medians of every rung, of the original kernel
   at 36 launch configs (BLOCK_M × BLOCK_N ∈ {32, 64, 128}², num_warps ∈ {4, 8},
   num_stages ∈ {1, 2}), and of torch SDPA per request (gather the prefix, then mask);
3. **SIMX-1's prediction** of the same runs: the interpreter measurements
   (``instrument.measure_runs``, one CPU process per kernel, in parallel) priced on the
   seed's device (``--seed``);
4. **Spearman correlations** between SIMX-1's predicted time and the real time, per shape
   and pooled, over the 36 configs and over the rungs.

Without CUDA it prints one line saying so and exits 0 (nothing is simulated here).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNG_CONFIGS: dict[str, dict[str, int]] = {
    "baseline": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
    "unified_loop": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
    "head_packing": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK": 4},
    "split_kv": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK": 4, "SPLITS": 4},
    "persistent_grid": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK": 4,
                        "PROGRAMS": 512},
    "combined": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK": 4, "SPLITS": 4,
                 "PROGRAMS": 512},
    "dispatch": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 1, "PACK": 8, "SPLITS": 4},
}
SWEEP = [{"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s}
         for bm in (32, 64, 128) for bn in (32, 64, 128) for w in (4, 8) for s in (1, 2)]
ATOL, RTOL = 2e-3, 1e-2  # fp16, as the correctness suite


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    if len(xs) < 3:
        return float("nan")
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    vy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (vx * vy) if vx and vy else float("nan")


# -- SIMX-1's side: interpreter measurements on the CPU ---------------------------------------


def _measure(source_path: str, configs: list[dict[str, int]]) -> list[dict[str, Any]]:
    from ctxmem.workloads.kernel import instrument
    from ctxmem.workloads.kernel.measure import SALT
    from ctxmem.workloads.kernel.simx import BENCH_SHAPES
    from ctxmem.workloads.kernel.workspace import asset_path

    with tempfile.TemporaryDirectory() as d:
        job = {"source_path": source_path, "reference_path": str(asset_path("reference.py")),
               "salt": SALT, "runs": [{"config": c, "cases": [s.case_dict() for s in BENCH_SHAPES]}
                                      for c in configs]}
        (Path(d) / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
        subprocess.run([sys.executable, "-I", instrument.__file__, f"{d}/job.json", f"{d}/out.json"],
                       env=env, check=True, capture_output=True)
        answer = json.loads((Path(d) / "out.json").read_text())
    runs: list[dict[str, Any]] = answer["runs"]
    for r in runs:
        if r.get("status") != "ok":
            raise RuntimeError(f"measurement of {source_path} failed: {r}")
    return runs


def simx_predictions(seed: int, paths: dict[str, str]) -> tuple[dict[str, dict[str, float]],
                                                                  dict[str, dict[str, float]]]:
    """Predicted µs per shape: per rung, and per swept config of the original kernel."""
    from ctxmem.workloads.kernel.kernel_tools import with_launch_params
    from ctxmem.workloads.kernel.simx import Simx

    sim = Simx(seed)
    tilings = sorted({(c["BLOCK_M"], c["BLOCK_N"]) for c in SWEEP})
    jobs: dict[str, tuple[str, list[dict[str, int]]]] = {
        f"rung:{r}": (paths[r], [cfg]) for r, cfg in RUNG_CONFIGS.items()}
    for bm, bn in tilings:
        jobs[f"tile:{bm}x{bn}"] = (paths["baseline"], [{"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4,
                                                         "num_stages": 1}])
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1)) as pool:
        futures = {k: pool.submit(_measure, p, c) for k, (p, c) in jobs.items()}
        done = {k: f.result()[0]["shapes"] for k, f in futures.items()}
    rungs = {r: {s.name: t for s, t in sim.times(done[f"rung:{r}"])} for r in RUNG_CONFIGS}
    sweep = {}
    for c in SWEEP:
        m = with_launch_params(done[f"tile:{c['BLOCK_M']}x{c['BLOCK_N']}"], 4, 1, c["num_warps"], c["num_stages"])
        sweep[_cfg(c)] = {s.name: t for s, t in sim.times(m)}
    return rungs, sweep


def _cfg(c: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in c.items())


# -- the GPU's side ------------------------------------------------------------------------------


def _load(path: str, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sdpa(t: dict[str, Any], sm_scale: float) -> Any:
    import torch
    import torch.nn.functional as F

    out = torch.empty_like(t["q"])
    group = t["q"].shape[1] // t["k_new"].shape[1]
    for b in range(t["prefix_lens"].shape[0]):
        p, e, s0 = int(t["prefix_lens"][b]), int(t["extend_lens"][b]), int(t["extend_starts"][b])
        slots = t["req_to_token"][int(t["req_idx"][b]), :p].long()
        k = torch.cat([t["k_pool"][slots], t["k_new"][s0:s0 + e]]).transpose(0, 1)
        v = torch.cat([t["v_pool"][slots], t["v_new"][s0:s0 + e]]).transpose(0, 1)
        q = t["q"][s0:s0 + e].transpose(0, 1)
        mask = torch.arange(p + e, device=q.device)[None, :] <= (p + torch.arange(e, device=q.device))[:, None]
        o = F.scaled_dot_product_attention(q, k.repeat_interleave(group, 0), v.repeat_interleave(group, 0),
                                           attn_mask=mask, scale=sm_scale)
        out[s0:s0 + e] = o.transpose(0, 1)
    return out


def gpu_side(paths: dict[str, str], ref_path: str) -> dict[str, Any]:
    import torch
    from triton.testing import do_bench

    from ctxmem.workloads.kernel.simx import BENCH_SHAPES

    reference = _load(ref_path, "gpu_reference")
    kernels = {r: _load(p, f"gpu_{r}") for r, p in paths.items()}
    dev = torch.device("cuda")
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "rungs": {}, "sweep": {},
                              "sdpa": {}, "failures": []}
    for shape in BENCH_SHAPES:
        case = shape.case_dict(0)
        cpu = reference.build_inputs(case)
        t = {k: v.to(dev) for k, v in cpu.items()}
        sm_scale = 1.0 / math.sqrt(shape.head_dim)
        names = reference.INPUT_NAMES
        expected = reference.Model(sm_scale)(*[t[n].float() if t[n].is_floating_point() else t[n]
                                              for n in names])

        def run(module: Any, cfg: dict[str, int], t: dict[str, Any] = t, sm_scale: float = sm_scale,
                ext: int = max(shape.extend_lens)) -> Any:
            out = torch.full_like(t["q"], float("nan"))
            module.launch(t["q"], t["k_new"], t["v_new"], out, t["k_pool"], t["v_pool"], t["req_to_token"],
                          t["req_idx"], t["prefix_lens"], t["extend_lens"], t["extend_starts"],
                          sm_scale=sm_scale, soft_cap=0.0, window=0,
                          max_extend=ext, **cfg)
            return out

        def check(label: str, got: Any, expected: Any = expected, shape_name: str = shape.name) -> float:
            err = (got.float() - expected).abs()
            nan_rows = int(torch.isnan(got).any(dim=-1).any(dim=-1).sum())
            bad = nan_rows or not torch.allclose(got.float(), expected, atol=ATOL, rtol=RTOL)
            if bad:
                result["failures"].append(f"{label} on {shape_name}: max abs error "
                                          f"{float(err.nan_to_num(float('inf')).max()):.3g}, {nan_rows} NaN rows")
            return float(err.nan_to_num(float("inf")).max())

        for rung, cfg in RUNG_CONFIGS.items():
            err = check(rung, run(kernels[rung], cfg))
            ms = do_bench(lambda m=kernels[rung], c=cfg: run(m, c), warmup=10, rep=50)
            result["rungs"].setdefault(rung, {})[shape.name] = {"us": 1000 * ms, "max_err": err}
        for cfg in SWEEP:
            try:
                err = check(f"baseline {_cfg(cfg)}", run(kernels["baseline"], cfg))
                ms = do_bench(lambda c=cfg: run(kernels["baseline"], c), warmup=10, rep=50)
            except Exception as exc:  # out of resources on this GPU: no time for this config
                result["sweep"].setdefault(_cfg(cfg), {})[shape.name] = {"error": type(exc).__name__}
                continue
            result["sweep"].setdefault(_cfg(cfg), {})[shape.name] = {"us": 1000 * ms, "max_err": err}
        half = {k: (v.half() if v.is_floating_point() else v) for k, v in t.items()}
        check("torch sdpa", _sdpa(half, sm_scale))
        result["sdpa"][shape.name] = 1000 * do_bench(lambda h=half, s=sm_scale: _sdpa(h, s), warmup=5, rep=20)
        del t, expected
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="SIMX-1 device seed for the predictions")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_kernels: torch is not installed; nothing to calibrate (pip install 'ctxmem[kernel]')")
        return 0
    if not torch.cuda.is_available():
        print("gpu_kernels: no CUDA device here; skipped (SIMX-1 is calibrated on a real GPU only)")
        return 0
    from ctxmem.workloads.kernel.simx import BENCH_SHAPES
    from ctxmem.workloads.kernel.variants import RUNGS, rung_source
    from ctxmem.workloads.kernel.workspace import asset_path

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for r in RUNGS:
            paths[r] = f"{d}/{r}.py"
            Path(paths[r]).write_text(rung_source(r))
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            pred_future = ex.submit(simx_predictions, args.seed, paths)
            gpu = gpu_side(paths, str(asset_path("reference.py")))
            pred_rungs, pred_sweep = pred_future.result()
    shapes = [s.name for s in BENCH_SHAPES]
    print(f"gpu_kernels · {gpu['device']} · {time.strftime('%Y-%m-%d')} · SIMX-1 seed {args.seed}")
    print(f"{'kernel':<18}" + "".join(f"{s:>16}" for s in shapes) + f"{'geomean x':>11}")
    base = {s: gpu["sweep"][_cfg(RUNG_CONFIGS['baseline'] | {'num_stages': 1, 'num_warps': 4, 'BLOCK_M': 32, 'BLOCK_N': 32})][s]["us"]
            for s in shapes}
    for rung in RUNGS:
        row = gpu["rungs"][rung]
        geo = math.exp(sum(math.log(base[s] / row[s]["us"]) for s in shapes) / len(shapes))
        print(f"{rung:<18}" + "".join(f"{row[s]['us']:>13.1f} us" for s in shapes) + f"{geo:>10.2f}x")
    print(f"{'torch sdpa':<18}" + "".join(f"{gpu['sdpa'][s]:>13.1f} us" for s in shapes))
    pooled_x, pooled_y = [], []
    print("\nSpearman(SIMX-1 predicted time, real time)")
    for s in shapes:
        cfgs = [c for c in gpu["sweep"] if "us" in gpu["sweep"][c][s]]
        rho_cfg = spearman([pred_sweep[c][s] for c in cfgs], [gpu["sweep"][c][s]["us"] for c in cfgs])
        rho_rung = spearman([pred_rungs[r][s] for r in RUNGS], [gpu["rungs"][r][s]["us"] for r in RUNGS])
        pooled_x += [pred_rungs[r][s] / pred_rungs["baseline"][s] for r in RUNGS]
        pooled_y += [gpu["rungs"][r][s]["us"] / gpu["rungs"]["baseline"][s]["us"] for r in RUNGS]
        print(f"  {s:<16} over {len(cfgs)} configs {rho_cfg:+.2f} · over {len(RUNGS)} rungs {rho_rung:+.2f}")
    print(f"  pooled over rungs (time relative to the baseline, all shapes): {spearman(pooled_x, pooled_y):+.2f}")
    if gpu["failures"]:
        print("\nFAILED correctness on the GPU:")
        for f in gpu["failures"]:
            print("  " + f)
    print(f"\n{time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "simx_rungs": pred_rungs, "simx_sweep": pred_sweep,
                                         "seed": args.seed}, indent=1))
    return 1 if gpu["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
