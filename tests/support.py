"""Helpers shared by test modules (import with ``from support import ...``).

Paths are computed from this file, never hard-coded: ``<repo>/../shared`` holds the
offline tokenizer files when the project ships them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
TOKENIZERS_DIR = SHARED_DIR / "tokenizers"
TIKTOKEN_CACHE = TOKENIZERS_DIR / "tiktoken-cache"
DEEPSEEK_TOKENIZER = TOKENIZERS_DIR / "deepseek_tokenizer.json"


def load_tokenizer_or_skip(name: str) -> Any:
    from ctxmem.errors import TokenizerError
    from ctxmem.tokens import get_tokenizer

    try:
        return get_tokenizer(name)
    except TokenizerError as exc:
        pytest.skip(f"tiktoken encoding {name} cannot be loaded here (no cache, no network): {exc}")


def tiktoken_encoding_or_skip(name: str) -> Any:
    """tiktoken's own Encoding object, for independent reference counts."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        pytest.skip(f"tiktoken encoding {name} cannot be loaded here (no cache, no network): {exc}")
