from __future__ import annotations

import itertools

import pytest
from retrieval_helpers import PLANTED_OUTPUT, planted_session

from ctxmem.errors import ConfigError
from ctxmem.events import ToolCallEvent, ToolResultEvent
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.retrieval import chunk_spans, iter_tool_call_documents, tool_call_documents
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore


@pytest.mark.parametrize("text", ["", "short", "line\n" * 700, "x" * 5000, ("word " * 30 + "\n") * 90])
def test_chunks_cover_the_text_within_bounds_with_overlap(text: str) -> None:
    spans = chunk_spans(text, max_chars=1000, overlap_chars=150)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (a, b), (c, d) in itertools.pairwise(spans):
        assert c < b, "consecutive chunks overlap"
        assert c > a, "chunking makes progress"
        assert d > b
    assert all(0 < b - a <= 1000 for a, b in spans if text)
    with pytest.raises(ConfigError, match="overlap_chars"):
        chunk_spans(text, max_chars=100, overlap_chars=100)


def test_chunks_cut_at_line_boundaries_when_possible() -> None:
    text = "".join(f"row {i:04d} {'v' * 40}\n" for i in range(200))
    spans = chunk_spans(text, max_chars=1000, overlap_chars=150)
    assert len(spans) > 1
    for a, b in spans:
        assert a == 0 or text[a - 1] == "\n"
        assert b == len(text) or text[b - 1] == "\n"


def test_documents_pair_calls_with_results_and_keep_provenance() -> None:
    store = SQLiteStore(":memory:")
    session = Session.create(store)
    session.record_many(planted_session(turns=8))
    events = session.events()
    docs = tool_call_documents(session)
    assert docs == tool_call_documents(session.chain()) == tool_call_documents(events)
    by_id = {se.id: se for se in events}
    results = [se for se in events if isinstance(se.event, ToolResultEvent)]
    assert {d.event_id for d in docs} == {se.id for se in results}
    for d in docs:
        res = by_id[d.event_id].event
        call = by_id[d.call_event_id].event if d.call_event_id is not None else None
        assert isinstance(res, ToolResultEvent) and isinstance(call, ToolCallEvent)
        assert call.tool_use.id == res.result.tool_use_id == d.tool_use_id
        assert d.tool_name == call.tool_use.name
        header, _, body = d.text.partition("\n")
        assert header.startswith(f"[{d.tool_name}")
        assert body == res.result.text[d.start : d.end]
    planted = [d for d in docs if d.tool_use_id == "toolu_planted"]
    assert len(planted) == 1 and PLANTED_OUTPUT in planted[0].text and "simx-info" in planted[0].text


def test_long_results_are_chunked_and_pending_calls_skipped() -> None:
    session = Session.create(MemoryStore())
    long_output = "".join(f"config {i}: BLOCK_M=64 -> {i * 0.01:.3f} ms\n" for i in range(400))
    session.record(Message.user("go"))
    session.record(Message.assistant(ToolUseBlock("t1", "autotune", {"budget": 8}), ToolUseBlock("t2", "compile", {})))
    session.record_tool_result("t1", long_output)
    docs = tool_call_documents(session, max_chars=1000, overlap_chars=100)
    assert {d.tool_use_id for d in docs} == {"t1"}  # t2 has no result yet
    assert len(docs) > 5 and [d.chunk for d in docs] == list(range(len(docs)))
    assert all(d.n_chunks == len(docs) for d in docs)
    assert "".join(long_output[d.start : d.end] for d in docs[:1]) == long_output[: docs[0].end]
    skipped = list(iter_tool_call_documents(session, skip_event_ids={docs[0].event_id}))
    assert skipped == []


def test_error_results_are_marked_in_the_header() -> None:
    session = Session.create(MemoryStore())
    session.record(Message.assistant(ToolUseBlock("t1", "compile", {"target": "kernel.py"})))
    session.record(Message.user(ToolResultBlock("t1", "NameError: name 'acc' is not defined", is_error=True)))
    (doc,) = tool_call_documents(session)
    assert doc.is_error and doc.text.startswith('[compile error] {"target":"kernel.py"}')
