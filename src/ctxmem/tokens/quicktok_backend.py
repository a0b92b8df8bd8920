"""Exact BPE counting at C++ speed, offline: the ``quicktok`` package (PyPI ``quicktok-v1``).

quicktok's wheel carries the o200k_base, cl100k_base, Qwen3 (Qwen1.5–Qwen3) and Llama-3
vocabularies, so it counts exactly with no network and no cache folder; tiktoken needs
to download o200k/cl100k once. On the project's session texts its ``count`` is ~7–12×
faster than tiktoken's encode and gives the same ids (see the differential test in
``tests/tokens/test_quicktok.py``, which runs whenever tiktoken's files are available).

Names and ids:

* ``o200k_base`` / ``cl100k_base`` load through quicktok when it is installed and through
  tiktoken otherwise (:func:`o200k_base` below is the registry's factory). Both engines
  keep the id ``tiktoken:<encoding>``: the id names the *encoding* (the counting
  function), not the engine, and the counts are identical, so memoized counts stay valid
  whichever engine wrote them. ``tiktoken:o200k_base`` as a *name* forces tiktoken (the
  reference).
* ``qwen3`` and ``llama3`` exist only here (ids ``quicktok:qwen3``, ``quicktok:llama3``);
  without quicktok they raise :class:`~ctxmem.errors.MissingDependencyError`.

Counting treats special-token strings (``<|endoftext|>`` pasted into content) as ordinary
text, like tiktoken's ``encode_ordinary``, and lone surrogates as U+FFFD (tiktoken's rule).
``count_many`` counts text by text on the calling thread (no thread pool: as fast as
quicktok's threaded batch on 2 cores, and no numpy). quicktok's ``count`` releases the GIL
for the whole text, so a bulk import counts on a thread beside the writer
(:mod:`ctxmem.store.parallel_count`).
Long runs of one character are split before they reach the engine (see
:mod:`ctxmem.tokens.runs`), so counting time stays linear in the text's length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ctxmem.errors import MissingDependencyError, TokenizerError
from ctxmem.tokens.base import surrogate_safe
from ctxmem.tokens.runs import MIN_RUN, RunSplitter, pattern_for

#: quicktok encodings ctxmem exposes, by ctxmem name
QUICKTOK_ENCODINGS = {"o200k_base": "o200k_base", "cl100k_base": "cl100k_base", "qwen3": "qwen3", "llama3": "llama3"}


def available() -> bool:
    """Whether quicktok imports here (cheap after the first call)."""
    return _module() is not None


@functools.cache
def _module() -> Any:
    try:
        import quicktok
    except ImportError:
        return None
    return quicktok


@functools.cache
def _load(encoding: str) -> Any:
    quicktok = _module()
    if quicktok is None:
        raise MissingDependencyError("quicktok-v1", "all", f"the {encoding} tokenizer")
    try:
        return quicktok.get_encoding(QUICKTOK_ENCODINGS[encoding])
    except Exception as exc:  # a broken wheel: missing data files raise RuntimeError
        raise TokenizerError(
            f"quicktok cannot load its bundled {encoding!r} vocabulary: {type(exc).__name__}: {exc}. "
            'Reinstall it with: pip install --force-reinstall "quicktok-v1"'
        ) from exc


class QuicktokTokenizer:
    """One quicktok encoding behind the :class:`~ctxmem.tokens.EncodingTokenizer` protocol."""

    exact = True

    def __init__(self, encoding: str):
        if encoding not in QUICKTOK_ENCODINGS:
            raise TokenizerError(f"unknown quicktok encoding {encoding!r}; known: {', '.join(QUICKTOK_ENCODINGS)}")
        self.name = encoding
        self.id = f"tiktoken:{encoding}" if encoding in ("o200k_base", "cl100k_base") else f"quicktok:{encoding}"
        self._enc = _load(encoding)
        #: the pre-tokenizer regex of this encoding (identical to tiktoken's for o200k/cl100k)
        self.pre_tokenizer: str | None = pattern_for(encoding)
        raw: Callable[[str], int] = surrogate_safe(self._enc.count)
        self._encode: Callable[[str], list[int]] = surrogate_safe(self._enc.encode_ordinary)
        self._splitter = RunSplitter.for_encoding(encoding, raw) if self.pre_tokenizer else None
        self._count: Callable[[str], int] = self._splitter.count if self._splitter is not None else raw

    def count(self, text: str) -> int:
        return self._count(text)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        count = self._count
        if self._splitter is None:
            return [count(t) for t in texts]
        # the ingest hot path: short texts straight to the engine (no run can hide in them);
        # a lone surrogate makes the engine raise TypeError, and then every text takes the
        # wrapped path
        raw = self._enc.count
        try:
            return [raw(t) if len(t) < MIN_RUN else count(t) for t in texts]
        except TypeError:
            return [count(t) for t in texts]

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode(list(ids)))

    def __repr__(self) -> str:
        return f"QuicktokTokenizer({self.name!r})"


def _preferred(encoding: str) -> Any:
    if available():
        try:
            return QuicktokTokenizer(encoding)
        except TokenizerError:
            pass  # a broken quicktok install: tiktoken is the reference and still counts exactly
    from ctxmem.tokens.tiktoken_backend import TiktokenTokenizer

    return TiktokenTokenizer(encoding)


def o200k_base() -> Any:
    """o200k_base through quicktok when installed, else tiktoken (same id, same counts)."""
    return _preferred("o200k_base")


def cl100k_base() -> Any:
    """cl100k_base through quicktok when installed, else tiktoken (same id, same counts)."""
    return _preferred("cl100k_base")


def qwen3() -> QuicktokTokenizer:
    """Qwen's byte-level BPE vocabulary (Qwen1.5 through Qwen3, Qwen-Max)."""
    return QuicktokTokenizer("qwen3")


def llama3() -> QuicktokTokenizer:
    """Meta Llama 3 / 3.1 / 3.2 / 3.3 vocabulary."""
    return QuicktokTokenizer("llama3")
