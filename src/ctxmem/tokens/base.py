"""The Tokenizer protocol.

A tokenizer has a stable ``id`` (part of every memoized count's key, so two tokenizers
with the same id must count identically), says whether it is ``exact`` for its model, and
counts text. ``count_many`` is the hot path: backends batch it (tiktoken and HF tokenizers
encode batches in native threads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens the way one model family does."""

    #: Stable identifier, e.g. ``tiktoken:o200k_base`` or ``hf:1f0c…`` (hash of tokenizer.json).
    id: str
    #: Human-readable name, e.g. ``o200k_base``.
    name: str
    #: True when counts equal the model's own tokenizer; False for estimates.
    exact: bool

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


@runtime_checkable
class EncodingTokenizer(Tokenizer, Protocol):
    """A tokenizer that can also encode and decode (needed to splice token sequences)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...
