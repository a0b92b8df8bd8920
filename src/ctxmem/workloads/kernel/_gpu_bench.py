"""GPU timing child for the ``benchmark`` tool's GPU mode. Run as a script, never imported.

``python -I _gpu_bench.py JOB.json RESULT.json``: loads the candidate and the pristine
baseline kernel, builds every benchmark shape on the GPU with the pristine reference's
``build_inputs``, and times both with ``triton.testing.do_bench`` (median ms). No
interpreter, no rlimits (CUDA needs a large address space); the parent enforces a wall
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
            args = [t[n] for n in ("q", "k_new", "v_new")]
            rest = [t[n] for n in ("k_pool", "v_pool", "req_to_token", "req_idx", "prefix_lens",
                                   "extend_lens", "extend_starts")]
            out = torch.empty_like(t["q"])
            kw = {"sm_scale": case["head_dim"] ** -0.5, "soft_cap": 0.0, "window": 0}
            ref_kw = {**kw, **job["reference_config"]}
            cand_kw = {**kw, **job["config"]}
            ref_ms = do_bench(lambda a=args, o=out, r=rest, k=ref_kw: baseline.launch(*a, o, *r, **k))
            ms = do_bench(lambda a=args, o=out, r=rest, k=cand_kw: entry(*a, o, *r, **k))
            result["shapes"].append({"name": case["name"], "reference_ms": ref_ms, "ms": ms})
    except BaseException as exc:
        result["status"] = "error"
        result["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["tail"] = traceback.format_exc()[-4000:]
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
