"""SQLite-specific behaviour: WAL, migrations, atomic writes, durability, large payloads."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ctxmem.errors import StoreError
from ctxmem.events import NoteEvent, ToolCallEvent, ToolResultEvent
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.store.migrations import MIGRATIONS
from ctxmem.tokens import count_messages, get_tokenizer
from generators import log_text


def test_wal_and_synchronous_normal(sqlite_store: SQLiteStore) -> None:
    assert sqlite_store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sqlite_store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert sqlite_store.conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_new_files_get_8k_pages_and_old_files_keep_theirs(tmp_path: Path) -> None:
    from ctxmem.store.sqlite import PAGE_SIZE

    with SQLiteStore(tmp_path / "new.db") as s:
        assert s.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 8192
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    # an old ctxmem store (its migration log, nothing applied yet) with a table a user added
    conn.execute("CREATE TABLE _ctxmem_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    conn.execute("CREATE TABLE unrelated (x)")
    conn.close()
    with SQLiteStore(old) as s:
        Session.create(s, session_id="k").record(Message.user("kept"))
    with SQLiteStore(old) as s:
        assert s.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert Session.open(s, "k").messages() == [Message.user("kept")]
        assert s.integrity_check() == "ok"


def test_migrations_are_named_recorded_and_applied_once(db_path: Path) -> None:
    names = [n for n, _ in MIGRATIONS]
    assert len(names) == len(set(names))
    assert names == sorted(names)  # numbered, applied in order
    with SQLiteStore(db_path) as s:
        recorded = [r[0] for r in s.conn.execute("SELECT name FROM _ctxmem_migrations ORDER BY rowid")]
        assert recorded == names
        Session.create(s, session_id="keep").record(Message.user("kept"))
    with SQLiteStore(db_path) as s:  # reopening applies nothing twice and loses nothing
        assert s.conn.execute("SELECT count(*) FROM _ctxmem_migrations").fetchone()[0] == len(names)
        assert Session.open(s, "keep").messages() == [Message.user("kept")]
        assert {"sessions", "events", "blobs", "token_counts", "event_tokens", "calibration"} <= set(
            s.db.table_names()
        )


def test_reopen_gives_back_everything(db_path: Path, o200k: Any) -> None:
    conv = synthetic_session(30, seed=11)
    with SQLiteStore(db_path) as s:
        sess = Session.create(s, title="run", metadata={"model": "x"}, tokenizers=["o200k_base"])
        sess.record_many(conv[:-1])
        sess.record(conv[-1])
        before = sess.totals("o200k_base")
        s.record_calibration("claude", "o200k_base", 1000, 1040)
        fork = sess.fork(sess.events()[5].id)
    with SQLiteStore(db_path) as s:
        again = Session.open(s, sess.id)
        assert again.messages() == conv
        assert again.totals("o200k_base") == before
        counts = count_messages(conv, o200k)
        assert before.content == sum(c.content for c in counts)
        assert again.info.title == "run" and again.info.metadata == {"model": "x"}
        assert again.info.tokenizers == ("o200k_base",)
        assert Session.open(s, fork.id).messages() == Session.open(s, fork.id).messages()
        assert s.calibration_observations("claude", "o200k_base") == [(1000, 1040)]
        assert s.integrity_check() == "ok"


def test_tool_inputs_outside_64_bit_json_survive_a_reload(db_path: Path) -> None:
    from ctxmem.messages import canonical_json

    # (NaN and infinities are refused at the door: tests/test_session_door.py)
    odd = {"big": 2**70, "neg": -(2**65), "tiny": 1e-7, "e": 1e16, "zero": -0.0}
    conv = [Message.user("go"), Message("assistant", (ToolUseBlock("toolu_1", "f", odd),))]
    with SQLiteStore(db_path) as s:
        sid = Session.create(s).record_many(conv) and s.list_sessions()[0].id
    with SQLiteStore(db_path) as s:
        back = Session.open(s, sid).messages()
    got = back[1].tool_uses[0].input
    assert canonical_json(got) == canonical_json(odd)
    assert type(got["big"]) is int and got["big"] == 2**70 and got["neg"] == -(2**65)


def test_append_is_atomic(sqlite_store: SQLiteStore) -> None:
    s = Session.create(sqlite_store, tokenizers=["heuristic"])
    s.record(Message.user("before"))
    snapshot = {t: sqlite_store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("events", "blobs", "token_counts", "event_tokens")}
    # Fault injection inside the transaction: the third row of the batch fails to insert.
    sqlite_store.conn.execute(
        "CREATE TEMP TRIGGER fail_note BEFORE INSERT ON events WHEN NEW.kind = 'note' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    batch = [
        ToolCallEvent(ToolUseBlock("t1", "compile", {"x": 1})),
        ToolResultEvent(ToolResultBlock("t1", "a brand new output")),
        NoteEvent("boom"),
    ]
    with pytest.raises(StoreError, match="injected failure"):  # in the error tree, not sqlite3's
        sqlite_store.append(s.id, batch)
    after = {t: sqlite_store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in snapshot}
    assert after == snapshot
    assert s.messages() == [Message.user("before")]
    assert sqlite_store.search("brand") == []
    sqlite_store.conn.execute("DROP TRIGGER fail_note")
    s.record_events(batch)  # the store is usable afterwards
    assert [e.kind for e in s.events()] == ["message", "tool_call", "tool_result", "note"]


def test_session_creation_with_a_bad_tokenizer_writes_nothing(sqlite_store: SQLiteStore) -> None:
    from ctxmem.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        Session.create(sqlite_store, tokenizers=["o200k_bas"])
    assert sqlite_store.list_sessions() == []


@pytest.mark.slow
def test_a_50mb_tool_output_is_stored_and_read_back(db_path: Path) -> None:
    chunk = log_text(5, 20_000)
    big = (chunk + "\n") * (50_000_000 // (len(chunk) + 1) + 1)
    big = big[:50_000_000] + "\nFINAL_MARKER_zq9 done"
    with SQLiteStore(db_path) as s:
        sess = Session.create(s, tokenizers=["heuristic"])
        sess.record(Message.assistant(ToolUseBlock("big", "dump_logs", {})))
        eid = sess.record_tool_result("big", big, tool_name="dump_logs")
        expected = get_tokenizer("heuristic").count(big)
    with SQLiteStore(db_path) as s:
        assert s.tool_output(eid) == big
        msgs = Session.open(s, sess.id).messages()
        assert msgs[-1].tool_results[0].text == big
        assert [h.event_id for h in s.search("FINAL_MARKER_zq9")] == [eid]
        t = Session.open(s, sess.id).totals("heuristic")
        assert t.content == expected + sum(get_tokenizer("heuristic").count_many(["dump_logs", "{}"]))
        assert s.integrity_check() == "ok"


def test_busy_database_is_waited_on_not_raised(db_path: Path) -> None:
    with SQLiteStore(db_path) as s:
        sess = Session.create(s)
    blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock briefly
    import threading

    timer = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    timer.start()
    try:
        with SQLiteStore(db_path, busy_timeout_ms=50, max_attempts=200) as s:
            Session.open(s, sess.id).record(Message.user("waited"))
            assert Session.open(s, sess.id).messages() == [Message.user("waited")]
    finally:
        timer.join()
        blocker.close()


def test_store_busy_error_after_every_retry(db_path: Path) -> None:
    from ctxmem.errors import StoreBusyError

    with SQLiteStore(db_path) as s:
        sess = Session.create(s)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with SQLiteStore(db_path, busy_timeout_ms=1, max_attempts=3) as s:
            with pytest.raises(StoreBusyError) as exc:
                Session.open(s, sess.id).record(Message.user("never"))
            assert exc.value.attempts == 3 and "retry" in str(exc.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_totals_cost_the_same_queries_whatever_the_history_length(sqlite_store: SQLiteStore) -> None:
    # O(1): reading a tracked total is a fixed set of statements, not a walk of the chain.
    def statements_for_totals(n_turns: int) -> list[str]:
        s = Session.create(sqlite_store, tokenizers=["heuristic"])
        s.record_many(synthetic_session(n_turns, seed=n_turns))
        s.record(Message.assistant("one more"))  # a single append after the bulk
        seen: list[str] = []
        sqlite_store.conn.set_trace_callback(seen.append)
        try:
            s.totals("heuristic")
        finally:
            sqlite_store.conn.set_trace_callback(None)
        return seen

    short, long = statements_for_totals(2), statements_for_totals(300)
    assert len(short) == len(long) <= 4
    assert not any("RECURSIVE" in q for q in long)


def test_a_small_append_counts_with_quicktok_instead_of_querying_the_memo(sqlite_store: SQLiteStore) -> None:
    # Counting a few KB in C++ costs less than the memo query, which almost always misses
    # for an agent's new text; a large text still consults the memo. Either way the counts
    # are exact and the memo rows are written.
    pytest.importorskip("quicktok")
    tok = sqlite_store.tokenizer("o200k_base")
    if type(tok).__name__ != "QuicktokTokenizer":
        pytest.skip("o200k_base is not counted by quicktok here")
    s = Session.create(sqlite_store, tokenizers=["o200k_base"])

    def record(text: str) -> list[str]:
        seen: list[str] = []
        sqlite_store.conn.set_trace_callback(seen.append)
        try:
            s.record(Message.user(text))
        finally:
            sqlite_store.conn.set_trace_callback(None)
        return [q for q in seen if "FROM token_counts" in q]

    small, large = log_text(1, 40), log_text(2, 4000)
    assert len(small) < 16_384 < len(large)
    assert record(small) == []
    assert len(record(large)) == 1
    memo = dict(sqlite_store.conn.execute("SELECT hash, tokens FROM token_counts").fetchall())
    assert sorted(memo.values()) == sorted([tok.count(small), tok.count(large)])  # rows written either way
    per_event = [n for (n,) in sqlite_store.conn.execute("SELECT content FROM event_tokens ORDER BY event_id")]
    assert per_event == [tok.count(small), tok.count(large)]
    # Where each count comes from: with every memo row marked (one more token), the large
    # text's next append takes the marked count (read from the memo), the small one's the
    # engine's (the memo was not read).
    sqlite_store.conn.execute("UPDATE token_counts SET tokens = tokens + 1")
    record(large)
    record(small)
    per_event = [n for (n,) in sqlite_store.conn.execute("SELECT content FROM event_tokens ORDER BY event_id")]
    assert per_event[2:] == [tok.count(large) + 1, tok.count(small)]


def test_try_save_derived_does_not_wait_for_the_write_lock(db_path: Path) -> None:
    with SQLiteStore(db_path, busy_timeout_ms=60_000) as store:
        s = Session.create(store)
        s.record(Message.user("task"))
        seen: list[str] = []
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            store.conn.set_trace_callback(seen.append)
            assert store.try_save_derived(s.id, "k", "1", b"x") is False
        finally:
            store.conn.set_trace_callback(None)
            holder.execute("ROLLBACK")
            holder.close()
        # the attempt ran with no busy wait, and the store's own wait is back for everything else
        assert seen[:2] == ["PRAGMA busy_timeout = 0", "BEGIN IMMEDIATE"]
        assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 60_000
        assert store.load_derived(s.id, "k") is None
        assert store.try_save_derived(s.id, "k", "1", b"x") is True
        assert store.load_derived(s.id, "k") == ("1", b"x")


def test_an_append_to_a_session_whose_head_event_is_gone_is_a_clear_error(db_path: Path) -> None:
    # only a damaged file can get here (events are never deleted): say so, write nothing
    with SQLiteStore(db_path) as store:
        s = Session.create(store)
        s.record(Message.user("task"))
        head = store.get_session(s.id).head_event_id
        store.conn.execute("UPDATE sessions SET head_event_id = ? WHERE id = ?", (head + 100, s.id))
        before = store.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        with pytest.raises(StoreError, match=f"head event {head + 100}, which is not stored"):
            s.record(Message.assistant("more"))
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == before


# --------------------------------------------------------------------------- chain membership


def _result(i: int, text: str) -> list[Message]:
    return [
        Message("assistant", (ToolUseBlock(f"t{i}", "read_file", {"path": f"f{i}"}),)),
        Message("user", (ToolResultBlock(f"t{i}", text),)),
    ]


def _walk(store: SQLiteStore, session_id: str) -> list[int]:
    """The chain by parent pointers, the slow reference the membership ranges must match."""
    head = store.get_session(session_id).head_event_id
    out = []
    while head is not None:
        out.append(head)
        head = store.conn.execute("SELECT parent_id FROM events WHERE id = ?", (head,)).fetchone()[0]
    return sorted(out)


def test_search_membership_follows_forks_and_rewinds_without_walking_the_chain(sqlite_store: SQLiteStore) -> None:
    a = Session.create(sqlite_store)
    a.record_many(_result(0, "alpha zeta") + _result(1, "beta zeta"))
    b = a.fork(a.events()[1].id)  # after "alpha": b shares it, not "beta"
    b.record_many(_result(2, "gamma zeta"))
    a.record_many(_result(3, "delta zeta"))
    rewound_to = a.events()[3].id  # a keeps alpha and beta, drops delta
    a.rewind(rewound_to)
    a.record_many(_result(4, "epsilon zeta"))
    c = b.fork(b.events()[-1].id)
    c.rewind(c.events()[1].id)  # back into a's part
    c.record_many(_result(5, "eta zeta"))
    expect = {a.id: ["t0", "t1", "t4"], b.id: ["t0", "t2"], c.id: ["t0", "t5"]}
    for s in (a, b, c):
        assert [e.id for e in s.events()] == _walk(sqlite_store, s.id)
        seen: list[str] = []
        sqlite_store.conn.set_trace_callback(seen.append)
        try:
            hits = sqlite_store.search("zeta", session_id=s.id, limit=50)
        finally:
            sqlite_store.conn.set_trace_callback(None)
        assert sorted(h.tool_use_id or "" for h in hits) == expect[s.id]
        assert not any("RECURSIVE" in q for q in seen)
        assert {u.id for u in sqlite_store.pending_tool_uses(s.id)} == set()
    with pytest.raises(Exception, match="no event"):
        c.rewind(a.events()[-1].id)  # "epsilon" is a's, never in c's chain


def test_a_store_forked_before_membership_gets_its_chains_backfilled(db_path: Path) -> None:
    # Build a file with every migration up to m006, fork and rewind through raw SQL (the
    # old code paths), then let the current store migrate it.
    from ctxmem.store.migrations import _script, split_runs

    with SQLiteStore(db_path) as s:
        a = Session.create(s)
        a.record_many(_result(0, "alpha") + _result(1, "beta") + _result(2, "gamma"))
        ids = [e.id for e in a.events()]
        b = a.fork(ids[3])
        b.record_many(_result(3, "delta"))
        a.rewind(ids[1])
        a.record_many(_result(4, "epsilon"))
        want = {x.id: [e.id for e in x.events()] for x in (a, b)}
        # forget the membership, as a file written before m007 would lack it
        s.conn.execute("DELETE FROM chain_segments")
        s.conn.execute("UPDATE sessions SET tail_floor = 0")
        s.conn.execute("DELETE FROM _ctxmem_migrations WHERE name = 'm007_chain_segments'")
        s.conn.execute("DROP TABLE chain_segments")
        s.conn.execute("ALTER TABLE sessions DROP COLUMN tail_floor")
        assert split_runs(s.conn, []) == [] and callable(_script)
    with SQLiteStore(db_path) as s:
        for sid, chain in want.items():
            assert [e.id for e in Session.open(s, sid).events()] == chain == _walk(s, sid)
        assert [h.tool_use_id for h in s.search("epsilon", session_id=a.id)] == ["t4"]
        assert s.search("delta", session_id=a.id) == []


def test_search_snippets_only_when_asked(sqlite_store: SQLiteStore) -> None:
    s = Session.create(sqlite_store)
    s.record_many(_result(0, "the shared memory limit is 101376 bytes"))
    [hit] = sqlite_store.search('"shared"', session_id=s.id)
    assert "[shared]" in hit.snippet
    [bare] = sqlite_store.search('"shared"', session_id=s.id, snippets=False)
    assert bare.snippet == "" and (bare.event_id, bare.score) == (hit.event_id, hit.score)


def test_document_frequencies_are_a_function_of_the_file(db_path: Path) -> None:
    from ctxmem.store.sqlite import _epoch_floor

    grid = [_epoch_floor(n) for n in range(0, 2000)]
    assert grid == sorted(grid) and all(b <= n for n, b in enumerate(grid)) and grid[100] < 100
    with SQLiteStore(db_path) as s:
        sess = Session.create(s)
        for i in range(120):
            sess.record_many(_result(i, f"common word{i % 7} rare{i}"))
        n, df = s.document_frequencies(["common", "WORD3", "rare5", "absent"])
        assert 100 < n <= 120  # outputs up to the epoch boundary (tool inputs are not indexed)
        assert df == {"common": n, "word3": sum(1 for i in range(n) if i % 7 == 3), "rare5": 1, "absent": 0}
        sess.record_many(_result(120, "common rare5"))
        after = s.document_frequencies(["rare5", "common"])
    with SQLiteStore(db_path) as fresh:  # a fresh process gets the same answer
        assert fresh.document_frequencies(["rare5", "common"]) == after


def test_the_store_needs_no_sqlite_utils(tmp_path: Path) -> None:
    """sqlite-utils is an extra: without it a store opens, records and reads back, and only
    ``store.db`` says what to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sqlite_utils'] = None\n"
        "from ctxmem.errors import MissingDependencyError\n"
        "from ctxmem.messages import Message\nfrom ctxmem.session import Session\nfrom ctxmem.store import SQLiteStore\n"
        f"s = SQLiteStore({str(tmp_path / 'x.db')!r})\n"
        "Session.create(s, session_id='k').record(Message.user('hi'))\n"
        "assert Session.open(s, 'k').messages() == [Message.user('hi')]\n"
        "try:\n    s.db\nexcept MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "ctxmem[sqlite-utils]"' in out


