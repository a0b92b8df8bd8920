"""The SessionStore contract, run on every backend.

Parametrized (``store`` fixture in conftest) over SQLiteStore on a real file,
SQLiteStore(":memory:") and MemoryStore: they must behave identically.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

import tokenizer_doubles
from ctxmem.errors import (
    EventNotFoundError,
    InputError,
    InvalidConversationError,
    SessionNotFoundError,
)
from ctxmem.events import (
    CompactionEvent,
    ModelCallEvent,
    NoteEvent,
    ToolCallEvent,
    events_from_message,
)
from ctxmem.messages import Message, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SessionStore
from ctxmem.tokens import count_messages, get_tokenizer
from generators import conversations, log_text, message_lists


def _expected_totals(messages: list[Message], tokenizer: Any) -> tuple[int, int]:
    counts = count_messages(messages, tokenizer)
    return sum(c.content for c in counts), sum(c.overhead for c in counts)


def test_backends_implement_the_protocol(store: Any) -> None:
    assert isinstance(store, SessionStore)


# --------------------------------------------------------------------------- record → view


@settings(max_examples=25)
@given(conv=conversations(max_turns=5, allow_pending=True))
def test_record_then_view_gives_back_the_conversation(store: Any, conv: list[Message]) -> None:
    s = Session.create(store)
    for m in conv:
        s.record(m)
    assert s.messages() == conv
    batch = Session.create(store)
    batch.record_many(conv)
    assert batch.messages() == conv
    expected_pending = list(conv[-1].tool_uses) if conv[-1].role == "assistant" else []
    assert s.pending_tool_uses() == expected_pending


def _door_refuses(msgs: list[Message]) -> bool:
    """Independently of ctxmem.session: does this list reuse a tool_use id, answer an id no
    earlier tool_use carries, answer one id twice, or put anything but results after tool
    calls that still wait for theirs? (What the door refuses.)"""
    calls: set[str] = set()
    answered: set[str] = set()
    for m in msgs:
        if calls - answered and (m.role == "assistant" or not m.content):
            return True  # a new message while calls wait
        for b in m.content:
            if m.role == "user" and calls - answered and not isinstance(b, ToolResultBlock):
                return True  # user content before the last waiting result
            if isinstance(b, ToolUseBlock):
                if b.id in calls:
                    return True
                calls.add(b.id)
            elif isinstance(b, ToolResultBlock):
                if b.tool_use_id not in calls or b.tool_use_id in answered:
                    return True
                answered.add(b.tool_use_id)
    return False


@settings(max_examples=25)
@given(msgs=message_lists(max_size=6))
def test_record_then_view_any_messages(store: Any, msgs: list[Message]) -> None:
    """Any block layout round-trips through the store (the store itself trusts its input);
    through the Session door, exactly the lists with bad tool ids are refused, whole."""
    door = Session.create(store)
    if _door_refuses(msgs):
        with pytest.raises(InvalidConversationError):
            door.record_many(msgs)
        assert door.events() == []
    else:
        door.record_many(msgs)
        assert door.messages() == msgs
    s = Session.create(store, tokenizers=["heuristic"])
    store.append(s.id, [ev for m in msgs for ev in events_from_message(m)])
    assert s.messages() == msgs
    # provenance: each message's events, in order, and nothing else
    spans = s.messages_with_ids()
    assert [m for m, _ in spans] == msgs
    assert [i for _, ids in spans for i in ids] == [e.id for e in s.events()]
    # content exactly and overhead consistently equal count_messages over the view
    t = s.totals("heuristic")
    assert (t.content, t.overhead) == _expected_totals(msgs, get_tokenizer("heuristic"))
    assert t.events == len(s.events())


def test_tool_results_recorded_one_at_a_time_join_one_user_message(store: Any) -> None:
    s = Session.create(store)
    calls = Message.assistant(ThinkingBlock("plan", "sig"), "running", ToolUseBlock("a", "compile", {"p": 1}),
                              ToolUseBlock("b", "check", {}))
    s.record(Message.user("optimize"))
    s.record(calls)
    assert [u.id for u in s.pending_tool_uses()] == ["a", "b"]
    s.record_tool_result("b", "all PASS", tool_name="check", duration_s=0.5)
    assert [u.id for u in s.pending_tool_uses()] == ["a"]
    s.record_model_call("claude", input_tokens=10)
    s.record_tool_result("a", (TextBlock("error: x"), TextBlock("line 2")), is_error=True, tool_name="compile")
    assert s.pending_tool_uses() == []
    assert s.messages() == [
        Message.user("optimize"),
        calls,
        Message.user(ToolResultBlock("b", "all PASS"),
                     ToolResultBlock("a", (TextBlock("error: x"), TextBlock("line 2")), is_error=True)),
    ]
    s.record(Message.assistant("done"))
    assert [m.role for m in s.messages()] == ["user", "assistant", "user", "assistant"]
    results = [e for e in s.events() if e.kind == "tool_result"]
    assert [(e.event.tool_name, e.event.duration_s) for e in results] == [("check", 0.5), ("compile", None)]


def test_non_content_events_round_trip(store: Any) -> None:
    s = Session.create(store, title="t", metadata={"k": [1, "ü"]})
    s.record(Message.user("hi"))
    mc = ModelCallEvent("m", 100, 5, 80, 20, "end_turn", 0.25, 98, "req")
    comp = CompactionEvent("mask", 1000, 200, (1,), "sum", "budget")
    note = NoteEvent("remember", ("tag",))
    s.record_events([mc])
    s.record_compaction(comp)
    s.note("remember", "tag")
    assert [e.event for e in s.events()[1:]] == [mc, comp, note]
    assert s.messages() == [Message.user("hi")]  # non-content events are not messages
    assert s.info.title == "t"
    assert s.info.metadata == {"k": [1, "ü"]}
    ids = [e.id for e in s.events()]
    assert ids == sorted(ids)
    assert [e.parent_id for e in s.events()] == [None, *ids[:-1]]


def test_sessions_list_and_errors(store: Any) -> None:
    a = Session.create(store, session_id="alpha")
    Session.create(store, session_id="beta")
    assert {i.id for i in store.list_sessions()} >= {"alpha", "beta"}
    with pytest.raises(InputError) as exc:
        Session.create(store, session_id="alpha")
    assert exc.value.field == "session_id"
    with pytest.raises(SessionNotFoundError) as nf:
        Session.open(store, "gamma")
    assert "gamma" in str(nf.value) and "ctxmem sessions list" in str(nf.value)
    with pytest.raises(SessionNotFoundError):
        store.append("gamma", [NoteEvent("x")])
    assert a.messages() == [] and a.totals("heuristic").total == 0 and a.pending_tool_uses() == []
    assert store.append("alpha", []) == []


# --------------------------------------------------------------------------- branches


def test_fork_and_rewind_by_parent_pointer(store: Any) -> None:
    s = Session.create(store, tokenizers=["heuristic"])
    m1, m2 = Message.user("task"), Message.assistant("step", ToolUseBlock("t1", "read_file", {"path": "k.py"}))
    m3 = Message.user(ToolResultBlock("t1", "contents of k.py"))
    m4 = Message.assistant("second thought")
    ids = [*s.record(m1), *s.record(m2), *s.record(m3), *s.record(m4)]
    fork_at = ids[2]  # the tool_call event: the fork has a pending call
    f = s.fork(fork_at, title="alt")
    assert f.info.parent_session_id == s.id and f.info.fork_event_id == fork_at and f.info.title == "alt"
    assert f.messages() == [m1, m2]
    assert [u.id for u in f.pending_tool_uses()] == ["t1"]
    f.record_tool_result("t1", "different contents")
    f.record(Message.assistant("fork path"))
    assert f.messages() == [m1, m2, Message.user(ToolResultBlock("t1", "different contents")),
                            Message.assistant("fork path")]
    assert s.messages() == [m1, m2, m3, m4]  # the parent is untouched
    heur = get_tokenizer("heuristic")
    for sess in (s, f):
        assert (sess.totals("heuristic").content, sess.totals("heuristic").overhead) == _expected_totals(
            sess.messages(), heur)

    # rewind: the head moves back; later events stay stored and reachable by id
    s.rewind(ids[1])
    assert s.messages() == [m1, Message.assistant("step")]
    assert store.event(ids[-1]).event == s.store.event(ids[-1]).event
    assert store.event(ids[-1]).id == ids[-1]
    s.record(Message.user("new direction"))
    assert s.messages() == [m1, Message.assistant("step"), Message.user("new direction")]
    assert (s.totals("heuristic").content, s.totals("heuristic").overhead) == _expected_totals(s.messages(), heur)
    assert s.events()[-1].parent_id == ids[1]
    # the forked session still sees the shared prefix
    assert f.messages()[:2] == [m1, m2]
    s.rewind(None)
    assert s.messages() == [] and s.totals("heuristic").total == 0
    s.record(Message.user("fresh"))
    assert s.messages() == [Message.user("fresh")] and s.events()[0].parent_id is None


def test_fork_and_rewind_reject_events_outside_the_chain(store: Any) -> None:
    a, b = Session.create(store), Session.create(store)
    a_ids = a.record(Message.user("a"))
    b_ids = b.record(Message.user("b"))
    with pytest.raises(EventNotFoundError):
        a.fork(b_ids[0])
    with pytest.raises(EventNotFoundError):
        a.rewind(b_ids[0])
    with pytest.raises(EventNotFoundError):
        a.fork(10**9)
    a.rewind(None)
    with pytest.raises(EventNotFoundError):  # no longer in a's chain after the rewind
        a.rewind(a_ids[0])
    with pytest.raises(EventNotFoundError):
        store.event(10**9)


# --------------------------------------------------------------------------- tokens


def test_totals_equal_count_messages_on_a_synthetic_session(store: Any, o200k: Any) -> None:
    conv = synthetic_session(40, seed=3)
    s = Session.create(store, tokenizers=["o200k_base"])
    s.record_many(conv[:30])
    for m in conv[30:]:
        s.record(m)
    t = s.totals("o200k_base")
    assert (t.content, t.overhead) == _expected_totals(conv, o200k)
    assert t.total == sum(c.total for c in count_messages(conv, o200k))
    view = s.chain(tokenizers=["o200k_base"])
    counts = view.counts["o200k_base"]
    assert [c.event_id for c in counts] == [e.id for e in view.events]
    cum_c = cum_o = 0
    for c in counts:
        cum_c += c.content
        cum_o += c.overhead
        assert (c.cum_content, c.cum_overhead) == (cum_c, cum_o)
    assert (cum_c, cum_o) == (t.content, t.overhead)


def test_appends_encode_only_new_content_and_totals_encode_nothing(store: Any) -> None:
    spy = tokenizer_doubles.register()
    s = Session.create(store, tokenizers=["spy"])
    s.record(Message.user("the task is long"))
    for i in range(20):
        spy.seen.clear()
        s.record(Message.assistant(f"turn {i} text", ToolUseBlock(f"t{i}", "run", {"i": i})))
        # one encode of the new content: text, tool name, input JSON; never the history
        assert sorted(spy.seen) == sorted([f"turn {i} text", "run", f'{{"i":{i}}}'])
        spy.seen.clear()
        s.record_tool_result(f"t{i}", f"output number {i}")
        assert spy.seen == [f"output number {i}"]
        spy.seen.clear()
        t = s.totals("spy")
        assert spy.seen == []  # a budget check never tokenizes
    assert (t.content, t.overhead) == _expected_totals(s.messages(), spy)


def test_identical_outputs_are_stored_and_counted_once(store: Any) -> None:
    spy = tokenizer_doubles.register()
    output = log_text(7, 300)
    s = Session.create(store, tokenizers=["spy"])
    s.record(Message.user("go"))
    before = store.blob_count()
    for i in range(5):
        s.record(Message.assistant(ToolUseBlock(f"c{i}", "build", {})))
        s.record_tool_result(f"c{i}", output)
    # one blob for the output, one for the shared tool_call content, one per distinct message
    assert spy.seen.count(output) == 1
    assert store.blob_count() - before == 2
    other = Session.create(store, tokenizers=["spy"])
    other.record(Message.assistant(ToolUseBlock("z", "build", {})))
    other.record_tool_result("z", output)
    assert spy.seen.count(output) == 1  # memo shared across sessions
    assert store.blob_count() - before == 2
    assert all(store.tool_output(e.id) == output for e in s.events() if e.kind == "tool_result")


def test_untracked_tokenizer_is_backfilled_on_demand(store: Any) -> None:
    spy = tokenizer_doubles.register()
    conv = synthetic_session(6, seed=1)
    s = Session.create(store)  # tracks nothing
    s.record_many(conv[:7])
    assert spy.seen == []
    t = s.totals("spy")
    assert (t.content, t.overhead) == _expected_totals(conv[:7], spy)
    n_seen = len(spy.seen)
    assert s.totals("spy") == t and len(spy.seen) == n_seen  # cached after the backfill
    # more appends (still untracked), then a fork: both resume from the counted prefix
    s.record_many(conv[7:])
    f = s.fork(s.events()[3].id)
    t2 = s.totals("spy")
    assert (t2.content, t2.overhead) == _expected_totals(conv, spy)
    tf = f.totals("spy")
    assert (tf.content, tf.overhead) == _expected_totals(f.messages(), spy)
    view = s.chain(tokenizers=["spy"])
    assert view.counts["spy"][-1].cum_content == t2.content


@pytest.mark.parametrize("name", ["heuristic", "spy"])
def test_chain_counts_for_an_empty_session(store: Any, name: str) -> None:
    tokenizer_doubles.register()
    s = Session.create(store)
    view = s.chain(tokenizers=[name])
    assert view.events == [] and view.counts == {name: []}


# --------------------------------------------------------------------------- search


def test_search_finds_words_in_tool_outputs_within_the_session_chain(store: Any) -> None:
    a = Session.create(store)
    a.record(Message.user("go"))
    a.record(Message.assistant(ToolUseBlock("r1", "compile", {})))
    a.record_tool_result("r1", "OutOfResources: shared memory Required 196608 Hardware limit 101376", tool_name="compile")
    fork_point = a.events()[-1].id
    a.record(Message.assistant(ToolUseBlock("r2", "profile", {})))
    a.record_tool_result("r2", "prof#9 gather_stall_pct 41.0 quirk detected", tool_name="profile")
    b = Session.create(store)
    b.record(Message.assistant(ToolUseBlock("r3", "compile", {})))
    b.record_tool_result("r3", "another shared memory complaint", tool_name="compile")
    # the word appears only in a tool output, not in any message text
    hits = store.search("Hardware")
    assert [(h.session_id, h.tool_use_id, h.tool_name) for h in hits] == [(a.id, "r1", "compile")]
    assert "101376" in store.tool_output(hits[0].event_id)
    assert {h.session_id for h in store.search("shared memory")} == {a.id, b.id}
    assert [h.tool_use_id for h in store.search("shared memory", session_id=b.id)] == ["r3"]
    assert store.search("go") == []  # user message text is not a tool output
    f = a.fork(fork_point)
    assert [h.tool_use_id for h in store.search("shared", session_id=f.id)] == ["r1"]
    assert store.search("quirk", session_id=f.id) == []  # after the fork point
    assert [h.tool_use_id for h in store.search("quirk", session_id=a.id)] == ["r2"]
    a.rewind(fork_point)
    assert store.search("quirk", session_id=a.id) == []
    assert len(store.search("quirk")) == 1  # still stored, reachable store-wide


def test_search_in_a_session_is_not_crowded_out_by_other_sessions(store: Any) -> None:
    # Many sessions whose outputs match better must not hide the one match in ours.
    for i in range(30):
        o = Session.create(store)
        o.record(Message.assistant(ToolUseBlock(f"o{i}", "log", {})))
        o.record_tool_result(f"o{i}", f"spill spill spill spill register spill {i}")
    mine = Session.create(store)
    mine.record(Message.assistant(ToolUseBlock("m", "log", {})))
    mine.record_tool_result("m", "a long output that mentions a spill once among many other words " * 5)
    hits = store.search("spill", session_id=mine.id, limit=3)
    assert [h.tool_use_id for h in hits] == ["m"]


def test_search_rejects_an_empty_or_bad_query(store: Any) -> None:
    with pytest.raises(InputError):
        store.search("")


def test_search_in_an_unknown_session_blames_the_session_not_the_query(store: Any) -> None:
    """SQLite reported it as 'bad search query ...' with the FTS5 syntax hint."""
    s = Session.create(store)
    s.record(Message.user("go"))
    s.record(Message.assistant(ToolUseBlock("m", "read_log", {})))
    s.record_tool_result("m", "shared memory limit exceeded")
    with pytest.raises(SessionNotFoundError) as caught:
        store.search("shared", session_id="no-such-session")
    assert "no-such-session" in str(caught.value) and "FTS5" not in str(caught.value)


# --------------------------------------------------------------------------- calibration


def test_calibration_observations(store: Any) -> None:
    store.record_calibration("claude-x", "heuristic", 100, 110)
    store.record_calibration("claude-x", "heuristic", 200, 230)
    store.record_calibration("other", "heuristic", 1, 1)
    assert store.calibration_observations("claude-x", "heuristic") == [(100, 110), (200, 230)]
    assert store.calibration_observations("claude-x", "heuristic", limit=1) == [(200, 230)]
    assert store.calibration_observations("nobody", "heuristic") == []


def test_tool_call_events_keep_their_input(store: Any) -> None:
    s = Session.create(store)
    use = ToolUseBlock("x", "autotune", {"space": {"BLOCK_M": [32, 64]}, "budget": 1.5, "note": None})
    s.record(Message.assistant(use))
    ev = s.events()[0].event
    assert isinstance(ev, ToolCallEvent) and ev.tool_use == use


def test_contents_with_equal_blob_text_but_different_meaning_are_counted_apart(store: Any) -> None:
    # A string output that equals the stored form of other content (a list of text parts,
    # a message's blocks, a tool call) must not share that content's memoized count.
    msg = Message.user("alpha beta gamma delta")
    msg_blob = '[{"text":"alpha beta gamma delta","type":"text"}]'
    call = ToolUseBlock("c1", "grep", {"pattern": "x"})
    call_blob = '["grep",{"pattern":"x"}]'
    s = Session.create(store, tokenizers=["heuristic"])
    s.record(msg)
    s.record(Message.assistant(call))
    s.record(Message.user(ToolResultBlock("c1", (TextBlock("one two"), TextBlock("three")))))
    s.record(Message.assistant(ToolUseBlock("c2", "echo", {}), ToolUseBlock("c3", "echo", {}),
                               ToolUseBlock("c4", "echo", {})))
    s.record_tool_result("c2", '["one two","three"]')
    s.record_tool_result("c3", msg_blob)
    s.record_tool_result("c4", call_blob)
    t = s.totals("heuristic")
    assert (t.content, t.overhead) == _expected_totals(s.messages(), get_tokenizer("heuristic"))
    # every tool output is searchable, even one whose text equals a message's stored form
    assert [h.tool_use_id for h in store.search('"alpha beta"', session_id=s.id)] == ["c3"]
    assert [h.tool_use_id for h in store.search("pattern", session_id=s.id)] == ["c4"]


def test_tool_events_full_and_since_an_event(store: Any) -> None:
    from ctxmem.store.base import ToolEventRef

    s = Session.create(store)
    assert store.tool_events(s.id) == (None, [])
    s.record(Message.user("go"))
    ids = s.record(Message.assistant("x", ToolUseBlock("a", "run", {}), ToolUseBlock("b", "ls", {})))
    ra = s.record_tool_result("a", "out")
    head, refs = store.tool_events(s.id)
    assert head == ra
    assert refs == [ToolEventRef(ids[1], "tool_call", "a", "run"), ToolEventRef(ids[2], "tool_call", "b", "ls"),
                    ToolEventRef(ra, "tool_result", "a", "run")]
    assert store.tool_events(s.id, after_event_id=ids[1]) == (ra, refs[1:])
    assert store.tool_events(s.id, after_event_id=ra) == (ra, [])
    other = Session.create(store)
    other.record(Message.user("elsewhere"))
    with pytest.raises(EventNotFoundError):  # an event of another session is not in this chain
        store.tool_events(other.id, after_event_id=ids[0])
    fork = s.fork(ids[2])
    rb = fork.record_tool_result("b", "fork")
    assert store.tool_events(fork.id) == (rb, [*refs[:2], ToolEventRef(rb, "tool_result", "b", "ls")])
    assert store.tool_events(fork.id, after_event_id=ids[0]) == (rb, [*refs[:2], ToolEventRef(rb, "tool_result", "b", "ls")])
    with pytest.raises(EventNotFoundError):  # on the parent's branch, not the fork's
        store.tool_events(fork.id, after_event_id=ra)
    s.rewind(ids[1])
    with pytest.raises(EventNotFoundError):  # rewound away
        store.tool_events(s.id, after_event_id=ra)
    assert store.tool_events(s.id) == (ids[1], refs[:1])
    with pytest.raises(SessionNotFoundError):
        store.tool_events("nosuch")


def test_create_session_with_events_is_one_write(store: Any) -> None:
    evs = [ev for m in (Message.user("a"), Message.assistant(ToolUseBlock("t", "run", {}))) for ev in events_from_message(m)]
    info = store.create_session(session_id="one", tokenizers=["heuristic"], events=evs)
    assert info.head_event_id is not None
    assert [e.event for e in store.chain("one").events] == evs
    before = (store.list_sessions(), len(store.chain("one").events))
    with pytest.raises(InputError):  # the id is taken: neither the session nor its events
        store.create_session(session_id="one", events=evs)
    assert (store.list_sessions(), len(store.chain("one").events)) == before


def test_derived_state_is_kept_per_session_and_kind_and_replaced(store: Any) -> None:
    # The DerivedStateStore capability (the facts index and chunk summaries a later process
    # restores): SQLite and PostgreSQL have it, the in-process MemoryStore does not need it.
    from ctxmem.store.base import DerivedStateStore

    if not isinstance(store, DerivedStateStore):
        assert type(store).__name__ == "MemoryStore"  # process-local: nothing for a later process to restore
        return
    a = Session.create(store).id
    b = Session.create(store).id
    assert store.load_derived(a, "salience/v2/x") is None
    blob = bytes(range(256)) * 3  # any bytes, NULs included
    store.save_derived(a, "salience/v2/x", "12:3,4", blob)
    store.save_derived(a, "summary-chunks/v1/y", "chunks", b"other")
    assert store.load_derived(a, "salience/v2/x") == ("12:3,4", blob)
    assert store.load_derived(b, "salience/v2/x") is None  # per session
    store.save_derived(a, "salience/v2/x", "20:9", b"newer")  # replaced, not added
    assert store.load_derived(a, "salience/v2/x") == ("20:9", b"newer")
    assert store.load_derived(a, "summary-chunks/v1/y") == ("chunks", b"other")


def test_chain_since_reads_what_followed_an_event_with_its_stored_counts(store: Any) -> None:
    """What a follower of the session reads each turn: the chain's events after the one it
    saw last, each with the count a full load would read; None when the chain no longer
    passes through that event (a rewind) or too much came since."""
    from ctxmem.context import History

    session = Session.create(store, tokenizers=["o200k_base"])
    msgs = synthetic_session(6, seed=1)
    ids = [session.record(m) for m in msgs[:5]]
    seen = ids[-1][-1]
    assert store.chain_since(session.id, seen, "o200k_base") == (seen, [], [])
    more = [session.record(m) for m in msgs[5:9]]
    session.note("a note between turns")
    head, events, totals = store.chain_since(session.id, seen, "o200k_base")  # type: ignore[misc]
    recorded = [e for ids_ in more for e in ids_]
    assert head == session.info.head_event_id and [se.id for se in events][: len(recorded)] == recorded
    assert events == store.chain(session.id).events[-len(events):]
    full = {c.event_id: c.content + c.overhead for c in store.chain(session.id, tokenizers=["o200k_base"]).counts[
        "o200k_base"]}
    assert totals == [full.get(se.id) for se in events] and all(t is not None for t in totals[:-1])
    assert History.from_session(session, "o200k_base").counts[-4:] == [
        c.total for c in count_messages(msgs[5:9], get_tokenizer("o200k_base"))]
    assert store.chain_since(session.id, seen, "o200k_base", limit=3) is None  # more than 3 came since
    # a rewind to before the event seen, then another continuation: the chain left it
    session.rewind(ids[2][-1])
    session.record(Message.user("another way"))
    assert store.chain_since(session.id, seen, "o200k_base") is None
    assert store.chain_since(session.id, ids[2][-1], "o200k_base")[1][0].event.blocks[0].text == "another way"  # type: ignore[index,union-attr]
