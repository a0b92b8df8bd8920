"""tiktoken encodings (o200k_base, cl100k_base, p50k_base, r50k_base).

tiktoken downloads an encoding file once and caches it in ``TIKTOKEN_CACHE_DIR`` (or
``DATA_GYM_CACHE_DIR``, or a temp folder). Offline, a missing file cannot be fetched; we
turn tiktoken's network error into a :class:`~ctxmem.errors.TokenizerError` that names the
exact file and where to put it.

Counting uses ``encode_ordinary``: special-token strings inside content (``<|endoftext|>``
pasted into a tool output) are counted as ordinary text instead of raising, which is what
providers do with user content. Long runs of one character are shortened before they
reach tiktoken's merge loop, which is quadratic in a pre-token's length (see
:mod:`ctxmem.tokens.runs`). tiktoken is the reference engine; ``o200k_base`` and
``cl100k_base`` load through quicktok when it is installed (:mod:`.quicktok_backend`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from ctxmem.errors import MissingDependencyError, TokenizerError
from ctxmem.tokens.base import TIKTOKEN_ENCODINGS as ENCODINGS
from ctxmem.tokens.base import surrogate_safe
from ctxmem.tokens.runs import RunSplitter

_BLOB_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "p50k_base": "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",
    "r50k_base": "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
}


def cache_dir() -> str:
    return (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )


def cache_file_for(encoding: str) -> str:
    """Where tiktoken looks for ``encoding`` (file named by the SHA-1 of its URL)."""
    return os.path.join(cache_dir(), hashlib.sha1(_BLOB_URLS[encoding].encode()).hexdigest())


@functools.cache
def _load(encoding: str) -> Any:
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken is a core dependency
        raise MissingDependencyError("tiktoken", "all", f"the {encoding} tokenizer") from None
    try:
        return tiktoken.get_encoding(encoding)
    except Exception as exc:  # network errors come from requests/urllib3 and vary
        raise TokenizerError(
            f"cannot load tiktoken encoding {encoding!r}: {type(exc).__name__}: {exc}. "
            f"Offline, tiktoken needs the file {os.path.basename(cache_file_for(encoding))} "
            f"in its cache folder ({cache_dir()}). Set TIKTOKEN_CACHE_DIR to a folder that "
            f"holds it (download {_BLOB_URLS[encoding]} on a machine with internet and name it "
            "by the SHA-1 of that URL), or run once with internet access."
        ) from exc


class TiktokenTokenizer:
    exact = True

    def __init__(self, encoding: str):
        if encoding not in ENCODINGS:
            raise TokenizerError(f"unknown tiktoken encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
        self.name = encoding
        self.id = f"tiktoken:{encoding}"
        self._enc = _load(encoding)
        self._encode = self._enc.encode_ordinary
        # Counting needs only the length: tiktoken's core can return a bytes buffer of
        # uint32 ids instead of a Python list (about 10% faster). Same tokens as
        # encode_ordinary when no special token is allowed; fall back if the private API moves.
        core = getattr(self._enc, "_core_bpe", None)
        buf = getattr(core, "encode_to_tiktoken_buffer", None)
        self._count: Callable[[str], int]
        if buf is not None and memoryview(buf("a <|endoftext|>", set())).nbytes == 4 * len(self._encode("a <|endoftext|>")):
            empty: frozenset[str] = frozenset()
            # the buffer API raises on lone surrogates where encode_ordinary would replace them
            self._count = surrogate_safe(lambda text: memoryview(buf(text, empty)).nbytes >> 2)
        else:
            self._count = lambda text: len(self._encode(text))
        #: the pre-tokenizer regex of this encoding
        self.pre_tokenizer: str | None = getattr(self._enc, "_pat_str", None)
        splitter = RunSplitter.for_encoding(encoding, self._count)
        if splitter is not None:
            self._count = splitter.count

    def count(self, text: str) -> int:
        return self._count(text)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        # tiktoken's threaded batch encoder was slower than this loop on 2 cores (GIL + pool
        # overhead): measured 0.23 s vs 0.17 s for 876K tokens.
        count = self._count
        return [count(t) for t in texts]

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode(list(ids)))


def o200k_base() -> TiktokenTokenizer:
    return TiktokenTokenizer("o200k_base")


def cl100k_base() -> TiktokenTokenizer:
    return TiktokenTokenizer("cl100k_base")


def p50k_base() -> TiktokenTokenizer:
    return TiktokenTokenizer("p50k_base")


def r50k_base() -> TiktokenTokenizer:
    return TiktokenTokenizer("r50k_base")
