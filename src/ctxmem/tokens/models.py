"""Which tokenizer counts a model's tokens: ``tokenizer_for_model(model) -> (name, exact)``.

The Agent (and anything else that knows only a model name) asks this map which tokenizer
to load with :func:`ctxmem.tokens.get_tokenizer`. The answer is a pair: the tokenizer's
name, and whether its counts are the model's own (``exact``) or a stand-in that a
:class:`~ctxmem.tokens.Calibration` must correct against reported usage.

Families, matched on the model name lower-cased, with any ``org/`` prefix, ``provider:``
prefix or ``:tag`` suffix (Ollama's ``llama3.1:8b``) stripped:

* **OpenAI** (``gpt-4o*``, ``gpt-4.1*``, ``gpt-5*``, ``o1``/``o3``/``o4*``, ``chatgpt-4o*``,
  ``gpt-oss*``) → ``o200k_base``; ``gpt-4``, ``gpt-4-turbo``, ``gpt-3.5*`` →
  ``cl100k_base``; anything else tiktoken's own table knows. Exact for content: these are
  the published encodings (``gpt-oss``'s o200k_harmony differs from o200k_base only in
  special tokens, which content never encodes).
* **Qwen** (``qwen*``, ``qwq*``, including Qwen-Max/Plus/Turbo served through an
  Anthropic- or OpenAI-compatible API) → ``qwen3``: one byte-level BPE vocabulary shared
  by Qwen1.5 through Qwen3 (151,643 regular tokens), bundled in quicktok. Exact.
* **Llama 3** (``llama-3*``, ``llama3*``, ``meta-llama-3*``) → ``llama3``, quicktok's
  Llama-3 vocabulary (128,000 regular tokens; 3.1, 3.2 and 3.3 share it). Exact. Llama 2
  (a 32K SentencePiece model) and Llama 4 (a different, gated vocabulary) are not
  bundled: they fall to the default below.
* **DeepSeek** (``deepseek*``) → ``hf:<path to tokenizer.json>`` when one is in the local
  Hugging Face cache (the model's own repo when the name has an ``org/``, otherwise
  DeepSeek-V3.2/V3.1/V3/R1, which share one vocabulary); exact. Nothing is downloaded:
  without a cached file the answer is ``("o200k_base", False)``.
* **Claude / Anthropic** (``claude*``, ``anthropic.claude*`` on Bedrock,
  ``anthropic/claude*``): Anthropic does not publish Claude's tokenizer, so nothing
  local is exact. A caller that holds an Anthropic client gets exact counts only from the
  provider's count endpoint (:meth:`ctxmem.clients.ModelClient.count_tokens`, i.e.
  ``/v1/messages/count_tokens``) and should calibrate against it; the local stand-in is
  ``("o200k_base", False)``: o200k counts, corrected by calibration against ``usage``.
* **A local model folder** (``local:/models/x``) or an ``org/name`` id of another family
  with a ``tokenizer.json`` on disk or in the HF cache → that file, exact.
* **Everything else** (Mistral, Gemini, GLM, Kimi, unknown names) → ``("o200k_base",
  False)``, to be calibrated.

``qwen3`` and ``llama3`` need quicktok (a core dependency). Where it is missing, Qwen and
Llama-3 fall back to a cached HF ``tokenizer.json`` for a ``org/name`` model id, else to
``("o200k_base", False)``. The map never loads a tokenizer and never touches the network:
it is cheap enough to call per request.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

DEFAULT = ("o200k_base", False)

# Longest prefix first; each prefix matches the bare name, or the name followed by one of
# "-", ".", "_" (so "o1" does not swallow "o1x", and "gpt-4" does not swallow "gpt-4o").
_OPENAI_PREFIXES: tuple[tuple[str, str], ...] = (
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o4-mini", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
)

_QWEN = re.compile(r"^(qwen|qwq)")
_LLAMA3 = re.compile(r"^(meta-)?llama-?3(?![0-9])")
_DEEPSEEK_REPOS = (
    "deepseek-ai/DeepSeek-V3.2",
    "deepseek-ai/DeepSeek-V3.1",
    "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1",
)


# Client-spec prefixes (``anthropic:claude-…``, ``openai:qwen3:8b``) and common router ones.
_PROVIDERS = frozenset(
    {"anthropic", "openai", "local", "ollama", "bedrock", "vertex_ai", "azure", "openrouter"}
)


def _strip_provider(model: str) -> str:
    head, sep, rest = model.strip().partition(":")
    return rest if sep and head.lower() in _PROVIDERS else model.strip()


def _bare(model: str) -> str:
    """``"provider:org/Name-8B:tag"`` → ``"name-8b"`` (lower case, no org, provider or tag)."""
    m = _strip_provider(model).lower()
    m = m.rsplit("/", 1)[-1]
    if m.startswith("ft:"):  # OpenAI fine-tunes: ft:gpt-4o-mini:org::id
        m = m[3:]
    return m.split(":", 1)[0]


def _has_prefix(name: str, prefix: str) -> bool:
    return name == prefix or (name.startswith(prefix) and name[len(prefix)] in "-._")


def _quicktok_available() -> bool:
    return importlib.util.find_spec("quicktok") is not None


def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(home).expanduser() / "hub"


def cached_tokenizer_json(repo_id: str) -> Path | None:
    """The ``tokenizer.json`` of ``repo_id`` in the local HF cache, or None. Never downloads.

    Reads the cache layout directly (``models--org--name/refs/main`` names the snapshot),
    so it needs neither ``huggingface_hub`` nor a network.
    """
    if "/" not in repo_id:
        return None
    root = _hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = root / "refs" / "main"
    snapshots: list[Path] = []
    if ref.is_file():
        snapshots.append(root / "snapshots" / ref.read_text(encoding="utf-8").strip())
    elif (root / "snapshots").is_dir():
        snapshots.extend(sorted((root / "snapshots").iterdir()))
    for snap in snapshots:
        path = snap / "tokenizer.json"
        if path.is_file():
            return path
    return None


def _local_tokenizer_json(model: str) -> Path | None:
    """A ``tokenizer.json`` inside a local model folder named by ``model`` (``local:/m/x``)."""
    path = Path(_strip_provider(model)).expanduser()
    if path.is_absolute() or model.startswith(("./", "../", "~")):
        candidate = path / "tokenizer.json" if path.is_dir() else path
        if candidate.name == "tokenizer.json" and candidate.is_file():
            return candidate
    return None


def _hf_for(model: str, fallback_repos: tuple[str, ...] = ()) -> tuple[str, bool] | None:
    local = _local_tokenizer_json(model)
    if local is not None:
        return f"hf:{local}", True
    spec = _strip_provider(model)
    repos = ([spec] if spec.count("/") == 1 else []) + list(fallback_repos)
    for repo in repos:
        path = cached_tokenizer_json(repo)
        if path is not None:
            return f"hf:{path}", True
    return None


def _openai(name: str) -> str | None:
    for prefix, encoding in _OPENAI_PREFIXES:
        if _has_prefix(name, prefix):
            return encoding
    try:
        import tiktoken.model

        encoding = tiktoken.model.encoding_name_for_model(name)
    except (ImportError, KeyError):
        return None
    return "o200k_base" if encoding == "o200k_harmony" else encoding


def tokenizer_for_model(model: str) -> tuple[str, bool]:
    """The tokenizer name for ``model`` and whether it counts exactly (see the module doc).

    The name loads with :func:`ctxmem.tokens.get_tokenizer`. ``exact=False`` means a
    stand-in (o200k) whose counts must be calibrated against the provider's reported
    usage. Claude is never exact locally: its tokenizer is not public; use the provider's
    count endpoint when a client is at hand.
    """
    if not isinstance(model, str) or not model.strip():
        return DEFAULT
    name = _bare(model)
    if name.startswith(("claude", "anthropic.claude")) or "claude" in model.lower():
        return DEFAULT
    if _QWEN.match(name):
        if _quicktok_available():
            return "qwen3", True
        return _hf_for(model) or DEFAULT
    if _LLAMA3.match(name):
        if _quicktok_available():
            return "llama3", True
        return _hf_for(model) or DEFAULT
    if name.startswith("deepseek"):
        return _hf_for(model, _DEEPSEEK_REPOS) or DEFAULT
    encoding = _openai(name)
    if encoding is not None:
        return encoding, True
    return _hf_for(model) or DEFAULT
