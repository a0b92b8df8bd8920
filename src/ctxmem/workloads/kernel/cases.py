"""Correctness cases for the extend-attention kernel: small, ragged, deterministic.

A case is a shape and a set of switches (dtype, soft cap, sliding window) plus a seed for
the tensor values; ``assets/reference.py:build_inputs`` turns it into tensors inside the
sandbox. Cases are scaled down so that the Triton interpreter runs a whole suite in a few
seconds, yet cover what breaks kernels: a zero-length prefix, length-1 extends, a request
longer than one tile, GQA and MQA head ratios, head dims 16/32/64, both dtypes, and every
combination of soft cap and window.

Two suites per seed:

* ``dev_cases(seed)`` — what the ``check`` tool runs; the agent sees these results.
* ``heldout_cases(seed)`` — other seeds and shapes, run only at submit.
* ``compile_cases(seed)`` — one tiny case: what the ``compile`` tool launches to see that
  the kernel imports, traces and runs at all.

bf16 is deliberately absent: the Triton interpreter computes it wrongly without an error.
Everything here is plain Python (no torch), so building a suite is free.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

Dtype = Literal["float16", "float32"]
Split = Literal["dev", "heldout", "compile"]

# Bump when the generator changes what a (seed, split) produces: it is part of cache keys.
CASES_VERSION = 1


@dataclass(frozen=True, slots=True)
class CaseSpec:
    name: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    prefix_lens: tuple[int, ...]
    extend_lens: tuple[int, ...]
    dtype: Dtype
    soft_cap: float
    window: int
    seed: int

    @property
    def batch(self) -> int:
        return len(self.prefix_lens)

    @property
    def total_extend(self) -> int:
        return sum(self.extend_lens)

    @property
    def output_numel(self) -> int:
        return self.total_extend * self.num_q_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prefix_lens"] = list(self.prefix_lens)
        d["extend_lens"] = list(self.extend_lens)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseSpec:
        return cls(
            name=str(d["name"]),
            num_q_heads=int(d["num_q_heads"]),
            num_kv_heads=int(d["num_kv_heads"]),
            head_dim=int(d["head_dim"]),
            prefix_lens=tuple(int(x) for x in d["prefix_lens"]),
            extend_lens=tuple(int(x) for x in d["extend_lens"]),
            dtype=d["dtype"],
            soft_cap=float(d["soft_cap"]),
            window=int(d["window"]),
            seed=int(d["seed"]),
        )

    def describe(self) -> str:
        """One line: ``B=3 H=4/2 D=32 fp16 cap=30 win=8``."""
        dt = "fp16" if self.dtype == "float16" else "fp32"
        cap = f"cap={self.soft_cap:g}" if self.soft_cap > 0 else "cap=-"
        win = f"win={self.window}" if self.window > 0 else "win=-"
        return (
            f"B={self.batch} H={self.num_q_heads}/{self.num_kv_heads} D={self.head_dim} "
            f"{dt} {cap} {win}"
        )


# (name, q heads, kv heads, head dim, dtype, soft cap?, window?, batch, max prefix, max extend)
_Plan = tuple[tuple[str, int, int, int, Dtype, bool, bool, int, int, int], ...]

_DEV_PLAN: _Plan = (
    ("gqa_fp16", 4, 2, 32, "float16", False, False, 3, 24, 20),
    ("mha_fp32_cap", 2, 2, 16, "float32", True, False, 3, 24, 12),
    ("mqa_fp16_window", 4, 1, 64, "float16", False, True, 2, 30, 20),
    ("gqa_fp32_cap_window", 4, 2, 32, "float32", True, True, 3, 24, 20),
    ("long_extend_fp16", 2, 1, 16, "float16", False, False, 1, 0, 40),
    ("decode_like_fp32", 2, 1, 32, "float32", False, False, 4, 30, 1),
)

_HELDOUT_PLAN: _Plan = (
    ("heldout_gqa_fp16", 8, 2, 64, "float16", False, False, 4, 40, 24),
    ("heldout_cap_fp16", 6, 3, 32, "float16", True, False, 3, 36, 30),
    ("heldout_window_fp32", 4, 4, 16, "float32", False, True, 3, 50, 36),
    ("heldout_all_fp16", 4, 1, 32, "float16", True, True, 5, 40, 18),
    ("heldout_odd_fp32", 3, 1, 64, "float32", True, False, 2, 17, 33),
)


def _lengths(rng: random.Random, batch: int, max_len: int, *, at_least: int) -> list[int]:
    return [rng.randint(at_least, max_len) if max_len > at_least else max_len for _ in range(batch)]


def _build(plan: _Plan, rng: random.Random) -> list[CaseSpec]:
    cases = []
    for i, (name, hq, hkv, d, dtype, cap, win, batch, max_p, max_e) in enumerate(plan):
        prefix = _lengths(rng, batch, max_p, at_least=0)
        # Batch-1 cases are the long ones: their extend spans more than one 32-row tile.
        extend = _lengths(rng, batch, max_e, at_least=1 if batch > 1 else max_e - 6)
        if batch >= 2:
            # The edges every suite must hold: an empty prefix and a single new token.
            prefix[0] = 0
            extend[1] = 1
        if win:
            # A window shorter than the longest context, so it actually hides keys.
            longest = max(p + e for p, e in zip(prefix, extend, strict=True))
            window = rng.randint(2, max(2, longest // 2))
        else:
            window = 0
        cases.append(
            CaseSpec(
                name=name,
                num_q_heads=hq,
                num_kv_heads=hkv,
                head_dim=d,
                prefix_lens=tuple(prefix),
                extend_lens=tuple(extend),
                dtype=dtype,
                soft_cap=float(rng.choice((5, 10, 30))) if cap else 0.0,
                window=window,
                seed=rng.randrange(2**31) + i,
            )
        )
    return cases


def dev_cases(seed: int) -> list[CaseSpec]:
    """The development suite of a seed: what the agent's ``check`` tool runs."""
    return _build(_DEV_PLAN, random.Random(f"ctxmem-kernel-dev:{seed}"))


def heldout_cases(seed: int) -> list[CaseSpec]:
    """Held-out seeds and shapes, checked only at submit."""
    return _build(_HELDOUT_PLAN, random.Random(f"ctxmem-kernel-heldout:{seed}"))


def compile_cases(seed: int) -> list[CaseSpec]:
    """One tiny GQA case (an empty prefix and a single new token included)."""
    return [CaseSpec(name="compile_smoke", num_q_heads=4, num_kv_heads=2, head_dim=32,
                     prefix_lens=(0, 7), extend_lens=(5, 1), dtype="float16", soft_cap=0.0,
                     window=0, seed=seed)]


def suite(seed: int, split: Split = "dev") -> list[CaseSpec]:
    if split == "dev":
        return dev_cases(seed)
    if split == "heldout":
        return heldout_cases(seed)
    if split == "compile":
        return compile_cases(seed)
    raise ValueError(f"unknown split {split!r}; use 'dev', 'heldout' or 'compile'")
