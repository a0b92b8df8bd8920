"""SIMX-1: a seeded, *simulated* accelerator that prices what a kernel measurably does.

SIMX-1 is not a GPU emulator and it reads no declaration. ``instrument.py`` runs the
candidate in the Triton interpreter on each benchmark shape's real grid (sampled programs,
sampled loop iterations) and counts what it does; this module turns those counts into time
on a hidden, seeded device. An ``ARCH`` line or any other comment is never read: two
sources that do the same work cost the same, whatever they say about themselves.
Correctness is never simulated: it always comes from the real Triton interpreter.

Measured, per launch (``instrument.py``): programs launched (the grid), ``num_warps`` and
``num_stages`` as launched, the shape of every ``tl.dot`` (M×K×N, element bits), and per
program: load/store bytes enabled by the masks, the same rounded to 32-byte sectors per
contiguous run, the number of runs, dot FLOPs, elementwise and transcendental element-ops.
Outside the kernels: every torch operation of the launch wrapper with its bytes.

Hidden device parameters, drawn from ``random.Random(f"ctxmem-simx:{seed}")``:

=====================  ===========================================================
``compute_units``      64–144 (step 4)
``smem_limit``         shared memory per block: an odd number of KiB in 97–159
``smem_per_cu``        1.5 × ``smem_limit`` (rounded down to a KiB)
``reg_cap``            registers per thread: 128–255
``max_warps_per_cu``   32, 48 or 64 (65,536 registers per CU)
``dram_gbps``          1,600–3,550 GB/s
``l2_gain``            1.3–2.0: requested bytes served per DRAM byte (L2 reuse)
``tflops``             180–690 dense fp16 TFLOP/s (tl.dot)
``vector_tops``        elementwise element-ops per second: 1/24–1/12 of ``tflops``
``sfu_tops``           transcendental element-ops per second: 1/4 of ``vector_tops``
``run_bytes``          cost of one contiguous run (a row activation), 32–96 bytes
``launch_us``          3–7 µs per kernel launch
``program_us``         0.2–0.6 µs of a slot to start and retire one program
``torch_op_us``        1.0–2.5 µs per torch operation of the launch wrapper
quirks                 2 or 3 of: ``spill_cliff`` (a tl.dot B tile above 8192–12288
                       elements spills: ×1.6 compute), ``bank_conflict`` (a B tile of
                       head_dim × 16 or × 64: ×1.45 compute), ``stages_cap``
                       (num_stages > 2 hides no more latency), ``warp_serialize``
                       (num_warps = 8 on dot tiles of ≤ 32 rows: ×1.3 compute)
=====================  ===========================================================

The device model, per launch (``w`` warps, ``s`` stages; sites = distinct dot shapes):

==================  ===================================================================
shared memory       ``Σ_sites (M·K + s·K·N) · bits/8`` per block (the A tile once, the
                    streamed B tile per stage); over ``smem_limit`` → ``OutOfResources``
registers/thread    ``32 + ceil(Σ_sites (M·N + M·K/2) / (32·w))`` (no dot: the largest
                    loaded tile); above ``reg_cap`` spills: compute × (1 + 0.01/reg)
occupancy           blocks/CU = min(smem_per_cu // smem, 65536 // (regs·32w),
                    max_warps // w, 16); slots ``S`` = CUs × occupancy
work                totals = programs × mean over sampled programs, scaled up by the
                    ratio of true to sampled bytes stored into ``out``, summed over the
                    shape's launches (never down)
compute             ``F / (tflops · mma · warp · lat) · slow + E / (vector · lat) +
                    X / (sfu · lat)``; mma = FLOP-weighted ``(min(M,64)/64)^0.6 ·
                    (min(N,64)/64)^0.4``, warp = ``min(1, M/(16w))``, lat = ``min(1, 0.5 +
                    warps_per_CU/32)``
memory              ``(sector bytes + runs · run_bytes + spills) / (dram · l2_gain · eff)``,
                    eff = ``min(0.92, 0.25 + 0.06 · warps_per_CU · stage_gain)``; stage_gain
                    1, 1.6, 1.9 for s = 1, 2, ≥ 3 (``stages_cap``: at most 1.6)
grid                waves ``N / S``, utilization ``waves / ceil(waves)`` (a partial wave
                    leaves slots idle; fewer programs than slots leave them idle too)
longest program     the longest sampled program on one slot's share of the device
time                ``launch_us + max(max(compute, memory) / util, longest) + N ·
                    program_us / S``, summed over launches, plus torch operations
                    (``torch_op_us`` + bytes at DRAM speed each)
==================  ===================================================================

**Reference.** The speedup's denominator is the original kernel (``assets/
extend_attention.py``) measured the same way at its best launch config on this device
(BLOCK_M, BLOCK_N over {16, 32, 64, 128}, num_warps × num_stages over the model), so
re-tuning the original earns nothing: speed has to come from code that does less work or
uses the device better. There are no pinned plateaus: each rung's speedup is whatever its
measured work costs on the seed's device.
"""

