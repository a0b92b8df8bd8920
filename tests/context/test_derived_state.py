"""What strategies derive from a session, saved in its store and reused by a later process.

A cold read of a long session's tool outputs (the facts index) and the summaries of its
chunks are the bulk of a first build, so both are saved (``derived_state``, a cache) and a
builder that opens the session later restores them: it reads only the messages appended
since and summarizes only chunks it has no summary of. What it builds must be exactly what a
builder that computed everything itself builds, on the first turn and on every turn after;
a snapshot of another chain, of an older layout or a damaged row is ignored.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ctxmem.context.derived as derived
import ctxmem.context.summarization as summarization
from ctxmem.config import load_preset
from ctxmem.context import History
from ctxmem.context.ledger import LedgerBuilder
from ctxmem.context.salience import SalienceIndex
from ctxmem.messages import Message
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore

PRESET = "masking-200k"
WINDOW = 40_000  # a ~125K-token session must be compacted (and its facts carried)


@pytest.fixture(autouse=True)
def _small_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(derived, "SNAPSHOT_MIN", 40)  # save after 40 messages, not 1,000
    monkeypatch.setattr(summarization, "_SAVE_MIN_CHUNKS", 2)  # and after 2 chunk summaries, not 16


def _spy(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, pick: Any) -> list[Any]:
    """What ``pick(*args)`` gives for each call of ``cls.name`` from now on (in this process)."""
    seen: list[Any] = []
    original = getattr(cls, name)

    def spy(self: Any, *args: Any) -> Any:
        seen.append(pick(*args))
        return original(self, *args)

    monkeypatch.setattr(cls, name, spy)
    return seen


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Message indices the facts index reads from now on."""
    return _spy(monkeypatch, SalienceIndex, "_read", lambda msg, i, ids: i)


