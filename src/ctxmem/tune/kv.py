"""KV-cache estimator: how much context a model's KV cache allows on a GPU.

From a Hugging Face transformers ``config.json`` it derives the attention layout and
answers two questions: the memory a given context needs, and the longest context that fits
a GPU after the weights and an overhead margin.

**Per token, per layer**, a standard attention layer caches one key and one value vector
per KV head: ``2 · num_key_value_heads · head_dim`` values (GQA shares KV heads between
query heads; ``head_dim`` comes from the config when it says so — Gemma 2 9B: 256, not
hidden/heads = 224 — else ``hidden_size / num_attention_heads``). An MLA layer
(DeepSeek-V2/V3: ``kv_lora_rank`` set) caches the compressed latent and the decoupled RoPE
key instead, shared by all heads: ``kv_lora_rank + qk_rope_head_dim`` values (512 + 64 =
576 for V3) — the DeepSeek-V2 paper's ``(d_c + d_h^R) · l``. ``mla_mode="expanded"``
models runtimes that decompress it into per-head keys and values.

**Sliding-window layers** keep only the last ``sliding_window`` tokens, so a context of
``L`` tokens costs ``full·L + sliding·min(L, W)`` bytes. Which layers slide comes from
``layer_types`` when the config has it (``full_attention`` / ``sliding_attention``; chunked
attention is treated as a window of ``attention_chunk_size``; ``linear_attention`` layers
keep a constant-size state and no KV cache), else from the model family's rule: Gemma 2
alternates sliding and full (even layers slide), Gemma 3 makes every
``sliding_window_pattern``-th layer full (default 6), Qwen2-style configs slide layers at
index ≥ ``max_window_layers`` only when ``use_sliding_window`` is true, a Mistral-style
``sliding_window`` without that switch applies to every layer, and the Qwen3-Next / Qwen3.5
hybrids (``full_attention_interval``, default 4, as transformers derives it) make every
interval-th layer full attention and the others linear: 64 layers → 16 with a KV cache.

**KV dtypes**: fp32 (4 bytes), fp16/bf16 (2), fp8 (1), and llama.cpp's block formats:
``q8_0`` stores 32 values in 34 bytes (32 int8 + an fp16 scale), ``q4_0`` 32 values in 18
bytes (16 bytes of nibbles + an fp16 scale). Rows are quantized in whole blocks.

**Weights** are taken as given (``weights_gib``) or estimated from the config: embeddings
(and an untied LM head), attention projections (MLA's low-rank ones included), gated MLPs
(``3·hidden·intermediate``), MoE experts, shared experts and routers, norms; at the
config's dtype (``torch_dtype``, fp8 when ``quantization_config`` says so) unless
``weight_dtype`` overrides it. Llama-3-8B estimates to 8.03B parameters, DeepSeek-V3 to
671B (its multi-token-prediction module, not used for decoding, is left out).

An inconsistent config (heads not divisible by KV heads, a hidden size that does not
split into heads, ``layer_types`` of the wrong length, sliding layers without a window, a
missing field) raises :class:`~ctxmem.errors.ConfigError` naming the field and the file; a
GPU too small for the weights and the margin raises :class:`~ctxmem.errors.InputError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ctxmem.errors import ConfigError, InputError

GiB = 1024**3

#: KV / weight dtype → (values per block, bytes per block)
DTYPES: dict[str, tuple[int, int]] = {
    "fp32": (1, 4),
    "fp16": (1, 2),
    "bf16": (1, 2),
    "fp8": (1, 1),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
}
_DTYPE_ALIASES = {
    "float32": "fp32", "f32": "fp32", "float16": "fp16", "f16": "fp16", "half": "fp16",
    "bfloat16": "bf16", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "float8_e4m3fn": "fp8", "float8": "fp8",
}

LayerKind = Literal["full", "sliding", "linear"]
MLAMode = Literal["compressed", "expanded"]


def normalize_dtype(name: str, *, field: str = "kv_dtype") -> str:
    key = name.strip().lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        from ctxmem.errors import UnknownNameError

        raise UnknownNameError("dtype", name, [*DTYPES, *_DTYPE_ALIASES])
    return key


def row_bytes(values: int, dtype: str) -> int:
    """Bytes of one row of ``values`` values in ``dtype`` (block formats in whole blocks)."""
    block, nbytes = DTYPES[normalize_dtype(dtype)]
    return math.ceil(values / block) * nbytes


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)


def parse_size(text: str | float | int, *, bare_unit: str = "gib") -> int:
    """Bytes from ``24GiB``, ``24G`` (binary), ``24GB`` (decimal), ``80000MiB`` or ``1234B``.

    A bare number (``24``) is read in ``bare_unit`` — GiB by default, because a GPU's memory
    is what this parses and nobody means 24 bytes. Write ``B`` for bytes.
    """
    if isinstance(text, int | float):
        return int(text)
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"not a memory size: {text!r} (use e.g. 24GiB, 80GB, 24576MiB)", field="gpu_mem")
    value = float(m.group(1))
    unit = (m.group(2) or bare_unit).lower()
    powers = {"k": 1, "m": 2, "g": 3, "t": 4}
    if unit == "b":
        return int(value)
    p = powers[unit[0]]
    decimal = unit.endswith("b") and not unit.endswith("ib")
    return int(value * (1000**p if decimal else 1024**p))


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class AttentionLayout:
    """What the KV cache of one model holds, per token."""

    model_type: str
    layer_kinds: tuple[LayerKind, ...]
    sliding_window: int | None
    num_attention_heads: int
    kv_heads: int
    k_head_dim: int
    v_head_dim: int
    mla: bool = False
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    max_position_embeddings: int | None = None
    params: int = 0
    config_dtype: str = "bf16"

    @property
    def num_layers(self) -> int:
        return len(self.layer_kinds)

    def count(self, kind: LayerKind) -> int:
        return sum(1 for k in self.layer_kinds if k == kind)

    def layer_bytes(self, kv_dtype: str, mla_mode: MLAMode = "compressed") -> int:
        """KV bytes of one token in one attention layer."""
        if self.mla and mla_mode == "compressed":
            assert self.kv_lora_rank is not None and self.qk_rope_head_dim is not None
            return row_bytes(self.kv_lora_rank + self.qk_rope_head_dim, kv_dtype)
        return row_bytes(self.kv_heads * self.k_head_dim, kv_dtype) + row_bytes(self.kv_heads * self.v_head_dim, kv_dtype)


def _get(cfg: Mapping[str, Any], key: str, source: str, *, required: bool = True, default: Any = None) -> Any:
    v = cfg.get(key, default)
    if v is None and required:
        raise ConfigError("missing from the model config (needed for the KV-cache estimate)", source=source, field=key)
    return v


def _pos_int(cfg: Mapping[str, Any], key: str, source: str, *, required: bool = True, default: Any = None) -> Any:
    v = _get(cfg, key, source, required=required, default=default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"must be a positive integer, got {v!r}", source=source, field=key)
    return v


#: model types whose configs give ``full_attention_interval`` instead of ``layer_types``
_INTERVAL_HYBRIDS = frozenset({"qwen3_next", "qwen3_5", "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"})


def _layer_kinds(cfg: Mapping[str, Any], n: int, model_type: str, source: str) -> tuple[tuple[LayerKind, ...], int | None]:
    window = cfg.get("sliding_window")
    kinds: list[LayerKind]
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n:
            got = len(types) if isinstance(types, list) else type(types).__name__
            raise ConfigError(f"must list one type per layer ({n} layers), got {got}", source=source, field="layer_types")
        kinds = []
        for t in types:
            if t in ("full_attention", "attention", "global_attention"):
                kinds.append("full")
            elif t in ("sliding_attention", "local_attention"):
                kinds.append("sliding")
            elif t == "chunked_attention":
                kinds.append("sliding")
                window = cfg.get("attention_chunk_size") or window
            elif t in ("linear_attention", "mamba", "recurrent"):
                kinds.append("linear")
            else:
                raise ConfigError(f"unknown layer type {t!r} (known: full_attention, sliding_attention, "
                                  "chunked_attention, linear_attention)", source=source, field="layer_types")
    elif model_type in _INTERVAL_HYBRIDS or "full_attention_interval" in cfg:
        # Qwen3-Next / Qwen3.5 hybrids: transformers derives ``layer_types`` from the interval
        # (default 4): every interval-th layer is full attention, the rest are linear
        # (Gated DeltaNet) layers with a constant-size state and no KV cache.
        interval = _pos_int(cfg, "full_attention_interval", source, required=False) or 4
        kinds = ["linear" if (i + 1) % interval else "full" for i in range(n)]
    elif model_type == "gemma2":
        kinds = ["sliding" if i % 2 == 0 else "full" for i in range(n)]
    elif model_type in ("gemma3", "gemma3_text"):
        pattern = _pos_int(cfg, "sliding_window_pattern", source, required=False) or 6
        kinds = ["sliding" if (i + 1) % pattern else "full" for i in range(n)]
    elif "use_sliding_window" in cfg:
        if cfg.get("use_sliding_window"):
            start = cfg.get("max_window_layers")
            start = n if start is None else int(start)
            kinds = ["sliding" if i >= start else "full" for i in range(n)]
        else:
            kinds = ["full"] * n
    elif window is not None:
        kinds = ["sliding"] * n
    else:
        kinds = ["full"] * n
    if "sliding" in kinds:
        if window is None:
            raise ConfigError("the config has sliding-window layers but no window size", source=source,
                              field="sliding_window")
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise ConfigError(f"must be a positive integer, got {window!r}", source=source, field="sliding_window")
    else:
        window = None
    return tuple(kinds), window


def _config_dtype(cfg: Mapping[str, Any]) -> str:
    q = cfg.get("quantization_config")
    if isinstance(q, Mapping) and str(q.get("quant_method", "")).lower() == "fp8":
        return "fp8"
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    try:
        return normalize_dtype(str(raw))
    except ConfigError:
        return "bf16"


def estimate_params(cfg: Mapping[str, Any], layout: AttentionLayout) -> int:
    """Parameter count from the config (see the module docstring for what is counted)."""
    hidden = int(cfg["hidden_size"])
    vocab = int(cfg.get("vocab_size") or 0)
    n = layout.num_layers
    heads = layout.num_attention_heads
    tied = cfg.get("tie_word_embeddings")
    if tied is None:
        tied = layout.model_type.startswith("gemma")
    total = vocab * hidden * (1 if tied else 2) + hidden  # embeddings, LM head, final norm
    # attention
    if layout.mla:
        nope = int(cfg.get("qk_nope_head_dim") or 0)
        rope = int(layout.qk_rope_head_dim or 0)
        v = layout.v_head_dim
        q_rank = cfg.get("q_lora_rank")
        if q_rank:
            attn = hidden * q_rank + q_rank + q_rank * heads * (nope + rope)
        else:
            attn = hidden * heads * (nope + rope)
        r = int(layout.kv_lora_rank or 0)
        attn += hidden * (r + rope) + r + r * heads * (nope + v) + heads * v * hidden
    else:
        attn = hidden * heads * layout.k_head_dim + hidden * layout.kv_heads * (layout.k_head_dim + layout.v_head_dim)
        attn += heads * layout.v_head_dim * hidden
        if cfg.get("attention_bias") or cfg.get("qkv_bias") or layout.model_type.startswith("qwen2"):
            attn += heads * layout.k_head_dim + layout.kv_heads * (layout.k_head_dim + layout.v_head_dim)
    # MLP (gated: gate, up, down)
    inter = int(cfg.get("intermediate_size") or 0)
    experts = cfg.get("n_routed_experts") or cfg.get("num_local_experts") or cfg.get("num_experts") or 0
    dense_mlp = 3 * hidden * inter
    if experts:
        moe_inter = int(cfg.get("moe_intermediate_size") or inter)
        moe = experts * 3 * hidden * moe_inter + experts * hidden  # experts + router
        shared = int(cfg.get("n_shared_experts") or 0) * 3 * hidden * moe_inter
        if cfg.get("shared_expert_intermediate_size"):
            shared += 3 * hidden * int(cfg["shared_expert_intermediate_size"]) + hidden
        moe += shared
        k_dense = int(cfg.get("first_k_dense_replace") or 0)
        mlp_total = k_dense * dense_mlp + (n - k_dense) * moe
    else:
        mlp_total = n * dense_mlp
    norms = 2 * hidden * n
    return total + n * attn + mlp_total + norms


def layout_from_config(config: Mapping[str, Any] | str | Path, *, source: str | None = None) -> AttentionLayout:
    """The attention layout of a transformers ``config.json`` (a path or a parsed dict)."""
    if isinstance(config, str | Path):
        path = Path(config)
        source = source or str(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError("no such config file", source=str(path))
        try:
            cfg = json.loads(path.read_text(encoding="utf-8-sig"))  # a UTF-8 byte-order mark is skipped
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text (invalid byte at position {exc.start}); re-encode the file as UTF-8 "
                              "(a config.json is UTF-8 JSON)", source=str(path)) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}", source=str(path)) from None
        except ValueError as exc:  # an integer past Python's digit limit for int(str)
            raise ConfigError(f"not readable JSON: {exc}; fix: write the number as a string", source=str(path)) from None
        except RecursionError:
            raise ConfigError("not readable JSON: nested too deeply; a config.json is a flat object",
                              source=str(path)) from None
    else:
        cfg = dict(config)
    src = source or "<config>"
    if not isinstance(cfg, Mapping):
        raise ConfigError("a config.json must hold a JSON object", source=src)
    model_type = str(cfg.get("model_type") or "")
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), Mapping):
        text = dict(cfg["text_config"])  # multimodal wrappers (Gemma 3, Llama 4, …)
        text.setdefault("model_type", model_type)
        text.setdefault("torch_dtype", cfg.get("torch_dtype"))
        cfg = text
        model_type = str(cfg.get("model_type") or model_type)
    n = _pos_int(cfg, "num_hidden_layers", src)
    heads = _pos_int(cfg, "num_attention_heads", src)
    hidden = _pos_int(cfg, "hidden_size", src)
    kinds, window = _layer_kinds(cfg, n, model_type, src)
    max_pos = _pos_int(cfg, "max_position_embeddings", src, required=False)
    if cfg.get("kv_lora_rank") is not None:
        rank = _pos_int(cfg, "kv_lora_rank", src)
        rope = _pos_int(cfg, "qk_rope_head_dim", src)
        nope = _pos_int(cfg, "qk_nope_head_dim", src)
        v_dim = _pos_int(cfg, "v_head_dim", src)
        layout = AttentionLayout(model_type, kinds, window, heads, heads, nope + rope, v_dim, mla=True,
                                 kv_lora_rank=rank, qk_rope_head_dim=rope, max_position_embeddings=max_pos,
                                 config_dtype=_config_dtype(cfg))
    else:
        kv = _pos_int(cfg, "num_key_value_heads", src, required=False) or heads
        if heads % kv:
            raise ConfigError(f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv}): "
                              "grouped-query attention needs whole groups", source=src, field="num_key_value_heads")
        head_dim = _pos_int(cfg, "head_dim", src, required=False)
        if head_dim is None:
            if hidden % heads:
                raise ConfigError(f"hidden_size ({hidden}) does not split into {heads} heads and the config gives no "
                                  "head_dim", source=src, field="head_dim")
            head_dim = hidden // heads
        layout = AttentionLayout(model_type, kinds, window, heads, kv, head_dim, head_dim,
                                 max_position_embeddings=max_pos, config_dtype=_config_dtype(cfg))
    params = estimate_params(cfg, layout)
    return AttentionLayout(**{**layout.__dict__, "params": params})


# ----------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class KVEstimate:
    """Memory of one model's KV cache at a context, and the longest context a GPU allows."""

    layout: AttentionLayout
    kv_dtype: str
    mla_mode: MLAMode
    sequences: int
    weights_bytes: int
    weights_source: str
    overhead_bytes: int
    gpu_bytes: int | None

    @property
    def full_bytes_per_token(self) -> int:
        """KV bytes per token over all full-attention layers (one sequence)."""
        return self.layout.count("full") * self.layout.layer_bytes(self.kv_dtype, self.mla_mode)

    @property
    def sliding_bytes_per_token(self) -> int:
        return self.layout.count("sliding") * self.layout.layer_bytes(self.kv_dtype, self.mla_mode)

    def kv_bytes(self, context: int) -> int:
        """KV-cache bytes for ``context`` tokens in each of ``sequences`` sequences."""
        w = self.layout.sliding_window or 0
        per_seq = self.full_bytes_per_token * context + self.sliding_bytes_per_token * min(context, w)
        return per_seq * self.sequences

    def memory_at(self, context: int) -> dict[str, int]:
        kv = self.kv_bytes(context)
        return {"weights": self.weights_bytes, "overhead": self.overhead_bytes, "kv_cache": kv,
                "total": self.weights_bytes + self.overhead_bytes + kv}

    def max_context(self) -> tuple[int | None, str]:
        """(longest context, what limits it): memory, the model's position limit, or neither."""
        if self.gpu_bytes is None:
            raise InputError("give the GPU memory to compute the longest context", field="gpu_mem")
        avail = self.gpu_bytes - self.weights_bytes - self.overhead_bytes
        if avail <= 0:
            raise InputError(
                f"the GPU has {self.gpu_bytes / GiB:.2f} GiB but the weights alone take {self.weights_bytes / GiB:.2f} GiB "
                f"and the overhead margin {self.overhead_bytes / GiB:.2f} GiB: nothing is left for the KV cache. Use a "
                "larger GPU, quantized weights (--weights-gib / --weight-dtype) or a smaller margin.",
                field="gpu_mem",
            )
        per = avail / self.sequences
        full = self.full_bytes_per_token
        slide = self.sliding_bytes_per_token
        w = self.layout.sliding_window or 0
        limit = self.layout.max_position_embeddings
        if full == 0:
            if slide * w <= per:
                return (limit, "model position limit (all layers slide: the cache stops growing)" if limit
                        else "unbounded (all layers slide: the cache stops growing)")
            ctx = int(per // slide)
        elif slide and per >= (full + slide) * w:
            ctx = int((per - slide * w) // full)
        else:
            ctx = int(per // (full + slide)) if (full + slide) else 0
        if limit is not None and ctx > limit:
            return limit, "model position limit (max_position_embeddings)"
        return ctx, "GPU memory"

    def to_json(self, context: int | None = None) -> dict[str, Any]:
        lay = self.layout
        out: dict[str, Any] = {
            "model_type": lay.model_type,
            "layers": {"total": lay.num_layers, "full": lay.count("full"), "sliding": lay.count("sliding"),
                       "linear": lay.count("linear")},
            "sliding_window": lay.sliding_window,
            "attention": ("MLA (compressed latent + RoPE key)" if lay.mla and self.mla_mode == "compressed"
                          else "MLA (expanded per-head K/V)" if lay.mla else "MHA/GQA"),
            "num_attention_heads": lay.num_attention_heads,
            "kv_heads": lay.kv_heads,
            "k_head_dim": lay.k_head_dim,
            "v_head_dim": lay.v_head_dim,
            "kv_lora_rank": lay.kv_lora_rank,
            "qk_rope_head_dim": lay.qk_rope_head_dim,
            "kv_dtype": self.kv_dtype,
            "sequences": self.sequences,
            "bytes_per_token_per_layer": lay.layer_bytes(self.kv_dtype, self.mla_mode),
            "full_bytes_per_token": self.full_bytes_per_token,
            "sliding_bytes_per_token": self.sliding_bytes_per_token,
            "params_estimated": lay.params,
            "weights_bytes": self.weights_bytes,
            "weights_gib": round(self.weights_bytes / GiB, 3),
            "weights_source": self.weights_source,
            "overhead_gib": round(self.overhead_bytes / GiB, 3),
            "max_position_embeddings": lay.max_position_embeddings,
        }
        if self.gpu_bytes is not None:
            ctx, why = self.max_context()
            out["gpu_gib"] = round(self.gpu_bytes / GiB, 3)
            out["max_context"] = ctx
            out["limited_by"] = why
        if context is not None:
            mem = self.memory_at(context)
            out["context"] = context
            out["memory_at_context"] = {k: v for k, v in mem.items()}
            out["memory_at_context_gib"] = {k: round(v / GiB, 3) for k, v in mem.items()}
            limit = lay.max_position_embeddings
            beyond = limit is not None and context > limit
            if beyond:
                out["beyond_position_limit"] = True
                out["note"] = (f"{context:,} tokens is past the model's position limit of {limit:,} "
                               "(max_position_embeddings): it cannot attend that far without RoPE scaling")
            if self.gpu_bytes is not None:
                out["memory_fits"] = mem["total"] <= self.gpu_bytes
                out["fits"] = out["memory_fits"] and not beyond
        return out


def estimate(
    config: Mapping[str, Any] | str | Path | AttentionLayout,
    *,
    kv_dtype: str = "fp16",
    gpu_mem: str | int | None = None,
    weights_gib: float | None = None,
    weight_dtype: str | None = None,
    overhead_gib: float = 1.0,
    sequences: int = 1,
    mla_mode: MLAMode = "compressed",
) -> KVEstimate:
    """A :class:`KVEstimate` for a config (path, dict or layout) and a deployment."""
    layout = config if isinstance(config, AttentionLayout) else layout_from_config(config)
    kv = normalize_dtype(kv_dtype)
    if sequences < 1:
        raise InputError("must be at least 1", field="sequences")
    if overhead_gib < 0:
        raise InputError("must not be negative", field="overhead_gib")
    if weights_gib is not None:
        if weights_gib < 0:
            raise InputError("must not be negative", field="weights_gib")
        wbytes = int(weights_gib * GiB)
        wsource = "given"
    else:
        wd = normalize_dtype(weight_dtype, field="weight_dtype") if weight_dtype else layout.config_dtype
        block, nbytes = DTYPES[wd]
        wbytes = int(layout.params * nbytes / block)
        wsource = f"estimated: {layout.params / 1e9:.2f}B parameters at {wd}"
    gpu = parse_size(gpu_mem) if gpu_mem is not None else None
    if gpu is not None and gpu <= 0:
        raise InputError("must be a positive size", field="gpu_mem")
    return KVEstimate(layout, kv, mla_mode, sequences, wbytes, wsource, int(overhead_gib * GiB), gpu)


__all__ = [
    "DTYPES",
    "AttentionLayout",
    "GiB",
    "KVEstimate",
    "estimate",
    "estimate_params",
    "layout_from_config",
    "normalize_dtype",
    "parse_size",
    "row_bytes",
]
