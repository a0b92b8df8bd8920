"""Deterministic synthetic agent sessions, for the demo, the tests and the benchmarks.

:func:`synthetic_session` writes a tool-heavy kernel-tuning transcript from a seed: a user
task, then turns of assistant reasoning + tool calls (sometimes parallel, sometimes with a
thinking block) answered by tool outputs shaped like real ones (source listings, compiler
errors, correctness tables, benchmark tables, profiler metrics, git logs), with occasional
error results and repeated identical outputs. Roughly 420 o200k tokens per message on
average, so ``turns=1200`` gives 2,401 messages and 0.88M tokens; ``output_scale=1.16``
makes the same session 1.0M tokens (its tool outputs run on).

It is generated here from a seed; nothing is copied from real sessions.
"""

from __future__ import annotations

import math
import random

from ctxmem.messages import Message, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock

_WORDS = ["tile", "block", "warp", "occupancy", "register", "spill", "shared", "memory", "bandwidth", "latency", "gather", "prefix", "extend", "causal", "mask", "softmax", "rescale", "accumulator", "pipeline", "stage", "kernel", "launch", "grid", "head", "query", "key", "value", "stride", "offset", "pointer", "load", "store", "reduce", "max", "sum", "exp", "scale", "fp16", "fp32", "tolerance", "mismatch", "config", "autotune", "profile", "throughput", "cache", "pool", "index", "table", "ragged", "batch", "window", "capacity", "limit", "quirk"]
_FILES = ("kernel.py", "reference.py", "HARNESS.md", "bench.py", "configs.json", "notes.md")
TOOL_NAMES = ("read_file", "edit_file", "compile", "check", "benchmark", "profile", "git_log", "autotune")


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _code(rng: random.Random, lines: int) -> str:
    out = ["import triton", "import triton.language as tl", "", "@triton.jit", "def _fwd_kernel("]
    for i in range(lines):
        a, b = rng.choice(_WORDS), rng.choice(_WORDS)
        kind = rng.randrange(6)
        if kind == 0:
            out.append(f"    {a}_{i} = tl.load({b}_ptr + offs_{i % 7} * stride_{a}, mask=m_{i % 5}, other=0.0)")
        elif kind == 1:
            out.append(f"    acc = acc * tl.exp(m_prev - m_new)[:, None] + tl.dot(p.to(tl.float16), v_{i % 3})")
        elif kind == 2:
            out.append(f"    # {_sentence(rng, rng.randint(5, 12))}")
        elif kind == 3:
            out.append(f"    for start_n in range(0, {rng.choice([64, 128, 256])}, BLOCK_N):  # {a}")
        elif kind == 4:
            out.append(f"    {a} = tl.where({b} > 0, {a} * {rng.random():.4f}, float('-inf'))")
        else:
            out.append(f"    tl.store(out_ptr + offs_m[:, None] * stride_o{i % 4} + offs_d[None, :], acc)")
    return "\n".join(out)


def _compile_log(rng: random.Random, ok: bool) -> str:
    head = [f"[compile] triton 3.9.0 · target simx-1 (simulated) · BLOCK_M={rng.choice([32, 64, 128])}"]
    if ok:
        head.append(f"compiled in {rng.uniform(0.4, 3.0):.2f}s: {rng.randint(40, 255)} registers/thread, "
                    f"{rng.randint(8, 96)} KiB shared memory, 0 spills")
        return "\n".join(head)
    line = rng.randint(20, 180)
    errs = [
        f"  File \"kernel.py\", line {line}\ntriton.compiler.errors.CompilationError: at {line}:{rng.randint(4, 40)}: "
        f"incompatible shapes for tl.dot: [{rng.choice([32, 64])}, 16] and [{rng.choice([32, 64])}, 64]",
        f"triton.runtime.errors.OutOfResources: out of resource: shared memory, Required: {rng.randint(100, 300) * 1024}, "
        f"Hardware limit: {rng.choice([98304, 101376, 131072])}. Reducing block sizes or `num_stages` may help.",
        f"  File \"kernel.py\", line {line}\nNameError: name '{rng.choice(_WORDS)}_{rng.randint(0, 9)}' is not defined",
    ]
    warnings = [f"warning: {_sentence(rng, rng.randint(6, 14))}" for _ in range(rng.randint(5, 30))]
    return "\n".join(head + warnings + [rng.choice(errs)])


