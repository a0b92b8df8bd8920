"""The OpenAI bulk import path stores exactly what the validating path stores, row for row,
and declines (to the validating path, which names the error) every file it does not take."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ctxmem.errors import InputError
from ctxmem.jsonl import _encode_fast_openai, import_jsonl, parse_jsonl
from ctxmem.messages import to_openai
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from generators import conversations


def _jsonl(objs: list[Any]) -> bytes:
    return "\n".join(json.dumps(o, ensure_ascii=False) for o in objs).encode("utf-8") + b"\n"


def _rows(store: SQLiteStore, session_id: str) -> tuple[Any, ...]:
    """Everything an import wrote for the session, ids made relative, times dropped."""
    conn = store.conn
    first = conn.execute("SELECT min(id) FROM events WHERE session_id = ?", (session_id,)).fetchone()[0] or 0
    events = conn.execute(
        "SELECT e.id - ?, e.parent_id - ?, e.depth, e.kind, e.role, e.starts_message, e.tool_use_id, e.tool_name, "
        "e.is_error, e.fmt, b.hash, b.size, b.text, e.meta FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
        "WHERE e.session_id = ? ORDER BY e.id",
        (first, first, session_id),
    ).fetchall()
    tokens = conn.execute(
        "SELECT t.event_id - ?, t.tokenizer, t.content, t.overhead, t.cum_content, t.cum_overhead FROM event_tokens t "
        "JOIN events e ON e.id = t.event_id WHERE e.session_id = ? ORDER BY t.event_id, t.tokenizer",
        (first, session_id),
    ).fetchall()
    memo = conn.execute("SELECT hash, tokenizer, tokens FROM token_counts ORDER BY hash, tokenizer").fetchall()
    fts = conn.execute(
        "SELECT b.hash FROM tool_output_fts f JOIN blobs b ON b.id = f.rowid "
        "WHERE tool_output_fts MATCH 'a OR the OR x OR ok' ORDER BY b.hash"
    ).fetchall()
    info = store.get_session(session_id)
    return events, tokens, memo, fts, info.metadata, info.tokenizers


def _both_ways(tmp_path: Path, data: bytes, tokenizers: list[str]) -> tuple[Any, Any, bool]:
    """(rows of import_jsonl, rows of parse_jsonl + record_many, whether the bulk path took it)."""
    for name in ("fast.db", "slow.db"):
        (tmp_path / name).unlink(missing_ok=True)
    with SQLiteStore(tmp_path / "fast.db") as a, SQLiteStore(tmp_path / "slow.db") as b:
        fast = import_jsonl(a, data, fmt="openai", tokenizers=tokenizers)
        system, msgs = parse_jsonl(data, fmt="openai")
        meta: dict[str, Any] = {"source": "<input>"}
        if system is not None:
            meta["system"] = system
        slow = Session.create(b, metadata=meta, tokenizers=tokenizers)
        slow.record_many(msgs)
        assert fast.messages() == msgs
        return _rows(a, fast.id), _rows(b, slow.id), _encode_fast_openai(data) is not None


@pytest.mark.parametrize("seed", [1, 2])
def test_a_synthetic_session_takes_the_bulk_path_and_stores_the_same_rows(tmp_path: Path, seed: int) -> None:
    msgs = synthetic_session(20 * seed, seed=seed)
    data = _jsonl(to_openai(msgs, "be brief"))
    fast, slow, took = _both_ways(tmp_path, data, ["o200k_base", "heuristic"])
    assert took
    assert fast == slow
    assert fast[4]["system"] == "be brief"


_UNUSUAL: list[Any] = [
    {"role": "developer", "content": "dev rules"},
    {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
    {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "run", "arguments": '{"x": 1.5, "big": 123456789012345678901234567890, "z": [1e300, -0.0]}'}},
        {"id": "c2", "type": "function", "function": {"name": "ls", "arguments": ""}},
        {"id": "c3", "type": "function", "function": {"name": "u", "arguments": '{"s": "\\ud83d\\ude00 é✓"}'}},
    ]},
    {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r1 a"}, {"type": "text", "text": "r1 b"}]},
    {"role": "system", "content": "a system line between results"},
    {"role": "tool", "tool_call_id": "c2", "content": "ok", "is_error": True, "name": "ls"},
    {"role": "tool", "tool_call_id": "c3", "content": ""},
    {"role": "user", "content": "and a remark after the results"},
    {"role": "assistant", "content": "", "tool_calls": []},
    {"role": "assistant", "content": "thinking aloud", "tool_calls": [
        {"id": "c4", "type": "function", "function": {"name": "run", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c4", "content": "x"},
    {"role": "assistant", "content": None},  # an empty assistant message is still a message
    {"role": "user", "content": []},  # no part, no result before it: no message at all
    {"role": "user", "content": "go on"},
    {"role": "assistant", "content": [{"type": "text", "text": "done"}], "tool_calls": [
        {"id": "c5", "type": "function", "function": {"name": "compile", "arguments": "{}"}}]},
]


def test_unusual_but_valid_lines_take_the_bulk_path_and_store_the_same_rows(tmp_path: Path) -> None:
    data = _jsonl(_UNUSUAL) + b"\r\n\n"
    fast, slow, took = _both_ways(tmp_path, data, ["heuristic"])
    assert took
    assert fast == slow
    assert fast[4]["system"] == "dev rules\n\na system line between results"


@settings(max_examples=25, deadline=None)
@given(conv=conversations(max_turns=4, allow_pending=True))
def test_generated_conversations_store_the_same_rows_either_way(tmp_path_factory: Any, conv: Any) -> None:
    data = _jsonl(to_openai(conv))
    fast, slow, _ = _both_ways(tmp_path_factory.mktemp("gen"), data, ["heuristic"])
    assert fast == slow


_DECLINED = [
    pytest.param([{"role": "user", "content": "q"}, {"role": "wizard", "content": "x"}], id="unknown-role"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}],
                 id="orphan-result"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}], id="bad-arguments"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": NaN}'}}]}], id="nan-arguments"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": "\\ud800"}'}}]}],
                 id="surrogate-arguments"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}], id="arguments-not-object"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "a", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}], id="reused-id"),
    pytest.param([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], id="image-part"),
    # falsy but malformed fields: the validating path refuses them, so the bulk path must not take them
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "redacted_reasoning": ""}],
                 id="redacted-reasoning-empty-string"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "redacted_reasoning": 0}],
                 id="redacted-reasoning-zero"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "refusal": 0}],
                 id="refusal-zero"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": None, "arguments": "{}"}}]}], id="tool-name-null"),
    pytest.param([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "r", "is_error": "false"}], id="is-error-string"),
]


@pytest.mark.parametrize("objs", _DECLINED)
def test_invalid_files_are_declined_and_the_validating_path_names_the_error(tmp_path: Path, objs: list[Any]) -> None:
    data = _jsonl(objs)
    assert _encode_fast_openai(data) is None
    with SQLiteStore(tmp_path / "s.db") as store, pytest.raises(InputError) as exc:
        import_jsonl(store, data, fmt="openai")
    assert exc.value.line is not None
    with SQLiteStore(tmp_path / "s.db") as store:
        assert store.list_sessions() == []


def test_reasoning_fields_are_left_to_the_validating_path(tmp_path: Path) -> None:
    data = _jsonl([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "because", "reasoning_signature": "sig"},
    ])
    assert _encode_fast_openai(data) is None
    fast, slow, took = _both_ways(tmp_path, data, ["heuristic"])
    assert not took and fast == slow


def test_empty_parts_store_the_same_rows_either_way(tmp_path: Path) -> None:
    data = _jsonl([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [], "tool_calls": [
            {"id": "e1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "e1", "content": []},  # a result with no text part
        {"role": "user", "content": [{"type": "text", "text": ""}]},
    ])
    fast, slow, took = _both_ways(tmp_path, data, ["heuristic"])
    assert took
    assert fast == slow


_IDS = ("a", "b", "c")
_CONTENT = st.sampled_from([None, "", "txt", [], [{"type": "text", "text": "p"}], [{"type": "image_url", "image_url": {}}]])
_ARGS = st.sampled_from(["{}", "", '{"x": 1}', '{"x": 1.5}', '{"big": 123456789012345678901234567890}', "[1]", "{bad",
                         '{"x": NaN}'])
_CALL = st.fixed_dictionaries({"id": st.sampled_from(_IDS), "type": st.just("function"),
                               "function": st.fixed_dictionaries({"name": st.sampled_from(["ls", "run"]),
                                                                  "arguments": _ARGS})})
_LINE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]), "content": _CONTENT}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": _CONTENT},
                          optional={"tool_calls": st.one_of(st.none(), st.lists(_CALL, max_size=2))}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": st.sampled_from(_IDS), "content": _CONTENT},
                          optional={"is_error": st.sampled_from([True, False, 1, "false", None])}),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=6))
def test_arbitrary_openai_lines_are_stored_as_the_validating_path_stores_them_or_declined(
    tmp_path_factory: Any, lines: list[Any]
) -> None:
    """Whatever the lines: where the validating path refuses the file the bulk path
    declines it, and where the bulk path takes it, it stores the validating path's rows."""
    data = _jsonl(lines)
    try:
        _, msgs = parse_jsonl(data, fmt="openai")
    except InputError:
        event("refused")
        assert _encode_fast_openai(data) is None
        return
    if _encode_fast_openai(data) is not None and msgs:
        event("taken by the bulk path")
        fast, slow, took = _both_ways(tmp_path_factory.mktemp("arb"), data, ["heuristic"])
        assert took and fast == slow