def _new_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Chunks summarized from their messages from now on."""
    return _spy(monkeypatch, summarization.Summarization, "_new_leaf", lambda key, h, a, b, *rest: (a, b))


def _open(db: Path, sid: str, preset: str = PRESET) -> tuple[Any, SQLiteStore, Session, History]:
    """A builder opening the session afresh, as a new process does."""
    builder = load_preset(preset).builder(context_window=WINDOW)
    store = SQLiteStore(db)
    session = Session.open(store, sid)
    return builder, store, session, builder.history(session)


def _digest(built: Any) -> tuple[Any, ...]:
    r = built.report
    return (tuple(built.messages), r.tokens_out, tuple(r.masked), tuple(sorted(r.sections.items())))


def _session(tmp_path: Path, rounds: int = 160) -> tuple[Path, str, list[Message]]:
    msgs = synthetic_session(rounds + 30, seed=3, output_scale=1.16)
    base, extra = msgs[: 2 * rounds + 1], msgs[2 * rounds + 1 :]
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        session = Session.create(store, tokenizers=["o200k_base"])
        session.record_many(base)
        sid = session.id
    return db, sid, extra


def _twin(db: Path) -> Path:
    """A copy of the file without its saved state: the full-computation reference."""
    twin = db.with_name("twin.db")
    twin.write_bytes(db.read_bytes())
    with SQLiteStore(twin) as store:
        store.conn.execute("DELETE FROM derived_state")
    return twin


@pytest.mark.parametrize("preset", ["masking-200k", "summarize-128k", "pipeline-200k"])
def test_a_restored_state_builds_what_a_full_computation_builds_now_and_every_turn_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str
) -> None:
    db, sid, extra = _session(tmp_path)
    builder, store, session, history = _open(db, sid, preset)
    first = builder.build(history, session=session)  # reads everything, saves the index
    store.close()
    twin = _twin(db)

    reads = _reads(monkeypatch)
    chunks = _new_chunks(monkeypatch)
    # levels of the summaries made from their inputs (0: a chunk, above: a merge)
    made = _spy(monkeypatch, summarization.Summarization, "_node", lambda key, h, a, b, level, *rest: level)
    ledger_reads = _spy(monkeypatch, LedgerBuilder, "_read", lambda i, m: i)  # the pipeline's task ledger
    looked_up = _spy(monkeypatch, SQLiteStore, "term_blob_ids", lambda term: term)  # retrieval postings built
    b1, s1, sess1, h1 = _open(db, sid, preset)
    restored = b1.build(h1, session=sess1)
    if preset == "summarize-128k":
        assert len(chunks) <= 1  # at most the last, partial chunk is summarized again
        assert all(i >= chunks[0][0] for i in reads) if chunks else reads == []
        assert [lv for lv in made if lv > 0] == []  # every merge of complete chunks was saved too
    else:
        assert reads == []  # nothing read: every message was in the snapshot
    if preset == "pipeline-200k":
        assert ledger_reads == []  # the ledger too: restored, not rebuilt from the first message
        assert looked_up == []  # and the postings of the last search's terms (the same query now)
    done, merged, led, terms = len(chunks), len(made), len(ledger_reads), len(looked_up)
    b2, s2, sess2, h2 = _open(twin, sid, preset)
    full = b2.build(h2, session=sess2)
    if preset == "summarize-128k":
        assert len(chunks) - done > 3  # the reference summarized every chunk itself
        assert [lv for lv in made[merged:] if lv > 0]  # and merged them
    if preset == "pipeline-200k":
        assert ledger_reads[led:][:1] == [0]  # the reference read its ledger from the start
        assert looked_up[terms:]  # and built its postings from the store's index
    assert _digest(restored) == _digest(full) == _digest(first)
    assert restored.report.sections.get("facts", 0) > 0  # the facts section is there, not skipped

    for k in range(0, len(extra) - 1, 2):
        pair = extra[k : k + 2]
        for sess, h in ((sess1, h1), (sess2, h2)):
            ids = [sess.record(m) for m in pair]
            h.extend(list(pair), event_ids=ids)
        assert _digest(b1.build(h1, session=sess1)) == _digest(b2.build(h2, session=sess2))
    s1.close()
    s2.close()


@pytest.mark.parametrize("preset", ["masking-200k", "summarize-128k"])
def test_a_snapshot_of_another_chain_or_a_damaged_one_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str
) -> None:
    db, sid, _ = _session(tmp_path)
    builder, store, session, history = _open(db, sid, preset)
    builder.build(history, session=session)
    # rewind the session behind the snapshot's last message: the snapshot no longer fits
    events = session.events()
    half = [e for e in events[: len(events) // 2] if e.event.kind == "tool_result"]
    session.rewind(half[-1].id)
    # ... and run on past the snapshot's length with other rounds: as long, another chain
    session.record_many(synthetic_session(120, seed=9, output_scale=1.16)[1:])
    assert len(builder.history(session)) > len(history)
    store.close()
    reads = _reads(monkeypatch)
    chunks = _new_chunks(monkeypatch)
    b, s, sess, h = _open(db, sid, preset)
    rewound = b.build(h, session=sess)
    if preset == "masking-200k":
        assert reads[:1] == [0] and len(reads) == len(h)  # the facts index: read from the start
    else:
        # the chunks before the rewind point are the same chain: their summaries are reused,
        # the ones after it are summarized again (and the new chain's)
        assert chunks and chunks[0][0] > 1
    s.close()
    b, s, sess, h = _open(_twin(db), sid, preset)
    assert _digest(rewound) == _digest(b.build(h, session=sess))
    s.close()

    # a damaged row (bad zlib, bad JSON, wrong layout): read from the start, no error
    for data in (b"not zlib", zlib.compress(b"{not json"), zlib.compress(json.dumps({"seen": 3}).encode())):
        with SQLiteStore(db) as st:
            st.conn.execute("UPDATE derived_state SET data = ?", (data,))
        reads.clear()
        chunks.clear()
        b, s, sess, h = _open(db, sid, preset)
        assert _digest(b.build(h, session=sess, record=False)) == _digest(rewound)
        if preset == "masking-200k":
            assert len(reads) == len(h)
        else:
            assert chunks[0][0] == 1  # every chunk summarized again, from the first
        s.close()


def test_the_snapshot_is_saved_once_per_quarter_of_growth_and_not_without_record(tmp_path: Path) -> None:
    db, sid, extra = _session(tmp_path)
    builder, store, session, history = _open(db, sid)
    builder.build(history, session=session, record=False)
    assert store.conn.execute("SELECT count(*) FROM derived_state").fetchone()[0] == 0  # record=False writes nothing
    builder = load_preset(PRESET).builder(context_window=WINDOW)
    builder.build(history, session=session)
    (key,) = store.conn.execute("SELECT key FROM derived_state").fetchone()
    assert key.startswith(f"{len(history)}:")  # it covers every message read
    for k in range(0, 20, 2):  # 10 more rounds: far below a quarter more, no new snapshot
        pair = extra[k : k + 2]
        history.extend(list(pair), event_ids=[session.record(m) for m in pair])
        builder.build(history, session=session)
    assert store.conn.execute("SELECT key FROM derived_state").fetchone()[0] == key
    store.close()


def test_a_label_lines_words_survive_the_snapshot(o200k: Any) -> None:
    # "Quirkfix:" is too short to be counted as a line of its own, but it labels the next line
    # and its words and cues join that line's body: words and cues no counter holds. The
    # snapshot must carry them, and the restored index must rank as the one that wrote it,
    # then go on reading exactly as a fresh index does.
    from ctxmem.context.derived import pack, unpack
    from ctxmem.messages import ToolResultBlock, ToolUseBlock

    def rnd(i: int, out: str) -> list[Message]:
        return [
            Message("assistant", (ToolUseBlock(f"c{i}", "run", {"cmd": f"step {i}"}),)),
            Message("user", (ToolResultBlock(f"c{i}", out),)),
        ]

    msgs = [Message.user("Find why the kernel hangs.")]
    msgs += rnd(0, "Quirkfix:\nthe allocator never frees pinned staging buffers after a failed launch on device 3")
    msgs += rnd(1, "Caveat zyx:\nworkspace must stay below 101376 bytes or the occupancy cliff returns at block 128")
    for i in range(2, 30):
        msgs += rnd(i, f"compiled kernel variant {i} in {i * 13} ms\nwarning: register pressure at line {i}")
    history = History.from_messages(msgs[:41], o200k)
    index = SalienceIndex()
    index.update(history)
    before = index.facts(1, len(history))
    assert any("allocator" in f.text for f in before)  # the labelled line is a fact
    state = index.to_state()
    assert state is not None
    restored = SalienceIndex.from_state(unpack(pack(state)), history)
    assert restored.facts(1, len(history)) == before
    assert [(c.cues, c.words) for c in restored._cands] == [(c.cues, c.words) for c in index._cands]
    history.extend(msgs[41:])
    fresh = SalienceIndex()
    fresh.update(history)
    restored.update(history)
    assert restored.facts(1, len(history)) == fresh.facts(1, len(history))


_ODD = "a \ud800\udfff\x00é😀\n\""  # lone surrogates (hypothesis's text() never draws them), NUL, non-ASCII


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.text() | st.text(_ODD) | st.integers() | st.floats(allow_nan=False) | st.none()).map(tuple)))
@example([("x", 2**64, float("inf"), None)])  # past orjson: a 65-bit int, an infinity (orjson writes null)
@example([(-(2**63), 1.0000000000000002, -0.0)])  # orjson's path, exact
def test_any_text_round_trips_through_the_stored_form(rows: list[Any]) -> None:
    # Tool outputs can hold any str (lone surrogates included, from a JSON "\ud800" escape):
    # packing must never fail on them, and unpacking gives the same values back (whichever
    # encoder wrote them).
    from ctxmem.context.derived import pack, unpack

    assert unpack(pack({"rows": rows})) == {"rows": [list(r) for r in rows]}
    listed = {"rows": [list(r) for r in rows]}
    assert unpack(pack(listed)) == listed
