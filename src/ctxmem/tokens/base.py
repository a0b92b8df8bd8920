"""The Tokenizer protocol.

A tokenizer has a stable ``id`` (part of every memoized count's key, so two tokenizers
with the same id must count identically), says whether it is ``exact`` for its model, and
counts text. ``count_many`` is the hot path: backends batch it (tiktoken and HF tokenizers
encode batches in native threads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

_T = TypeVar("_T")

#: tiktoken's encodings, by name (here, not in the tiktoken backend, so that
#: :func:`ctxmem.tokens.tokenizer_id` names their ids without importing it)
TIKTOKEN_ENCODINGS = ("o200k_base", "cl100k_base", "p50k_base", "r50k_base")


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens the way one model family does."""

    #: Stable identifier, e.g. ``tiktoken:o200k_base`` or ``hf:1f0c…`` (hash of tokenizer.json).
    id: str
    #: Human-readable name, e.g. ``o200k_base``.
    name: str
    #: True when counts equal the model's own tokenizer; False for estimates.
    exact: bool

    def count(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens, no per-message overhead).

        Any ``str`` is accepted, lone surrogates included (counted as U+FFFD, as tiktoken
        does). An estimate (``exact`` False) may over-count, never under-count by design.
        """
        ...

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``[count(t) for t in texts]``, in one batched call where the backend has one."""
        ...


@runtime_checkable
class EncodingTokenizer(Tokenizer, Protocol):
    """A tokenizer that can also encode and decode (needed to splice token sequences)."""

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` (no special tokens); ``len(encode(t)) == count(t)``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ``ids`` (``decode(encode(t)) == t`` for valid text)."""
        ...


def replace_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD and surrogate pairs joined.

    tiktoken's own rule for text that UTF-8 cannot encode (``encode_ordinary`` retries with
    exactly this); backends apply it so every engine counts such text the same way.
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def surrogate_safe(fn: Callable[[str], _T]) -> Callable[[str], _T]:
    """``fn`` retried on :func:`replace_lone_surrogates` of its text when the engine refuses
    it (UTF-8 cannot encode a lone surrogate; engines raise UnicodeEncodeError or TypeError)."""

    def safe(text: str) -> _T:
        try:
            return fn(text)
        except (UnicodeEncodeError, TypeError):
            if not isinstance(text, str):
                raise
            return fn(replace_lone_surrogates(text))

    return safe
