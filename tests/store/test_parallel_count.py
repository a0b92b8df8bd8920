"""Bulk counting beside the writer — on a thread (quicktok, whose count releases the GIL) or
in a forked child (the other fork-safe engines: tiktoken, the heuristic) — gives exactly
the inline counts, and falls back to counting inline when the thread or the child fails."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ctxmem.messages import message_texts
from ctxmem.samples import synthetic_session
from ctxmem.store import parallel_count

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def forked(o200k: Any) -> Any:
    """A fork-safe engine that is not GIL-free (tiktoken's o200k when it loads, else the
    heuristic): counted in a child."""
    from ctxmem.tokens import get_tokenizer

    try:
        tok = get_tokenizer("tiktoken:o200k_base")
    except Exception:  # no tiktoken file here (offline, no ../shared)
        tok = get_tokenizer("heuristic")
    assert not parallel_count.threaded(tok) and parallel_count._fork_safe(tok)
    return tok


@pytest.fixture
def threaded(o200k: Any) -> Any:
    from ctxmem.tokens.quicktok_backend import QuicktokTokenizer

    if not isinstance(o200k, QuicktokTokenizer):
        pytest.skip("o200k is not counted by quicktok here")
    assert parallel_count.threaded(o200k)
    return o200k


@pytest.fixture
def texts() -> list[str]:
    return [t for m in synthetic_session(60, seed=3) for t in message_texts(m)]


@needs_fork
def test_child_counts_equal_inline_counts(forked: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")  # fork whatever the machine's load
    assert parallel_count.enabled(forked, texts)
    result = parallel_count.start(forked, texts)
    assert result.forked and not result.threaded
    assert result() == forked.count_many(texts)
    assert result() == forked.count_many(texts)  # memoized: a retried transaction may ask twice


def test_thread_counts_equal_inline_counts(threaded: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")
    result = parallel_count.start(threaded, texts)
    assert result.threaded and not result.forked
    assert result() == threaded.count_many(texts) == result()


def test_a_failing_thread_falls_back_to_the_caller(threaded: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    class FailsOffMain(type(threaded)):  # type: ignore[misc]
        def count_many(self, batch: Any) -> list[int]:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("thread failure")
            return list(super().count_many(batch))

    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")
    result = parallel_count.start(FailsOffMain("o200k_base"), texts)
    assert result.threaded
    assert result() == threaded.count_many(texts)


def _fails_in_child(base: type, parent: int, name: str) -> Any:
    """A tokenizer of ``base`` (a forked engine) whose count_many raises in any process but ``parent``."""

    class FailsInChild(base):  # type: ignore[misc,valid-type]
        def count_many(self, texts: Any) -> list[int]:
            if os.getpid() != parent:
                raise RuntimeError("child failure")
            return list(super().count_many(texts))

    return FailsInChild(name) if name != "heuristic" else FailsInChild()


@needs_fork
def test_a_failing_child_falls_back_to_the_parent(forked: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")
    tok = _fails_in_child(type(forked), os.getpid(), forked.name)
    assert parallel_count.possible(tok)
    result = parallel_count.start(tok, texts)
    assert result.forked
    assert result() == forked.count_many(texts)


def test_disabled_by_env_and_for_small_inputs(o200k: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")
    assert not parallel_count.enabled(o200k, texts[:3])  # under MIN_CHARS
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    assert parallel_count.enabled(o200k, texts)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "0")
    assert not parallel_count.enabled(o200k, texts)


@needs_fork
def test_auto_mode_forks_only_beside_an_idle_core(forked: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.delenv("CTXMEM_PARALLEL_COUNT", raising=False)
    cores = parallel_count._cores()
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores), 0.0, 0.0))  # every core busy
    assert not parallel_count.idle_core()
    assert not parallel_count.enabled(forked, texts)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert parallel_count.idle_core() == (cores > 1)
    assert parallel_count.enabled(forked, texts) == (cores > 1)


def test_auto_mode_threads_beside_any_second_core(threaded: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread only interleaves with the writer on a busy machine (no fork to pay for)."""
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.delenv("CTXMEM_PARALLEL_COUNT", raising=False)
    cores = parallel_count._cores()
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores), 0.0, 0.0))  # every core busy
    assert parallel_count.enabled(threaded, texts) == (cores > 1)
    monkeypatch.setattr(parallel_count, "_cores", lambda: 1)
    assert not parallel_count.enabled(threaded, texts)


@needs_fork
def test_cancel_reaps_the_child(forked: Any, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")
    counting = parallel_count.start(forked, texts)
    assert counting.forked
    pid = counting._pid
    assert pid is not None
    counting.cancel()
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)
    counting.cancel()  # idempotent


def _chain_counts(store: Any, sid: str) -> list[tuple[int, int, int, int]]:
    view = store.chain(sid, tokenizers=["o200k_base"])
    return [(c.content, c.overhead, c.cum_content, c.cum_overhead) for c in view.counts["o200k_base"]]


