"""Retrieval documents built from a session's tool calls.

One tool call and its result make one document: a header line naming the tool and its
input (canonical JSON, truncated) followed by the result text. Results longer than
``max_chars`` are cut into chunks of at most ``max_chars`` characters — at line boundaries
when a line ends in the second half of the window, hard otherwise — each starting
``overlap_chars`` before the previous one ended (aligned to a line start when one falls in
the overlap), so a fact straddling a cut is whole in one of the two chunks. Every chunk
repeats the header, so it says which call it came from.

Provenance: ``event_id`` is the ``tool_result`` event (the id FTS5 hits, recall handles
and compaction events use); ``call_event_id`` the ``tool_call`` event; ``start``/``end``
the chunk's character range in the result text. The default chunk size (1,000 characters)
fits all-MiniLM-L6-v2's 256-token window for typical tool output, so little is truncated.

Only completed calls become documents: a call still waiting for its result is skipped and
picked up once the result is recorded. This module needs no numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ctxmem.errors import ConfigError
from ctxmem.events import StoredEvent, ToolCallEvent, ToolResultEvent
from ctxmem.messages import ToolUseBlock, canonical_json
from ctxmem.store.base import ChainView

if TYPE_CHECKING:
    from ctxmem.session import Session


@dataclass(frozen=True, slots=True)
class ToolCallDocument:
    """One chunk of one tool call + result, with its provenance."""

    event_id: int
    tool_use_id: str
    tool_name: str
    text: str
    chunk: int = 0
    n_chunks: int = 1
    start: int = 0
    end: int = 0
    call_event_id: int | None = None
    is_error: bool = False

    @property
    def key(self) -> tuple[int, int]:
        """``(event_id, chunk)``: unique within a session."""
        return (self.event_id, self.chunk)


def chunk_spans(text: str, max_chars: int = 1000, overlap_chars: int = 150) -> list[tuple[int, int]]:
    """Character spans covering ``text`` (see the module docstring for the rules)."""
    if max_chars < 1:
        raise ConfigError("must be at least 1", field="max_chars")
    if not 0 <= overlap_chars < max_chars:
        raise ConfigError("must be >= 0 and smaller than max_chars", field="overlap_chars")
    n = len(text)
    if n <= max_chars:
        return [(0, n)]
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + max_chars, n)
        if end < n:
            cut = text.rfind("\n", start + max_chars // 2, end)
            if cut != -1:
                end = cut + 1
        spans.append((start, end))
        if end >= n:
            return spans
        nxt = max(end - overlap_chars, start + 1)
        line = text.find("\n", nxt - 1, end - 1)  # a line starting inside the overlap
        if line != -1 and line + 1 > start:
            nxt = line + 1
        start = nxt


def _header(tool: ToolUseBlock | None, name: str, is_error: bool, header_chars: int) -> str:
    args = canonical_json(tool.input) if tool is not None else "{}"
    if len(args) > header_chars:
        args = args[:header_chars] + "…"
    return f"[{name}{' error' if is_error else ''}] {args}"


def _events_of(source: Session | ChainView | Iterable[StoredEvent]) -> Iterable[StoredEvent]:
    if isinstance(source, ChainView):
        return source.events
    events = getattr(source, "events", None)
    if callable(events):  # a Session
        chain: list[StoredEvent] = events()
        return chain
    return source  # type: ignore[return-value]


def iter_tool_call_documents(
    source: Session | ChainView | Iterable[StoredEvent],
    *,
    max_chars: int = 1000,
    overlap_chars: int = 150,
    header_chars: int = 300,
    skip_event_ids: frozenset[int] | set[int] = frozenset(),
) -> Iterator[ToolCallDocument]:
    """Documents of the completed tool calls in ``source``, in session order.

    ``skip_event_ids`` lists result events already indexed (incremental indexing: their
    text is neither chunked nor returned again).
    """
    calls: dict[str, tuple[int, ToolUseBlock]] = {}
    for se in _events_of(source):
        ev = se.event
        if isinstance(ev, ToolCallEvent):
            calls[ev.tool_use.id] = (se.id, ev.tool_use)
            continue
        if not isinstance(ev, ToolResultEvent) or se.id in skip_event_ids:
            continue
        res = ev.result
        call_id, tool = calls.get(res.tool_use_id, (None, None))
        name = tool.name if tool is not None else (ev.tool_name or "unknown")
        header = _header(tool, name, res.is_error, header_chars)
        body = res.text
        spans = chunk_spans(body, max_chars, overlap_chars)
        for i, (a, b) in enumerate(spans):
            yield ToolCallDocument(
                event_id=se.id,
                tool_use_id=res.tool_use_id,
                tool_name=name,
                text=f"{header}\n{body[a:b]}",
                chunk=i,
                n_chunks=len(spans),
                start=a,
                end=b,
                call_event_id=call_id,
                is_error=res.is_error,
            )


def tool_call_documents(
    source: Session | ChainView | Iterable[StoredEvent],
    *,
    max_chars: int = 1000,
    overlap_chars: int = 150,
    header_chars: int = 300,
) -> list[ToolCallDocument]:
    """All documents of a session's current chain (a Session, its ChainView, or events)."""
    return list(
        iter_tool_call_documents(source, max_chars=max_chars, overlap_chars=overlap_chars, header_chars=header_chars)
    )