from __future__ import annotations

import ast
import itertools
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

SIMX_VERSION = 3  # 3: the out-bytes sample correction is one ratio per shape (out_shares)
DEVICE_NAME = "SIMX-1"

# The launch keys: a config holds only these (a kernel's other constants live in its source).
# An unknown key was once passed to launch() untouched, which let a config carry free text
# into the tool output that the run's scores are read from (a key ``tag="FAILED"`` hid a
# benchmark from ``best_seen``), and a dummy integer key made a repeated config look new.
CONFIG_SPACE: dict[str, tuple[int, ...]] = {
    "BLOCK_M": (16, 32, 64, 128),
    "BLOCK_N": (16, 32, 64, 128),
    "num_warps": (2, 4, 8),
    "num_stages": (1, 2, 3, 4),
    "PACK": (1, 2, 4, 8),
    "SPLITS": (1, 2, 4, 8),
    "PROGRAMS": (64, 128, 256, 512, 1024),
}
SIMX_DEFAULTS: dict[str, int] = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
REFERENCE_CONFIG: dict[str, int] = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
# The configs of the original kernel the reference is the best of.
REFERENCE_TILES: tuple[tuple[int, int], ...] = tuple(
    itertools.product(CONFIG_SPACE["BLOCK_M"], CONFIG_SPACE["BLOCK_N"]))


# -- benchmark shapes -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchShape:
    """A serving-sized extend batch (fp16), for speed only — never for correctness."""

    name: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    prefix_lens: tuple[int, ...]
    extend_lens: tuple[int, ...]

    @property
    def group(self) -> int:
        return self.num_q_heads // self.num_kv_heads

    def case_dict(self, seed: int = 0) -> dict[str, Any]:
        """The shape as a case for ``reference.build_inputs`` (GPU mode)."""
        return {
            "name": self.name, "num_q_heads": self.num_q_heads,
            "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "prefix_lens": list(self.prefix_lens), "extend_lens": list(self.extend_lens),
            "dtype": "float16", "soft_cap": 0.0, "window": 0, "seed": seed,
        }


BENCH_SHAPES: tuple[BenchShape, ...] = (
    BenchShape("prefill_2k", 32, 8, 128, (0, 0), (2048, 1536)),
    BenchShape("chunked_prefill", 32, 8, 128, (4096, 2048, 8192, 1024), (512, 512, 512, 512)),
    BenchShape("mixed_extend", 32, 8, 128, (0, 3000, 6000, 120, 900, 4500, 2200, 64),
               (700, 32, 16, 450, 128, 64, 300, 24)),
    BenchShape("spec_decode", 32, 8, 128, (1000, 2000, 4000, 8000, 16000, 3000, 6000, 12000) * 2,
               (4,) * 16),
    BenchShape("long_context", 64, 8, 128, (32768,), (256,)),
    BenchShape("gqa_d64", 16, 2, 64, (512, 1024, 2048, 4096, 256, 768, 1536, 3072),
               (256, 128, 64, 32, 512, 256, 128, 64)),
)