def test_bulk_append_counted_on_a_second_core_equals_inline_and_memo(
    o200k: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctxmem.session import Session
    from ctxmem.store import SQLiteStore
    from ctxmem.store.codec import encode_event

    msgs = synthetic_session(40, seed=5)
    beside: list[int] = []  # 1: counted on a thread or in a child
    real_start = parallel_count.start

    def spy(tok: Any, texts: list[str]) -> parallel_count.Counting:
        c = real_start(tok, texts)
        beside.append(int(c.forked or c.threaded))
        return c

    monkeypatch.setattr(parallel_count, "start", spy)
    results = []
    for parallel in ("1", "0"):  # "1": beside the writer whatever the load
        monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", parallel)
        monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
        with SQLiteStore(tmp_path / f"p{parallel}.db") as store:
            s = Session.create(store, tokenizers=["o200k_base"])
            s.record_many(msgs)
            again = Session.create(store, tokenizers=["o200k_base"])  # the memo is full now
            again.record_many(msgs)
            results.append((_chain_counts(store, s.id), _chain_counts(store, again.id)))
            # each event's content count is its texts counted one by one
            expected = [sum(o200k.count(t) for t in encode_event(se.event).texts) for se in s.events()]
            assert [c[0] for c in results[-1][0]] == expected
    assert beside == [1, 1]  # two bulk appends counted beside the writer; the serial store never called start
    (par_first, par_again), (ser_first, ser_again) = results
    assert par_first == ser_first == par_again == ser_again


@needs_fork
def test_wanted_needs_enough_events_the_setting_and_a_second_core(forked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    many = parallel_count.MIN_EVENTS
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")
    assert parallel_count.wanted(forked, many)
    assert not parallel_count.wanted(forked, many - 1)  # a small append: the fork would only add cost
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "0")
    assert not parallel_count.wanted(forked, many)
    monkeypatch.delenv("CTXMEM_PARALLEL_COUNT")
    cores = parallel_count._cores()
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores), 0.0, 0.0))  # every core busy
    assert not parallel_count.wanted(forked, many)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert parallel_count.wanted(forked, many) == (cores > 1)


def test_only_tokenizers_that_count_on_the_calling_thread_are_forked(o200k: Any) -> None:
    from ctxmem.tokens import get_tokenizer

    class Pooled:  # stands for an engine with its own thread pool (HF tokenizers): never forked
        id, name, exact = "pooled:x", "x", True

        def count(self, text: str) -> int:
            return len(text)

        def count_many(self, texts: Any) -> list[int]:
            return [len(t) for t in texts]

    assert parallel_count._fork_safe(o200k)
    assert parallel_count._fork_safe(get_tokenizer("heuristic"))
    assert not parallel_count._fork_safe(Pooled())
    assert not parallel_count.possible(Pooled())


def test_deciding_fork_safety_imports_no_backend() -> None:
    import subprocess
    import sys

    code = ("import sys; from ctxmem.tokens import get_tokenizer; from ctxmem.store import parallel_count as p; "
            "t = get_tokenizer('heuristic'); assert p._fork_safe(t); "
            "print(sorted(m for m in ('ctxmem.tokens.tiktoken_backend', 'ctxmem.tokens.quicktok_backend') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_cancelled_thread_is_waited_for_and_exit_is_clean(tmp_path: Any) -> None:
    """An append that fails while quicktok counts on its thread leaves no thread behind, and
    the process that then ends exits with its own status (a daemon thread still inside the
    engine at exit aborted the process: std::terminate, SIGABRT)."""
    import subprocess
    import sys

    code = (
        "import sys, threading\n"
        "from ctxmem.store import parallel_count as p\n"
        "from ctxmem.tokens import get_tokenizer\n"
        "tok = get_tokenizer('o200k_base')\n"
        "if not p.threaded(tok): print('skip'); sys.exit(0)\n"
        "p.MIN_CHARS = 0\n"
        "texts = ['word ' * 20000 + str(i) for i in range(400)]\n"
        "c = p.start(tok, texts)\n"
        "assert c.threaded\n"
        "c.cancel()\n"
        "assert [t.name for t in threading.enumerate() if t.name == 'ctxmem-count'] == []\n"
        "assert c() == []\n"
        "again = p.start(tok, texts)\n"  # left counting: the interpreter exits while it runs
        "sys.exit(3)\n"
    )
    env = {**os.environ, "CTXMEM_PARALLEL_COUNT": "1"}
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        if out.stdout.strip() == "skip":
            pytest.skip("o200k is not counted by quicktok here")
        assert out.returncode == 3, out.stderr[-2000:]


def test_children_are_forked_before_a_counting_thread_starts(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session counting with quicktok and a fork-counted engine forks its child while no
    counting thread is alive (a fork copies only the calling thread)."""
    import threading

    from ctxmem.session import Session
    from ctxmem.store import SQLiteStore

    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    alive_at_fork: list[list[str]] = []
    real_fork = os.fork

    def spy_fork() -> int:
        alive_at_fork.append([t.name for t in threading.enumerate() if t.name == "ctxmem-count"])
        return real_fork()

    monkeypatch.setattr(os, "fork", spy_fork)
    monkeypatch.setattr(parallel_count, "MIN_CHARS", 0)
    monkeypatch.setenv("CTXMEM_PARALLEL_COUNT", "1")
    with SQLiteStore(tmp_path / "m.db") as store:
        s = Session.create(store, tokenizers=["o200k_base", "heuristic"])
        from ctxmem.tokens import get_tokenizer

        if not parallel_count.threaded(get_tokenizer("o200k_base")):
            pytest.skip("o200k is not counted by quicktok here")
        s.record_many(synthetic_session(40, seed=5))
    assert alive_at_fork == [[]]