def _table(rng: random.Random, kind: str, call: int) -> str:
    rows = []
    if kind == "check":
        rows.append(f"eval#{call} correctness (TRITON_INTERPRET=1, fp16, atol=2e-3 rtol=1e-2)")
        rows.append("case  batch  heads  prefix  extend  max_abs_err  mismatches  status")
        for c in range(rng.randint(6, 24)):
            err = rng.choice([rng.uniform(1e-5, 1e-3), rng.uniform(1e-2, 3.0)])
            rows.append(f"{c:>4}  {rng.randint(1, 8):>5}  {rng.choice([4, 8, 32]):>5}  {rng.randint(0, 4096):>6}  "
                        f"{rng.randint(1, 512):>6}  {err:>11.2e}  {rng.randint(0, 900):>10}  "
                        f"{'PASS' if err < 2e-3 else 'FAIL'}")
    elif kind == "benchmark":
        rows.append(f"bench#{call} (simulated SIMX-1) median over 100 runs")
        rows.append("shape                         ref_ms   cand_ms  speedup")
        for _ in range(rng.randint(6, 20)):
            ref = rng.uniform(0.2, 9.0)
            cand = ref / rng.uniform(0.8, 10.5)
            rows.append(f"b{rng.randint(1, 64)}_h{rng.choice([8, 32, 64])}_p{rng.randint(0, 8192)}_e{rng.randint(1, 1024):<8} "
                        f"{ref:>7.3f}  {cand:>7.3f}  {ref / cand:>6.2f}x")
        rows.append(f"geomean speedup: {rng.uniform(0.8, 10.5):.2f}x")
    else:
        rows.append(f"prof#{call} (simulated SIMX-1)")
        for metric in ("sm_occupancy", "dram_bw_util", "smem_bank_conflicts", "reg_spill_bytes", "gather_stall_pct",
                       "issue_slot_util", "l2_hit_rate"):
            rows.append(f"{metric:<22} {rng.uniform(0, 100):8.2f}")
        rows.append(_sentence(rng, rng.randint(10, 25)))
    return "\n".join(rows)


def _git_log(rng: random.Random, n: int) -> str:
    return "\n".join(
        f"{rng.getrandbits(28):07x} {_sentence(rng, rng.randint(4, 9))}" for _ in range(n)
    )


def _tool_output(rng: random.Random, name: str, call: int) -> tuple[str, bool]:
    if name == "read_file":
        return _code(rng, rng.randint(20, 140)), False
    if name == "edit_file":
        return f"edited {rng.choice(_FILES)}: replaced {rng.randint(1, 40)} lines", False
    if name == "compile":
        ok = rng.random() < 0.6
        return _compile_log(rng, ok), not ok
    if name in ("check", "benchmark", "profile"):
        return _table(rng, name, call), False
    if name == "git_log":
        return _git_log(rng, rng.randint(5, 40)), False
    return "\n".join(
        f"config {i}: BLOCK_M={rng.choice([32, 64, 128])} BLOCK_N={rng.choice([32, 64])} warps={rng.choice([4, 8])} "
        f"-> {rng.uniform(0.3, 5.0):.3f} ms" for i in range(rng.randint(8, 40))
    ), False


def _tool_input(rng: random.Random, name: str) -> dict[str, object]:
    if name in ("read_file", "edit_file"):
        d: dict[str, object] = {"path": rng.choice(_FILES)}
        if name == "edit_file":
            d["old"] = _sentence(rng, 6)
            d["new"] = _sentence(rng, 6)
        return d
    if name == "autotune":
        return {"space": {"BLOCK_M": [32, 64, 128], "BLOCK_N": [32, 64]}, "budget": rng.randint(4, 32)}
    return {"target": "kernel.py", "seed": rng.randint(0, 9)}


def synthetic_session(turns: int = 1200, seed: int = 0, *, output_scale: float = 1.0) -> list[Message]:
    """A deterministic tool-heavy transcript: 1 user task + ``turns`` × (assistant, results).

    ``output_scale`` multiplies tool-output sizes (1.0 ≈ 1M o200k tokens at 1200 turns).
    """
    rng = random.Random(seed)
    def scaled(s: str) -> str:
        # Longer outputs repeat their own lines (like a log that goes on); shorter ones are cut.
        if output_scale == 1.0 or not s:
            return s
        target = max(1, int(len(s) * output_scale))
        return ("\n".join([s] * math.ceil(output_scale)))[:target]

    msgs = [Message.user(
        "Optimize the Triton extend-attention kernel in kernel.py for the SIMX-1 accelerator. "
        "Keep it correct (atol 2e-3, rtol 1e-2) and report the best speedup with its commit."
    )]
    call = 0
    for turn in range(turns):
        blocks: list[TextBlock | ThinkingBlock | ToolUseBlock] = []
        if rng.random() < 0.15:
            blocks.append(ThinkingBlock(_sentence(rng, rng.randint(20, 80)), signature=f"sig{rng.getrandbits(64):016x}"))
        blocks.append(TextBlock(_sentence(rng, rng.randint(8, 40))))
        n_calls = 1 if rng.random() < 0.8 else rng.randint(2, 4)
        results: list[ToolResultBlock] = []
        for _ in range(n_calls):
            call += 1
            name = rng.choice(TOOL_NAMES)
            tid = f"toolu_{seed:02d}{turn:05d}{call:06d}"
            blocks.append(ToolUseBlock(tid, name, _tool_input(rng, name)))
            out, err = _tool_output(rng, name, call)
            results.append(ToolResultBlock(tid, scaled(out), is_error=err))
        msgs.append(Message("assistant", tuple(blocks)))
        msgs.append(Message("user", tuple(results)))
    return msgs
