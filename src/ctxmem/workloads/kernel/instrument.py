"""Instrumented runs of a candidate kernel: the measured work that SIMX-1 prices.

SIMX-1 (``simx.py``) never reads what a kernel *declares*. It prices what the kernel *does*
on the six benchmark shapes, as counted here while the candidate runs in the Triton
interpreter:

* **per launch** — the kernel's name, its grid (so the number of programs launched), the
  ``num_warps``/``num_stages`` it was launched with, and the shapes of every ``tl.dot``
  (which give the shared memory and registers a tile needs);
* **per sampled program** — bytes moved by ``tl.load``/``tl.store`` counting only the
  elements their masks enable, the same bytes rounded up to 32-byte sectors of contiguous
  runs (a gather through the index table moves whole sectors for scattered rows), the
  number of such runs, ``tl.dot`` FLOPs per dot shape, elementwise element-operations,
  transcendental element-operations (exp, log, sqrt, ...), reduction elements and atomics;
* **outside the kernels** — every torch operation the launch wrapper performs, with the
  bytes it reads and writes (``TorchFunctionMode``), priced as its own device kernel.

**Sampling.** A benchmark grid has up to ~10^4 programs and one interpreter operation
costs ~50-120 µs (a tile iteration ~50 operations), so work is *sampled* twice,
deterministically:

* programs, from each launch's real grid, in a *stratified* order (:func:`_sample_order`:
  a shifted van der Corput sequence over the grid laid out request-major, so any prefix
  covers every request and its tiles evenly; the shift depends on the shape, the kernel
  and the grid, never on the device), until the sampled mean FLOPs and bytes per program
  are known to ``TARGET_RSE`` (estimated from neighbouring samples, as for a systematic
  sample), after at least ``MIN_PROGRAMS`` programs and ``OP_BUDGET`` interpreter
  operations and at most ``OP_CAP`` operations or ``MAX_PROGRAMS`` programs. Totals are
  ``programs × mean(sampled)`` (``simx.py`` scales them up, never down, by the ratio of the
  true bytes of ``out`` to the sampled ones); the longest sampled program stands in for
  the grid's longest. Measured against full enumerations of the head_packing rung
  (BLOCK_M = BLOCK_N = 64, PACK 8), the old rule (a random order, 2,500 operations, ~4-13
  programs) estimated the FLOPs of spec_decode with a 44% standard deviation and those of
  mixed_extend (a ragged batch: most programs exit at once, a few carry the work) with
  127%; this rule gets ~3% and ~15% for about ten times the operations (1-3 s a launch);
* the inputs of a measured run are the reference's (same lengths, index table and
  poisoned pool rows) with cheap values (:func:`_measurement_inputs`): drawing ~10^8
  normal values took most of a measurement, and counts never depend on values;
* loop iterations: ``range``/``tl.range`` in the measured kernel run ``LOOP_SAMPLES`` of a
  long loop's iterations — the first, the last (the ragged edges) and seeded ones between —
  each middle one counted for its share of the skipped ones. Attention loops do the same
  work every tile but the edges, so this is close to exact for them; the outputs of a
  measured run are thrown away (correctness is judged on the real, unsampled suites).

Counts are deterministic, independent of the SIMX seed, and cached by the caller.

**Trust.** The instrumentation runs in the candidate's own process (inside the sandbox),
so its counts are evidence from an untrusted place. Four things keep them honest:

1. :func:`screen_source` (run by the trusted parent before any measurement, and again in
   the child) refuses source that could reach the instrumentation or compute the answer
   some other way: imports other than ``torch``/``triton``/``math``/``typing``; any
   attribute starting with ``_`` (``__class__``, ``__globals__``, ``tl._...``);
   ``getattr``/``setattr``/``globals``/``vars``/``eval``/``exec``/``open``/``__import__``
   and friends; ``gc``, ``sys``, ``builtins``, ``inspect``, ``ctypes``; ``triton``
   attributes other than ``jit``/``cdiv``/``next_power_of_2``/``language``; the
   interpreter's introspection attributes that need no underscore (``gi_frame``,
   ``f_back``, ``f_locals``, ``f_globals``, ``tb_frame``, ``cell_contents``, ...: a
   generator's frame leads to its caller's, and up to the harness's counters);
   ``torch`` attributes outside an allow-list of allocation and index arithmetic (no
   ``torch.sys``, ``torch.ops``, ``torch.nn``, ``torch.matmul``); the ``@`` operator and
   matmul/einsum/softmax/copy_ methods. Without these routes the candidate cannot name the
   hooks, the counters or the interpreter.
2. At run time, torch calls on float tensors that do attention-shaped work (matmul, bmm,
   einsum, softmax, sdpa, linear, ...) are refused, as is any in-place torch write to an
   input tensor and any ``tl.store``/atomic into an input buffer (restoring an input it
   overwrote is refused, not just hidden from the bit-exact input check).
3. The parent cross-checks the counts against floors it computes itself from the shape
   (:func:`work_floors`): the stores must cover ``out``, the dot FLOPs must reach the causal
   attention's FLOPs, and the loads must reach the bytes of Q and of the unique K/V rows.
   Counts under a floor mean the kernel did not do the computation on that shape (a
   shape-detecting shortcut, or tampering): the measurement is refused.
4. Counts only ever *add* time: every term of the device model is non-decreasing in every
   count, so a candidate can raise its score only by lowering counts — which needs one of
   the routes closed by (1) or lands under a floor in (3).

What stays open, said plainly: the floors are the ideal work, so a kernel that tampered
with counts while staying above them could still gain up to the gap between its honest
work and the ideal; no route to the counters is known past the screen. Loop sampling has
a blind spot: a kernel that does heavy work in only a few middle iterations may have them
all skipped (under-priced) or all hit (over-priced). The middle samples are seeded with a
salt the kernel cannot read, so it cannot aim its heavy iterations away from them; on
average such a kernel is priced right, one measurement at a time it is not.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MIN_PROGRAMS = 8
OP_BUDGET = 2_500  # interpreter operations spent per launch before the sample may stop
OP_CAP = 30_000  # ... and at most this many (1.5-3.5 s of interpreter time)
MAX_PROGRAMS = 1_024
ZERO_PROGRAMS = 64  # a launch whose sampled programs all did nothing keeps sampling this long
TARGET_RSE = 0.05  # stop once the mean FLOPs and bytes per program are known to 5% (1 s.e.)
LOOP_SAMPLES = 4  # iterations run per loop: the first, the last and two seeded ones between
SECTOR = 32

ALLOWED_IMPORTS = frozenset({"torch", "triton", "triton.language", "math", "typing", "__future__"})
REFUSED_NAMES = frozenset({
    "__import__", "eval", "exec", "compile", "open", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "breakpoint", "input", "memoryview", "type", "object", "super", "id",
    "dir", "help", "exit", "quit", "sys", "os", "gc", "builtins", "importlib", "inspect",
    "ctypes", "__builtins__", "classmethod", "staticmethod", "property",
})
# The interpreter's introspection attributes that carry no underscore: a generator's,
# coroutine's or traceback's frame, a frame's caller, locals, globals and code, a code
# object's constants, a closure cell's contents. Through them a kernel reaches the frames
# of the harness that calls it (the instrumentation's counters among their locals) with
# no import and no private name: ``gen.gi_frame.f_back.f_locals``.
REFUSED_ATTRS = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "gi_suspended",
    "cr_frame", "cr_code", "cr_await", "cr_origin", "cr_running", "cr_suspended",
    "ag_frame", "ag_code", "ag_await", "ag_running",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "f_trace_lines",
    "f_trace_opcodes", "f_lasti", "f_lineno", "tb_frame", "tb_next", "tb_lasti", "tb_lineno",
    "co_consts", "co_names", "co_code", "co_varnames", "co_freevars", "co_cellvars", "co_name",
    "co_filename", "cell_contents", "func_globals", "func_code", "func_closure", "func_dict",
    "im_func", "im_self", "mro", "with_traceback", "clear_frames",
})
TRITON_ALLOWED = frozenset({"jit", "cdiv", "next_power_of_2", "language"})
# typing's names a kernel may use: types only (``typing.get_type_hints`` evaluates annotation
# strings, code the screen never sees)
TYPING_ALLOWED = frozenset({
    "Any", "Optional", "Union", "List", "Dict", "Tuple", "Sequence", "Mapping", "Callable",
    "Iterable", "Iterator", "Literal", "Final", "TYPE_CHECKING", "cast", "Generator",
})
TL_REFUSED = frozenset({"core", "semantic", "runtime", "standard"})
# triton.language's submodules: a module value is a way out (its own imports hang off it)
TL_MODULES = frozenset({"core", "extra", "math", "random", "semantic", "standard", "target_info", "runtime"})
TORCH_ALLOWED = frozenset({
    "empty", "empty_like", "zeros", "zeros_like", "full", "full_like", "ones", "ones_like",
    "arange", "tensor", "as_tensor", "cumsum", "repeat_interleave", "argsort", "sort", "cat",
    "stack", "minimum", "maximum", "clamp", "where", "float16", "float32", "float64",
    "bfloat16", "int8", "int16", "int32", "int64", "bool", "Tensor", "dtype", "device", "Size",
    "cuda", "div", "floor_divide", "remainder",
})
TORCH_CUDA_ALLOWED = frozenset({"get_device_properties", "current_device", "is_available"})
REFUSED_METHODS = frozenset({
    "matmul", "mm", "bmm", "einsum", "baddbmm", "addmm", "addbmm", "softmax", "log_softmax",
    "scaled_dot_product_attention", "linear", "tensordot", "inner", "outer", "mv", "copy_",
    "set_", "untyped_storage", "storage", "register_hook", "apply_", "map_", "numpy",
    "autotune", "heuristics",
})
# Torch functions that do attention-shaped work when given float tensors.
REFUSED_TORCH_FUNCS = frozenset({
    "matmul", "mm", "bmm", "einsum", "baddbmm", "addmm", "addbmm", "softmax", "log_softmax",
    "scaled_dot_product_attention", "linear", "tensordot", "inner", "outer", "mv", "dot",
    "__matmul__", "__rmatmul__", "chain_matmul", "multi_dot", "_softmax",
})
# Torch functions that only read metadata or allocate without touching memory.
FREE_TORCH_FUNCS = frozenset({
    "stride", "size", "dim", "numel", "element_size", "is_contiguous", "data_ptr",
    "__get__", "empty", "empty_like", "new_empty", "item", "__len__", "__index__",
    "__int__", "__bool__", "__format__", "__repr__", "get_device", "is_floating_point",
    "__hash__", "__eq__",
})
INPUT_NAMES = ("q", "k_new", "v_new", "out", "k_pool", "v_pool", "req_to_token", "req_idx",
               "prefix_lens", "extend_lens", "extend_starts")
DATA_INPUTS = ("q", "k_new", "v_new", "k_pool", "v_pool", "req_to_token", "req_idx",
               "prefix_lens", "extend_lens", "extend_starts")


_INPUTS: dict[str, dict[str, Any]] = {}  # the child's inputs of the shape being measured


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int
    message: str

    def text(self, path: str = "kernel.py") -> str:
        return f"{path}:{self.line}: {self.message}"


def _attr_chain(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _module_chain_problem(path: list[str]) -> str | None:
    """Why a whole attribute chain from a module (``torch.empty``, ``tl.load``, as module
    path plus attributes) is refused, or None: it must end at an allowed function, class or
    constant, never at a module or past one."""
    top, rest = path[0], path[1:]
    name = ".".join(path)
    if not rest:
        return f"the module {name} may only be used as {name}.<name>"
    if top == "torch":
        if rest[0] == "cuda":
            if len(rest) == 2 and rest[1] in TORCH_CUDA_ALLOWED:
                return None
            return f"{name} is refused (allowed: torch.cuda." + ", torch.cuda.".join(sorted(TORCH_CUDA_ALLOWED)) + ")"
        if rest[0] not in TORCH_ALLOWED:
            return (f"torch.{rest[0]} is refused: the launch wrapper may only allocate and do index "
                    "arithmetic on the lengths (allowed: " + ", ".join(sorted(TORCH_ALLOWED - {"cuda"})) + ")")
        return None if len(rest) == 1 else f"{name} is refused: torch.{rest[0]} is used as it is"
    if top == "triton":
        if rest[0] == "language":
            if len(rest) < 2:
                return "triton.language may only be used as triton.language.<name> (or imported as tl)"
            if rest[1] in TL_MODULES:
                return f"triton.language.{rest[1]} is refused (a module; use tl.<function>)"
            return None if len(rest) == 2 else f"{name} is refused: tl.{rest[1]} is used as it is"
        if rest[0] not in TRITON_ALLOWED:
            return (f"triton.{rest[0]} is refused (allowed: triton.jit, triton.cdiv, "
                    "triton.next_power_of_2, triton.language)")
        return None if len(rest) == 1 else f"{name} is refused: triton.{rest[0]} is used as it is"
    if top == "typing":
        if rest[0] not in TYPING_ALLOWED:
            return f"typing.{rest[0]} is refused (allowed: " + ", ".join(sorted(TYPING_ALLOWED)) + ")"
        return None if len(rest) == 1 else f"{name} is refused: typing.{rest[0]} is used as it is"
    if top == "math":
        return None if len(rest) == 1 else f"{name} is refused: math.{rest[0]} is used as it is"
    return f"{name} is refused"


def screen_source(source: str) -> list[Refusal]:
    """Static refusals of a candidate source (see the module docstring, point 1)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the compile step reports syntax errors itself
    out: list[Refusal] = []
    # local names bound to a module: the screened imports' names, and the modules' own names
    # whether imported or not
    aliases = {"torch": "torch", "triton": "triton", "math": "math", "typing": "typing"}
    parents: dict[ast.AST, ast.AST] = {}

    def refuse(node: ast.AST, msg: str) -> None:
        out.append(Refusal(getattr(node, "lineno", 0), msg))

    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name not in ALLOWED_IMPORTS:
                    refuse(node, f"import {a.name} is refused: a kernel may import only "
                           "torch, triton, triton.language, math and typing")
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod not in ALLOWED_IMPORTS or node.level:
                refuse(node, f"from {mod} import ... is refused: a kernel may import only "
                       "torch, triton, triton.language, math and typing")
            elif mod in ("torch", "triton", "typing"):
                for a in node.names:
                    allowed = {"torch": TORCH_ALLOWED, "triton": TRITON_ALLOWED, "typing": TYPING_ALLOWED}[mod]
                    if a.name not in allowed:
                        refuse(node, f"from {mod} import {a.name} is refused")
                    elif (mod, a.name) in (("torch", "cuda"), ("triton", "language")):
                        aliases[a.asname or a.name] = f"{mod}.{a.name}"
            elif mod == "triton.language":
                for a in node.names:
                    if a.name in TL_MODULES or a.name == "*":
                        refuse(node, f"from triton.language import {a.name} is refused")

    def module_path(chain: list[str]) -> list[str] | None:
        root = aliases.get(chain[0])
        return None if root is None else [*root.split("."), *chain[1:]]

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
            refuse(node, f"{node.id!r} is refused in a kernel (it could reach the harness)")
        elif isinstance(node, ast.Name) and node.id in aliases:
            # a module only ever as the root of a screened chain (``torch.empty``): bound to
            # another name, passed, stored or put in a list it would be a module no chain
            # check sees (``T = torch; T.sys``)
            parent = parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                refuse(node, f"the module {node.id!r} may only be used as {node.id}.<name> "
                       "(not bound to another name, passed or stored)")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                refuse(node, f"attribute {node.attr!r} is refused: private and dunder "
                       "attributes are off limits in a kernel")
            elif node.attr in REFUSED_ATTRS:
                refuse(node, f"attribute {node.attr!r} is refused: frames, code objects, cells and "
                       "tracebacks would reach the harness that runs the kernel")
            elif node.attr in REFUSED_NAMES:
                refuse(node, f"attribute {node.attr!r} is refused in a kernel (it could reach the harness)")
            elif node.attr in REFUSED_METHODS:
                refuse(node, f".{node.attr} is refused: the kernel must be computed by "
                       "Triton kernels, not torch")
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue  # not the whole chain: checked where it ends
            chain = _attr_chain(node)
            path = module_path(chain) if chain is not None else None
            if path is None:
                continue
            problem = _module_chain_problem(path)
            if problem:
                refuse(node, problem)
        elif isinstance(node, ast.MatchClass):
            # ``case Generator(gi_frame=f)`` reads an attribute with no Attribute node
            for name in node.kwd_attrs:
                if name.startswith("_") or name in REFUSED_ATTRS:
                    refuse(node, f"matching attribute {name!r} is refused: a class pattern reads "
                           "attributes as `.` does")
        elif isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.MatMult):
            refuse(node, "the @ operator is refused: the kernel must be computed by Triton kernels")
    # de-duplicate, keep order
    seen: set[tuple[int, str]] = set()
    uniq = []
    for r in sorted(out, key=lambda r: r.line):
        if (r.line, r.message) not in seen:
            seen.add((r.line, r.message))
            uniq.append(r)
    return uniq


