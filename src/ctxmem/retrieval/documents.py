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

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ctxmem.errors import ConfigError
from ctxmem.events import StoredEvent, ToolCallEvent, ToolResultEvent
from ctxmem.messages import ToolResultBlock, ToolUseBlock, canonical_json
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


class ToolCallChunks:
    """The chunks of one completed tool call, before they become documents: their spans are
    known (so is their number), their texts are built by :meth:`document` on demand.

    What :func:`iter_tool_call_documents` yields, chunk by chunk; a retriever that reads only
    the texts of its hits (FTS-ranked) keeps these instead and builds a hit's document when
    asked, so it never copies every output of a resumed session into documents up front.
    """

    __slots__ = ("_header", "call_event_id", "call_input", "event_id", "header_chars", "result", "spans", "tool_name")

    def __init__(
        self, event_id: int, result: ToolResultBlock, call: tuple[int, ToolUseBlock] | None, fallback_name: str,
        spans: list[tuple[int, int]], header_chars: int,
    ):
        self.event_id = event_id
        self.result = result
        self.call_event_id = call[0] if call is not None else None
        self.call_input = call[1] if call is not None else None
        self.tool_name = call[1].name if call is not None else fallback_name
        self.spans = spans
        self.header_chars = header_chars
        self._header: str | None = None

    def document(self, i: int) -> ToolCallDocument:
        """Chunk ``i`` as a document (its header, then its span of the result text)."""
        header = self._header
        if header is None:
            header = self._header = _header(self.call_input, self.tool_name, self.result.is_error, self.header_chars)
        a, b = self.spans[i]
        res = self.result
        return ToolCallDocument(
            event_id=self.event_id,
            tool_use_id=res.tool_use_id,
            tool_name=self.tool_name,
            text=f"{header}\n{res.text[a:b]}",
            chunk=i,
            n_chunks=len(self.spans),
            start=a,
            end=b,
            call_event_id=self.call_event_id,
            is_error=res.is_error,
        )


def iter_tool_call_chunks(
    source: Session | ChainView | Iterable[StoredEvent],
    *,
    max_chars: int = 1000,
    overlap_chars: int = 150,
    header_chars: int = 300,
    skip_event_ids: frozenset[int] | set[int] | Collection[int] = frozenset(),
) -> Iterator[ToolCallChunks]:
    """The completed tool calls of ``source`` in session order, each with its chunk spans
    (:func:`iter_tool_call_documents` without building the texts)."""
    calls: dict[str, tuple[int, ToolUseBlock]] = {}
    for se in _events_of(source):
        ev = se.event
        if isinstance(ev, ToolCallEvent):
            calls[ev.tool_use.id] = (se.id, ev.tool_use)
            continue
        if not isinstance(ev, ToolResultEvent) or se.id in skip_event_ids:
            continue
        res = ev.result
        spans = chunk_spans(res.text, max_chars, overlap_chars)
        yield ToolCallChunks(se.id, res, calls.get(res.tool_use_id), ev.tool_name or "unknown", spans, header_chars)


def iter_tool_call_documents(
    source: Session | ChainView | Iterable[StoredEvent],
    *,
    max_chars: int = 1000,
    overlap_chars: int = 150,
    header_chars: int = 300,
    skip_event_ids: frozenset[int] | set[int] | Collection[int] = frozenset(),
) -> Iterator[ToolCallDocument]:
    """Documents of the completed tool calls in ``source``, in session order.

    ``skip_event_ids`` lists result events already indexed (incremental indexing: their
    text is neither chunked nor returned again).
    """
    for call in iter_tool_call_chunks(source, max_chars=max_chars, overlap_chars=overlap_chars,
                                      header_chars=header_chars, skip_event_ids=skip_event_ids):
        for i in range(len(call.spans)):
            yield call.document(i)


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
