"""The profile tool's Nsight-Compute-style sections: derived from SIMX-1, bounded, deterministic."""

from __future__ import annotations

import re
from pathlib import Path

from ctxmem.workloads.kernel.kernel_tools import KernelTools
from ctxmem.workloads.kernel.policy import parse_facts
from ctxmem.workloads.kernel.profile_report import profile_sections
from ctxmem.workloads.kernel.simx import BENCH_SHAPES, SIMX_DEFAULTS, Simx
from ctxmem.workloads.kernel.workspace import Workspace, asset_path

SECTIONS = ("GPU Speed Of Light Throughput", "Memory Workload Analysis", "Shared Memory",
            "Compute Workload Analysis", "Instruction Statistics", "Launch Statistics", "Occupancy",
            "Scheduler Statistics", "Warp State Statistics", "Source Counters")


def test_profile_has_every_section_labelled_simulated_and_is_deterministic(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        tools = KernelTools(Workspace.create(tmp_path / name), seed=3)
        text, is_error = tools.call("profile", {"shape": "spec_decode", "config": {"BLOCK_N": 64}})
        assert not is_error
        outs.append(text)
    assert outs[0] == outs[1]
    text = outs[0]
    assert "simulated profile · SIMX-1 cost model" in text
    for section in SECTIONS:
        assert f"Section: {section}" in text
    # the limiter row agrees with the summary line the occupancy needle reads
    limiter = re.search(r"\(limited by ([a-z ]+)\)", text)
    assert limiter is not None and len(re.findall(r"\(limited by ", text)) == 1
    label = {"registers": "Registers", "shared memory": "Shared Mem", "warps": "Warps", "blocks": "CU"}
    assert f"Block Limit {label[limiter.group(1)]} <- limiter" in text
    # source hotspots point at real lines of the kernel: the gathered prefix loads among them
    assert re.search(r"^\s+\d+\s+[\d.]+%\s+Long Scoreboard\s+slots = tl\.load\(", text, re.M)
    # nothing in it reads as a measured config, a limit or a commit to the policy
    facts = parse_facts(text)
    assert not facts.measured and not facts.over_limit and facts.smem_limit is None and not facts.commits


def _launch(programs: int, bm: int, bn: int, d: int, flops: int, nbytes: int) -> dict:
    prog = {"ops": 1, "ld_bytes": nbytes, "ld_sector_bytes": nbytes, "ld_runs": nbytes // 256,
            "st_bytes": bm * d * 2, "st_sector_bytes": bm * d * 2, "st_runs": bm, "out_bytes": bm * d * 2,
            "dot_flops": flops, "elem": flops // 50, "trans": flops // 500, "reduce": 0, "atomics": 0}
    return {"kernel": "k", "grid": [programs, 1, 1], "programs": programs, "sampled": 3, "num_warps": 4,
            "num_stages": 2, "dot_sites": {f"{bm}x{d}x{bn}:16": flops // 2, f"{bm}x{bn}x{d}:16": flops // 2},
            "max_tile": bm * d, "per_program": [dict(prog) for _ in range(3)]}


def test_throughputs_stay_within_peaks_on_measured_work() -> None:
    source = asset_path("extend_attention.py").read_text()
    for seed in (0, 1, 7):
        simx = Simx(seed)
        for programs, bm, bn in ((64, 32, 32), (4096, 64, 64), (300, 128, 64)):
            for shape in BENCH_SHAPES:
                d = shape.head_dim
                measured = {"launches": [_launch(programs, bm, bn, d, 4 * bm * bn * d * 40,
                                                 2 * bn * d * 2 * 40)], "torch": []}
                c = simx.cost(shape, measured)
                cfg = {**SIMX_DEFAULTS, "BLOCK_M": bm, "BLOCK_N": bn}
                lines = profile_sections(simx.device, shape, "measured", cfg, c, 1.0, source, persistent=False)
                for line in lines:
                    m = re.match(r"\s+(.+?)\s+%\s+([\d.]+)$", line)
                    if m:
                        assert 0.0 <= float(m.group(2)) <= 100.0, (seed, shape.name, line)
                text = "\n".join(lines)
                m = re.search(r"Achieved FP16 Throughput\s+Tflop/s\s+([\d.]+)", text)
                assert m is not None and float(m.group(1)) <= simx.device.tflops, (seed, shape.name)
