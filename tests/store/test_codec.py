"""The store codec: blobs and counted texts are exactly the canonical forms the rest of ctxmem uses."""

from __future__ import annotations

import json
from typing import Any

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
