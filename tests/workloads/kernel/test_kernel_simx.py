"""SIMX-1 prices measured work: seeded, deterministic, monotone, blind to declarations."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ctxmem.workloads.kernel.instrument import screen_source, work_floors
from ctxmem.workloads.kernel.measure import check_floors
from ctxmem.workloads.kernel.simx import (
    BENCH_SHAPES,
    Device,
    InvalidConfig,
    KernelSourceError,
    Simx,
    normalize_config,
    out_shares,
    parse_config,
    price_launch,
    price_shape,
    sample_scale,
)
from ctxmem.workloads.kernel.variants import RUNGS, rung_source

SHAPE = BENCH_SHAPES[0]


def _launch(programs: int = 512, *, flops: int = 10**8, ld: int = 10**6, st: int = 16384,
            out: int = 16384, warps: int = 4, stages: int = 2, bm: int = 64, bn: int = 64,
            d: int = 128) -> dict[str, Any]:
    prog = {"ops": 100, "ld_bytes": ld, "ld_sector_bytes": ld, "ld_runs": ld // 256,
            "st_bytes": st, "st_sector_bytes": st, "st_runs": st // 256, "out_bytes": out,
            "dot_flops": flops, "elem": flops // 40, "trans": flops // 500, "reduce": 0, "atomics": 0}
    return {"kernel": "k", "grid": [programs, 1, 1], "programs": programs, "sampled": 4,
            "num_warps": warps, "num_stages": stages,
            "dot_sites": {f"{bm}x{d}x{bn}:16": flops // 2, f"{bm}x{bn}x{d}:16": flops // 2},
            "max_tile": bm * d, "per_program": [dict(prog) for _ in range(4)]}


def _measured(**kw: Any) -> dict[str, Any]:
    return {"launches": [_launch(**kw)], "torch": []}


def test_same_seed_same_device_and_prices() -> None:
    assert Device.from_seed(11) == Device.from_seed(11)
    assert Simx(11).cost(SHAPE, _measured()).time_us == Simx(11).cost(SHAPE, _measured()).time_us
    secrets = [Device.from_seed(seed).secrets() for seed in range(6)]
    assert len({repr(s) for s in secrets}) == 6
    assert Simx(0).cost(SHAPE, _measured()).time_us != Simx(1).cost(SHAPE, _measured()).time_us


@pytest.mark.parametrize("seed", range(8))
def test_hidden_limits_are_in_range(seed: int) -> None:
    d = Device.from_seed(seed)
    kib, rest = divmod(d.smem_limit, 1024)
    assert rest == 0 and 97 <= kib <= 159 and kib % 2 == 1
    assert 64 <= d.compute_units <= 144 and 128 <= d.reg_cap <= 255
    assert 1.3 <= d.l2_gain <= 2.0 and 2 <= len(d.quirks) <= 3


@pytest.mark.parametrize("field,bigger", [("dot_flops", 4 * 10**8), ("ld_sector_bytes", 10**8),
                                          ("elem", 10**8), ("ld_runs", 10**6)])
def test_every_count_only_adds_time(field: str, bigger: int) -> None:
    """Monotone in every count: lowering a count is the only way to gain, never raising one."""
    sim = Simx(0)
    base = _measured()
    more = copy.deepcopy(base)
    for p in more["launches"][0]["per_program"]:
        p[field] = bigger
    assert sim.cost(SHAPE, more).time_us > sim.cost(SHAPE, base).time_us


def test_more_programs_more_time_and_waves_quantize() -> None:
    sim = Simx(2)
    slots = price_launch(sim.device, _launch()).slots
    full = price_launch(sim.device, _launch(programs=slots))
    tail = price_launch(sim.device, _launch(programs=slots + 1))
    assert full.utilization == pytest.approx(1.0)
    assert tail.utilization < 0.6 and tail.time_us > full.time_us


def test_torch_work_outside_kernels_is_priced() -> None:
    sim = Simx(0)
    plain = _measured()
    with_torch = {**plain, "torch": [{"op": "clone", "bytes": 10**8}]}
    assert sim.cost(SHAPE, with_torch).time_us > sim.cost(SHAPE, plain).time_us + 10


def test_resources_come_from_measured_tile_shapes() -> None:
    sim = Simx(3)
    small = {"prefill_2k": _measured(bm=32, bn=32, stages=1)}
    assert sim.out_of_resources(small) is None
    huge = {"prefill_2k": _measured(bm=128, bn=128, stages=4)}
    oor = sim.out_of_resources(huge)
    assert oor is not None and oor.limit == sim.device.smem_limit and oor.required > oor.limit
    assert oor.line().startswith("triton.runtime.errors.OutOfResources: out of resource: shared memory")


def test_sample_scale_only_corrects_upwards() -> None:
    under = _launch(out=1000)
    assert sample_scale(under, 2.0 * 512 * 1000) == pytest.approx(2.0)
    over = _launch(out=4000)  # a kernel that stores out twice must not get cheaper
    assert sample_scale(over, 2.0 * 512 * 1000) == 1.0


def test_out_written_by_two_launches_is_one_correction_per_shape() -> None:
    """A split-KV kernel whose whole tiles write ``out`` and whose reduce writes the rest."""
    true_out = 512.0 * 1000  # out is 512 programs x 1000 bytes
    half = _launch(out=500)  # each launch writes half of out, each fully represented
    assert out_shares([half, half], true_out) == [pytest.approx(true_out / 2)] * 2
    sim = Simx(0)
    two = {"launches": [half, copy.deepcopy(half)], "torch": []}
    one = {"launches": [half], "torch": []}
    # Not priced as if each launch had under-sampled all of out (the pre-v3 2x).
    assert sim.cost(SHAPE, two).time_us < 2.2 * sim.cost(SHAPE, one).time_us
    # Both under-represented (a quarter each): the shared ratio still scales both up.
    quarter = _launch(out=250)
    shares = out_shares([quarter, quarter], true_out)
    assert [sample_scale(la, sh) for la, sh in zip([quarter, quarter], shares, strict=True)] == \
        [pytest.approx(2.0)] * 2
    # A launch that stores nothing into out is never scaled.
    none = _launch(out=0)
    assert sample_scale(none, out_shares([none, half], true_out)[0]) == 1.0


def test_declarations_are_never_read() -> None:
    """Only the CONFIG literal is read; an ARCH line or comment changes nothing."""
    assert parse_config("x = 1\n") is None
    assert parse_config('ARCH = "combined"\nCONFIG = {"BLOCK_M": 64}\n') == {"BLOCK_M": 64}
    with pytest.raises(KernelSourceError, match="CONFIG must be a literal dict"):
        parse_config("CONFIG = dict(a=1)\n")
    with pytest.raises(SyntaxError):
        parse_config("def f(:\n")


def test_config_validation() -> None:
    with pytest.raises(InvalidConfig, match=r"BLOCK_M=256: SIMX-1 accepts BLOCK_M in \{16, 32, 64, 128\}"):
        normalize_config({"BLOCK_M": 256})
    cfg, _ = normalize_config({"PACK": 4})
    assert cfg["PACK"] == 4 and cfg["BLOCK_M"] == 32
    # An unknown key used to pass through to launch() and into the tool output the scores
    # are read from: ``tag="FAILED"`` hid a benchmark from best_seen, ``nonce=1`` made a
    # repeated config look new to the waste count.
    for extra in ({"tag": "FAILED"}, {"nonce": 1}, {"MY_KEY": 3}):
        with pytest.raises(InvalidConfig, match=r"unknown launch key .*: a config sets only BLOCK_M, BLOCK_N"):
            normalize_config({"BLOCK_M": 64, **extra})


def test_floors_refuse_a_kernel_that_skips_the_work() -> None:
    """Counts under the least work of a correct kernel are refused, never priced."""
    shape = BENCH_SHAPES[4]
    floors = work_floors(shape.case_dict())
    honest = _launch(programs=1, flops=int(floors["dot_flops"]), ld=int(floors["load_bytes"]),
                     st=int(floors["store_bytes"]))
    assert check_floors(shape, {"launches": [honest], "torch": []}) == []
    lazy = _launch(programs=1, flops=0, ld=1000, st=10)
    problems = check_floors(shape, {"launches": [lazy], "torch": []})
    assert len(problems) == 3 and all(p.startswith("long_context:") for p in problems)


def test_a_launch_with_stages_or_warps_the_device_does_not_take_is_refused() -> None:
    """num_stages=-1 in a launch wrapper was priced as given: a 128x128 tile then fit the
    shared memory it overflows at any real stage count."""
    shape = BENCH_SHAPES[4]
    floors = work_floors(shape.case_dict())
    work = {"programs": 1, "flops": int(floors["dot_flops"]), "ld": int(floors["load_bytes"]),
            "st": int(floors["store_bytes"])}
    assert check_floors(shape, {"launches": [_launch(**work)], "torch": []}) == []  # type: ignore[arg-type]
    for bad in ({"stages": -1}, {"stages": 0}, {"warps": 64}, {"warps": 3}):
        problems = check_floors(shape, {"launches": [_launch(**work, **bad)], "torch": []})  # type: ignore[arg-type]
        assert len(problems) == 1 and "SIMX-1 takes num_" in problems[0], problems


def test_price_shape_sums_launches() -> None:
    sim = Simx(0)
    # Launches that store nothing into out: no sample correction, so the sum is exact.
    one = price_shape(sim.device, SHAPE, _measured(out=0))
    two = price_shape(sim.device, SHAPE, {"launches": [_launch(out=0), _launch(out=0)], "torch": []})
    assert two.time_us == pytest.approx(2 * one.time_us)
    assert len(two.launches) == 2


@pytest.mark.parametrize("rung", RUNGS)
def test_every_rung_passes_the_screen(rung: str) -> None:
    assert screen_source(rung_source(rung)) == []


@pytest.mark.parametrize("snippet,needle", [
    ("import sys\n", "import sys is refused"),
    ("import torch\nx = torch.sys.modules\n", "torch.sys is refused"),
    ("y = a @ b\n", "the @ operator is refused"),
    ("z = a.__class__\n", "'__class__' is refused"),
    ("import triton\ntriton.runtime.interpreter\n", "triton.runtime is refused"),
    ("import torch\nw = torch.nn.functional.scaled_dot_product_attention(q, k, v)\n", "torch.nn is refused"),
    ("w = q.matmul(k)\n", ".matmul is refused"),
    ("getattr(a, 'b')\n", "'getattr' is refused"),
    ("import gc\n", "import gc is refused"),
    ("k_pool.copy_(saved)\n", ".copy_ is refused"),
    # the harness's frames through a generator, with no import and no private name
    ("def g():\n    yield box[0].gi_frame.f_back\n", "'gi_frame' is refused"),
    ("fr = fr.f_back\n", "'f_back' is refused"),
    ("counts = fr.f_locals['current']\n", "'f_locals' is refused"),
    ("floors = fr.f_globals['work_floors']\n", "'f_globals' is refused"),
    ("c = coro.cr_frame\n", "'cr_frame' is refused"),
    ("try:\n    f()\nexcept Exception as e:\n    e.with_traceback(None)\n", "'with_traceback' is refused"),
    ("cell.cell_contents = 0\n", "'cell_contents' is refused"),
    ("from typing import Generator\nmatch g:\n    case Generator(gi_frame=fr):\n        pass\n",
     "matching attribute 'gi_frame' is refused"),
    ("import typing\ntyping.get_type_hints(f)\n", "typing.get_type_hints is refused"),
    ("from typing import get_type_hints\n", "from typing import get_type_hints is refused"),
    # a module bound to another name escapes every chain check: T.sys, then getattr by string
    ("import torch\nT = torch\nS = T.sys\n", "the module 'torch' may only be used as torch.<name>"),
    ("import torch\ndef f(t=torch):\n    return t\n", "the module 'torch' may only be used as torch.<name>"),
    ("import torch\nx = [torch][0]\n", "the module 'torch' may only be used as torch.<name>"),
    ("import torch\nif (t := torch):\n    pass\n", "the module 'torch' may only be used as torch.<name>"),
    ("import typing\nty = typing\n", "the module 'typing' may only be used as typing.<name>"),
    ("x = a.b.sys.modules\n", "attribute 'sys' is refused"),
    ("g = m.builtins.getattr\n", "attribute 'builtins' is refused"),
    ("from triton import language\nlanguage.core.x\n", "triton.language.core is refused"),
    ("import triton.language as tl\ny = tl.math.exp(x)\n", "triton.language.math is refused"),
    ("from triton.language import core\n", "from triton.language import core is refused"),
    ("import torch\nd = torch.cuda\n", "torch.cuda is refused"),
    ("import torch\np = torch.cuda.get_device_properties.x\n", "torch.cuda.get_device_properties.x is refused"),
    ("import torch\nm = torch.Tensor.mro\n", "'mro' is refused"),
    ("import torch\nm = torch.float32.is_floating_point\n", "torch.float32.is_floating_point is refused"),
])
def test_screen_refuses_routes_to_the_harness_and_torch_attention(snippet: str, needle: str) -> None:
    found = [r.text() for r in screen_source(snippet)]
    assert any(needle in f for f in found), found
