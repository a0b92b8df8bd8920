"""KV-cache estimates checked by hand for a GQA dense model, sliding-window models and MLA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxmem.errors import ConfigError, InputError, UnknownNameError
from ctxmem.tune.kv import GiB, estimate, layout_from_config, parse_size, row_bytes

LLAMA3_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
GEMMA2_9B: dict[str, Any] = {
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
    "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
    "sliding_window": 4096, "vocab_size": 256000, "torch_dtype": "bfloat16",
}
DEEPSEEK_V3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1, "first_k_dense_replace": 3,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "vocab_size": 129280, "max_position_embeddings": 163840, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]},
}


def write(tmp_path: Path, name: str, cfg: dict[str, Any]) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d / "config.json"


def test_gqa_dense_llama3_8b(tmp_path: Path) -> None:
    path = write(tmp_path, "llama", LLAMA3_8B)
    lay = layout_from_config(path)
    assert (lay.num_layers, lay.count("full"), lay.kv_heads, lay.k_head_dim) == (32, 32, 8, 128)
    # fp16: 32 layers × (K + V) × 8 heads × 128 dims × 2 bytes = 131,072 bytes per token
    e = estimate(path, kv_dtype="fp16", gpu_mem="24GiB", weights_gib=16, overhead_gib=1)
    assert e.full_bytes_per_token == 32 * 2 * 8 * 128 * 2 == 131_072
    # 24 − 16 − 1 = 7 GiB left: 7·2³⁰ / 2¹⁷ = 57,344 tokens
    assert e.max_context() == (57_344, "GPU memory")
    assert e.kv_bytes(8192) == 8192 * 131_072 == GiB  # 1 GiB at 8K
    # q8_0: a 1,024-value row is 32 blocks of 34 bytes; K and V; 32 layers
    assert estimate(path, kv_dtype="q8_0").full_bytes_per_token == 32 * 2 * 32 * 34 == 69_632
    # q4_0: 32 blocks of 18 bytes
    assert estimate(path, kv_dtype="q4_0").full_bytes_per_token == 32 * 2 * 32 * 18 == 36_864
    assert estimate(path, kv_dtype="fp8").full_bytes_per_token == 65_536
    # weights estimated from the config: embeddings + untied head + 32 × (attention + MLP + norms) + final norm
    per_layer = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336 + 2 * 4096
    assert lay.params == 2 * 128256 * 4096 + 32 * per_layer + 4096 == 8_030_261_248
    est = estimate(path, kv_dtype="fp16", gpu_mem="24GiB")
    assert est.weights_bytes == 2 * 8_030_261_248  # bf16
    # directory paths work too, and the position limit caps a huge GPU
    huge = estimate(path.parent, gpu_mem="1TiB", weights_gib=16)
    assert huge.max_context() == (131_072, "model position limit (max_position_embeddings)")


def test_sliding_window_gemma2_interleaving(tmp_path: Path) -> None:
    path = write(tmp_path, "gemma2", GEMMA2_9B)
    lay = layout_from_config(path)
    # head_dim override: 256, not 3584 / 16 = 224; even layers slide, odd layers are global
    assert lay.k_head_dim == 256
    assert lay.layer_kinds[:4] == ("sliding", "full", "sliding", "full")
    assert (lay.count("full"), lay.count("sliding"), lay.sliding_window) == (21, 21, 4096)
    e = estimate(path, kv_dtype="fp16", gpu_mem="24GiB", weights_gib=18, overhead_gib=1)
    per_layer = 2 * 8 * 256 * 2  # 8,192 bytes per token per layer
    assert e.full_bytes_per_token == e.sliding_bytes_per_token == 21 * per_layer == 172_032
    # below the window every layer grows; above it only the 21 global layers do
    assert e.kv_bytes(2048) == 2048 * 2 * 172_032
    assert e.kv_bytes(8192) == 8192 * 172_032 + 4096 * 172_032 == 2_113_929_216
    # 5 GiB free: (5·2³⁰ − 172,032·4,096) / 172,032 = 27,111.6 → 27,111 tokens
    assert e.max_context() == ((5 * GiB - 172_032 * 4096) // 172_032, "GPU memory")
    assert e.max_context()[0] == 27_111
    # a GPU where even the window does not fill: all 42 layers grow together
    small = estimate(path, kv_dtype="fp16", gpu_mem=int(19.5 * GiB), weights_gib=18, overhead_gib=1)
    assert small.max_context() == (int(0.5 * GiB) // (2 * 172_032), "GPU memory")
    assert estimate(path).weights_source.startswith("estimated: 9.24B")


def test_sliding_window_gemma3_pattern_layer_types_and_qwen2_switch(tmp_path: Path) -> None:
    g3 = {"model_type": "gemma3_text", "hidden_size": 3840, "num_hidden_layers": 48, "num_attention_heads": 16,
          "num_key_value_heads": 8, "head_dim": 256, "sliding_window": 1024, "sliding_window_pattern": 6,
          "intermediate_size": 15360, "vocab_size": 262208}
    lay = layout_from_config({"model_type": "gemma3", "text_config": g3})  # multimodal wrapper
    assert (lay.count("full"), lay.count("sliding")) == (8, 40)  # every 6th layer is global
    assert lay.layer_kinds[5] == "full" and lay.layer_kinds[0] == "sliding"
    explicit = {**LLAMA3_8B, "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 16}
    lay = layout_from_config(explicit)
    assert (lay.count("full"), lay.count("sliding"), lay.sliding_window) == (16, 16, 128)
    e = estimate(lay, kv_dtype="fp16")
    assert e.kv_bytes(1000) == 16 * 4096 * 1000 + 16 * 4096 * 128
    qwen2 = {**LLAMA3_8B, "model_type": "qwen2", "sliding_window": 32768, "use_sliding_window": False,
             "max_window_layers": 28}
    assert layout_from_config(qwen2).count("sliding") == 0  # the window is configured but switched off
    qwen2_on = {**qwen2, "use_sliding_window": True}
    assert layout_from_config(qwen2_on).count("sliding") == 32 - 28  # layers ≥ max_window_layers slide
    mistral = {**LLAMA3_8B, "model_type": "mistral", "sliding_window": 4096, "max_position_embeddings": 32768}
    m = estimate(mistral, gpu_mem="80GiB", weights_gib=14)
    assert m.layout.count("sliding") == 32
    assert m.max_context() == (32_768, "model position limit (all layers slide: the cache stops growing)")


def test_mla_deepseek_v3(tmp_path: Path) -> None:
    path = write(tmp_path, "dsv3", DEEPSEEK_V3)
    lay = layout_from_config(path)
    assert lay.mla and lay.kv_lora_rank == 512 and lay.qk_rope_head_dim == 64
    # compressed latent + RoPE key, shared by the heads: 61 × (512 + 64) × 2 bytes
    e = estimate(path, kv_dtype="bf16", gpu_mem="700GiB", weights_gib=642, overhead_gib=10)
    assert e.full_bytes_per_token == 61 * 576 * 2 == 70_272
    assert e.kv_bytes(128_000) == 128_000 * 70_272 == 8_994_816_000
    # 48 GiB free would hold 733,430 tokens; the position limit (163,840) caps it
    assert (48 * GiB) // 70_272 == 733_430
    assert e.max_context() == (163_840, "model position limit (max_position_embeddings)")
    uncapped = estimate({**DEEPSEEK_V3, "max_position_embeddings": None}, kv_dtype="bf16", gpu_mem="700GiB",
                        weights_gib=642, overhead_gib=10)
    assert uncapped.max_context() == (733_430, "GPU memory")
    assert estimate(path, kv_dtype="fp8").full_bytes_per_token == 61 * 576
    assert estimate(path, kv_dtype="q8_0").full_bytes_per_token == 61 * 18 * 34  # 576 = 18 blocks
    # runtimes that decompress MLA cache per-head K (128 + 64) and V (128) for 128 heads
    assert estimate(path, kv_dtype="bf16", mla_mode="expanded").full_bytes_per_token == 61 * 128 * (192 + 128) * 2
    # 671B parameters (the MTP module is not counted), shipped in fp8: 1 byte each
    assert round(lay.params / 1e9) == 671
    assert estimate(path).weights_bytes == lay.params


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"num_key_value_heads": 5}, "num_key_value_heads", "not a multiple"),
        ({"num_hidden_layers": None}, "num_hidden_layers", "missing"),
        ({"num_attention_heads": 0}, "num_attention_heads", "positive integer"),
        ({"hidden_size": 4000, "num_attention_heads": 48, "num_key_value_heads": 8}, "head_dim", "does not split"),
        ({"layer_types": ["full_attention"] * 31}, "layer_types", "one type per layer"),
        ({"layer_types": ["sliding_attention"] * 32}, "sliding_window", "no window size"),
        ({"layer_types": ["funky_attention"] * 32}, "layer_types", "unknown layer type"),
    ],
)
def test_inconsistent_config_names_the_field_and_file(
    tmp_path: Path, patch: dict[str, Any], field: str, message: str
) -> None:
    cfg = {k: v for k, v in {**LLAMA3_8B, **patch}.items() if v is not None}
    path = write(tmp_path, "bad", cfg)
    with pytest.raises(ConfigError, match=message) as info:
        layout_from_config(path)
    assert info.value.field == field
    assert info.value.source == str(path)


def test_mla_config_missing_rope_dim(tmp_path: Path) -> None:
    cfg = {k: v for k, v in DEEPSEEK_V3.items() if k != "qk_rope_head_dim"}
    with pytest.raises(ConfigError, match="missing") as info:
        layout_from_config(write(tmp_path, "mla", cfg))
    assert info.value.field == "qk_rope_head_dim"


def test_impossible_gpu_and_bad_inputs(tmp_path: Path) -> None:
    path = write(tmp_path, "llama", LLAMA3_8B)
    e = estimate(path, gpu_mem="8GiB")  # bf16 weights alone are 14.96 GiB
    with pytest.raises(InputError, match=r"8.00 GiB but the weights alone take 14.96 GiB") as info:
        e.max_context()
    assert info.value.field == "gpu_mem"
    with pytest.raises(InputError, match="nothing is left"):
        estimate(path, gpu_mem="17GiB", weights_gib=16, overhead_gib=1).max_context()
    with pytest.raises(UnknownNameError, match="Did you mean 'q4_0'"):
        estimate(path, kv_dtype="q4_1")
    with pytest.raises(InputError, match="not a memory size"):
        parse_size("lots")
    with pytest.raises(ConfigError, match="no such config file"):
        layout_from_config(tmp_path / "nope" / "config.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        layout_from_config(tmp_path / "broken.json")


def test_sizes_and_rows() -> None:
    assert parse_size("24GiB") == parse_size("24G") == 24 * GiB
    assert parse_size("80GB") == 80 * 10**9
    assert parse_size("24576MiB") == 24 * GiB
    assert row_bytes(1024, "q8_0") == 1088 and row_bytes(1024, "q4_0") == 576
    assert row_bytes(40, "q8_0") == 68  # partial blocks are whole blocks


# A Qwen3-Next-style hybrid config: transformers derives layer_types from
# full_attention_interval (default 4) — only every 4th layer keeps a KV cache.
QWEN3_NEXT_STYLE: dict[str, Any] = {
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": 4096,
    "intermediate_size": 12288, "num_hidden_layers": 64, "num_attention_heads": 32, "num_key_value_heads": 4,
    "head_dim": 256, "full_attention_interval": 4, "vocab_size": 151936, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}


def test_qwen3_next_interval_hybrid(tmp_path: Path) -> None:
    path = write(tmp_path, "qwen3next", QWEN3_NEXT_STYLE)
    lay = layout_from_config(path)
    assert (lay.count("full"), lay.count("linear"), lay.count("sliding")) == (16, 48, 0)
    assert lay.layer_kinds[:4] == ("linear", "linear", "linear", "full")
    # 16 layers × (K + V) × 4 heads × 256 dims × 2 bytes (bf16)
    assert estimate(path, kv_dtype="bf16").full_bytes_per_token == 16 * 2 * 4 * 256 * 2 == 65_536
    # the interval defaults to 4 for these model types when the config omits it
    cfg = {k: v for k, v in QWEN3_NEXT_STYLE.items() if k != "full_attention_interval"}
    assert layout_from_config(write(tmp_path, "noint", cfg)).count("full") == 16
    # an explicit layer_types still wins
    cfg = {**QWEN3_NEXT_STYLE, "layer_types": ["full_attention"] * 64}
    assert layout_from_config(write(tmp_path, "explicit", cfg)).count("full") == 64


def test_bare_gpu_mem_is_gib_and_position_limit_does_not_fit(tmp_path: Path) -> None:
    assert parse_size("24") == 24 * GiB
    assert parse_size("1234B") == 1234
    path = write(tmp_path, "llama", LLAMA3_8B)
    data = estimate(path, gpu_mem="1TiB", weights_gib=16).to_json(256_000)
    assert data["memory_fits"] is True
    assert data["fits"] is False and data["beyond_position_limit"] is True
    assert "131,072" in data["note"]
    assert estimate(path, gpu_mem="1TiB", weights_gib=16).to_json(100_000)["fits"] is True
