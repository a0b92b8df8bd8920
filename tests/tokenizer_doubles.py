"""A real (not mocked) tokenizer that logs what it was asked to count.

Registered at run time as ``spy`` (``TOKENIZERS.register``) so stores load it by name like
any backend. It counts whitespace-separated words, exactly and deterministically; the log
shows whether a store re-tokenized history or memoized content.
"""

from __future__ import annotations

from collections.abc import Sequence


class SpyTokenizer:
    id = "test:spy-words"
    name = "spy"
    exact = True

    def __init__(self) -> None:
        self.seen: list[str] = []

    def count(self, text: str) -> int:
        self.seen.append(text)
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


SPY = SpyTokenizer()


def spy() -> SpyTokenizer:
    return SPY


def register() -> SpyTokenizer:
    from ctxmem.tokens import TOKENIZERS

    if "spy" not in TOKENIZERS:
        TOKENIZERS.register("spy", "tokenizer_doubles:spy")
    SPY.seen.clear()
    return SPY