def test_events_of_one_kind_are_the_chain_filtered_on_forks_and_rewinds(sqlite_store: SQLiteStore) -> None:
    # chain_events_of_kind (what a compaction recorder reads on first sight of a session)
    # must equal the chain's events filtered by kind, whatever forks and rewinds did.
    a = Session.create(sqlite_store)
    a.record_many(_result(0, "alpha"))
    a.note("first")
    a.record_many(_result(1, "beta"))
    b = a.fork(a.events()[2].id)  # after the first note
    b.note("b's own")
    a.note("second")
    a.rewind(a.events()[3].id)  # drops "second"
    a.note("third")
    b.record_many(_result(2, "gamma"))
    for s in (a, b):
        for kind in ("note", "tool_result", "compaction"):
            want = [(e.id, e.event) for e in s.events() if e.event.kind == kind]
            assert [(e.id, e.event) for e in sqlite_store.chain_events_of_kind(s.id, kind)] == want
    assert [e.event.text for e in sqlite_store.chain_events_of_kind(a.id, "note")] == ["first", "third"]
    assert [e.event.text for e in sqlite_store.chain_events_of_kind(b.id, "note")] == ["first", "b's own"]



def test_a_history_read_straight_into_messages_is_the_one_read_event_by_event(tmp_path: Path) -> None:
    """A reload's fast path (chain_messages: rows to messages, no event objects) gives the
    History the event-by-event read gives: messages, counts, event ids, for every kind of
    event a session holds; a forked or rewound session, whose chain is not one id range of
    its own events, is declined and read event by event."""
    from ctxmem.context import History
    from ctxmem.events import CompactionEvent
    from ctxmem.messages import TextBlock, ThinkingBlock

    store = SQLiteStore(tmp_path / "h.db")
    session = Session.create(store, tokenizers=["o200k_base"])
    msgs = synthetic_session(8, seed=2)
    session.record_many(msgs[:9])
    session.record_model_call("m", input_tokens=10, output_tokens=2)
    session.record(Message.assistant(ThinkingBlock("plan", "sig"), TextBlock("Reading."),
                                     ToolUseBlock("tb1", "read", {"big": 2**70, "x": 1.5})))
    session.record_tool_result("tb1", (TextBlock("part one"), TextBlock("part two")), tool_name="read")
    session.note("between turns", "tag")
    session.record(Message.assistant(ToolUseBlock("td1", "run", {})))
    session.record_tool_result("td1", "timed output", tool_name="run", duration_s=1.25, is_error=True)
    session.record_compaction(CompactionEvent("masking", 100, 50, (1, 2), "summary", "test"))
    session.record_many(msgs[9:])

    def both(s: Session, tokenizer: str = "o200k_base") -> tuple[History, History]:
        fast = History.from_session(s, tokenizer)
        slow = History.from_chain(s.chain(tokenizers=[tokenizer]), tokenizer)
        assert fast.messages == slow.messages and fast.counts == slow.counts and fast.event_ids == slow.event_ids
        return fast, slow

    got = store.chain_messages(session.id, "o200k_base")
    assert got is not None and got[3] == session.info.head_event_id and got[4] == len(store.chain(session.id).events)
    fast, _ = both(session)
    assert fast.messages == session.messages() and fast.total == session.totals("o200k_base").total
    both(session, "cl100k_base")  # a tokenizer the session did not count on append: backfilled, then read
    fork = session.fork(fast.event_ids[5][-1])
    assert store.chain_messages(fork.id, "o200k_base") is None
    both(fork)
    session.rewind(fast.event_ids[7][-1])
    assert store.chain_messages(session.id, "o200k_base") is None
    both(session)