# -- the floors the parent checks -----------------------------------------------------------


def work_floors(case: dict[str, Any]) -> dict[str, float]:
    """Least work any correct kernel does on a shape (fp16): stores, FLOPs, load bytes."""
    hq, hkv, d = int(case["num_q_heads"]), int(case["num_kv_heads"]), int(case["head_dim"])
    total = sum(case["extend_lens"])
    pairs = sum(p * e + e * (e + 1) / 2 for p, e in zip(case["prefix_lens"], case["extend_lens"], strict=True))
    keys = sum(p + e for p, e in zip(case["prefix_lens"], case["extend_lens"], strict=True))
    return {
        "store_bytes": 2.0 * total * hq * d,
        "dot_flops": 4.0 * pairs * hq * d,
        "load_bytes": 2.0 * total * hq * d + 2.0 * 2 * keys * hkv * d,
    }


# -- the child side: hooks and the sampled grid executor ------------------------------------


class _Program:
    __slots__ = ("atomics", "dot_flops", "elem", "ld_bytes", "ld_runs", "ld_sector_bytes", "ops",
                 "out_bytes", "reduce", "st_bytes", "st_runs", "st_sector_bytes", "trans")

    def __init__(self) -> None:
        self.ops = 0
        self.ld_bytes = self.ld_sector_bytes = self.ld_runs = 0
        self.st_bytes = self.st_sector_bytes = self.st_runs = 0
        self.out_bytes = 0  # stored into ``out`` (the ratio estimator's control variate)
        self.dot_flops = 0
        self.elem = self.trans = self.reduce = self.atomics = 0

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in self.__slots__}