# -- the device ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quirk:
    name: str
    params: tuple[tuple[str, int], ...]

    def get(self, key: str) -> int:
        return dict(self.params)[key]

    def describe(self) -> str:
        p = dict(self.params)
        if self.name == "spill_cliff":
            return f"spill_cliff: a tl.dot B tile of more than {p['threshold']} elements spills (x1.6 compute)"
        if self.name == "bank_conflict":
            return (f"bank_conflict: a tl.dot B tile of {p['head_dim']} x {p['block_n']} "
                    "gives 4-way shared-memory bank conflicts (x1.45 compute)")
        if self.name == "stages_cap":
            return "stages_cap: num_stages > 2 hides no more latency than 2"
        return "warp_serialize: num_warps 8 on tl.dot tiles of <= 32 rows serializes warps (x1.3 compute)"


@dataclass(frozen=True, slots=True)
class Device:
    seed: int
    compute_units: int
    smem_limit: int
    smem_per_cu: int
    reg_cap: int
    max_warps_per_cu: int
    dram_gbps: int
    l2_gain: float
    tflops: int
    vector_tops: float
    sfu_tops: float
    run_bytes: int
    launch_us: float
    program_us: float
    torch_op_us: float
    quirks: tuple[Quirk, ...]

    regs_per_cu: int = 65536
    max_blocks_per_cu: int = 16

    @classmethod
    def from_seed(cls, seed: int) -> Device:
        rng = random.Random(f"ctxmem-simx:{seed}")
        smem_kib = rng.choice(range(97, 160, 2))
        quirk_pool = [
            Quirk("spill_cliff", (("threshold", rng.choice((8192, 10240, 12288))),)),
            Quirk("bank_conflict", (("head_dim", rng.choice((64, 128))),
                                    ("block_n", rng.choice((16, 64))))),
            Quirk("stages_cap", ()),
            Quirk("warp_serialize", ()),
        ]
        k = rng.choice((2, 3))
        quirks = tuple(sorted(rng.sample(quirk_pool, k), key=lambda q: q.name))
        tflops = rng.randrange(180, 700, 10)
        vector = tflops / rng.uniform(12.0, 24.0)
        return cls(
            seed=seed,
            compute_units=rng.randrange(64, 145, 4),
            smem_limit=smem_kib * 1024,
            smem_per_cu=(smem_kib * 3 // 2) * 1024,
            reg_cap=rng.choice((128, 160, 168, 192, 208, 232, 255)),
            max_warps_per_cu=rng.choice((32, 48, 64)),
            dram_gbps=rng.randrange(1600, 3600, 50),
            l2_gain=round(rng.uniform(1.3, 2.0), 2),
            tflops=tflops,
            vector_tops=round(vector, 2),
            sfu_tops=round(vector / 4, 2),
            run_bytes=rng.choice((32, 48, 64, 96)),
            launch_us=round(rng.uniform(3.0, 7.0), 1),
            program_us=round(rng.uniform(0.2, 0.6), 2),
            torch_op_us=round(rng.uniform(1.0, 2.5), 2),
            quirks=quirks,
        )

    def quirk(self, name: str) -> Quirk | None:
        return next((q for q in self.quirks if q.name == name), None)

    def secrets(self) -> dict[str, Any]:
        """Everything hidden, for tests, probes and scoring — never shown to the agent."""
        return {
            "compute_units": self.compute_units, "smem_limit": self.smem_limit,
            "smem_per_cu": self.smem_per_cu, "reg_cap": self.reg_cap,
            "max_warps_per_cu": self.max_warps_per_cu, "dram_gbps": self.dram_gbps,
            "l2_gain": self.l2_gain, "tflops": self.tflops, "vector_tops": self.vector_tops,
            "sfu_tops": self.sfu_tops, "run_bytes": self.run_bytes, "launch_us": self.launch_us,
            "program_us": self.program_us, "torch_op_us": self.torch_op_us,
            "quirks": [q.describe() for q in self.quirks],
        }


# -- reading a candidate ----------------------------------------------------------------


class KernelSourceError(ValueError):
    """The candidate's CONFIG constant cannot be read."""


def parse_config(source: str) -> dict[str, Any] | None:
    """The module-level literal ``CONFIG`` dict of a kernel source, read statically.

    Raises ``SyntaxError`` for unparsable source and :class:`KernelSourceError` for a
    ``CONFIG`` that is not a literal dict with str keys. Nothing else is read: an ``ARCH``
    line, a docstring or a comment changes no price.
    """
    tree = ast.parse(source)
    config: dict[str, Any] | None = None
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if not isinstance(target, ast.Name) or value is None or target.id != "CONFIG":
            continue
        try:
            literal = ast.literal_eval(value)
        except ValueError as exc:
            raise KernelSourceError(f"line {node.lineno}: CONFIG must be a literal dict") from exc
        if not isinstance(literal, dict) or not all(isinstance(k, str) for k in literal):
            raise KernelSourceError(f"line {node.lineno}: CONFIG must be a dict with str keys")
        config = literal
    return config


def code_of(source: str) -> str:
    """The source without its ``CONFIG`` literal when nothing else reads ``CONFIG``.

    The tools pass the launch config explicitly, so such a ``CONFIG`` line changes no work:
    measurements are shared across ``CONFIG`` edits and tool headers show the same sha for
    the same code. A source that reads ``CONFIG`` anywhere keeps it (it may act on it).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    reads = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "CONFIG"
             and isinstance(n.ctx, ast.Load)]
    if reads:
        return source
    lines = source.splitlines(keepends=True)
    for node in reversed(tree.body):
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "CONFIG" and node.end_lineno is not None:
            del lines[node.lineno - 1:node.end_lineno]
    return "".join(lines)


# -- errors the device reports ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutOfResources:
    resource: str
    required: int
    limit: int

    def line(self) -> str:
        return (
            f"triton.runtime.errors.OutOfResources: out of resource: {self.resource}, "
            f"Required: {self.required}, Hardware limit: {self.limit}. "
            "Reducing block sizes or `num_stages` may help."
        )


class InvalidConfig(ValueError):
    """A launch parameter SIMX-1 does not accept (message says which and why)."""


# -- the cost model ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resources:
    regs: int  # registers per thread the kernel needs
    spilled_regs: int
    spill_bytes: int  # per program (spilled registers × 4 B × threads, plus a cliff's K tile)
    smem: int  # bytes per block
    occupancy: int  # blocks per CU
    limiter: str  # what limits occupancy


@dataclass(frozen=True, slots=True)
class ShapeCost:
    """The simulated run of one shape: its time and the profiler's view of it."""

    shape: str
    time_us: float
    compute_us: float
    memory_us: float
    overhead_us: float
    programs: int
    slots: int
    waves: float
    utilization: float
    flops: float
    dram_bytes: float
    gather_bytes: float
    gather_us: float
    compute_eff: float
    memory_eff: float
    longest_us: float
    bound: str
    bank_conflict: bool
    spill_cliff: bool
    resources: Resources
    # the profiler's breakdown (raw model units: bytes and keys before the rung's scale)
    kv_bytes: float = 0.0  # K/V bytes from DRAM after L2 reuse, without the gather excess
    qo_bytes: float = 0.0
    split_bytes: float = 0.0
    spill_traffic: float = 0.0
    keys_total: float = 0.0  # Σ keys over one head-program's tiles, all requests
    prefix_keys: float = 0.0
    head_programs: int = 0
    slow: float = 1.0  # compute slowdown from spills and quirks
    launches: tuple[Any, ...] = ()  # LaunchCost per kernel launch
    torch_ops: int = 0
    torch_us: float = 0.0




def normalize_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The launch config as SIMX-1 runs it: defaults filled, every key known and validated."""
    out: dict[str, Any] = {**SIMX_DEFAULTS}
    for key, value in config.items():
        if key not in CONFIG_SPACE:
            raise InvalidConfig(f"unknown launch key {str(key)[:40]!r}: a config sets only "
                                f"{', '.join(CONFIG_SPACE)} (put other constants in the kernel's source)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidConfig(f"{key}={value!r}: must be an integer")
        if value not in CONFIG_SPACE[key]:
            allowed = ", ".join(map(str, CONFIG_SPACE[key]))
            raise InvalidConfig(f"{key}={value}: {DEVICE_NAME} accepts {key} in {{{allowed}}}")
        out[key] = value
    return out, []


def config_key(config: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={config[k]}" for k in sorted(config))


def _stage_gain(device: Device, stages: int) -> float:
    gain = {1: 1.0, 2: 1.6}.get(stages, 1.9)
    if device.quirk("stages_cap") is not None:
        gain = min(gain, 1.6)
    return gain


def occupancy_limits(device: Device, regs: int, smem: int, warps: int) -> dict[str, int]:
    """Blocks per CU each resource allows (``regs`` per thread as allocated, capped)."""
    return {
        "shared memory": device.smem_per_cu // max(smem, 1),
        "registers": device.regs_per_cu // (regs * 32 * warps),
        "warps": device.max_warps_per_cu // warps,
        "blocks": device.max_blocks_per_cu,
    }


@dataclass(frozen=True, slots=True)
class DotSite:
    m: int
    k: int
    n: int
    bits: int
    flops: float

    @classmethod
    def parse(cls, key: str, flops: float) -> DotSite:
        dims, bits = key.split(":")
        m, k, n = (int(x) for x in dims.split("x"))
        return cls(m, k, n, int(bits), flops)


def launch_resources(device: Device, sites: list[DotSite], max_tile: int, warps: int,
                     stages: int) -> Resources:
    threads = 32 * warps
    if sites:
        live = sum(s.m * s.n + s.m * s.k // 2 for s in sites)
        smem = sum((s.m * s.k + stages * s.k * s.n) * s.bits // 8 for s in sites)
    else:
        live = max_tile
        smem = 0
    regs = 32 + math.ceil(live / threads)
    spilled = max(0, regs - device.reg_cap)
    spill_bytes = spilled * 4 * threads
    cliff = device.quirk("spill_cliff")
    if cliff is not None:
        spill_bytes += sum(s.k * s.n * s.bits // 8 for s in sites if s.k * s.n > cliff.get("threshold"))
    limits = occupancy_limits(device, min(regs, device.reg_cap), smem, warps)
    limiter = min(limits, key=lambda k: (limits[k], list(limits).index(k)))
    return Resources(regs=regs, spilled_regs=spilled, spill_bytes=spill_bytes, smem=smem,
                     occupancy=max(1, limits[limiter]), limiter=limiter)


@dataclass(frozen=True, slots=True)
class LaunchCost:
    kernel: str
    programs: int
    sampled: int
    time_us: float
    compute_us: float
    memory_us: float
    overhead_us: float
    longest_us: float
    waves: float
    utilization: float
    slots: int
    flops: float
    bytes: float
    run_bytes: float
    compute_eff: float
    memory_eff: float
    slow: float
    bank_conflict: bool
    spill_cliff: bool
    resources: Resources
    warps: int
    stages: int


def out_estimate(launch: Mapping[str, Any]) -> float:
    """The launch's sampled estimate of the bytes it stores into ``out``."""
    pp = launch["per_program"]
    return launch["programs"] * sum(p.get("out_bytes", 0) for p in pp) / max(1, len(pp))


def out_shares(launches: list[Mapping[str, Any]], out_bytes: float) -> list[float]:
    """The bytes of ``out`` each launch is taken to write, for :func:`sample_scale`.

    A correct kernel writes every element of ``out`` once, but not necessarily from one
    launch (a split-KV kernel whose whole tiles write ``out`` and whose split tiles leave it
    to a reduce). Each launch's share is its part of the launches' summed estimates, so
    the correction is one ratio per shape: the true bytes of ``out`` over all launches'
    sampled estimates. (Before SIMX_VERSION 3 each launch was compared with the whole of
    ``out``, which priced a correct two-launch writer up to 4x.)
    """
    ests = [out_estimate(launch) for launch in launches]
    total = sum(ests)
    if total <= 0:
        return [out_bytes] * len(launches)
    return [out_bytes * e / total for e in ests]


def sample_scale(launch: Mapping[str, Any], out_bytes: float) -> float:
    """Ratio-estimator correction of a launch's sampled totals (never below 1).

    For a launch that stores into ``out``, the sampled estimate of those bytes against the
    true ``out_bytes`` it writes (its share, :func:`out_shares`) says how far the sample
    under-represents the grid (a ragged grid where most programs exit at once). Only
    under-representation is corrected: extra stores can never lower a price.
    """
    est = out_estimate(launch)
    if est <= 0 or out_bytes <= 0:
        return 1.0
    return min(4.0, max(1.0, out_bytes / est))


def price_launch(device: Device, launch: Mapping[str, Any], out_bytes: float = 0.0) -> LaunchCost:
    """Time of one measured launch on ``device`` (see the module docstring)."""
    n = int(launch["programs"])
    pp = launch["per_program"]
    k = max(1, len(pp))
    scale = sample_scale(launch, out_bytes)

    def total(key: str) -> float:
        return n * scale * sum(p[key] for p in pp) / k

    warps, stages = int(launch["num_warps"]), int(launch["num_stages"])
    sites = [DotSite.parse(key, fl) for key, fl in launch["dot_sites"].items()]
    res = launch_resources(device, sites, int(launch.get("max_tile", 0)), warps, stages)
    flops = total("dot_flops")
    sector_bytes = total("ld_sector_bytes") + total("st_sector_bytes")
    runs = total("ld_runs") + total("st_runs")
    elem, trans = total("elem"), total("trans")
    warps_per_cu = res.occupancy * warps
    lat = min(1.0, 0.5 + warps_per_cu / 32)
    site_flops = sum(s.flops for s in sites)
    if site_flops > 0:
        mma = sum(s.flops * (min(s.m, 64) / 64) ** 0.6 * (min(s.n, 64) / 64) ** 0.4 for s in sites) / site_flops
        dominant = max(sites, key=lambda s: s.flops)
        warp_eff = min(1.0, dominant.m / (16 * warps))
    else:
        mma, warp_eff, dominant = 1.0, 1.0, None
    slow = 1.0 + 0.01 * res.spilled_regs
    cliff = device.quirk("spill_cliff")
    spill_cliff = cliff is not None and any(s.k * s.n > cliff.get("threshold") for s in sites)
    if spill_cliff:
        slow *= 1.6
    bank = device.quirk("bank_conflict")
    bank_conflict = bank is not None and any(
        s.k == bank.get("head_dim") and s.n == bank.get("block_n") for s in sites)
    if bank_conflict:
        slow *= 1.45
    if (device.quirk("warp_serialize") is not None and warps == 8 and dominant is not None
            and dominant.m <= 32):
        slow *= 1.3
    compute_eff = mma * warp_eff * lat
    peak = device.tflops * 1e12
    compute_us = (flops / (peak * compute_eff) * slow + elem / (device.vector_tops * 1e12 * lat)
                  + trans / (device.sfu_tops * 1e12 * lat)) * 1e6
    memory_eff = min(0.92, 0.25 + 0.06 * warps_per_cu * _stage_gain(device, stages))
    bw = device.dram_gbps * 1e9 * device.l2_gain * memory_eff
    spill_traffic = res.spill_bytes * 2.0 * n * 0.25
    moved = sector_bytes + runs * device.run_bytes + spill_traffic
    memory_us = moved / bw * 1e6
    slots = device.compute_units * res.occupancy
    waves = n / slots
    util = waves / math.ceil(waves) if waves > 0 else 1.0
    longest = 0.0
    for p in pp:
        t_c = p["dot_flops"] / (peak * compute_eff / slots) * slow
        t_m = (p["ld_sector_bytes"] + p["st_sector_bytes"]) / (bw / slots)
        longest = max(longest, t_c, t_m)
    longest_us = longest * 1e6
    body = max(max(compute_us, memory_us) / util, longest_us)
    overhead = device.launch_us + n * device.program_us / slots
    return LaunchCost(
        kernel=str(launch["kernel"]), programs=n, sampled=len(pp), time_us=body + overhead,
        compute_us=compute_us, memory_us=memory_us, overhead_us=overhead, longest_us=longest_us,
        waves=waves, utilization=util, slots=slots, flops=flops, bytes=moved,
        run_bytes=runs * device.run_bytes, compute_eff=compute_eff, memory_eff=memory_eff,
        slow=slow, bank_conflict=bank_conflict, spill_cliff=spill_cliff, resources=res,
        warps=warps, stages=stages,
    )


def price_shape(device: Device, shape: BenchShape, measured: Mapping[str, Any]) -> ShapeCost:
    """A shape's simulated time from its measurement (launches + torch work)."""
    out_bytes = 2.0 * sum(shape.extend_lens) * shape.num_q_heads * shape.head_dim
    shares = out_shares(measured["launches"], out_bytes)
    launches = [price_launch(device, launch, share)
                for launch, share in zip(measured["launches"], shares, strict=True)]
    torch_ops = measured.get("torch", [])
    torch_us = sum(device.torch_op_us + op["bytes"] / (device.dram_gbps * 1e9 * 0.8) * 1e6
                   for op in torch_ops)
    if not launches:
        raise InvalidConfig(f"{shape.name}: the kernel launched no Triton kernel")
    main = max(launches, key=lambda c: c.time_us)
    time_us = sum(c.time_us for c in launches) + torch_us
    bound = "compute" if main.compute_us >= main.memory_us else "memory"
    if main.longest_us > max(main.compute_us, main.memory_us) / main.utilization:
        bound = "latency (longest program)"
    total_e = sum(shape.extend_lens)
    qo = 4.0 * total_e * shape.num_q_heads * shape.head_dim
    return ShapeCost(
        shape=shape.name, time_us=time_us, compute_us=sum(c.compute_us for c in launches),
        memory_us=sum(c.memory_us for c in launches),
        overhead_us=sum(c.overhead_us for c in launches) + torch_us,
        programs=sum(c.programs for c in launches), slots=main.slots, waves=main.waves,
        utilization=main.utilization, flops=sum(c.flops for c in launches),
        dram_bytes=sum(c.bytes for c in launches), gather_bytes=sum(c.run_bytes for c in launches),
        gather_us=sum(c.run_bytes / max(c.bytes, 1.0) * c.memory_us for c in launches),
        compute_eff=main.compute_eff, memory_eff=main.memory_eff, longest_us=main.longest_us,
        bound=bound, bank_conflict=any(c.bank_conflict for c in launches),
        spill_cliff=any(c.spill_cliff for c in launches), resources=main.resources,
        kv_bytes=max(0.0, main.bytes - qo - main.run_bytes), qo_bytes=qo,
        split_bytes=sum(c.bytes for c in launches if c is not main),
        spill_traffic=main.resources.spill_bytes * 0.5 * main.programs,
        keys_total=0.0, prefix_keys=0.0, head_programs=main.programs, slow=main.slow,
        launches=tuple(launches), torch_ops=len(torch_ops), torch_us=torch_us,
    )


def out_of_resources(device: Device, measured: Mapping[str, Mapping[str, Any]]) -> OutOfResources | None:
    """The first launch (largest shared memory first) that does not fit the device."""
    worst: OutOfResources | None = None
    for m in measured.values():
        for launch in m["launches"]:
            sites = [DotSite.parse(k, f) for k, f in launch["dot_sites"].items()]
            res = launch_resources(device, sites, int(launch.get("max_tile", 0)),
                                   int(launch["num_warps"]), int(launch["num_stages"]))
            if res.smem > device.smem_limit and (worst is None or res.smem > worst.required):
                worst = OutOfResources("shared memory", res.smem, device.smem_limit)
    return worst


class Simx:
    """SIMX-1 for one seed: the hidden device and the prices of measured work."""

    def __init__(self, seed: int):
        self.seed = seed
        self.device = Device.from_seed(seed)

    def cost(self, shape: BenchShape, measured: Mapping[str, Any]) -> ShapeCost:
        return price_shape(self.device, shape, measured)

    def times(self, measured: Mapping[str, Mapping[str, Any]]) -> list[tuple[BenchShape, float]]:
        return [(s, self.cost(s, measured[s.name]).time_us) for s in BENCH_SHAPES]

    def out_of_resources(self, measured: Mapping[str, Mapping[str, Any]]) -> OutOfResources | None:
        return out_of_resources(self.device, measured)


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else 0.0


def iter_space(keys: tuple[str, ...]) -> Iterator[dict[str, int]]:
    for values in itertools.product(*(CONFIG_SPACE[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))

