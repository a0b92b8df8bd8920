"""Counting a bulk import on a second core while the first one writes it.

Importing a million-token session is dominated by two costs of similar size: tokenizing
its text (the tokenizer floor) and parsing, hashing and writing it. Counting runs beside
the writing, which encodes, hashes and inserts blobs, events and the FTS index inside its
transaction and collects the counts just before it writes the token rows:

* **on a thread** for an engine whose ``count`` releases the GIL for the whole text and
  returns a plain int (quicktok, the default exact engine): the count itself runs in C++
  with the GIL released, and the writer hands the GIL over often, since it too spends
  most of its time in C (SQLite steps, orjson, hashing). Measured on a 1M-token import
  (2 cores, load ~1, medians of 9, same run): 107–110 ms on a thread, 119–123 ms in a
  forked child, 128–129 ms counting inline. Lowering the interpreter's switch interval
  changed nothing (106.7–107.3 ms at 0.5 ms to 20 µs). No fork: no copy-on-write faults in
  a large process, and it works where there is no ``fork`` (macOS's spawn default, Windows).
  A thread on a busy machine only interleaves with the writer, so it needs no idle core;
* **in a forked child** for the other fork-safe engines (tiktoken, the heuristic): it
  inherits the texts and the loaded encoding (no pickling), counts them, and writes the
  counts back through a pipe.

Why tiktoken is not counted on a thread: it does release the GIL inside an encode (a
pure-Python loop on another thread kept running at full speed through a 1 s encode), but it
builds a Python list of ids, and a counting thread needs the GIL back between texts; while
the writer runs Python it waits up to the interpreter's switch interval (5 ms) each time.
Measured on 2 cores, counting 1M tokens on
a thread beside the encoding work took 0.40–0.45 s against 0.30–0.37 s for the two done one
after the other; two threads each counting half were also slower than one thread counting
all (0.43 s vs 0.32 s, with 2 cores busy). In a real 1M-token import, a counting thread
started where the child is forked took 463 ms wall / 302 ms CPU against 318 / 232 ms
counted inline and 335 / 255 ms forked (medians of 7, same run, load avg ~2.4 on 2 cores).

The thread and the child touch nothing but the tokenizer (the child also its pipe, never
the SQLite connection, which must not cross a fork); the child leaves with ``os._exit``.
Anything unexpected — no ``fork`` on this platform, a tokenizer neither GIL-free nor known
to be fork-safe, the thread or the child failing, the child dying or overrunning its
deadline — falls back to counting in the caller, so the result is the same either way;
only the time differs.

A second core helps only when it is idle: the fork costs CPU (page-table copy, then
copy-on-write faults in both processes as CPython touches reference counts — measured
+25–35 ms of CPU on a 1M-token import), and a child that has to share a busy core makes
the import slower than counting inline (measured 0.51 s vs 0.44 s with a load average of
3.6 on 2 cores). So by default the child is used only when the 1-minute load average
leaves at least half a core idle. ``CTXMEM_PARALLEL_COUNT=0`` counts inline; ``=1`` uses
the thread or the child whatever the load (the tests use it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import sys
import threading
import time
from array import array
from collections.abc import Sequence

from ctxmem.tokens import Tokenizer

#: below this many characters forking costs more than it saves
MIN_CHARS = 1_000_000
#: an append of fewer events than this is written too fast for a child to overlap it
MIN_EVENTS = 64
#: seconds per million characters the child may take before the parent gives up on it
_DEADLINE_PER_MCHAR = 20.0


def _fork_safe(tok: Tokenizer) -> bool:
    return _fork_safe_type(type(tok))


#: tokenizer classes counted on the calling thread, fork-safe: (module, class name).
#: HF tokenizers run a rayon thread pool that does not survive fork: not listed.
_FORK_SAFE = (
    ("ctxmem.tokens.quicktok_backend", "QuicktokTokenizer"),
    ("ctxmem.tokens.tiktoken_backend", "TiktokenTokenizer"),
    ("ctxmem.tokens.heuristic", "HeuristicTokenizer"),
)


#: tokenizer classes whose ``count`` releases the GIL for the whole text and returns an int
#: (C++ engines): counted on a thread, not in a child
_GIL_FREE = (("ctxmem.tokens.quicktok_backend", "QuicktokTokenizer"),)


def _of(cls: type, classes: tuple[tuple[str, str], ...]) -> bool:
    # Looked up among the modules already imported, never importing one: a tokenizer of a
    # class whose module was never imported cannot exist (importing the tiktoken backend
    # cost a fresh `sessions import` ~1.4 ms).
    for module, name in classes:
        mod = sys.modules.get(module)
        if mod is not None and issubclass(cls, getattr(mod, name)):
            return True
    return False


@functools.cache
def _fork_safe_type(cls: type) -> bool:
    return _of(cls, _FORK_SAFE)  # per class, once (every append asks)


@functools.cache
def _gil_free_type(cls: type) -> bool:
    return _of(cls, _GIL_FREE)


def threaded(tok: Tokenizer) -> bool:
    """Whether ``tok`` is counted on a thread (else, when possible, in a forked child)."""
    return _gil_free_type(type(tok))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def idle_core() -> bool:
    """Whether another core is likely idle: usable cores minus the 1-minute load ≥ 0.5
    (this process's own run counts in the load, so an idle 2-core machine reads ~1)."""
    cores = _cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average here
        return cores > 1
    return cores > 1 and cores - load >= 0.5


def possible(tok: Tokenizer) -> bool:
    """Whether ``tok`` could ever be counted beside the writer here (setting, platform,
    tokenizer): the cheap checks, before anyone collects the texts to count."""
    return os.environ.get("CTXMEM_PARALLEL_COUNT", "auto") != "0" and (
        threaded(tok) or (hasattr(os, "fork") and sys.platform != "win32" and _fork_safe(tok))
    )


def _second_core(tok: Tokenizer) -> bool:
    """Forced (``CTXMEM_PARALLEL_COUNT=1``), or a core to count on: any second one for a
    thread, an idle one for a child (see the module docstring)."""
    if os.environ.get("CTXMEM_PARALLEL_COUNT") == "1":
        return True
    return _cores() > 1 if threaded(tok) else idle_core()


def wanted(tok: Tokenizer, events: int) -> bool:
    """Whether counting beside the writer would be used now for an append of ``events``
    events holding enough text: enough events that the writing overlaps the counting (a
    child beside a write of a few events only adds the fork), :func:`possible`, and a
    second core to use. Checked before the texts are gathered, which costs ~2 ms for a
    1M-token import that then counts inline."""
    return events >= MIN_EVENTS and possible(tok) and _second_core(tok)  # last: may read the load


def enabled(tok: Tokenizer, texts: Sequence[str]) -> bool:
    """Whether :func:`start` will count these texts on a thread or in a child."""
    return sum(map(len, texts)) >= MIN_CHARS and possible(tok) and _second_core(tok)


class Counting:
    """Counts being computed: call it for them (memoized), or :meth:`cancel` to drop them."""

    def __init__(
        self, tok: Tokenizer, texts: list[str], pid: int | None = None, fd: int | None = None, *,
        thread: bool = False,
    ):
        self._tok = tok
        self._texts = texts
        self._pid = pid
        self._fd = fd
        self._thread: threading.Thread | None = None
        self._result: list[list[int]] = []  # the thread's counts, once it has them
        self._counts: list[int] | None = None
        if thread:
            # Not a daemon: a daemon thread still inside the engine's C++ count when the
            # interpreter exits (an append that failed, then the process ending) dies with
            # std::terminate, aborting the process. Exit waits for the count instead (it is
            # bounded: linear in the text, ~25 ms per 1M tokens).
            self._thread = threading.Thread(target=self._count_here, name="ctxmem-count")
            try:
                self._thread.start()
            except RuntimeError:  # no thread to be had (resource limits): count here
                self._thread = None
                self._counts = tok.count_many(texts)
        elif pid is None:
            self._counts = tok.count_many(texts)
        else:
            self._deadline = time.monotonic() + 5.0 + _DEADLINE_PER_MCHAR * sum(map(len, texts)) / 1e6

    @property
    def forked(self) -> bool:
        """Whether a child process was started to count (whatever became of it)."""
        return self._pid is not None

    @property
    def threaded(self) -> bool:
        """Whether a thread was started to count (whatever became of it)."""
        return self._thread is not None

    def __call__(self) -> list[int]:
        # Memoized: a write transaction retried after SQLITE_BUSY asks again.
        if self._counts is None:
            self._counts = self._collect()
        return self._counts

    def cancel(self) -> None:
        """Stop and reap the child if it is still running (an append that failed early); a
        thread cannot be stopped, so it is waited for."""
        if self._counts is None and self._pid is not None and self._fd is not None:
            os.kill(self._pid, signal.SIGKILL)  # not reaped yet, so the pid is still ours
            os.close(self._fd)
            os.waitpid(self._pid, 0)
            self._fd = None
            self._counts = []
        elif self._counts is None and self._thread is not None:
            self._thread.join()  # finished and gone before the caller moves on (see __init__)
            self._counts = []

    def _count_here(self) -> None:
        # on the thread: any failure leaves the result empty, and the caller counts instead
        with contextlib.suppress(Exception):
            self._result.append(self._tok.count_many(self._texts))

    def _collect(self) -> list[int]:
        if self._thread is not None:
            self._thread.join()
            return self._result[0] if self._result else self._tok.count_many(self._texts)
        assert self._pid is not None and self._fd is not None
        pid, r = self._pid, self._fd
        expected = 8 * len(self._texts)
        chunks: list[bytes] = []
        got = 0
        ok = True
        try:
            while got < expected:
                left = self._deadline - time.monotonic()
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
            self._fd = None
            _, status = os.waitpid(pid, 0)
        if not ok or got != expected or os.waitstatus_to_exitcode(status) != 0:
            return self._tok.count_many(self._texts)  # the child failed: same answer, computed here
        return list(array("q", b"".join(chunks)))


def start(tok: Tokenizer, texts: list[str]) -> Counting:
    """Begin counting ``texts``; calling the result gives the counts (same as
    ``tok.count_many(texts)``), falling back to counting inline if the thread or the child
    fails. When counting on a second core is not :func:`enabled`, the texts are counted now."""
    if not enabled(tok, texts):
        return Counting(tok, texts)
    if threaded(tok):
        return Counting(tok, texts, thread=True)
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
    return Counting(tok, texts, pid, r)