class _Recorder:
    """Counters of the program being run, plus what a launch reveals."""

    def __init__(self) -> None:
        self.program: _Program | None = None
        self.weight = 1.0  # how many real loop iterations the running iteration stands for
        self.salt = ""
        self.dot_sites: dict[str, int] = {}
        self.max_tile = 0
        self.input_ranges: list[tuple[str, int, int]] = []
        self.out_range = (0, 0)
        self.violations: list[str] = []


def _runs(np: Any, addrs: Any, itemsize: int) -> tuple[int, int]:
    """(contiguous runs, bytes rounded up to sectors per run) of a set of addresses."""
    if addrs.size == 0:
        return 0, 0
    a = np.unique(addrs)
    breaks = np.flatnonzero(np.diff(a) != itemsize)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [a.size - 1]))
    lo = a[starts] // SECTOR
    hi = (a[ends] + itemsize - 1) // SECTOR
    return int(starts.size), int((hi - lo + 1).sum()) * SECTOR


# Layout-only operations: no arithmetic on a device.
FREE_OPS = frozenset({
    "create_broadcast", "create_splat", "create_expand_dims", "create_reshape", "create_trans",
    "create_make_range", "create_bitcast", "create_int_to_ptr", "create_ptr_to_int",
    "create_join", "create_split", "create_cat", "create_unsplat", "create_assume",
})
TRANSCENDENTAL = ("create_exp", "create_exp2", "create_log", "create_log2", "create_sqrt",
                  "create_precise_sqrt", "create_rsqrt", "create_sin", "create_cos", "create_erf",
                  "create_fdiv", "create_precise_divf")


