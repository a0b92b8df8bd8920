# mypy: allow-untyped-defs
"""Extend attention in Triton — rung 6: the launch picks the tile for the batch it is given.

Same contract as the baseline (see ``reference.py``) and the same kernel body as split_kv
(unified key loop, GQA head packing, split-KV + reduce). What changes is the launch: like
a kernel library's dispatcher, it looks at the batch (the longest extend, and the longest
prefix when a split is possible: one torch reduction each; the rest is tensor metadata) and
launches the code path that does the least work for it:

* **tile rows** — a tile holds ``BLOCK_M`` rows (query tokens × packed heads). When the
  longest extend times the packed heads fills at most half of them, the rows are halved,
  down to 64, so fewer FLOPs go to empty rows; prefill-like batches keep the configured
  ``BLOCK_M``. Every path launches with the configured ``BLOCK_N``, ``num_warps`` and
  ``num_stages``.
* **swapped dots for decode** — when a request's packed rows are 32 or fewer (a few new
  tokens: decode, speculative decoding), ``_decode_kernel`` takes them in one tile of 16
  or 32 rows and computes ``K·Qᵀ`` and ``Vᵀ·P``: the matrix units' long side holds the
  keys and the head dim, so no FLOPs go to empty rows at all (the "swap AB" of decode
  kernels).
* **split or not** — a key range is cut only when some request's keys exceed
  ``SPLIT_KEYS`` *and* the unsplit grid is under ``FILL_PROGRAMS`` programs (too few to
  fill a device); a batch that already fills the device runs one program per tile.
* **no scratch for a whole tile** — a tile that is not split normalizes its accumulator
  and writes ``out`` itself; the scratch and the reduce kernel exist only in a launch
  where a split can happen, and the reduce skips the tiles that were not split. A split
  stores its normalized partial output in the output's dtype (half the bytes of fp32 for
  fp16) and its running max and sum in fp32; the reduce runs RED_ROWS rows per program.
* **less vector work per score** — q is scaled by ``sm_scale · log2(e)`` once when loaded
  (no multiply per score tile), and interior tiles rescale the accumulator lazily: only
  when some row's running max grew by more than 8 (log2 units), a per-tile scalar test.

The thresholds are code (a table in :func:`extend_attention`), priced by what they then
make the kernels do; nothing is read from the device.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _soft_cap(s, cap):
    x = s / cap
    return cap * (1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0))


@triton.jit
def _log2_scores(s, sm_scale, soft_cap, USE_CAP: tl.constexpr):
    # q.k to scores in log2 units (the softmax uses exp2). Without a soft cap, q was scaled
    # by sm_scale * log2(e) once when loaded, so the scores need no multiply per tile; the
    # soft cap needs the natural-unit score first.
    if USE_CAP:
        return _soft_cap(s * sm_scale, soft_cap) * 1.4426950408889634
    return s


@triton.jit
def _online_softmax_step(s, visible, m_i, l_i, acc, v):
    # An edge tile: some (row, key) pairs are masked, a row may see no key at all yet.
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_shift)
    p = tl.exp2(s - m_shift[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return m_new, l_i, acc


@triton.jit
def _full_tile_step(s, m_i, l_i, acc, v):
    # An interior tile: every row sees every key, so no mask and no all-masked row guard.
    # Lazy rescaling: the running max moves (and acc, l_i are rescaled) only when some
    # row's max grew by more than RESCALE_LOG2; otherwise p = 2^(s - m_i) stays under
    # 2^RESCALE_LOG2 = 256, exact enough in fp16, and the M x D rescale of acc is skipped.
    # The test is one scalar per tile, so the whole program takes the same branch.
    m_tile = tl.max(s, axis=1)
    if tl.max(m_tile - m_i, axis=0) > 8.0:  # RESCALE_LOG2
        m_new = tl.maximum(m_i, m_tile)
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha
        acc = acc * alpha[:, None]
        m_i = m_new
    p = tl.exp2(s - m_i[:, None])
    l_i = l_i + tl.sum(p, axis=1)
    acc = tl.dot(p.to(v.dtype), v, acc)
    return m_i, l_i, acc


@triton.jit
def _extend_attention_kernel(
    Q, K_new, V_new, Out, Mid_o, Mid_ml, K_pool, V_pool,
    Req_to_token, Req_idx, Prefix_lens, Extend_lens, Extend_starts,
    sm_scale, soft_cap, window,
    stride_q_t, stride_q_h,
    stride_o_t, stride_o_h,
    stride_kn_t, stride_kn_h,
    stride_vn_t, stride_vn_h,
    stride_mid_s, stride_mid_t, stride_mid_h,
    stride_ml_s, stride_ml_t, stride_ml_h,
    stride_kp_t, stride_kp_h,
    stride_vp_t, stride_vp_h,
    stride_table_row,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP: tl.constexpr,
    PACK: tl.constexpr,
    SPLITS: tl.constexpr,
    MIN_TILES: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_CAP: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    hg = tl.program_id(2) // SPLITS  # which PACK-sized slice of the query heads
    split = tl.program_id(2) % SPLITS  # which chunk of the key range
    TOKENS: tl.constexpr = BLOCK_M // PACK
    kv_h = (hg * PACK) // GROUP

    extend_len = tl.load(Extend_lens + b)
    m_start = pid_m * TOKENS
    if m_start >= extend_len:
        return
    prefix_len = tl.load(Prefix_lens + b)
    row_start = tl.load(Extend_starts + b)
    table_row = tl.load(Req_idx + b).to(tl.int64)

    rows = tl.arange(0, BLOCK_M)
    heads = hg * PACK + rows // TOKENS  # query head of each row
    offs_m = m_start + rows % TOKENS  # index of each row's query among the new tokens
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < extend_len
    mask_d = offs_d < HEAD_DIM
    rows_q = (row_start + offs_m).to(tl.int64)
    q = tl.load(
        Q + rows_q[:, None] * stride_q_t + heads[:, None] * stride_q_h + offs_d[None, :],
        mask=mask_m[:, None] & mask_d[None, :],
        other=0.0,
    )
    if not USE_CAP:
        # Scores in log2 units straight out of tl.dot: scale q once, not every score tile.
        q = (q * (sm_scale * 1.4426950408889634)).to(Q.dtype.element_ty)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    q_pos = prefix_len + offs_m  # absolute position of each query

    # Keys in position order: the prefix, then the new tokens up to the block's causal edge.
    kv_end = prefix_len + tl.minimum(extend_len, m_start + TOKENS)
    n_full = prefix_len + m_start  # tiles ending here or before need no mask
    lo = 0
    if USE_WINDOW:
        first_visible = tl.maximum(prefix_len + m_start - window + 1, 0)
        lo = (first_visible // BLOCK_N) * BLOCK_N
        n_full = lo  # the window's edge crosses tiles: every tile is masked
    # Split only what is long: at most SPLITS chunks of at least MIN_TILES key tiles each,
    # so a short key range stays one program that writes ``out`` itself (splits past the
    # tile's count exit at once).
    tiles = (kv_end - lo + BLOCK_N - 1) // BLOCK_N
    n_split = tl.minimum((tiles + MIN_TILES - 1) // MIN_TILES, SPLITS)
    if split >= n_split:
        return
    chunk = ((tiles + n_split - 1) // n_split) * BLOCK_N
    split_lo = lo + split * chunk
    split_hi = tl.minimum(split_lo + chunk, kv_end)
    for start_n in range(split_lo, split_hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)  # absolute key positions
        in_prefix = offs_n < prefix_len
        slots = tl.load(
            Req_to_token + table_row * stride_table_row + offs_n, mask=in_prefix, other=0
        ).to(tl.int64)
        rows_k = (row_start + offs_n - prefix_len).to(tl.int64)
        # One load per tile: each key's row pointer comes from the pool (prefix) or from
        # k_new / v_new (new tokens).
        k_rows = tl.where(in_prefix, K_pool + slots * stride_kp_t + kv_h * stride_kp_h,
                          K_new + rows_k * stride_kn_t + kv_h * stride_kn_h)
        v_rows = tl.where(in_prefix, V_pool + slots * stride_vp_t + kv_h * stride_vp_h,
                          V_new + rows_k * stride_vn_t + kv_h * stride_vn_h)
        if start_n + BLOCK_N <= n_full:
            k = tl.load(k_rows[None, :] + offs_d[:, None], mask=mask_d[:, None], other=0.0)
            s = tl.dot(q, k, input_precision=DOT_PRECISION)
            s = _log2_scores(s, sm_scale, soft_cap, USE_CAP)
            v = tl.load(v_rows[:, None] + offs_d[None, :], mask=mask_d[None, :], other=0.0)
            m_i, l_i, acc = _full_tile_step(s, m_i, l_i, acc, v)
        else:
            in_kv = offs_n < kv_end
            k = tl.load(k_rows[None, :] + offs_d[:, None], mask=in_kv[None, :] & mask_d[:, None], other=0.0)
            s = tl.dot(q, k, input_precision=DOT_PRECISION)
            s = _log2_scores(s, sm_scale, soft_cap, USE_CAP)
            visible = mask_m[:, None] & (offs_n[None, :] < kv_end) & (offs_n[None, :] <= q_pos[:, None])
            if USE_WINDOW:
                visible = visible & (offs_n[None, :] > q_pos[:, None] - window)
            v = tl.load(v_rows[:, None] + offs_d[None, :], mask=in_kv[:, None] & mask_d[None, :], other=0.0)
            m_i, l_i, acc = _online_softmax_step(s, visible, m_i, l_i, acc, v)

    if n_split == 1:
        # A whole tile: normalize and write ``out`` here (no scratch, nothing to reduce).
        l_safe = tl.where(l_i > 0.0, l_i, 1.0)
        tl.store(
            Out + rows_q[:, None] * stride_o_t + heads[:, None] * stride_o_h + offs_d[None, :],
            (acc / l_safe[:, None]).to(Out.dtype.element_ty),
            mask=mask_m[:, None] & mask_d[None, :],
        )
    else:
        # Partial results of this split: its normalized output in the output's dtype (a
        # weighted mean of V rows, so no wider range than V; half the bytes of fp32 for
        # fp16), and the running max and sum in fp32, which carry the split's weight.
        l_safe = tl.where(l_i > 0.0, l_i, 1.0)
        mid = split * stride_mid_s + rows_q[:, None] * stride_mid_t + heads[:, None] * stride_mid_h
        tl.store(Mid_o + mid + offs_d[None, :], (acc / l_safe[:, None]).to(Mid_o.dtype.element_ty),
                 mask=mask_m[:, None] & mask_d[None, :])
        ml = split * stride_ml_s + rows_q * stride_ml_t + heads * stride_ml_h
        tl.store(Mid_ml + ml, m_i, mask=mask_m)
        tl.store(Mid_ml + ml + 1, l_i, mask=mask_m)


@triton.jit
def _full_tile_step_t(s, m_i, l_i, acc, vt):
    # _full_tile_step with keys on axis 0: s [keys, rows], acc and vt [dims, ...].
    m_tile = tl.max(s, axis=0)
    if tl.max(m_tile - m_i, axis=0) > 8.0:  # RESCALE_LOG2
        m_new = tl.maximum(m_i, m_tile)
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha
        acc = acc * alpha[None, :]
        m_i = m_new
    p = tl.exp2(s - m_i[None, :])
    l_i = l_i + tl.sum(p, axis=0)
    acc = tl.dot(vt, p.to(vt.dtype), acc)
    return m_i, l_i, acc


@triton.jit
def _online_softmax_step_t(s, visible, m_i, l_i, acc, vt):
    # _online_softmax_step with keys on axis 0.
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=0))
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_shift)
    p = tl.exp2(s - m_shift[None, :])
    l_i = l_i * alpha + tl.sum(p, axis=0)
    acc = acc * alpha[None, :]
    acc = tl.dot(vt, p.to(vt.dtype), acc)
    return m_new, l_i, acc


@triton.jit
def _decode_kernel(
    Q, K_new, V_new, Out, Mid_o, Mid_ml, K_pool, V_pool,
    Req_to_token, Req_idx, Prefix_lens, Extend_lens, Extend_starts,
    sm_scale, soft_cap, window,
    stride_q_t, stride_q_h,
    stride_o_t, stride_o_h,
    stride_kn_t, stride_kn_h,
    stride_vn_t, stride_vn_h,
    stride_mid_s, stride_mid_t, stride_mid_h,
    stride_ml_s, stride_ml_t, stride_ml_h,
    stride_kp_t, stride_kp_h,
    stride_vp_t, stride_vp_h,
    stride_table_row,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP: tl.constexpr,
    PACK: tl.constexpr,
    SPLITS: tl.constexpr,
    MIN_TILES: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_CAP: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # The attention kernel for a few rows (decode-like batches), with the dots swapped: the
    # scores are K·Qᵀ [keys, rows] and the output accumulates as Vᵀ·P [dims, rows], so the
    # matrix units' long side holds BLOCK_N keys (or the head dim), not a row tile that is
    # mostly empty. Same grid, splits and outputs as _extend_attention_kernel.
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    hg = tl.program_id(2) // SPLITS
    split = tl.program_id(2) % SPLITS
    TOKENS: tl.constexpr = BLOCK_M // PACK
    kv_h = (hg * PACK) // GROUP

    extend_len = tl.load(Extend_lens + b)
    m_start = pid_m * TOKENS
    if m_start >= extend_len:
        return
    prefix_len = tl.load(Prefix_lens + b)
    row_start = tl.load(Extend_starts + b)
    table_row = tl.load(Req_idx + b).to(tl.int64)

    rows = tl.arange(0, BLOCK_M)
    heads = hg * PACK + rows // TOKENS
    offs_m = m_start + rows % TOKENS
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < extend_len
    mask_d = offs_d < HEAD_DIM
    rows_q = (row_start + offs_m).to(tl.int64)
    qt = tl.load(  # [dims, rows]
        Q + rows_q[None, :] * stride_q_t + heads[None, :] * stride_q_h + offs_d[:, None],
        mask=mask_d[:, None] & mask_m[None, :],
        other=0.0,
    )
    if not USE_CAP:
        qt = (qt * (sm_scale * 1.4426950408889634)).to(Q.dtype.element_ty)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_D, BLOCK_M], dtype=tl.float32)
    q_pos = prefix_len + offs_m

    kv_end = prefix_len + tl.minimum(extend_len, m_start + TOKENS)
    n_full = prefix_len + m_start
    lo = 0
    if USE_WINDOW:
        first_visible = tl.maximum(prefix_len + m_start - window + 1, 0)
        lo = (first_visible // BLOCK_N) * BLOCK_N
        n_full = lo
    tiles = (kv_end - lo + BLOCK_N - 1) // BLOCK_N
    n_split = tl.minimum((tiles + MIN_TILES - 1) // MIN_TILES, SPLITS)
    if split >= n_split:
        return
    chunk = ((tiles + n_split - 1) // n_split) * BLOCK_N
    split_lo = lo + split * chunk
    split_hi = tl.minimum(split_lo + chunk, kv_end)
    for start_n in range(split_lo, split_hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_prefix = offs_n < prefix_len
        slots = tl.load(
            Req_to_token + table_row * stride_table_row + offs_n, mask=in_prefix, other=0
        ).to(tl.int64)
        rows_k = (row_start + offs_n - prefix_len).to(tl.int64)
        k_rows = tl.where(in_prefix, K_pool + slots * stride_kp_t + kv_h * stride_kp_h,
                          K_new + rows_k * stride_kn_t + kv_h * stride_kn_h)
        v_rows = tl.where(in_prefix, V_pool + slots * stride_vp_t + kv_h * stride_vp_h,
                          V_new + rows_k * stride_vn_t + kv_h * stride_vn_h)
        if start_n + BLOCK_N <= n_full:
            k = tl.load(k_rows[:, None] + offs_d[None, :], mask=mask_d[None, :], other=0.0)
            s = tl.dot(k, qt, input_precision=DOT_PRECISION)  # [keys, rows]
            s = _log2_scores(s, sm_scale, soft_cap, USE_CAP)
            vt = tl.load(v_rows[None, :] + offs_d[:, None], mask=mask_d[:, None], other=0.0)
            m_i, l_i, acc = _full_tile_step_t(s, m_i, l_i, acc, vt)
        else:
            in_kv = offs_n < kv_end
            k = tl.load(k_rows[:, None] + offs_d[None, :], mask=in_kv[:, None] & mask_d[None, :], other=0.0)
            s = tl.dot(k, qt, input_precision=DOT_PRECISION)
            s = _log2_scores(s, sm_scale, soft_cap, USE_CAP)
            visible = mask_m[None, :] & (offs_n[:, None] < kv_end) & (offs_n[:, None] <= q_pos[None, :])
            if USE_WINDOW:
                visible = visible & (offs_n[:, None] > q_pos[None, :] - window)
            vt = tl.load(v_rows[None, :] + offs_d[:, None], mask=in_kv[None, :] & mask_d[:, None], other=0.0)
            m_i, l_i, acc = _online_softmax_step_t(s, visible, m_i, l_i, acc, vt)

    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    o = acc / l_safe[None, :]  # [dims, rows]
    if n_split == 1:
        tl.store(
            Out + rows_q[None, :] * stride_o_t + heads[None, :] * stride_o_h + offs_d[:, None],
            o.to(Out.dtype.element_ty),
            mask=mask_d[:, None] & mask_m[None, :],
        )
    else:
        mid = split * stride_mid_s + rows_q[None, :] * stride_mid_t + heads[None, :] * stride_mid_h
        tl.store(Mid_o + mid + offs_d[:, None], o.to(Mid_o.dtype.element_ty),
                 mask=mask_d[:, None] & mask_m[None, :])
        ml = split * stride_ml_s + rows_q * stride_ml_t + heads * stride_ml_h
        tl.store(Mid_ml + ml, m_i, mask=mask_m)
        tl.store(Mid_ml + ml + 1, l_i, mask=mask_m)


@triton.jit
def _reduce_splits_kernel(
    Mid_o, Mid_ml, Out, Prefix_lens, Extend_lens, Extend_starts, window,
    stride_mid_s, stride_mid_t, stride_mid_h,
    stride_ml_s, stride_ml_t, stride_ml_h,
    stride_o_t, stride_o_h,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PACK: tl.constexpr,
    SPLITS: tl.constexpr,
    MIN_TILES: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    RED_ROWS: tl.constexpr,
):
    # The attention kernel's tile geometry, RED_ROWS rows of a tile per program (a whole
    # tile's partials are many bytes for one program): each split tile's rows combine
    # their n_split partial results (log-sum-exp rule) and write ``out``.
    SUBS: tl.constexpr = BLOCK_M // RED_ROWS
    pid_m = tl.program_id(0) // SUBS
    sub = tl.program_id(0) % SUBS
    b = tl.program_id(1)
    hg = tl.program_id(2)
    TOKENS: tl.constexpr = BLOCK_M // PACK
    extend_len = tl.load(Extend_lens + b)
    m_start = pid_m * TOKENS
    if m_start >= extend_len:
        return
    prefix_len = tl.load(Prefix_lens + b)
    kv_end = prefix_len + tl.minimum(extend_len, m_start + TOKENS)
    lo = 0
    if USE_WINDOW:
        first_visible = tl.maximum(prefix_len + m_start - window + 1, 0)
        lo = (first_visible // BLOCK_N) * BLOCK_N
    tiles = (kv_end - lo + BLOCK_N - 1) // BLOCK_N
    n_split = tl.minimum((tiles + MIN_TILES - 1) // MIN_TILES, SPLITS)
    if n_split == 1:
        return  # a whole tile wrote ``out`` itself
    rows = sub * RED_ROWS + tl.arange(0, RED_ROWS)
    heads = hg * PACK + rows // TOKENS
    offs_m = m_start + rows % TOKENS
    mask_m = offs_m < extend_len
    rows_q = (tl.load(Extend_starts + b) + offs_m).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    ml = rows_q * stride_ml_t + heads * stride_ml_h
    m = tl.full([RED_ROWS], float("-inf"), dtype=tl.float32)
    for s in range(0, n_split):
        m = tl.maximum(m, tl.load(Mid_ml + s * stride_ml_s + ml, mask=mask_m, other=float("-inf")))
    m_shift = tl.where(m == float("-inf"), 0.0, m)
    l_sum = tl.zeros([RED_ROWS], dtype=tl.float32)
    acc = tl.zeros([RED_ROWS, BLOCK_D], dtype=tl.float32)
    mid = rows_q[:, None] * stride_mid_t + heads[:, None] * stride_mid_h + offs_d[None, :]
    for s in range(0, n_split):
        m_s = tl.load(Mid_ml + s * stride_ml_s + ml, mask=mask_m, other=float("-inf"))
        l_s = tl.load(Mid_ml + s * stride_ml_s + ml + 1, mask=mask_m, other=0.0)
        scale = tl.exp2(m_s - m_shift)
        o_s = tl.load(Mid_o + s * stride_mid_s + mid, mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        weight = l_s * scale  # the split's share of the row's softmax mass
        l_sum += weight
        acc += o_s.to(tl.float32) * weight[:, None]
    l_safe = tl.where(l_sum > 0.0, l_sum, 1.0)
    tl.store(
        Out + rows_q[:, None] * stride_o_t + heads[:, None] * stride_o_h + offs_d[None, :],
        (acc / l_safe[:, None]).to(Out.dtype.element_ty),
        mask=mask_m[:, None] & mask_d[None, :],
    )


# The launch's table. A grid of at least FILL_PROGRAMS tile programs keeps every slot of a
# device busy without splitting key ranges. Tiles are not shrunk under MIN_ROWS rows:
# matrix units run a tl.dot of fewer rows at part rate (a warpgroup MMA is 64 rows), so
# the FLOPs saved on empty rows come back as time. RED_ROWS: rows of a split tile that
# one reduce program combines (a whole tile's partials are too many bytes for one).
FILL_PROGRAMS = 1024
MIN_ROWS = 64
RED_ROWS = 16


def extend_attention(
    q, k_new, v_new, out, k_pool, v_pool,
    req_to_token, req_idx, prefix_lens, extend_lens, extend_starts,
    *,
    sm_scale=None,
    soft_cap=0.0,
    window=0,
    max_extend=None,
    max_prefix=None,
    BLOCK_M=32,
    BLOCK_N=32,
    num_warps=4,
    num_stages=1,
    PACK=2,
    SPLITS=2,
    SPLIT_KEYS=1024,
):
    """Write extend attention for every new token into ``out`` and return it."""
    total, num_q_heads, head_dim = q.shape
    num_kv_heads = k_new.shape[1]
    if num_q_heads % num_kv_heads:
        raise ValueError(f"{num_q_heads} query heads is not a multiple of {num_kv_heads} kv heads")
    batch = prefix_lens.shape[0]
    if max_extend is None:
        max_extend = int(extend_lens.max().item()) if batch else 0
    if sm_scale is None:
        sm_scale = head_dim**-0.5
    if total == 0 or max_extend == 0:
        return out
    group = num_q_heads // num_kv_heads
    pack = 1
    while pack * 2 <= PACK and group % (pack * 2) == 0 and BLOCK_M % (pack * 2) == 0:
        pack *= 2
    # Rows per tile: halve (down to MIN_ROWS) while the longest extend of the packed heads
    # fills at most half of them (decode-like batches).
    rows = BLOCK_M
    while rows // 2 >= max(MIN_ROWS, pack, pack * max_extend):
        rows //= 2
    # When a request's packed rows fill at most half of MIN_ROWS, the swapped-dot decode
    # kernel takes them all in one tile of as few rows as tl.dot allows.
    swap = pack * max_extend <= MIN_ROWS // 2
    if swap:
        rows = max(16, triton.next_power_of_2(pack * max_extend))
    attention = _decode_kernel if swap else _extend_attention_kernel
    tokens = rows // pack
    grid = (triton.cdiv(max_extend, tokens), batch, num_q_heads // pack)
    # Split only when the grid alone cannot fill a device and some key range is long (the
    # longest prefix is read only then).
    splits = 1
    if grid[0] * grid[1] * grid[2] < FILL_PROGRAMS and SPLITS > 1:
        if max_prefix is None:
            max_prefix = int(prefix_lens.max().item())
        if max_prefix + max_extend > SPLIT_KEYS:
            splits = SPLITS
    block_d = triton.next_power_of_2(head_dim)
    min_tiles = max(1, SPLIT_KEYS // BLOCK_N)
    if splits > 1:
        # Scratch per split: the normalized partial output [splits, total, heads, block_d]
        # in the output's dtype and (max, sum) in fp32.
        mid_o = torch.empty((splits, total, num_q_heads, block_d), dtype=out.dtype, device=q.device)
        mid_ml = torch.empty((splits, total, num_q_heads, 2), dtype=torch.float32, device=q.device)
    else:  # every tile writes ``out`` itself: the scratch is never touched
        mid_o = torch.empty((1, 1, 1, 1), dtype=out.dtype, device=q.device)
        mid_ml = torch.empty((1, 1, 1, 2), dtype=torch.float32, device=q.device)
    attention[(grid[0], grid[1], grid[2] * splits)](
        q, k_new, v_new, out, mid_o, mid_ml, k_pool, v_pool,
        req_to_token, req_idx, prefix_lens, extend_lens, extend_starts,
        sm_scale, soft_cap, window,
        q.stride(0), q.stride(1),
        out.stride(0), out.stride(1),
        k_new.stride(0), k_new.stride(1),
        v_new.stride(0), v_new.stride(1),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_ml.stride(0), mid_ml.stride(1), mid_ml.stride(2),
        k_pool.stride(0), k_pool.stride(1),
        v_pool.stride(0), v_pool.stride(1),
        req_to_token.stride(0),
        HEAD_DIM=head_dim,
        BLOCK_D=block_d,
        GROUP=group,
        PACK=pack,
        SPLITS=splits,
        MIN_TILES=min_tiles,
        BLOCK_M=rows,
        BLOCK_N=BLOCK_N,
        USE_CAP=soft_cap > 0,
        USE_WINDOW=window > 0,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps,
        num_stages=num_stages,
    )
    if splits > 1:
        _reduce_splits_kernel[(grid[0] * (rows // RED_ROWS), grid[1], grid[2])](
            mid_o, mid_ml, out, prefix_lens, extend_lens, extend_starts, window,
            mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
            mid_ml.stride(0), mid_ml.stride(1), mid_ml.stride(2),
            out.stride(0), out.stride(1),
            HEAD_DIM=head_dim,
            BLOCK_D=block_d,
            PACK=pack,
            SPLITS=splits,
            MIN_TILES=min_tiles,
            BLOCK_M=rows,
            BLOCK_N=BLOCK_N,
            USE_WINDOW=window > 0,
            RED_ROWS=RED_ROWS,
            num_warps=4,
        )
    return out


launch = extend_attention
