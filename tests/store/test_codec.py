"""The store codec: blobs and counted texts are exactly the canonical forms the rest of ctxmem uses."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxmem.events import events_from_message
from ctxmem.messages import Message, ToolUseBlock, canonical_json
from ctxmem.store.base import content_hash
from ctxmem.store.codec import _canonical, encode_event, event_texts
from generators import json_values, messages


@given(json_values())
def test_the_shared_encoder_is_canonical_json(value: Any) -> None:
    assert _canonical(value) == canonical_json(value)


def test_canonical_json_corner_cases() -> None:
    for value in (1e-07, 1e16, float("nan"), float("inf"), 2**70, -0.0, "\ud800", "\u2028\x7f\x00", {"b": 1, "a": [1.5]}):
        assert _canonical(value) == canonical_json(value)


@given(messages())
def test_event_texts_and_reused_texts_give_the_same_encoding(message: Message) -> None:
    for ev in events_from_message(message):
        enc = encode_event(ev)
        assert event_texts(ev) == enc.texts
        assert encode_event(ev, event_texts(ev)) == enc


@given(st.text(), json_values())
def test_tool_call_blob_is_canonical_json_of_name_and_input(name: str, value: Any) -> None:
    ev = events_from_message(Message("assistant", (ToolUseBlock("toolu_1", name, {"x": value}),)))[0]
    enc = encode_event(ev)
    assert enc.blob == canonical_json([name, {"x": value}])
    assert enc.blob_hash == content_hash("tool_call\x00" + canonical_json([name, {"x": value}]))
    assert json.loads(enc.blob) == [name, {"x": value}]


def test_fast_reload_constructors_build_the_same_objects() -> None:
    import gc

    from ctxmem.events import MessageEvent, StoredEvent, ToolCallEvent, ToolResultEvent
    from ctxmem.messages import TextBlock, ToolResultBlock
    from ctxmem.store import codec
    from ctxmem.store.base import EventCounts

    assert codec._makers is not None  # the classes still have the shape the makers expect
    fast, plain = codec._makers, codec._plain_makers()
    for make in (fast, plain):
        call = make.tool_call("toolu_2", "bash", {"cmd": "ls", "n": [1, 2.5]}, True)
        assert call == ToolCallEvent(ToolUseBlock("toolu_2", "bash", {"cmd": "ls", "n": [1, 2.5]}), True)
        assert hash(call) == hash(ToolCallEvent(ToolUseBlock("toolu_2", "bash", {"cmd": "ls", "n": [1, 2.5]}), True))
        msg = make.message("assistant", (make.text("hi"), make.text("")), False)
        assert msg == MessageEvent("assistant", (TextBlock("hi"), TextBlock("")), False)
        assert repr(msg) == repr(MessageEvent("assistant", (TextBlock("hi"), TextBlock("")), False))
        assert make.text_result("t", "o", False, None, True) == ToolResultEvent(ToolResultBlock("t", "o"), None, None, True)
    stored, text_result, counts = fast.stored, fast.text_result, fast.counts
    ev = text_result("toolu_1", "out", True, "compile", False)
    assert ev == ToolResultEvent(ToolResultBlock("toolu_1", "out", True), "compile", None, False)
    assert hash(ev) == hash(ToolResultEvent(ToolResultBlock("toolu_1", "out", True), "compile", None, False))
    assert stored(3, "s", 2, 1.5, ev) == StoredEvent(3, "s", 2, 1.5, ev)
    assert counts(3, 10, 4, 100, 40) == EventCounts(3, 10, 4, 100, 40)
    assert repr(counts(3, 10, 4, 100, 40)) == repr(EventCounts(3, 10, 4, 100, 40))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.tool_name = "x"  # type: ignore[misc]
    gc.disable()
    with codec.gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # left disabled, as it was
    gc.enable()
    with pytest.raises(RuntimeError), codec.gc_paused():
        raise RuntimeError
    assert gc.isenabled()


_AWKWARD_INPUTS: list[Any] = [
    {"x": 1.5, "z": [1e300, -0.0, 1e-07]},
    {"big": 2**70, "neg": -(2**64) - 1, "u64": 2**64 - 1, "i64": -(2**63)},
    {"nan": float("nan"), "inf": float("-inf")},  # stored by an older ctxmem: still read back
    {"nested": {"a": [{"b": [1, 2, {"c": None}]}]}, "s": "é✓😀\u2028"},
    {},
]


@given(json_values())
def test_a_tool_input_reads_back_as_json_reads_it(value: Any) -> None:
    from ctxmem.store.codec import _tool_input

    blob = _canonical(["run", {"v": value}])
    assert repr(_tool_input(blob)) == repr(json.loads(blob)[1])  # repr: NaN != NaN, -0.0 == 0.0


@pytest.mark.parametrize("value", _AWKWARD_INPUTS)
def test_awkward_tool_inputs_read_back_as_json_reads_them(value: Any) -> None:
    from ctxmem.store.codec import _tool_input

    blob = _canonical(["run", value])
    got = _tool_input(blob)
    assert repr(got) == repr(json.loads(blob)[1])
    assert all(type(got[k]) is type(v) for k, v in value.items())  # an integer stays an integer