def _install_hooks(rec: _Recorder) -> None:
    import numpy as np
    from triton.runtime import interpreter as interp

    builder = interp.interpreter_builder
    cls = type(builder)

    def wrap_generic(name: str, kind: str) -> None:
        orig = getattr(cls, name)

        def hooked(self: Any, *args: Any, **kwargs: Any) -> Any:
            res = orig(self, *args, **kwargs)
            prog = rec.program
            if prog is not None:
                prog.ops += 1
                if kind == "free":
                    return res
                data = getattr(res, "data", None)
                size = int(getattr(data, "size", 1) or 1)
                if kind == "trans":
                    prog.trans += int(size * rec.weight)
                elif size > 1:
                    # Float math is the kernel's vector work; integer, pointer and mask
                    # arithmetic is mostly hoisted or strength-reduced by a compiler: 1/8.
                    is_float = getattr(getattr(data, "dtype", None), "kind", "") == "f"
                    prog.elem += int(size * rec.weight * (1.0 if is_float else 0.125))
            return res

        setattr(builder, name, hooked.__get__(builder))

    for name in dir(cls):
        if not name.startswith("create_") or name in (
                "create_masked_load", "create_masked_store", "create_load", "create_store",
                "create_dot", "create_get_program_id", "create_get_num_programs"):
            continue
        if name.startswith(("create_atomic", "create_descriptor", "create_make_tensor_descriptor")):
            continue
        kind = "trans" if name in TRANSCENDENTAL else "free" if name in FREE_OPS else "elem"
        wrap_generic(name, kind)

    orig_load = cls.create_masked_load
    orig_store = cls.create_masked_store
    orig_dot = cls.create_dot

    def masked_load(self: Any, ptrs: Any, mask: Any, other: Any, *a: Any) -> Any:
        res = orig_load(self, ptrs, mask, other, *a)
        prog = rec.program
        if prog is not None:
            itemsize = res.data.dtype.itemsize
            addrs = ptrs.data[mask.data] if mask is not None else ptrs.data.ravel()
            prog.ops += 1
            w = rec.weight
            prog.ld_bytes += int(addrs.size * itemsize * w)
            runs, sect = _runs(np, addrs.astype(np.int64).ravel(), itemsize)
            prog.ld_runs += int(runs * w)
            prog.ld_sector_bytes += int(sect * w)
            rec.max_tile = max(rec.max_tile, int(res.data.size))
        return res

    def masked_store(self: Any, ptrs: Any, value: Any, mask: Any, *a: Any) -> Any:
        prog = rec.program
        if prog is not None:
            addrs = (ptrs.data[mask.data] if mask is not None else ptrs.data.ravel()).astype(np.int64)
            itemsize = value.data.dtype.itemsize
            prog.ops += 1
            w = rec.weight
            prog.st_bytes += int(addrs.size * itemsize * w)
            runs, sect = _runs(np, addrs.ravel(), itemsize)
            prog.st_runs += int(runs * w)
            prog.st_sector_bytes += int(sect * w)
            if addrs.size:
                lo, hi = int(addrs.min()), int(addrs.max())
                o_lo, o_hi = rec.out_range
                if lo < o_hi and hi >= o_lo:
                    inside = int(((addrs >= o_lo) & (addrs < o_hi)).sum())
                    prog.out_bytes += int(inside * itemsize * w)
                for name, start, end in rec.input_ranges:
                    if lo < end and hi >= start and bool(((addrs >= start) & (addrs < end)).any()):
                        rec.violations.append(f"a tl.store writes into the input tensor {name!r}")
        return orig_store(self, ptrs, value, mask, *a)

    def dot(self: Any, a: Any, b: Any, d: Any, *rest: Any) -> Any:
        prog = rec.program
        if prog is not None:
            m, k = a.data.shape[-2], a.data.shape[-1]
            n = b.data.shape[-1]
            flops = 2 * m * n * k * int(math.prod(a.data.shape[:-2]) or 1)
            prog.ops += 1
            flops = int(flops * rec.weight)
            prog.dot_flops += flops
            key = f"{m}x{k}x{n}:{a.data.dtype.itemsize * 8}"
            rec.dot_sites[key] = rec.dot_sites.get(key, 0) + flops
        return orig_dot(self, a, b, d, *rest)

    def atomic(name: str) -> None:
        orig = getattr(cls, name)

        def hooked(self: Any, *args: Any, **kwargs: Any) -> Any:
            prog = rec.program
            if prog is not None:
                prog.ops += 1
                prog.atomics += int(rec.weight)
                ptr = next((x for x in args if hasattr(x, "data") and getattr(x.data, "dtype", None) is not None
                            and x.data.dtype.kind in "ui"), None)
                if ptr is not None:
                    addrs = ptr.data.astype(np.int64).ravel()
                    prog.st_bytes += int(addrs.size) * 4
                    prog.st_sector_bytes += int(addrs.size) * SECTOR
                    for nm, start, end in rec.input_ranges:
                        if bool(((addrs >= start) & (addrs < end)).any()):
                            rec.violations.append(f"an atomic writes into the input tensor {nm!r}")
            return orig(self, *args, **kwargs)

        setattr(builder, name, hooked.__get__(builder))

    for name in dir(cls):
        if name.startswith("create_atomic"):
            atomic(name)
    for name in dir(cls):
        if name.startswith(("create_descriptor", "create_make_tensor_descriptor")):
            def refused(self: Any, *args: Any, _n: str = name, **kwargs: Any) -> Any:
                raise RuntimeError(f"{_n[7:]}: tensor descriptors are not supported by {_device()}")
            setattr(builder, name, refused.__get__(builder))

    builder.create_masked_load = masked_load.__get__(builder)
    builder.create_masked_store = masked_store.__get__(builder)
    builder.create_dot = dot.__get__(builder)


