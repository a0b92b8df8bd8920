"""Hugging Face tokenizers: a local ``tokenizer.json``, a model folder, or a hub name.

A ``tokenizer.json`` (or a folder holding one) loads with the fast ``tokenizers`` library
alone. Anything else goes through ``transformers.AutoTokenizer``, which resolves hub names
(Qwen/Qwen3-8B, deepseek-ai/DeepSeek-V3, …) from the local HF cache or the hub. Offline
with nothing cached, the error says so and names the two remedies.

The id is ``hf:`` plus a hash of the tokenizer's serialized form, so two copies of the
same tokenizer share memoized counts and a changed file never reuses stale ones.
Counting excludes special tokens (BOS/EOS): those are message overhead, not content.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctxmem.errors import MissingDependencyError, TokenizerError


class HFTokenizer:
    exact = True

    def __init__(self, source: str):
        self.name = f"hf:{source}"
        path = Path(source).expanduser()
        if path.is_dir() and (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        if path.is_file():
            self._fast = self._load_file(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        else:
            self._fast = self._load_auto(source)
            digest = hashlib.sha256(self._fast.to_str().encode()).hexdigest()[:16]
        self.id = f"hf:{digest}"

    @staticmethod
    def _load_file(path: Path) -> Any:
        try:
            from tokenizers import Tokenizer as FastTokenizer
        except ImportError:
            raise MissingDependencyError("tokenizers", "hf", "a Hugging Face tokenizer") from None
        try:
            return FastTokenizer.from_file(str(path))
        except Exception as exc:
            raise TokenizerError(f"{path} is not a valid tokenizer.json: {exc}") from exc

    @staticmethod
    def _load_auto(source: str) -> Any:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise MissingDependencyError("transformers", "hf", f"the tokenizer {source!r}") from None
        try:
            tok = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            why = (str(exc).splitlines()[0] if str(exc) else "").rstrip(". ")
            if source.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(source)):
                raise TokenizerError(f"cannot load Hugging Face tokenizer {source!r}: nothing at that path; "
                                     "give a tokenizer.json or a model folder") from None
            raise TokenizerError(
                f"cannot load Hugging Face tokenizer {source!r}"
                + (" (HF_HUB_OFFLINE=1)" if offline else "")
                + f": {type(exc).__name__}: {why}. Pass a local path to a tokenizer.json or a model folder, "
                f"or download it once with: huggingface-cli download {source} tokenizer.json"
            ) from exc
        fast = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
        if fast is None:
            raise TokenizerError(f"{source!r} has no fast tokenizer; convert it to tokenizer.json first")
        return fast

    def count(self, text: str) -> int:
        return len(self._fast.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if len(texts) < 4:
            return [self.count(t) for t in texts]
        return [len(e.ids) for e in self._fast.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return list(self._fast.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._fast.decode(list(ids), skip_special_tokens=False))
