"""Counting a bulk import on a second core while the first one writes it.

Importing a million-token session is dominated by two costs of similar size: tokenizing
its text (the tokenizer floor) and parsing, hashing and writing it. tiktoken holds the
GIL while it encodes, so a thread cannot overlap them (measured: slower than serial). A
forked child can: it inherits the texts and the loaded encoding (no pickling), counts
them, and writes the counts back through a pipe while the parent inserts blobs, events
and the FTS index inside its transaction. The parent joins the child just before it
writes the token rows.

The child touches nothing but the tokenizer and the pipe (never the SQLite connection,
which must not cross a fork) and leaves with ``os._exit``. Anything unexpected — no
``fork`` on this platform, a tokenizer not known to be fork-safe, the child failing,
dying or overrunning its deadline — falls back to counting in the parent, so the result
is the same either way; only the time differs. ``CTXMEM_PARALLEL_COUNT=0`` disables it.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from array import array
from collections.abc import Callable, Sequence

from ctxmem.tokens import Tokenizer

#: below this many characters forking costs more than it saves
MIN_CHARS = 1_000_000
#: seconds per million characters the child may take before the parent gives up on it
_DEADLINE_PER_MCHAR = 20.0


def _fork_safe(tok: Tokenizer) -> bool:
    # tiktoken encodes on the calling thread; HF tokenizers run a rayon thread pool that
    # does not survive fork, so they are counted in the parent.
    from ctxmem.tokens.heuristic import HeuristicTokenizer
    from ctxmem.tokens.tiktoken_backend import TiktokenTokenizer

    return isinstance(tok, TiktokenTokenizer | HeuristicTokenizer)


def enabled(tok: Tokenizer, texts: Sequence[str]) -> bool:
    return (
        hasattr(os, "fork")
        and sys.platform != "win32"
        and os.environ.get("CTXMEM_PARALLEL_COUNT", "1") != "0"
        and _fork_safe(tok)
        and sum(map(len, texts)) >= MIN_CHARS
    )


def start(tok: Tokenizer, texts: list[str]) -> Callable[[], list[int]]:
    """Begin counting ``texts``; the returned function gives the counts (same as
    ``tok.count_many(texts)``), falling back to counting inline if the child fails."""
    if not enabled(tok, texts):
        counts = tok.count_many(texts)
        return lambda: counts
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: count, write, leave without running any parent cleanup
        code = 1
        try:
            os.close(r)
            data = memoryview(array("q", tok.count_many(texts)).tobytes())
            while data:
                n = os.write(w, data)
                data = data[n:]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    expected = 8 * len(texts)
    deadline = time.monotonic() + 5.0 + _DEADLINE_PER_MCHAR * sum(map(len, texts)) / 1e6

    done: list[list[int]] = []

    def result() -> list[int]:
        # Memoized: a write transaction retried after SQLITE_BUSY asks again.
        if not done:
            done.append(_collect())
        return done[0]

    def _collect() -> list[int]:
        chunks: list[bytes] = []
        got = 0
        ok = True
        try:
            while got < expected:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    ok = False
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(r, min(1 << 20, expected - got))
                if not chunk:
                    ok = False
                    break
                chunks.append(chunk)
                got += len(chunk)
        finally:
            os.close(r)
            _, status = os.waitpid(pid, 0)
        if not ok or got != expected or os.waitstatus_to_exitcode(status) != 0:
            return tok.count_many(texts)  # the child failed: same answer, computed here
        return list(array("q", b"".join(chunks)))

    return result