def _sampled_range(rec: _Recorder) -> Any:
    """``range`` for the measured run: runs LOOP_SAMPLES iterations of a long loop.

    The first and last iterations (the ragged edges) run, plus seeded ones between them;
    each middle one stands for its share of the skipped iterations (``rec.weight``). The
    outputs of a measured run are discarded (correctness is judged elsewhere), so the
    skipped iterations only need to be counted, not computed.
    """
    calls = [0]

    def sampled(*args: Any) -> Iterator[Any]:
        ints = [int(a) for a in args]
        full = range(*ints)
        n = len(full)
        outer = rec.weight
        if n <= LOOP_SAMPLES:
            yield from full
            return
        calls[0] += 1
        middle = n - 2
        k = LOOP_SAMPLES - 2
        rng = random.Random(f"{rec.salt}:{calls[0]}:{n}")
        picks = sorted(1 + (i * middle) // k + rng.randrange(max(1, middle // k)) for i in range(k))
        plan = [(0, 1.0)] + [(i, middle / k) for i in picks] + [(n - 1, 1.0)]
        try:
            for i, w in plan:
                rec.weight = outer * w
                yield full[i]
        finally:
            rec.weight = outer

    return sampled


def _device() -> str:
    return "the SIMX-1 measurement"


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-mixed 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _sample_order(grid: tuple[int, int, int], key: str) -> Iterator[tuple[int, int, int]]:
    """Programs of ``grid`` in a stratified random order: any prefix covers the grid evenly.

    The programs are laid out on a line, axis 1 slowest (a request, in the rungs' grids),
    then axis 0 (a token tile), then axis 2 (a head group, a split), and visited in the
    order of an Owen-scrambled base-2 van der Corput sequence: the first ``2^k`` visits
    hold one program from each of ``2^k`` equal stretches of the line, at a random place
    within its stretch, independently drawn for every stretch at every level (seeded by
    ``key``). So a prefix covers every request and its tiles evenly, every program is
    equally likely to be at any position (the mean of a prefix is an unbiased estimate of
    the grid's), and — unlike a plain shifted sequence — the sample cannot alias with a
    grid's periodic structure (every fourth program being a split that exits at once).
    """
    g0, g1, g2 = grid
    n = g0 * g1 * g2
    bits = max(1, (n - 1).bit_length()) + 2
    seed = _mix(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    seen: set[int] = set()
    i = 0
    while len(seen) < n and i < 4 << bits:
        r = int(f"{i & ((1 << bits) - 1):0{bits}b}"[::-1], 2)  # bit-reversed i
        out, node = 0, 1
        for d in range(bits - 1, -1, -1):
            bit = (r >> d) & 1
            out |= (bit ^ (_mix(seed ^ node) & 1)) << d
            node = 2 * node + bit
        i += 1
        j = (out * n) >> bits
        if j in seen:
            continue
        seen.add(j)
        yield (j // g2) % g0, j // (g0 * g2), j % g2
    for j in range(n):  # whatever the sequence missed, in order
        if j not in seen:
            yield (j // g2) % g0, j // (g0 * g2), j % g2


class _SampleStats:
    """The relative standard error of a launch's sampled mean FLOPs and bytes per program.

    The sample is systematic (:func:`_sample_order` spreads it evenly along the grid), so
    its error is estimated the way a systematic sample's is: from the differences between
    neighbouring sampled programs along the grid, ``Var(mean) ≈ Σ (x_{i+1} - x_i)² /
    (2 (k - 1) k)``. A grid whose work changes smoothly along it (a causal ramp) is known
    precisely from few programs; one with jumps (a ragged batch: long and short requests,
    tiles past a request's end) keeps sampling until the jumps are pinned down.
    """

    def __init__(self) -> None:
        self.points: list[tuple[int, float, float]] = []

    def add(self, position: int, prog: _Program) -> None:
        self.points.append((position, float(prog.dot_flops),
                            float(prog.ld_sector_bytes + prog.st_sector_bytes)))

    def rse(self) -> float:
        k = len(self.points)
        if k < 2:
            return math.inf
        pts = sorted(self.points)
        worst = 0.0
        for i in (1, 2):
            mean = sum(p[i] for p in pts) / k
            diff2 = sum((b[i] - a[i]) ** 2 for a, b in itertools.pairwise(pts))
            if mean <= 0.0:
                if diff2 > 0.0 or k < ZERO_PROGRAMS:
                    return math.inf  # nothing seen yet: not evidence of an empty launch
                continue
            worst = max(worst, math.sqrt(diff2 / (2 * (k - 1) * k)) / mean)
        return worst


class _Launches:
    """Replaces the interpreter's grid executor while a shape is measured."""

    def __init__(self, rec: _Recorder, shape_name: str, salt: str = ""):
        self.rec = rec
        self.salt = salt
        self.shape_name = shape_name
        self.launches: list[dict[str, Any]] = []

    def run(self, fn_obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], grid: Any) -> None:
        import inspect

        from triton.runtime import interpreter as interp

        rec = self.rec
        num_warps = int(kwargs.pop("num_warps", 4) or 4)
        num_stages = int(kwargs.pop("num_stages", 3) or 3)
        kwargs.pop("warmup", None)
        fn = fn_obj.rewrite()
        ex = interp.GridExecutor(fn, fn_obj.arg_names, grid)
        argspec = inspect.getfullargspec(fn)
        kwargs = {k: v for k, v in kwargs.items() if k in argspec.args or k in argspec.kwonlyargs}
        args_hst, kwargs_hst = ex._init_args_hst(args, kwargs)
        scope = interp._patch_lang(fn)
        sampled = _sampled_range(rec)
        scope.set_attr(interp.tl, "range", sampled)
        module_globals = fn.__globals__
        had_range = "range" in module_globals
        old_range = module_globals.get("range")
        module_globals["range"] = sampled
        try:
            call = inspect.getcallargs(fn, *args_hst, **kwargs_hst)
            call = {n: a if n in ex.constexprs else interp._implicit_cvt(a) for n, a in call.items()}
            g = grid(call) if callable(grid) else grid
            g = tuple(int(x) for x in g) + (1,) * (3 - len(g))
            interp.interpreter_builder.set_grid_dim(*g)
            n = g[0] * g[1] * g[2]
            rec.dot_sites = {}
            rec.max_tile = 0
            programs: list[dict[str, int]] = []
            spent = 0
            key = f"{self.shape_name}:{fn_obj.__name__}:{g}:{len(self.launches)}"
            rec_salt = f"{self.salt}:{key}"
            stats = _SampleStats()
            for x, y, z in _sample_order((g[0], g[1], g[2]), key):
                if len(programs) >= MAX_PROGRAMS or spent >= OP_CAP or (
                        len(programs) >= MIN_PROGRAMS and spent >= OP_BUDGET
                        and len(programs) % 4 == 0 and stats.rse() <= TARGET_RSE):
                    break
                idx = x + g[0] * (y + g[1] * z)
                interp.interpreter_builder.set_grid_idx(x, y, z)
                rec.program = _Program()
                rec.salt = f"{rec_salt}:{idx}"
                try:
                    fn(**call)
                finally:
                    prog, rec.program = rec.program, None
                spent += prog.ops
                programs.append(prog.as_dict())
                stats.add(y * g[0] * g[2] + x * g[2] + z, prog)
        finally:
            scope.restore()
            if had_range:
                module_globals["range"] = old_range
            else:
                module_globals.pop("range", None)
        ex._restore_args_dev(args, args_hst, kwargs, kwargs_hst)
        self.launches.append({
            "kernel": fn_obj.__name__, "grid": list(g), "programs": n, "sampled": len(programs),
            "num_warps": num_warps, "num_stages": num_stages, "dot_sites": dict(rec.dot_sites),
            "max_tile": rec.max_tile, "per_program": programs,
        })


class _TorchCounter:
    """Torch work outside the kernels, and refusals of attention-by-torch / input writes."""

    def __init__(self, inputs: dict[str, Any]):
        self.ops: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.paused = False
        self.inputs = inputs
        self._ptrs = {t.untyped_storage().data_ptr(): name for name, t in inputs.items()}

    def _name_of(self, t: Any) -> str | None:
        try:
            return self._ptrs.get(t.untyped_storage().data_ptr())
        except (RuntimeError, AttributeError):
            return None

    def mode(self) -> Any:
        import torch
        from torch.overrides import TorchFunctionMode

        counter = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                if counter.paused:
                    return func(*args, **kwargs)
                name = getattr(func, "__name__", str(func))
                flat = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
                for a in args:
                    if isinstance(a, list | tuple):
                        flat += [x for x in a if isinstance(x, torch.Tensor)]
                if name in REFUSED_TORCH_FUNCS and any(t.is_floating_point() for t in flat):
                    counter.violations.append(f"torch {name} on float tensors: the kernel must be "
                                              "computed by Triton kernels")
                written = [counter._name_of(args[0])] if (name.endswith("_") and not name.endswith("__")
                                                         and args and isinstance(args[0], torch.Tensor)) else []
                if name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
                    written.append(counter._name_of(args[0]))
                if isinstance(kwargs.get("out"), torch.Tensor):
                    written.append(counter._name_of(kwargs["out"]))
                for w in written:
                    if w is not None and w != "out":
                        counter.violations.append(f"torch {name} writes the input tensor {w!r}")
                result = func(*args, **kwargs)
                if name not in FREE_TORCH_FUNCS:
                    outs = result if isinstance(result, list | tuple) else [result]
                    nbytes = sum(t.numel() * t.element_size() for t in flat)
                    nbytes += sum(t.numel() * t.element_size() for t in outs if isinstance(t, torch.Tensor))
                    if nbytes:
                        counter.ops.append({"op": name, "bytes": int(nbytes)})
                return result

        return Mode()


def measure_job(job: dict[str, Any]) -> dict[str, Any]:
    """One config: ``measure_runs`` with ``runs=[{"config", "cases"}]``, its only answer."""
    answer = measure_runs({**job, "runs": [{"config": job["config"], "cases": job["cases"]}]})
    return answer["runs"][0] if "runs" in answer else answer


def measure_runs(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one candidate at several configs (runs in the sandbox).

    ``job``: ``source_path`` (the candidate), ``reference_path`` (the pristine reference,
    for ``build_inputs``), ``salt`` (seeds the loop sampling), and ``runs``: a list of
    ``{"config": launch kwargs, "cases": benchmark shapes as case dicts}``. Returns
    ``{"runs": [{"status": "ok", "shapes": {name: counts}} | {"status": "refused" |
    "error", "message": ...}, ...]}``, or one refusal/error for the whole job.
    """
    import importlib.util
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        return {"status": "error", "message": "TRITON_INTERPRET=1 must be set before triton is imported"}
    source = open(job["source_path"]).read()  # noqa: SIM115 - trusted side
    refusals = screen_source(source)
    if refusals:
        return {"status": "refused", "message": "\n".join(r.text() for r in refusals)}
    from triton.runtime import interpreter as interp

    spec = importlib.util.spec_from_file_location("ctxmem_kernel_reference_m", job["reference_path"])
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)

    rec = _Recorder()
    _install_hooks(rec)
    current: dict[str, _Launches] = {}
    counter_ref: dict[str, _TorchCounter] = {}

    def run(self: Any, *args: Any, grid: Any, warmup: bool = False, **kwargs: Any) -> Any:
        if warmup:
            return None
        counter = counter_ref.get("c")
        if counter is not None:
            counter.paused = True
        try:
            current["l"].run(self, args, dict(kwargs), grid)
        finally:
            if counter is not None:
                counter.paused = False
        return None

    patched: set[Any] = set()

    def device_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        # The stock call re-patches the language on every device-function call (~6 ms);
        # once per function is enough for a measured run.
        if self.fn not in patched:
            patched.add(self.fn)
            interp._patch_lang(self.fn)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise interp.InterpreterError(repr(e)) from e

    interp.InterpretedFunction.run = run
    interp.InterpretedFunction.__call__ = device_call
    try:
        kspec = importlib.util.spec_from_file_location("ctxmem_candidate_measured", job["source_path"])
        assert kspec is not None and kspec.loader is not None
        module = importlib.util.module_from_spec(kspec)
        kspec.loader.exec_module(module)
        entry = getattr(module, "launch", None) or getattr(module, "extend_attention", None)
        if entry is None:
            return {"status": "error", "message": "kernel.py defines neither launch() nor extend_attention()"}
    except Exception as exc:  # the candidate's import failed
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}"}

    # Shape-major, so each shape's inputs are built once for every config of the job.
    answers: list[dict[str, Any]] = [{"status": "ok", "shapes": {}} for _ in job["runs"]]
    order = sorted({json.dumps(c, sort_keys=True) for r in job["runs"] for c in r["cases"]})
    for case_key in order:
        for i, run_spec in enumerate(job["runs"]):
            if answers[i]["status"] != "ok":
                continue
            cases = [c for c in run_spec["cases"] if json.dumps(c, sort_keys=True) == case_key]
            if not cases:
                continue
            got = _measure_run(reference, entry, rec, current, counter_ref,
                               {"config": run_spec["config"], "cases": cases}, str(job.get("salt", "")))
            if got["status"] != "ok":
                answers[i] = got
            else:
                answers[i]["shapes"].update(got["shapes"])
    return {"runs": answers}


FILL_BLOCK = 1 << 16  # values drawn per large input tensor; the rest repeats them


def _measurement_inputs(reference: Any, case: dict[str, Any]) -> dict[str, Any]:
    """``reference.build_inputs(case)`` with cheap values, for a measured run only.

    Counts depend on the shapes, the lengths and the index table (the gathers), never on
    the values, and the outputs of a measured run are thrown away; drawing ~10^8 normal
    values for the large shapes took most of a measurement. So the reference builds the
    very same lengths, table and poisoned pool rows, while each large tensor's values are a
    block of ``FILL_BLOCK`` normal draws repeated. Correctness never uses these inputs.
    """
    import torch

    real = torch.randn

    def randn(*shape: int, generator: Any = None, dtype: Any = None, **kwargs: Any) -> Any:
        n = math.prod(shape)
        if n <= FILL_BLOCK:
            return real(*shape, generator=generator, dtype=dtype, **kwargs)
        block = real(FILL_BLOCK, generator=generator, dtype=dtype, **kwargs)
        return block.repeat(-(-n // FILL_BLOCK))[:n].reshape(shape)

    torch.randn = randn  # type: ignore[assignment]  # trusted phase: no candidate code runs here
    try:
        return reference.build_inputs(case)
    finally:
        torch.randn = real


def _measure_run(reference: Any, entry: Any, rec: _Recorder, current: dict[str, Any],
                 counter_ref: dict[str, Any], run_spec: dict[str, Any], salt: str) -> dict[str, Any]:
    import traceback

    import torch

    shapes: dict[str, Any] = {}
    for case in run_spec["cases"]:
        # Inputs are built once per shape and job (a write into one refuses the run).
        key = json.dumps(case, sort_keys=True)
        if key not in _INPUTS:
            _INPUTS.clear()  # one shape at a time in memory: long_context's pool is large
            _INPUTS[key] = _measurement_inputs(reference, case)
        tensors = dict(_INPUTS[key])
        tensors["out"] = torch.full_like(tensors["q"], float("nan"))
        rec.input_ranges = [
            (name, t.untyped_storage().data_ptr(), t.untyped_storage().data_ptr() + t.untyped_storage().nbytes())
            for name, t in tensors.items() if name != "out"
        ]
        out_storage = tensors["out"].untyped_storage()
        rec.out_range = (out_storage.data_ptr(), out_storage.data_ptr() + out_storage.nbytes())
        rec.violations = []
        current["l"] = _Launches(rec, case["name"], salt)
        counter = _TorchCounter(tensors)
        counter_ref["c"] = counter
        args = [tensors[n] for n in INPUT_NAMES]
        sm_scale = 1.0 / math.sqrt(int(case["head_dim"]))
        try:
            with counter.mode():
                entry(*args, sm_scale=sm_scale, soft_cap=0.0, window=0, **run_spec["config"])
        except Exception as exc:
            tail = traceback.format_exc().splitlines()[-3:]
            return {"status": "error", "message": f"{case['name']}: {type(exc).__name__}: {exc}",
                    "tail": "\n".join(tail)}
        finally:
            counter_ref.pop("c", None)
        violations = sorted(set(rec.violations + counter.violations))
        if violations:
            return {"status": "refused", "message": f"{case['name']}: " + "; ".join(violations)}
        shapes[case["name"]] = {"launches": current["l"].launches, "torch": counter.ops}
    return {"status": "ok", "shapes": shapes}


def _main() -> int:  # pragma: no cover - exercised through the sandbox
    import sys

    job = json.loads(open(sys.argv[1]).read())  # noqa: SIM115
    result = measure_runs(job)
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
