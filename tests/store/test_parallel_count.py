"""Bulk counting in a forked child gives exactly the parent's counts, and falls back when the child fails."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ctxmem.messages import message_texts
from ctxmem.samples import synthetic_session
from ctxmem.store import parallel_count
from ctxmem.tokens.tiktoken_backend import TiktokenTokenizer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def texts() -> list[str]:
    return [t for m in synthetic_session(60, seed=3) for t in message_texts(m)]


def test_child_counts_equal_inline_counts(o200k: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    assert parallel_count.enabled(o200k, texts)
    result = parallel_count.start(o200k, texts)
    assert result() == o200k.count_many(texts)
    assert result() == o200k.count_many(texts)  # memoized: a retried transaction may ask twice


class _FailsInChild(TiktokenTokenizer):
    def __init__(self, parent: int):
        super().__init__("o200k_base")
        self.parent = parent

    def count_many(self, texts: Any) -> list[int]:
        if os.getpid() != self.parent:
            raise RuntimeError("child failure")
        return super().count_many(texts)


def test_a_failing_child_falls_back_to_the_parent(o200k: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    tok = _FailsInChild(os.getpid())
    assert parallel_count.start(tok, texts)() == o200k.count_many(texts)


def test_disabled_by_env_and_for_small_inputs(o200k: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert not parallel_count.enabled(o200k, texts[:3])  # under MIN_CHARS
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "0")
    assert not parallel_count.enabled(o200k, texts)
