"""Extend attention, plainly, in PyTorch — the reference of the ctxmem kernel workload.

KernelBench form: ``Model(*get_init_inputs())(*get_inputs())`` computes the output that the
Triton kernel must reproduce. The computation is a loop over requests with explicit masks,
in fp32, written for clarity rather than speed:

* request ``b`` has ``P = prefix_lens[b]`` cached tokens and ``E = extend_lens[b]`` new
  tokens at rows ``extend_starts[b] .. extend_starts[b] + E`` of ``q``/``k_new``/``v_new``;
* its cached keys/values are pool rows ``req_to_token[req_idx[b], :P]`` of ``k_pool``/``v_pool``;
* new token ``i`` sits at absolute position ``P + i`` and sees keys at positions
  ``<= P + i`` (causal) and, with ``window > 0``, ``> P + i - window``;
* scores ``(q . k) * sm_scale``, soft-capped to ``cap * tanh(s / cap)`` when ``cap > 0``;
* query head ``h`` uses key/value head ``h // (num_q_heads // num_kv_heads)`` (GQA).

``build_inputs(case)`` turns a case description (a dict, see ``DEFAULT_CASE``) into
tensors, deterministically from ``case["seed"]``. Pool rows that belong to no request are
filled with NaN (row 0 always among them), and index-table entries past a request's prefix
point at them, so a kernel that reads a key or value it should have masked produces NaN.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# The order of the tensors taken by Model.forward and by the kernel's launch().
INPUT_NAMES = (
    "q",
    "k_new",
    "v_new",
    "k_pool",
    "v_pool",
    "req_to_token",
    "req_idx",
    "prefix_lens",
    "extend_lens",
    "extend_starts",
)

DTYPES = {"float16": torch.float16, "float32": torch.float32}

DEFAULT_CASE: dict[str, Any] = {
    "name": "default",
    "num_q_heads": 4,
    "num_kv_heads": 2,
    "head_dim": 32,
    "prefix_lens": [0, 21, 6],
    "extend_lens": [5, 1, 19],
    "dtype": "float16",
    "soft_cap": 0.0,
    "window": 0,
    "seed": 0,
}


class Model(torch.nn.Module):
    def __init__(self, sm_scale: float, soft_cap: float = 0.0, window: int = 0) -> None:
        super().__init__()
        self.sm_scale = sm_scale
        self.soft_cap = soft_cap
        self.window = window

    def forward(
        self,
        q: torch.Tensor,
        k_new: torch.Tensor,
        v_new: torch.Tensor,
        k_pool: torch.Tensor,
        v_pool: torch.Tensor,
        req_to_token: torch.Tensor,
        req_idx: torch.Tensor,
        prefix_lens: torch.Tensor,
        extend_lens: torch.Tensor,
        extend_starts: torch.Tensor,
    ) -> torch.Tensor:
        out = torch.zeros_like(q)
        group = q.shape[1] // k_new.shape[1]
        for b in range(prefix_lens.shape[0]):
            p_len = int(prefix_lens[b])
            e_len = int(extend_lens[b])
            start = int(extend_starts[b])
            if e_len == 0:
                continue
            slots = req_to_token[int(req_idx[b]), :p_len].long()
            # keys/values in position order: the prefix, then the new tokens
            k = torch.cat([k_pool[slots], k_new[start : start + e_len]]).float()
            v = torch.cat([v_pool[slots], v_new[start : start + e_len]]).float()
            k = k.repeat_interleave(group, dim=1)  # [keys, q_heads, d]
            v = v.repeat_interleave(group, dim=1)
            qb = q[start : start + e_len].float()  # [queries, q_heads, d]
            s = torch.einsum("qhd,khd->hqk", qb, k) * self.sm_scale
            if self.soft_cap > 0:
                s = self.soft_cap * torch.tanh(s / self.soft_cap)
            q_pos = p_len + torch.arange(e_len)[:, None]
            k_pos = torch.arange(p_len + e_len)[None, :]
            visible = k_pos <= q_pos
            if self.window > 0:
                visible &= k_pos > q_pos - self.window
            s = s.masked_fill(~visible, float("-inf"))
            o = torch.einsum("hqk,khd->qhd", torch.softmax(s, dim=-1), v)
            out[start : start + e_len] = o.to(q.dtype)
        return out


def build_inputs(case: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of one case, deterministic in ``case["seed"]``."""
    gen = torch.Generator().manual_seed(int(case["seed"]))
    dtype = DTYPES[case["dtype"]]
    hq, hkv, d = int(case["num_q_heads"]), int(case["num_kv_heads"]), int(case["head_dim"])
    prefix = [int(x) for x in case["prefix_lens"]]
    extend = [int(x) for x in case["extend_lens"]]
    batch = len(prefix)
    total = sum(extend)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dtype)

    # The pool holds every prefix token at a scattered row, plus `poison` NaN rows. Row 0
    # is one of them: like a serving engine's reserved padding slot, it is what a masked-off
    # slot index (`other=0`) points at.
    used = sum(prefix)
    poison = 3
    pool_size = used + poison
    k_pool = randn(pool_size, hkv, d)
    v_pool = randn(pool_size, hkv, d)
    perm = torch.randperm(pool_size - 1, generator=gen) + 1
    live = perm[:used]
    dead = torch.cat([torch.zeros(1, dtype=perm.dtype), perm[used:]])
    k_pool[dead] = float("nan")
    v_pool[dead] = float("nan")

    # The index table has spare rows, and requests use its rows in a shuffled order.
    rows = batch + 2
    width = max([p + e for p, e in zip(prefix, extend, strict=True)] + [1])
    table = dead[torch.randint(0, poison, (rows, width), generator=gen)].to(torch.int32)
    req_idx = torch.randperm(rows, generator=gen)[:batch].to(torch.int32)
    offset = 0
    for b, p_len in enumerate(prefix):
        table[int(req_idx[b]), :p_len] = live[offset : offset + p_len].to(torch.int32)
        offset += p_len

    starts = [0]
    for e_len in extend[:-1]:
        starts.append(starts[-1] + e_len)
    return {
        "q": randn(total, hq, d),
        "k_new": randn(total, hkv, d),
        "v_new": randn(total, hkv, d),
        "k_pool": k_pool,
        "v_pool": v_pool,
        "req_to_token": table,
        "req_idx": req_idx,
        "prefix_lens": torch.tensor(prefix, dtype=torch.int32),
        "extend_lens": torch.tensor(extend, dtype=torch.int32),
        "extend_starts": torch.tensor(starts[:batch], dtype=torch.int32),
    }


def init_args(case: dict[str, Any]) -> list[Any]:
    """``Model`` constructor arguments of a case: sm_scale, soft_cap, window."""
    return [1.0 / math.sqrt(int(case["head_dim"])), float(case["soft_cap"]), int(case["window"])]


def get_inputs() -> list[torch.Tensor]:
    tensors = build_inputs(DEFAULT_CASE)
    return [tensors[name] for name in INPUT_NAMES]


def get_init_inputs() -> list[Any]:
    return init_args(DEFAULT_CASE)
