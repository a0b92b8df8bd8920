# mypy: allow-untyped-defs
"""Extend attention in Triton — the baseline kernel of the ctxmem kernel workload.

What it computes (for every request ``b`` and query head ``h``):

* request ``b`` has ``P = prefix_lens[b]`` cached tokens and ``E = extend_lens[b]`` new
  ("extend") tokens. Its new tokens occupy rows ``extend_starts[b] .. extend_starts[b] + E``
  of ``q``, ``k_new``, ``v_new`` and ``out``.
* the keys/values of the cached prefix live in a shared pool: token ``j < P`` of the
  request is pool row ``req_to_token[req_idx[b], j]`` of ``k_pool`` / ``v_pool``.
* new token ``i`` (absolute position ``P + i``) attends to every prefix token and to new
  tokens ``0 .. i`` (causal). With a sliding window ``W > 0`` it only sees keys at absolute
  positions ``> P + i - W``.
* scores are ``s = (q . k) * sm_scale``; with a soft cap ``c > 0`` they become
  ``c * tanh(s / c)``; softmax over the visible keys, in fp32; output in the input dtype.
* GQA: query head ``h`` reads key/value head ``h // (num_q_heads // num_kv_heads)``.

Layout: ``q``/``out`` are ``[total_extend, num_q_heads, head_dim]``; ``k_new``/``v_new`` are
``[total_extend, num_kv_heads, head_dim]``; ``k_pool``/``v_pool`` are
``[pool_size, num_kv_heads, head_dim]``; ``req_to_token`` is ``[rows, max_context]`` int32;
``req_idx``, ``prefix_lens``, ``extend_lens`` and ``extend_starts`` are ``[batch]`` int32.

Design of this baseline: one program per (block of BLOCK_M new tokens, request, query
head). It streams the prefix in BLOCK_N-wide tiles gathered through the index table, then
the new tokens of the same request up to the causal edge of its block, keeping a running
max ``m``, running sum ``l`` and an fp32 accumulator (online softmax), and divides once at
the end. Nothing is fused across heads or requests; that is left to the optimizer.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _soft_cap(s, cap):
    # cap * tanh(s / cap), with tanh written through exp so it needs no libdevice:
    # tanh(x) = 1 - 2 / (exp(2x) + 1) saturates cleanly to +-1 when exp over/underflows.
    x = s / cap
    return cap * (1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0))


@triton.jit
def _online_softmax_step(s, visible, m_i, l_i, acc, v):
    # Fold one tile of scores s [BLOCK_M, BLOCK_N] and values v [BLOCK_N, BLOCK_D] into
    # the running (max, sum, accumulator) of each query row.
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # A row that has seen no visible key yet keeps m = -inf; shift by 0 instead so that
    # exp(-inf - -inf) never produces NaN.
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m_i - m_shift)
    p = tl.exp(s - m_shift[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _extend_attention_kernel(
    Q, K_new, V_new, Out, K_pool, V_pool,
    Req_to_token, Req_idx, Prefix_lens, Extend_lens, Extend_starts,
    sm_scale, soft_cap, window,
    stride_q_t, stride_q_h,
    stride_kn_t, stride_kn_h,
    stride_vn_t, stride_vn_h,
    stride_o_t, stride_o_h,
    stride_kp_t, stride_kp_h,
    stride_vp_t, stride_vp_h,
    stride_table_row,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_CAP: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    kv_h = h // GROUP

    extend_len = tl.load(Extend_lens + b)
    m_start = pid_m * BLOCK_M
    if m_start >= extend_len:
        return
    prefix_len = tl.load(Prefix_lens + b)
    row_start = tl.load(Extend_starts + b)
    table_row = tl.load(Req_idx + b).to(tl.int64)

    offs_m = m_start + tl.arange(0, BLOCK_M)  # index of the query among the new tokens
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < extend_len
    mask_d = offs_d < HEAD_DIM
    rows_q = (row_start + offs_m).to(tl.int64)

    q = tl.load(
        Q + rows_q[:, None] * stride_q_t + h * stride_q_h + offs_d[None, :],
        mask=mask_m[:, None] & mask_d[None, :],
        other=0.0,
    )

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # Absolute position of each query; keys must sit at positions > q_pos - window.
    q_pos = prefix_len + offs_m

    # ---- phase 1: the cached prefix, gathered from the pool through the index table.
    # Every prefix key is causally visible; only the window can hide some.
    lo = 0
    if USE_WINDOW:
        first_visible = tl.maximum(prefix_len + m_start - window + 1, 0)
        lo = (first_visible // BLOCK_N) * BLOCK_N
    for start_n in range(lo, prefix_len, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < prefix_len
        slots = tl.load(
            Req_to_token + table_row * stride_table_row + offs_n, mask=mask_n, other=0
        ).to(tl.int64)
        k = tl.load(  # [BLOCK_D, BLOCK_N], already transposed for q @ k
            K_pool + slots[None, :] * stride_kp_t + kv_h * stride_kp_h + offs_d[:, None],
            mask=mask_n[None, :] & mask_d[:, None],
            other=0.0,
        )
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * sm_scale
        if USE_CAP:
            s = _soft_cap(s, soft_cap)
        visible = mask_n[None, :] & mask_m[:, None]
        if USE_WINDOW:
            visible = visible & (offs_n[None, :] > q_pos[:, None] - window)
        v = tl.load(
            V_pool + slots[:, None] * stride_vp_t + kv_h * stride_vp_h + offs_d[None, :],
            mask=mask_n[:, None] & mask_d[None, :],
            other=0.0,
        )
        m_i, l_i, acc = _online_softmax_step(s, visible, m_i, l_i, acc, v)

    # ---- phase 2: the new tokens of this request, up to the causal edge of the block.
    hi = tl.minimum(extend_len, m_start + BLOCK_M)
    lo = 0
    if USE_WINDOW:
        first_visible = tl.maximum(m_start - window + 1, 0)
        lo = (first_visible // BLOCK_N) * BLOCK_N
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < extend_len
        rows_k = (row_start + offs_n).to(tl.int64)
        k = tl.load(
            K_new + rows_k[None, :] * stride_kn_t + kv_h * stride_kn_h + offs_d[:, None],
            mask=mask_n[None, :] & mask_d[:, None],
            other=0.0,
        )
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * sm_scale
        if USE_CAP:
            s = _soft_cap(s, soft_cap)
        visible = mask_n[None, :] & mask_m[:, None] & (offs_n[None, :] <= offs_m[:, None])
        if USE_WINDOW:
            visible = visible & (offs_n[None, :] > offs_m[:, None] - window)
        v = tl.load(
            V_new + rows_k[:, None] * stride_vn_t + kv_h * stride_vn_h + offs_d[None, :],
            mask=mask_n[:, None] & mask_d[None, :],
            other=0.0,
        )
        m_i, l_i, acc = _online_softmax_step(s, visible, m_i, l_i, acc, v)

    # Every real query sees at least itself, so l > 0 on the rows that are stored.
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(
        Out + rows_q[:, None] * stride_o_t + h * stride_o_h + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=mask_m[:, None] & mask_d[None, :],
    )


def extend_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    out: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    req_to_token: torch.Tensor,
    req_idx: torch.Tensor,
    prefix_lens: torch.Tensor,
    extend_lens: torch.Tensor,
    extend_starts: torch.Tensor,
    *,
    sm_scale: float | None = None,
    soft_cap: float = 0.0,
    window: int = 0,
    max_extend: int | None = None,
    BLOCK_M: int = 32,
    BLOCK_N: int = 32,
    num_warps: int = 4,
    num_stages: int = 1,
) -> torch.Tensor:
    """Write extend attention for every new token into ``out`` and return it.

    ``soft_cap <= 0`` disables the soft cap, ``window <= 0`` the sliding window.
    ``max_extend`` (the largest ``extend_lens``) sizes the grid; it is read from the
    tensor when not given, which costs a device sync.
    """
    total, num_q_heads, head_dim = q.shape
    num_kv_heads = k_new.shape[1]
    if num_q_heads % num_kv_heads:
        raise ValueError(f"{num_q_heads} query heads is not a multiple of {num_kv_heads} kv heads")
    for name, t in (("q", q), ("k_new", k_new), ("v_new", v_new), ("out", out),
                    ("k_pool", k_pool), ("v_pool", v_pool)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim")
    batch = prefix_lens.shape[0]
    if max_extend is None:
        max_extend = int(extend_lens.max().item()) if batch else 0
    if sm_scale is None:
        sm_scale = head_dim**-0.5
    if total == 0 or max_extend == 0:
        return out
    grid = (triton.cdiv(max_extend, BLOCK_M), batch, num_q_heads)
    _extend_attention_kernel[grid](
        q, k_new, v_new, out, k_pool, v_pool,
        req_to_token, req_idx, prefix_lens, extend_lens, extend_starts,
        sm_scale, soft_cap, window,
        q.stride(0), q.stride(1),
        k_new.stride(0), k_new.stride(1),
        v_new.stride(0), v_new.stride(1),
        out.stride(0), out.stride(1),
        k_pool.stride(0), k_pool.stride(1),
        v_pool.stride(0), v_pool.stride(1),
        req_to_token.stride(0),
        HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim),
        GROUP=num_q_heads // num_kv_heads,
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        USE_CAP=soft_cap > 0,
        USE_WINDOW=window > 0,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps,
        num_stages=num_stages,
    )
    return out


# The checker calls ``launch``; ``extend_attention`` is the same function.
launch = extend_attention
