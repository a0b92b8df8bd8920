"""The detailed sections of a ``profile`` report: an Nsight-Compute-style view of SIMX-1's model.

Every number here is derived, deterministically, from the simulated cost of one shape
(:class:`~ctxmem.workloads.kernel.simx.ShapeCost`: the candidate's work as measured in the
instrumented interpreter, priced on the hidden device), the device and the launch config;
the source hotspots also read the candidate's source (which lines load, multiply,
exponentiate, store). No hardware counter is read and the report says so. Section and
metric names follow Nsight Compute so that the report reads like one, with SIMX-1's words
(CU, not SM). The ``scale`` argument divides work counts; the tools pass 1.0 (measured
work is the work), so achieved throughput never exceeds the device's peaks.

Conventions: SIMX-1 has 4 warp schedulers per CU and a nominal 1.50 GHz clock (a
presentation constant: elapsed cycles are ``duration × 1500``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ctxmem.workloads.kernel.simx import BenchShape, Device, ShapeCost, occupancy_limits

CLOCK_MHZ = 1500
SCHEDULERS_PER_CU = 4
L2_BW_FACTOR = 2.6  # L2 bandwidth, in DRAM peaks
L1_BW_FACTOR = 5.5


def _table(title: str, rows: list[tuple[str, str, str]]) -> list[str]:
    w_name = max(len("Metric Name"), *(len(r[0]) for r in rows))
    w_unit = max(len("Metric Unit"), *(len(r[1]) for r in rows))
    w_val = max(len("Metric Value"), *(len(r[2]) for r in rows))
    rule = f"    {'-' * w_name} {'-' * w_unit} {'-' * w_val}"
    out = [f"  Section: {title}", rule,
           f"    {'Metric Name':<{w_name}} {'Metric Unit':<{w_unit}} {'Metric Value':>{w_val}}", rule]
    out += [f"    {n:<{w_name}} {u:<{w_unit}} {v:>{w_val}}" for n, u, v in rows]
    out.append(rule)
    return out


def _n(x: float) -> str:
    """A count with thousands separators."""
    return f"{round(x):,}"


def _p(x: float) -> str:
    return f"{x:.2f}"


def _clamp(x: float, hi: float = 97.5) -> float:
    return max(0.0, min(hi, x))


def profile_sections(device: Device, shape: BenchShape, arch: str, cfg: Mapping[str, int],
                     c: ShapeCost, scale: float, source: str, *, persistent: bool) -> list[str]:
    """The report's detailed sections (lines), after the summary rows."""
    bm, bn, warps, stages = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["num_warps"], cfg["num_stages"]
    d = shape.head_dim
    splits = max(1, cfg.get("SPLITS", 1)) if arch in ("split_kv", "combined", "dispatch") else 1
    res = c.resources
    k = max(scale, 1e-9)
    time_us = max(c.time_us, 1e-9)
    body = max(c.time_us - c.overhead_us, 1e-9)

    # effective work of one launch
    flops = c.flops / k
    kv_logical = c.kv_bytes / 0.6 / k  # K/V bytes requested from L2 (before L2 reuse)
    kv_dram = c.kv_bytes / k
    gather = c.gather_bytes / k
    qo = c.qo_bytes / k
    split = c.split_bytes / k
    spill = c.spill_traffic / k
    index_bytes = 4.0 * c.prefix_keys * c.head_programs / k
    dram_read = kv_dram + gather + qo / 2 + split / 2 + spill / 2 + index_bytes * 0.25
    dram_write = qo / 2 + split / 2 + spill / 2
    dram_total = max(dram_read + dram_write, 1.0)
    l2_read = kv_logical + gather + qo / 2 + split / 2 + spill / 2 + index_bytes
    l2_total = l2_read + dram_write
    l1_requests = l2_read + 3.0 * index_bytes  # slot indices: reloaded for K, V and the mask
    l1_hit = 3.0 * index_bytes / max(l1_requests, 1.0)
    l2_hit = max(0.0, 1.0 - dram_read / max(l2_read, 1.0))
    smem_store = kv_logical + bm * d * 2.0 * c.programs / k
    smem_load = kv_logical * max(1, warps // 2)
    conflict_ways = 4 if c.bank_conflict else 1

    comp_busy = min(1.0, c.compute_us / time_us)
    mem_busy = min(1.0, c.memory_us / time_us)
    dram_pct = _clamp(100 * mem_busy * c.memory_eff)
    l2_pct = _clamp(dram_pct * l2_total / dram_total / L2_BW_FACTOR)
    l1_pct = _clamp(dram_pct * (l1_requests + smem_load * conflict_ways) / dram_total / L1_BW_FACTOR)
    tensor_pct = _clamp(100 * comp_busy * c.compute_eff / c.slow)
    sm_pct = _clamp(100 * comp_busy * (0.4 + 0.6 * c.compute_eff))
    mem_pct = max(dram_pct, l2_pct, l1_pct)
    cycles = time_us * CLOCK_MHZ

    out: list[str] = ["", "  simulated profile · SIMX-1 cost model, metric names after Nsight Compute "
                      "(not a measurement)", ""]

    # -- speed of light -------------------------------------------------------------------
    out += _table("GPU Speed Of Light Throughput", [
        ("CU Frequency", "Ghz", f"{CLOCK_MHZ / 1000:.2f}"),
        ("Elapsed Cycles", "cycle", _n(cycles)),
        ("Duration", "us", f"{time_us:.2f}"),
        ("Memory Throughput", "%", _p(mem_pct)),
        ("DRAM Throughput", "%", _p(dram_pct)),
        ("L1/TEX Cache Throughput", "%", _p(l1_pct)),
        ("L2 Cache Throughput", "%", _p(l2_pct)),
        ("Compute (CU) Throughput", "%", _p(sm_pct)),
    ])
    if max(sm_pct, mem_pct) >= 60:
        side = "compute" if sm_pct >= mem_pct else "memory"
        out.append(f"    OPT   {side.capitalize()} is the busier unit at {max(sm_pct, mem_pct):.1f}% of "
                   f"its peak. Look at the {'Compute' if side == 'compute' else 'Memory'} Workload "
                   "Analysis section for the pipes or caches it saturates.")
    else:
        out.append(f"    OPT   This kernel exhibits low compute throughput ({sm_pct:.1f}%) and memory "
                   f"bandwidth utilization ({mem_pct:.1f}%) relative to the peaks: achieved "
                   "performance is limited by latency — see Scheduler and Warp State Statistics.")
    intensity = flops / dram_total
    ridge = device.tflops * 1e12 / (device.dram_gbps * 1e9)
    achieved_tf = flops / (time_us * 1e-6) / 1e12
    out.append(f"    INF   Roofline: arithmetic intensity {intensity:.1f} FLOP/byte (DRAM), ridge point "
               f"{ridge:.1f} FLOP/byte: the {'compute' if intensity >= ridge else 'memory'} side of the "
               f"roofline; {achieved_tf:.1f} TFLOP/s achieved ({tensor_pct:.1f}% of the fp16 MMA peak).")
    out.append("")

    # -- memory ---------------------------------------------------------------------------
    mb = 1e6
    out += _table("Memory Workload Analysis", [
        ("Memory Throughput", "Gbyte/s", f"{dram_total / (time_us * 1e-6) / 1e9:,.1f}"),
        ("DRAM Read", "Mbyte", f"{dram_read / mb:,.2f}"),
        ("DRAM Write", "Mbyte", f"{dram_write / mb:,.2f}"),
        ("L2 Read Requests (from L1)", "Mbyte", f"{l2_read / mb:,.2f}"),
        ("L2 Hit Rate", "%", _p(100 * l2_hit)),
        ("L1/TEX Requests (global)", "Mbyte", f"{l1_requests / mb:,.2f}"),
        ("L1/TEX Hit Rate", "%", _p(100 * l1_hit)),
        ("Index-Table Loads (req_to_token)", "Mbyte", f"{index_bytes / mb:,.2f}"),
        ("Gathered K/V Excess Sectors", "Mbyte", f"{gather / mb:,.2f}"),
        ("Local Memory Traffic (spills)", "Mbyte", f"{spill / mb:,.2f}"),
        ("Split-KV Partials (write + reload)", "Mbyte", f"{split / mb:,.2f}"),
        ("Mem Busy", "%", _p(_clamp(100 * mem_busy))),
        ("Max Bandwidth", "%", _p(mem_pct)),
    ])
    prefix_share = c.prefix_keys / c.keys_total if c.keys_total else 0.0
    if prefix_share > 0:
        sector_eff = 100 * (kv_dram * prefix_share) / max(kv_dram * prefix_share + gather, 1.0)
        out.append(f"    INF   {100 * prefix_share:.1f}% of the keys are gathered through the index table; "
                   f"those loads use {sector_eff:.1f}% of each fetched sector (scattered pool rows).")
    out.append("")
    ideal_wf = (smem_load + smem_store) / 128
    out += _table("Shared Memory", [
        ("Shared Store (K/V stages, Q tile)", "Mbyte", f"{smem_store / mb:,.2f}"),
        ("Shared Load (MMA operands)", "Mbyte", f"{smem_load / mb:,.2f}"),
        ("Ideal Wavefronts", "", _n(ideal_wf)),
        ("Wavefronts", "", _n(ideal_wf * conflict_ways)),
        ("Bank Conflicts", "", _n(ideal_wf * (conflict_ways - 1))),
        ("Bank Conflict Ways (K/V tile loads)", "way", str(conflict_ways)),
        ("Shared Memory Per Block (static)", "byte", _n(res.smem)),
        ("Pipeline Stages Resident", "", str(stages)),
    ])
    if c.bank_conflict:
        out.append(f"    OPT   {conflict_ways}-way bank conflicts on the K/V tile loads (head_dim {d}, "
                   f"BLOCK_N {bn}): {100 * (1 - 1 / conflict_ways):.0f}% of shared wavefronts are replays.")
    out.append("")

    # -- compute --------------------------------------------------------------------------
    issue = min(0.95, 0.12 + 0.85 * max(sm_pct, l1_pct) / 100)
    scale_d = 128 / d
    pipes = [
        ("Tensor (FP16 MMA) Pipe Utilization", tensor_pct),
        ("FMA Pipe Utilization", _clamp(tensor_pct * scale_d * 0.38 + 3)),
        ("ALU Pipe Utilization", _clamp(tensor_pct * scale_d * 0.27 + 4)),
        ("XU (MUFU.EX2) Pipe Utilization", _clamp(tensor_pct * scale_d * 0.52)),
        ("LSU Pipe Utilization", _clamp(l1_pct * 0.8)),
    ]
    out += _table("Compute Workload Analysis", [
        ("Executed Ipc Active", "inst/cycle", _p(SCHEDULERS_PER_CU * issue)),
        ("Issue Slots Busy", "%", _p(100 * issue)),
        ("FP16 FLOPs (MMA)", "Gflop", f"{flops / 1e9:,.2f}"),
        ("Achieved FP16 Throughput", "Tflop/s", f"{achieved_tf:.1f}"),
        *[(name, "%", _p(v)) for name, v in pipes],
    ])
    top_pipe = max(pipes, key=lambda p: p[1])
    out.append(f"    INF   The busiest pipe is {top_pipe[0].replace(' Utilization', '')} at "
               f"{top_pipe[1]:.1f}%.")
    out.append("")

    elements = flops / (4 * d)  # attention scores computed
    key_blocks = c.keys_total * c.head_programs / bn / k
    async_copy = stages >= 2
    g_bytes = kv_logical + gather + index_bytes + qo / 2 + split / 2
    insts = [
        ("HMMA.16816.F32.F16", flops / 4096),
        ("MUFU.EX2", elements / 32 * 1.02),
        ("FFMA / FMUL", elements * 3 / 32),
        ("FADD / FMNMX", elements * 2 / 32),
        ("LDGSTS (async copy)" if async_copy else "LDG", g_bytes / (32 * 16)),
        ("LDSM (ldmatrix)", smem_load / (32 * 16)),
        ("STS", 0.0 if async_copy else smem_store / (32 * 16)),
        ("STG", (qo / 2 + split / 2) / (32 * 16)),
        ("LDL / STL (spills)", spill / (32 * 4)),
        ("BAR.SYNC", 2 * key_blocks),
    ]
    total_inst = sum(v for _, v in insts)
    out += _table("Instruction Statistics", [
        ("Executed Instructions (warp)", "inst", _n(total_inst)),
        *[(f"  {name}", "inst", f"{_n(v)} ({100 * v / max(total_inst, 1):.1f}%)") for name, v in insts],
    ])
    out.append("")

    # -- launch ---------------------------------------------------------------------------
    threads = 32 * warps
    grid = min(c.slots, c.programs) if persistent else c.programs
    regs = min(res.regs, device.reg_cap)
    local_per_thread = res.spill_bytes // threads if res.spill_bytes else 0
    launch_rows = [
        ("Block Size", "", _n(threads)),
        ("Grid Size", "", _n(grid)),
        ("Registers Per Thread", "register/thread", str(regs)),
        ("Local Memory Per Thread (spill)", "byte/thread", _n(local_per_thread)),
        ("Static Shared Memory Per Block", "byte/block", _n(res.smem)),
        ("Shared Memory Configuration Size", "Kbyte", f"{device.smem_per_cu / 1024:.0f}"),
        ("# CUs", "CU", str(device.compute_units)),
        ("Threads", "thread", _n(grid * threads)),
        ("Waves Per CU", "", f"{c.waves:.2f}"),
        ("Programs (tiles x heads x splits)", "", _n(c.programs)),
    ]
    if splits > 1:
        rows_out = sum(shape.extend_lens) * shape.num_q_heads
        launch_rows.append(("Split-KV Reduce Launch (rows x partials)", "", f"{_n(rows_out)} x {splits}"))
    out += _table("Launch Statistics", launch_rows)
    if not persistent and c.utilization < 0.9:
        out.append(f"    OPT   A partial wave: the last of {math.ceil(c.waves)} waves keeps "
                   f"{100 * c.utilization:.1f}% of the slots busy (grid {_n(grid)}, "
                   f"{c.slots} slots).")
    out.append("")

    # -- occupancy ------------------------------------------------------------------------
    limits = occupancy_limits(device, regs, res.smem, warps)
    theo_warps = res.occupancy * warps
    theo_pct = 100 * theo_warps / device.max_warps_per_cu
    achieved = theo_pct * min(0.97, 0.62 + 0.3 * c.utilization + 0.06 * min(1.0, c.waves))
    if c.bound.startswith("latency"):
        achieved *= max(0.3, max(c.compute_us, c.memory_us) / max(c.longest_us, 1e-9))
    ach_warps = theo_warps * achieved / max(theo_pct, 1e-9)
    names = {"registers": "Block Limit Registers", "shared memory": "Block Limit Shared Mem",
             "warps": "Block Limit Warps", "blocks": "Block Limit CU"}
    occ_rows = [(names[key] + (" <- limiter" if key == res.limiter else ""), "block", str(v))
                for key, v in limits.items()]
    occ_rows += [
        ("Theoretical Active Warps per CU", "warp", str(theo_warps)),
        ("Theoretical Occupancy", "%", _p(theo_pct)),
        ("Achieved Active Warps Per CU", "warp", _p(ach_warps)),
        ("Achieved Occupancy", "%", _p(achieved)),
    ]
    out += _table("Occupancy", occ_rows)
    if theo_pct < 50:
        out.append(f"    OPT   Theoretical occupancy {theo_pct:.1f}%: the {res.limiter} limiter allows "
                   f"{res.occupancy} block(s) of {warps} warps per CU.")
    if theo_pct - achieved > 10:
        out.append(f"    OPT   Achieved occupancy is {theo_pct - achieved:.1f} points below theoretical: "
                   "tail waves and uneven programs (ragged extends) leave slots idle.")
    out.append("")

    # -- scheduler and warp state -----------------------------------------------------------
    active = ach_warps / SCHEDULERS_PER_CU
    eligible = active * issue * 0.55
    out += _table("Scheduler Statistics", [
        ("One or More Eligible", "%", _p(100 * issue)),
        ("No Eligible", "%", _p(100 * (1 - issue))),
        ("Active Warps Per Scheduler", "warp", _p(active)),
        ("Eligible Warps Per Scheduler", "warp", _p(eligible)),
        ("Issued Warp Per Scheduler", "", _p(issue)),
    ])
    out.append(f"    INF   Every scheduler issues in {100 * issue:.1f}% of cycles; "
               f"{100 * (1 - issue):.1f}% of cycles have no eligible warp.")
    out.append("")

    cpi = max(1.5, active / max(issue, 1e-3))
    gather_us = c.gather_us
    stalls = {
        "Stall Long Scoreboard": (c.memory_us - gather_us) * (1.25 if stages == 1 else 0.7)
        + gather_us * 1.4,
        "Stall LG Throttle": body * (spill / dram_total) * 2 + 0.04 * mem_busy * body,
        "Stall MIO Throttle": c.compute_us * (0.55 if c.bank_conflict else 0.06),
        "Stall Short Scoreboard": c.compute_us * (0.10 + (0.2 if c.bank_conflict else 0.0)),
        "Stall Math Pipe Throttle": c.compute_us * c.compute_eff * 0.5,
        "Stall Barrier": body * 0.12 / stages + (0.1 * body if warps == 8 and bm <= 32 else 0.0),
        "Stall Wait": body * 0.06,
        "Stall Not Selected": body * 0.04 * min(2.0, ach_warps / 16),
        "Stall Branch Resolving": body * 0.02,
        "Stall No Instruction": c.overhead_us * 0.5 + body * (1 - c.utilization) * 0.3,
        "Stall Dispatch Stall": body * 0.01,
    }
    weight = sum(stalls.values()) or 1.0
    rows = sorted(((name, (cpi - 1) * v / weight) for name, v in stalls.items()), key=lambda r: (-r[1], r[0]))
    out += _table("Warp State Statistics", [
        ("Warp Cycles Per Issued Instruction", "cycle", _p(cpi)),
        ("Warp Cycles Per Executed Instruction", "cycle", _p(cpi * 1.01)),
        ("Selected (issuing)", "cycle", "1.00"),
        *[(name, "cycle", f"{v:.2f} ({100 * v / cpi:.1f}%)") for name, v in rows],
    ])
    out.append(f"    OPT   On average each warp spends {rows[0][1]:.2f} of its {cpi:.2f} cycles between "
               f"instructions in {rows[0][0].replace('Stall ', '')} "
               f"({100 * rows[0][1] / cpi:.1f}% of the total).")
    out.append("")

    # -- source ---------------------------------------------------------------------------
    out += _hotspots(source, c, prefix_share, qo, split, dram_total, stalls)
    return out


# -- source-level hotspots --------------------------------------------------------------------

_FOR = re.compile(r"^(\s*)for\s+\w+\s+in\s+(?:tl\.)?(?:static_)?range\((.*)")


def _categorize(line: str) -> str | None:
    s = line.strip()
    if s.startswith("#"):
        return None
    if "tl.load(" in s and re.match(r"slots\b|idx\b|index\b", s):
        return "index"
    if "tl.load(" in s and re.match(r"(k|v|k_\w+|v_\w+)\s*=", s):
        return "kv"
    if "tl.load(" in s and re.match(r"q\s*=", s):
        return "q"
    if "tl.dot(" in s:
        return "mma"
    if "tl.exp(" in s or "tl.max(" in s or "tl.sum(" in s:
        return "softmax"
    if "_online_softmax_step(" in s and "def " not in s:
        return "softmax_call"
    if "tl.store(" in s:
        return "store"
    if _FOR.match(line):
        return "loop"
    return None


def _loops(lines: list[str]) -> list[tuple[int, int, bool]]:
    """(first line, last line, is the prefix loop) of every ``for`` loop, 0-based."""
    out = []
    for i, line in enumerate(lines):
        m = _FOR.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        end = i
        for j in range(i + 1, len(lines)):
            text = lines[j]
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            end = j
        out.append((i, end, "prefix" in m.group(2)))
    return out


def _hotspots(source: str, c: ShapeCost, prefix_share: float, qo: float, split: float,
              dram_total: float, stalls: Mapping[str, float]) -> list[str]:
    lines = source.splitlines()
    loops = _loops(lines)
    cats: dict[int, str] = {}
    for i, line in enumerate(lines):
        cat = _categorize(line)
        if cat is not None:
            cats[i] = cat
    if not cats:
        return []

    def in_prefix(i: int) -> bool | None:
        inner = [lp for lp in loops if lp[0] < i <= lp[1]]
        return inner[-1][2] if inner else None

    kv_us = max(0.0, c.memory_us - c.gather_us) * (1 - (qo + split) / dram_total)
    budget = {
        "index": c.gather_us * 0.35 + c.memory_us * 0.02,
        "kv": kv_us + c.gather_us * 0.65,
        "q": c.memory_us * qo / 2 / dram_total,
        "store": c.memory_us * (qo / 2 + split) / dram_total,
        "mma": c.compute_us * 0.62,
        "softmax": c.compute_us * 0.30,
        "softmax_call": c.compute_us * 0.04,
        "loop": stalls.get("Stall Barrier", 0.0) + stalls.get("Stall Branch Resolving", 0.0),
    }
    reason = {"index": "Long Scoreboard", "kv": "Long Scoreboard", "q": "Long Scoreboard",
              "store": "LG Throttle", "mma": "Math Pipe Throttle", "softmax": "Short Scoreboard",
              "softmax_call": "Wait", "loop": "Barrier"}
    if c.bank_conflict:
        reason["mma"] = "MIO Throttle"
    # split each category's budget over its lines, by the loop they sit in
    weights: dict[int, float] = {}
    for cat in budget:
        members = [i for i, ct in cats.items() if ct == cat]
        if not members:
            continue
        shares = []
        for i in members:
            own = [lp for lp in loops if lp[0] == i]
            where = own[0][2] if own else in_prefix(i)
            if cat == "index" or where is None:
                shares.append(1.0)
            else:
                shares.append(prefix_share if where else 1 - prefix_share)
        total = sum(shares) or float(len(members))
        for i, sh in zip(members, shares, strict=True):
            weights[i] = budget[cat] * (sh if sum(shares) else 1.0) / total
    overhead = c.overhead_us
    grand = sum(weights.values()) + overhead
    if grand <= 0:
        return []
    top = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
    out = ["  Section: Source Counters (sampled warp stalls by source line, simulated)",
           "    line   samples  top stall reason      source",
           "    -----  -------  --------------------  " + "-" * 60]
    for i, w in top:
        text = lines[i].strip()
        if len(text) > 60:
            text = text[:57] + "..."
        out.append(f"    {i + 1:>5}  {100 * w / grand:>6.1f}%  {reason[cats[i]]:<20}  {text}")
    out.append(f"    {'-':>5}  {100 * overhead / grand:>6.1f}%  {'(launch, prologue)':<20}  "
               "no source line: kernel launch and per-wave prologue")
    return out