def _their_database(path: Path, table: str) -> bytes:
    """A SQLite file of another program (one table of its own, a row in it): its bytes."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute(f"INSERT INTO {table} VALUES (1, 'theirs')")
    conn.commit()
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("table", ["customers", "sessions"])
def test_another_programs_database_is_refused_and_left_untouched(tmp_path: Path, table: str) -> None:
    from ctxmem.evals.store import ResultStore

    path = tmp_path / "theirs.db"
    before = _their_database(path, table)
    for opener, what in [(SQLiteStore, "ctxmem session store"), (ResultStore, "ctxmem results store")]:
        with pytest.raises(StoreError) as exc:
            opener(path)
        msg = str(exc.value)
        assert "\n" not in msg and str(path) in msg and f"({table})" in msg, msg
        assert f"not a {what}" in msg and "left untouched" in msg and "name a new file" in msg, msg
        assert path.read_bytes() == before  # not a table, not even the journal mode
        assert [p.name for p in tmp_path.iterdir()] == ["theirs.db"]


def test_an_empty_file_becomes_a_session_store_and_the_other_ctxmem_store_is_refused(tmp_path: Path) -> None:
    from ctxmem.evals.store import ResultStore

    empty = tmp_path / "empty.db"
    empty.touch()
    with SQLiteStore(empty) as s:
        Session.create(s, session_id="k").record(Message.user("kept"))
    with SQLiteStore(empty) as s:
        assert Session.open(s, "k").messages() == [Message.user("kept")]
    # a results database is not a session store (nor the reverse): refused, nothing written
    results = tmp_path / "results.db"
    ResultStore(results).close()
    sessions = tmp_path / "sessions.db"
    SQLiteStore(sessions).close()
    for path, opener, other, what in [(results, SQLiteStore, "ctxmem results store", "ctxmem session store"),
                                      (sessions, ResultStore, "ctxmem session store", "ctxmem results store")]:
        before = path.read_bytes()
        with pytest.raises(StoreError) as exc:
            opener(path)
        msg = str(exc.value)
        assert "\n" not in msg and f"is a {other}" in msg and f"not a {what}" in msg and "left untouched" in msg
        assert path.read_bytes() == before
    # a file that already holds both (written by an earlier ctxmem) stays usable by both
    both = tmp_path / "both.db"
    ResultStore(both).close()
    conn = sqlite3.connect(both)
    conn.execute("CREATE TABLE _ctxmem_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    conn.commit()
    conn.close()
    with SQLiteStore(both) as s:
        Session.create(s, session_id="k").record(Message.user("kept"))
    with ResultStore(both) as r:
        assert r.statuses() == {}
