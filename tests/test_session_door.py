"""Session writes are validated at the door: a refused write raises a ctxmem error that
names the field, and writes nothing. Run on every backend (the ``store`` fixture).

Two families: content that could not be stored or exported (lone surrogates, NaN and
infinities, 10,000-deep nesting, values that are not JSON), through every recording
method; and tool ids that would make the conversation invalid (a result for an unknown
id, a second result, a reused tool_use id), including writes made by another handle and
branches made by fork and rewind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ctxmem.errors import CtxmemError, InputError, InvalidConversationError
from ctxmem.events import (
    MAX_DEPTH,
    CompactionEvent,
    MessageEvent,
    ModelCallEvent,
    NoteEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.session import Session


def _deep(levels: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    cur = top
    for _ in range(levels - 1):
        nxt: dict[str, Any] = {}
        cur["x"] = nxt
        cur = nxt
    return top


# (bad tool input, the path inside it that must be named, a word of the reason)
_BAD_INPUTS = [
    pytest.param({"a": "ok", "b": ["fine", "x\ud800y"]}, "b[1]", "lone surrogate", id="lone-surrogate"),
    pytest.param({"\udfffkey": 1}, '["\\udfffkey"]', "in the key", id="surrogate-in-key"),
    pytest.param({"v": float("nan")}, "v", "NaN", id="nan"),
    pytest.param({"v": [1.0, float("-inf")]}, "v[1]", "-Infinity", id="infinity"),
    pytest.param(_deep(10_000), "x.x.x…(×256)", f"deeper than {MAX_DEPTH}", id="10000-deep"),
    pytest.param(_deep(MAX_DEPTH + 1), "x.x.x…(×256)", f"deeper than {MAX_DEPTH}", id="one-level-too-deep"),
    pytest.param({"t": (1, 2)}, "t", "tuple", id="tuple"),
    pytest.param({"k": {3: "x"}}, "k", "not a string", id="int-key"),
    pytest.param({"b": b"bytes"}, "b", "bytes", id="bytes"),
]


def _events(s: Session) -> list[Any]:
    return [(e.id, e.event) for e in s.events()]


def _started(store: Any) -> Session:
    s = Session.create(store, tokenizers=["heuristic"])
    s.record(Message.user("go"))
    s.record(Message.assistant("calling", ToolUseBlock("t1", "run", {"n": 1})))
    return s


@pytest.mark.parametrize(("bad", "path", "needle"), _BAD_INPUTS)
def test_unstorable_tool_input_is_refused_with_its_path_and_nothing_is_written(
    store: Any, bad: dict[str, Any], path: str, needle: str
) -> None:
    s = _started(store)
    before = _events(s)
    writes: list[tuple[str, Callable[[], object]]] = [
        ("content[1].input.", lambda: s.record(Message.assistant("x", ToolUseBlock("t2", "run", bad)))),
        ("[1].content[0].input.", lambda: s.record_many([Message.user(ToolResultBlock("t1", "ok")),
                                                       Message.assistant(ToolUseBlock("t2", "run", bad))])),
        ("[0].tool_use.input.", lambda: s.record_events([ToolCallEvent(ToolUseBlock("t2", "run", bad))])),
    ]
    for prefix, write in writes:
        with pytest.raises(InputError) as exc:
            write()
        expected = prefix + path if not path.startswith("[") else prefix.rstrip(".") + path
        assert exc.value.field == expected, (exc.value.field, expected)
        assert needle in str(exc.value) and "fix" in str(exc.value)
        assert _events(s) == before
    assert [u.id for u in s.pending_tool_uses()] == ["t1"]
    s.record_tool_result("t1", "the session still works")


@pytest.mark.parametrize(
    ("write", "field", "needle"),
    [
        pytest.param(lambda s: s.record(Message.user("a\ud800b")), "content[0].text", "lone surrogate", id="text"),
        pytest.param(lambda s: s.record(Message.user(TextBlock(42))), "content[0].text", "string", id="text-not-str"),  # type: ignore[arg-type]
        pytest.param(lambda s: s.record_tool_result("t1", "out\udc80put"), "content", "lone surrogate",
                     id="tool-output"),
        pytest.param(lambda s: s.record_tool_result("t1", (TextBlock("ok"), TextBlock("\ud800"))), "content[1].text",
                     "lone surrogate", id="tool-output-parts"),
        pytest.param(lambda s: s.record_tool_result("t1", "ok", duration_s=float("nan")), "duration_s", "NaN",
                     id="duration-nan"),
        pytest.param(lambda s: s.record_tool_result("t1", "ok", tool_name="r\ud800"), "tool_name", "lone surrogate",
                     id="tool-name"),
        pytest.param(lambda s: s.record_model_call("m", latency_s=float("inf")), "latency_s", "Infinity",
                     id="latency-inf"),
        pytest.param(lambda s: s.record_model_call("m", input_tokens=1.5), "input_tokens", "integer",
                     id="tokens-not-int"),
        pytest.param(lambda s: s.note("n\ud800"), "text", "lone surrogate", id="note"),
        pytest.param(lambda s: s.note("ok", "t\udfff"), "tags[0]", "lone surrogate", id="note-tag"),
        pytest.param(lambda s: s.record_compaction(CompactionEvent("mask", 10, 5, summary="\ud800")), "summary",
                     "lone surrogate", id="compaction-summary"),
        pytest.param(lambda s: s.record_events([NoteEvent("ok"), ModelCallEvent("m\ud800")]), "[1].model",
                     "lone surrogate", id="events-batch"),
    ],
)
def test_every_recording_method_refuses_unstorable_values(
    store: Any, write: Callable[[Session], object], field: str, needle: str
) -> None:
    s = _started(store)
    before = _events(s)
    with pytest.raises(InputError) as exc:
        write(s)
    assert exc.value.field == field
    assert needle in str(exc.value)
    assert _events(s) == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": "t\ud800"}, "title"),
        ({"metadata": {"k": float("nan")}}, "metadata.k"),
        ({"metadata": {"deep": _deep(10_000)}}, "metadata.deep.x.x.x…(×255)"),
        ({"session_id": "s\udfff"}, "session_id"),
    ],
    ids=["title", "metadata-nan", "metadata-deep", "session-id"],
)
def test_create_refuses_unstorable_session_fields(store: Any, kwargs: dict[str, Any], field: str) -> None:
    before = store.list_sessions()
    with pytest.raises(InputError) as exc:
        Session.create(store, **kwargs)
    assert exc.value.field == field
    assert store.list_sessions() == before


def test_no_bare_python_error_escapes_the_live_api(store: Any) -> None:
    """What the issue measured: a bare UnicodeEncodeError and a RecursionError."""
    s = _started(store)
    for bad in (Message.assistant(ToolUseBlock("t9", "x", {"s": "\ud800"})),
                Message.assistant(ToolUseBlock("t9", "x", _deep(10_000)))):
        with pytest.raises(CtxmemError) as exc:
            s.record(bad)
        assert not isinstance(exc.value, UnicodeError | RecursionError)
        assert exc.value.field  # type: ignore[attr-defined]


def test_create_with_messages_is_all_or_nothing(store: Any) -> None:
    msgs = [Message.user("go"), Message.assistant(ToolUseBlock("a", "run", {})), Message.user(ToolResultBlock("a", "x"))]
    s = Session.create(store, messages=msgs, tokenizers=["heuristic"])
    assert s.messages() == msgs and s.pending_tool_uses() == []
    before = store.list_sessions()
    for bad in ([*msgs, Message.user(ToolResultBlock("a", "again"))],
                [*msgs, Message.assistant(ToolUseBlock("b", "run", {"x": float("nan")}))]):
        with pytest.raises(InputError):
            Session.create(store, messages=bad)
    assert store.list_sessions() == before


# --------------------------------------------------------------------------- tool ids


def test_a_result_for_an_unknown_id_is_refused_and_nothing_is_written(store: Any) -> None:
    s = _started(store)
    before = _events(s)
    with pytest.raises(InvalidConversationError) as exc:
        s.record_tool_result("nope", "x")
    assert exc.value.field == "tool_use_id"
    assert "'nope'" in str(exc.value) and "'t1'" in str(exc.value)  # names what is waiting
    with pytest.raises(InvalidConversationError) as exc:
        s.record(Message.user(ToolResultBlock("t1", "fine"), ToolResultBlock("nope", "x")))
    assert exc.value.field == "content[1].tool_use_id"
    assert _events(s) == before  # not even the valid first block
    s.record_tool_result("t1", "ok")
    assert s.messages()[-1] == Message.user(ToolResultBlock("t1", "ok"))  # messages() stays provider-valid


def test_a_second_result_for_the_same_id_is_refused(store: Any) -> None:
    s = _started(store)
    s.record_tool_result("t1", "first", tool_name="run")
    before = _events(s)
    for write in (lambda: s.record_tool_result("t1", "second"),
                  lambda: s.record(Message.user(ToolResultBlock("t1", "second"))),
                  lambda: s.record_events([ToolResultEvent(ToolResultBlock("t1", "second"))])):
        with pytest.raises(InvalidConversationError) as exc:
            write()
        assert "already has a result" in str(exc.value)
    s.record(Message.assistant(ToolUseBlock("t2", "run", {})))
    with pytest.raises(InvalidConversationError):  # twice in one batch
        s.record(Message.user(ToolResultBlock("t2", "a"), ToolResultBlock("t2", "b")))
    assert [u.id for u in s.pending_tool_uses()] == ["t2"]
    assert len(_events(s)) == len(before) + 1


def test_a_reused_tool_use_id_is_refused(store: Any) -> None:
    s = _started(store)
    s.record_tool_result("t1", "done")
    with pytest.raises(InvalidConversationError, match="already used") as exc:
        s.record(Message.assistant("again", ToolUseBlock("t1", "run", {})))
    assert exc.value.field == "content[1].id"
    with pytest.raises(InvalidConversationError, match="already used"):
        s.record(Message.assistant(ToolUseBlock("t5", "a", {}), ToolUseBlock("t5", "b", {})))
    assert s.pending_tool_uses() == []


def test_the_check_sees_what_other_handles_wrote(store: Any) -> None:
    a = _started(store)
    b = Session.open(store, a.id)
    b.record_tool_result("t1", "from b")  # b learns t1 from the chain; the result gets its name
    assert [e.event.tool_name for e in b.events() if isinstance(e.event, ToolResultEvent)] == ["run"]
    with pytest.raises(InvalidConversationError):
        a.record_tool_result("t1", "from a")  # a's view catches up with b's write
    b.record(Message.assistant(ToolUseBlock("t2", "check", {})))
    a.record_tool_result("t2", "a answers b's call")  # and with b's call
    with pytest.raises(InvalidConversationError):
        b.record_tool_result("t2", "twice")
    assert a.pending_tool_uses() == [] and len(a.events()) == len(b.events())


def test_rewind_and_fork_change_what_a_result_may_answer(store: Any) -> None:
    s = _started(store)
    mark = s.events()[-1].id  # the assistant message with t1
    s.record_tool_result("t1", "done")
    s.record(Message.assistant(ToolUseBlock("t2", "run", {})))
    other = Session.open(store, s.id)
    other.record_tool_result("t2", "done")
    fork = s.fork(mark)  # t1 is pending again on the fork, t2 never happened there
    with pytest.raises(InvalidConversationError):
        fork.record_tool_result("t2", "x")
    fork.record_tool_result("t1", "the fork's own answer")
    other.rewind(mark)  # another handle rewinds: s must notice
    with pytest.raises(InvalidConversationError):
        s.record_tool_result("t2", "rewound away")
    s.record_tool_result("t1", "answered again after the rewind")
    assert s.pending_tool_uses() == [] and fork.pending_tool_uses() == []
    assert s.messages()[-1] == Message.user(ToolResultBlock("t1", "answered again after the rewind"))


def test_nothing_but_their_results_may_follow_tool_calls_still_waiting(store: Any) -> None:
    """A message recorded between a tool call and its result made every build invalid (a
    provider wants the results to open the next message), with no error anywhere: now the
    door refuses it, names the waiting calls, and writes nothing."""
    s = _started(store)  # t1 waits
    n = len(s.events())
    with pytest.raises(InvalidConversationError, match=r"tool call 't1' \(run\) still waits for a result, so user text") as exc:
        s.record(Message.user("never mind, do something else"))
    assert exc.value.field == "content"
    with pytest.raises(InvalidConversationError, match="so an assistant message cannot come next") as exc:
        s.record(Message.assistant("more thoughts"))
    assert exc.value.field == "role"
    with pytest.raises(InvalidConversationError, match="user text"):  # text typed while the tool ran, before its result
        s.record(Message.user(TextBlock("also check the logs"), ToolResultBlock("t1", "out")))
    with pytest.raises(InvalidConversationError):  # a batch is refused whole
        s.record_many([Message.user(ToolResultBlock("t1", "out")), Message.assistant(ToolUseBlock("t2", "run", {})),
                       Message.user("hm")])
    assert len(s.events()) == n and [u.id for u in s.pending_tool_uses()] == ["t1"]
    # the results first, then anything: in the same message or the next one
    s.record(Message.user(ToolResultBlock("t1", "out"), TextBlock("also check the logs")))
    # text between tool calls of one assistant message is that message's own
    s.record(Message.assistant("two calls", ToolUseBlock("t2", "run", {}), TextBlock("and"), ToolUseBlock("t3", "run", {})))
    s.record_tool_result("t3", "three")  # results may come one at a time, in any order
    with pytest.raises(InvalidConversationError, match=r"'t2' \(run\) still waits"):  # t3 is answered, t2 is not
        s.record(Message.user("and now?"))
    s.record_tool_result("t2", "two")
    s.record(Message.user("and now?"))
    from ctxmem.messages import validate_conversation

    validate_conversation(s.messages())
    # another handle sees the waiting call too
    s.record(Message.assistant(ToolUseBlock("t4", "run", {})))
    with pytest.raises(InvalidConversationError, match="'t4'"):
        Session.open(store, s.id).record(Message.user("from elsewhere"))


# --------------------------------------------------------------------------- check, then write: one step

class _RacingStore:
    """The real store, except that its first append of a tool result first lets ``rival``
    run: another writer's result lands between this handle's check and its write."""

    def __init__(self, inner: Any, rival: Callable[[], object]):
        self.inner, self.rival, self.raced = inner, rival, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, session_id: str, events: Any, **kw: Any) -> list[int]:
        if not self.raced and any(isinstance(e, ToolResultEvent) for e in events):
            self.raced = True
            self.rival()
        return list(self.inner.append(session_id, events, **kw))


def test_two_writers_answering_one_call_store_one_result(store: Any) -> None:
    s = _started(store)
    s.record_tool_result("t1", "done")
    s.record(Message.assistant(ToolUseBlock("race1", "run", {})))
    other = Session.open(store, s.id)
    mine = Session(_RacingStore(store, lambda: other.record_tool_result("race1", "theirs")), s.id)
    with pytest.raises(InvalidConversationError, match="already has a result") as exc:
        mine.record_tool_result("race1", "mine")
    assert exc.value.field == "tool_use_id"
    results = [b for m in Session.open(store, s.id).messages() for b in m.content if isinstance(b, ToolResultBlock)]
    assert [r.tool_use_id for r in results] == ["t1", "race1"]
    assert results[1].content in ("theirs", (TextBlock("theirs"),))


def test_an_append_check_fails_only_on_what_touches_its_ids(store: Any) -> None:
    from ctxmem.errors import HeadMovedError
    from ctxmem.store.base import AppendCheck

    def call(i: str) -> ToolCallEvent:
        return ToolCallEvent(ToolUseBlock(i, "run", {}))

    def res(i: str) -> ToolResultEvent:
        return ToolResultEvent(ToolResultBlock(i, "out"), "run")

    def state(sid: str) -> tuple[Any, ...]:
        return store.get_session(sid).head_event_id, store.event_count(sid), store.totals(sid, "heuristic")

    sid = Session.create(store, tokenizers=["heuristic"]).id
    assert store.append(sid, [call("k1"), call("k2")], check=AppendCheck(None, frozenset({"k1", "k2"})))
    h0 = store.get_session(sid).head_event_id
    store.append(sid, [res("k2")])  # another writer answers k2
    # k1's answer, checked at h0, lands: nothing appended since touches k1
    assert store.append(sid, [res("k1")], check=AppendCheck(h0, frozenset({"k1"})))
    h1 = store.get_session(sid).head_event_id
    # a second answer to k2 checked at h0 is refused (k2 was answered since); nothing is written
    before = state(sid)
    with pytest.raises(HeadMovedError) as exc:
        store.append(sid, [res("k2")], check=AppendCheck(h0, frozenset({"k2"})))
    assert (exc.value.expected, exc.value.actual) == (h0, h1)
    assert state(sid) == before
    # a chain rewound past the checked head refuses it too
    store.rewind(sid, h0)
    with pytest.raises(HeadMovedError):
        store.append(sid, [call("k3")], check=AppendCheck(h1, frozenset({"k3"})))
    assert store.get_session(sid).head_event_id == h0


def test_a_message_checked_before_another_writer_made_a_call_is_checked_again(store: Any) -> None:
    """Writer B checks its user text at a head with nothing waiting; before it writes,
    writer A records an assistant tool call. Landing B's text then would put it between A's
    call and its result: the write is refused by the conditional append, B catches up and
    refuses with the waiting call named."""
    s = Session.create(store, tokenizers=["heuristic"])
    s.record(Message.user("go"))
    rival = Session.open(store, s.id)

    class _Racing(_RacingStore):
        def append(self, session_id: str, events: Any, **kw: Any) -> list[int]:
            if not self.raced:
                self.raced = True
                self.rival()
            return list(self.inner.append(session_id, events, **kw))

    mine = Session(_Racing(store, lambda: rival.record(Message.assistant(ToolUseBlock("r1", "run", {})))), s.id)
    mine._ledger.sync(store, s.id)  # mine has read the chain: nothing waits
    with pytest.raises(InvalidConversationError, match="'r1'"):
        mine.record(Message.user("late text"))
    assert [m.role for m in Session.open(store, s.id).messages()] == ["user", "assistant"]


def test_an_ordered_append_check_fails_on_any_tool_event_since(store: Any) -> None:
    from ctxmem.errors import HeadMovedError
    from ctxmem.store.base import AppendCheck

    sid = Session.create(store, tokenizers=["heuristic"]).id
    store.append(sid, [ToolCallEvent(ToolUseBlock("k1", "run", {}))])
    h0 = store.get_session(sid).head_event_id
    store.append(sid, [NoteEvent("a note", ())])  # not a tool event: an ordered check still holds
    store.append(sid, [ToolResultEvent(ToolResultBlock("k1", "out"), "run")], check=AppendCheck(h0, frozenset(), ordered=True))
    h1 = store.get_session(sid).head_event_id
    store.append(sid, [ToolCallEvent(ToolUseBlock("k2", "run", {}))])  # another writer's call
    with pytest.raises(HeadMovedError):
        store.append(sid, [ToolResultEvent(ToolResultBlock("k1", "x"), "run")], check=AppendCheck(h1, frozenset(), ordered=True))
    # the same delta does not void an unordered check on other ids
    assert store.append(sid, [NoteEvent("b", ())], check=AppendCheck(h1, frozenset({"zz"})))


def test_a_session_stored_before_the_door_builds_with_its_results_first(tmp_path: Any) -> None:
    """ctxmem before the door recorded user text that arrived while a tool ran ahead of the
    tool's result, in one message: every provider refuses that. Such a session, read back,
    has the results first and the text after them (the same blocks, count and event ids, in
    that order), so it builds a context a provider accepts instead of being stuck."""
    from ctxmem.config import load_preset
    from ctxmem.context import History
    from ctxmem.messages import validate_conversation
    from ctxmem.store import SQLiteStore

    store = SQLiteStore(str(tmp_path / "legacy.db"))
    s = Session.create(store, session_id="legacy", tokenizers=["o200k_base"])
    s.record(Message.user("task"))
    # written past the door, as the older ctxmem wrote them
    (call,) = store.append("legacy", [ToolCallEvent(ToolUseBlock("t1", "run", {}), new_message=True)])
    (text,) = store.append("legacy", [MessageEvent("user", (TextBlock("are you there?"),), True)])
    (result,) = store.append("legacy", [ToolResultEvent(ToolResultBlock("t1", "output"), "run")])
    stored = s.messages()[-1]
    assert [b.type for b in stored.content] == ["text", "tool_result"]  # the log keeps what happened
    h = History.from_session(s, "o200k_base")
    assert [b.type for b in h.messages[-1].content] == ["tool_result", "text"]
    assert h.event_ids[-1] == (result, text) and h.flags[-1].tool_results == ("t1",)
    assert h.counts == History.from_messages([*s.messages()[:-1], stored], "o200k_base").counts  # same count
    validate_conversation(h.messages)
    built = load_preset("window-32k").builder().build(s, record=False)
    validate_conversation(built.messages)
    assert built.messages[-1].content[0] == ToolResultBlock("t1", "output") and call > 0
    # text on both sides of a result would no longer group into its events: left as stored
    odd = Message("user", (TextBlock("a"), ToolResultBlock("t2", "x"), TextBlock("b")))
    h2 = History.from_messages([Message.user("q"), Message.assistant(ToolUseBlock("t2", "run", {})), odd],
                               "o200k_base")
    assert h2.messages[-1] is odd


def test_a_session_stored_before_the_door_exports_a_transcript_ctxmem_imports_again(tmp_path: Any) -> None:
    """Its export wrote the user message as stored, text ahead of the tool result, which
    ctxmem's own import (and every provider) refuses: the results are written first, in both
    formats, and the transcript imports back with the same messages a build reads."""
    from ctxmem.context import History
    from ctxmem.jsonl import export_lines, import_jsonl
    from ctxmem.store import SQLiteStore

    store = SQLiteStore(str(tmp_path / "legacy.db"))
    s = Session.create(store, session_id="legacy", tokenizers=["o200k_base"])
    s.record(Message.user("task"))
    store.append("legacy", [ToolCallEvent(ToolUseBlock("t1", "run", {}), new_message=True),
                            ToolCallEvent(ToolUseBlock("t2", "run", {}), new_message=False)])
    store.append("legacy", [MessageEvent("user", (TextBlock("are you there?"),), True)])
    store.append("legacy", [ToolResultEvent(ToolResultBlock("t1", "one"), "run"),
                            ToolResultEvent(ToolResultBlock("t2", "two", is_error=True), "run")])
    read = History.from_session(s, "o200k_base").messages
    for fmt in ("anthropic", "openai"):
        data = "\n".join(export_lines(s, fmt=fmt)).encode()  # type: ignore[arg-type]
        back = import_jsonl(SQLiteStore(str(tmp_path / f"{fmt}.db")), data, fmt=fmt)  # type: ignore[arg-type]
        assert back.messages() == read, fmt
    assert [b.type for b in s.messages()[-1].content] == ["text", "tool_result", "tool_result"]  # the log as it was
