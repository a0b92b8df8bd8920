"""GPU timing child for the kernel tools' GPU mode. Run as a script, never imported.

``python -I _gpu_bench.py JOB.json RESULT.json``: loads the candidate and the pristine
baseline kernel, builds every benchmark shape on the GPU with the pristine reference's
``build_inputs``, and for each shape:

* checks the candidate's output at every config against an fp32 reference computed on the
  GPU (``reference.Model`` in fp32): max abs error, NaN rows, pass/fail at the fp16
  tolerances of the correctness suite;
* times the candidate at every config of ``job["configs"]`` (``benchmark``: one;
  ``autotune``: the space) and the original kernel at every ``job["reference_configs"]``
  with ``triton.testing.do_bench`` (median ms); the reference is the original kernel at
  the config with the best geomean, as on SIMX-1.

A config that fails to launch (out of resources on this GPU) is reported with its error.
No interpreter, no rlimits (CUDA needs a large address space); the parent enforces a wall
clock timeout and runs this only on machines with a CUDA GPU.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback
from types import ModuleType
from typing import Any


def _load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ATOL, RTOL = 2e-3, 1e-2


def main(job_path: str, result_path: str) -> int:
    with open(job_path) as f:
        job = json.load(f)
    result: dict[str, Any] = {"status": "ok", "shapes": []}
    try:
        import torch
        from triton.testing import do_bench

        reference = _load("ctxmem_gpu_reference", job["reference_path"])
        baseline = _load("ctxmem_gpu_baseline", job["baseline_path"])
        candidate = _load("ctxmem_gpu_candidate", job["source_path"])
        entry = getattr(candidate, "launch", None) or candidate.extend_attention
        result["device_name"] = torch.cuda.get_device_name()
        for case in job["shapes"]:
            t = {k: v.cuda() for k, v in reference.build_inputs(case).items()}
            names = reference.INPUT_NAMES
            scale = case["head_dim"] ** -0.5
            expected = reference.Model(scale)(*[t[n].float() if t[n].is_floating_point() else t[n]
                                                for n in names])
            args = [t[n] for n in ("q", "k_new", "v_new")]
            rest = [t[n] for n in ("k_pool", "v_pool", "req_to_token", "req_idx", "prefix_lens",
                                   "extend_lens", "extend_starts")]
            kw = {"sm_scale": scale, "soft_cap": 0.0, "window": 0, "max_extend": max(case["extend_lens"])}
            row: dict[str, Any] = {"name": case["name"], "configs": [], "reference": []}
            for label, fn, configs in (("configs", entry, job["configs"]),
                                       ("reference", baseline.launch, job["reference_configs"])):
                for cfg in configs:
                    out = torch.full_like(t["q"], float("nan"))
                    try:
                        fn(*args, out, *rest, **kw, **cfg)
                        torch.cuda.synchronize()
                    except Exception as exc:
                        row[label].append({"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                        continue
                    err = (out.float() - expected).abs().nan_to_num(float("inf"))
                    nan_rows = int(torch.isnan(out).any(dim=-1).any(dim=-1).sum())
                    ok = nan_rows == 0 and bool(torch.allclose(out.float(), expected, atol=ATOL, rtol=RTOL))
                    ms = do_bench(lambda f=fn, o=out, c=cfg, a=args, r=rest, k=kw: f(*a, o, *r, **k, **c))
                    row[label].append({"ms": ms, "max_err": float(err.max()), "nan_rows": nan_rows,
                                       "correct": ok})
            result["shapes"].append(row)
            del t, expected
            torch.cuda.empty_cache()
    except BaseException as exc:
        result["status"] = "error"
        result["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["tail"] = traceback.format_exc()[-4000:]
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
