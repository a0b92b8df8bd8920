"""Shared machinery of the built-in strategies: the boundary grid and output assembly.

Kept private: strategies import it, users never need to.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import compress, count, filterfalse, islice
from operator import is_not
from typing import TYPE_CHECKING, Any

from ctxmem.context.base import BuildRequest, BuiltContext, Report
from ctxmem.context.history import History
from ctxmem.messages import Message, TextBlock
from ctxmem.store.codec import gc_paused_over
from ctxmem.tokens.counting import DEFAULT_OVERHEAD

if TYPE_CHECKING:
    from ctxmem.events import StoredEvent


def grid_step(request: BuildRequest, fraction: float) -> int:
    """Grid spacing in tokens: a fraction of the available budget (at least 1)."""
    return max(1, int(request.budget.available * fraction))


def snap_up(history: History, index: int, step: int) -> int:
    """The first grid point at or after message ``index``.

    Message ``i`` is a grid point when its start position ``cum[i]`` is the first message
    start at or after some multiple of ``step`` tokens (``cum[i-1] < m·step ≤ cum[i]``). The
    grid depends only on the (append-only) history, so a boundary snapped to it stays put
    until the unsnapped boundary passes the next grid point: consecutive requests keep a
    byte-identical prefix in between. Messages larger than ``step`` are all grid points,
    so snapping never skips more than one grid cell.
    """
    if index <= 0:
        return 0
    if index >= len(history):
        return len(history)
    c, prev = history.cum[index], history.cum[index - 1]
    m = c // step
    if m * step > prev:
        return index
    return min(len(history), bisect_left(history.cum, (m + 1) * step))


def snap_down(history: History, index: int, step: int) -> int:
    if index <= 0:
        return 0
    pos = history.cum[index]
    k = pos // step
    return min(index, bisect_left(history.cum, k * step))


@dataclass
class Output:
    """An output under construction: messages, their token counts, sections."""

    messages: list[Message] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    sections: dict[str, int] = field(default_factory=dict)
    #: tokens outside the messages the build adds (e.g. a tool definition it offers)
    extra: int = 0
    #: ``sum(counts)``, kept as sections are added (a caller that knows a section's total
    #: from prefix sums passes it: no pass over a thousand-message section each turn)
    total: int = 0

    def add_extra(self, section: str, tokens: int) -> None:
        if tokens:
            self.extra += tokens
            self.sections[section] = self.sections.get(section, 0) + tokens

    def add(self, section: str, messages: Sequence[Message], counts: Sequence[int], total: int | None = None) -> None:
        """Append a section; ``total`` is ``sum(counts)`` when the caller has it already."""
        self.messages.extend(messages)
        self.counts.extend(counts)
        n = sum(counts) if total is None else total
        self.total += n
        self.sections[section] = self.sections.get(section, 0) + n

    @property
    def tokens(self) -> int:
        return self.total + self.extra


@dataclass
class PrefixTracker:
    """Remembers a strategy's previous output to report prompt-cache effects."""

    _history_id: int = 0
    _messages: list[Message] = field(default_factory=list)
    _counts: list[int] = field(default_factory=list)

    def observe(self, request: BuildRequest, out: Output) -> tuple[int, bool, int]:
        """(stable prefix tokens, cache invalidated, invalidated tokens) against the last build."""
        fixed = request.fixed_tokens
        same_history = self._history_id == request.history.uid
        old = self._messages if same_history else []
        new_msgs = out.messages
        # first index where the outputs differ (by identity), scanned in C
        k = next(compress(count(), map(is_not, old, new_msgs)), min(len(old), len(new_msgs)))
        counts = out.counts
        if k == len(counts):
            kept = out.total
        elif k >= len(counts) // 2:  # usually only the tail differs: sum the shorter side
            kept = out.total - sum(islice(counts, k, None))
        else:
            kept = sum(islice(counts, k))
        stable = fixed + out.extra + kept
        invalidated = bool(old) and k < len(old)
        lost = sum(islice(self._counts, k, None)) if invalidated else 0
        self._history_id = request.history.uid
        self._messages = list(new_msgs)
        self._counts = list(counts)
        return stable, invalidated, lost


class ColdPasses:
    """Runs a strategy's build with the cyclic GC paused when it takes in many messages at
    once: a first build over a long session, or a resumed process catching up.

    Such a build allocates tens of thousands of acyclic objects (masked placeholders,
    retrieval chunks, summaries, a snapshot to save); with the GC on, they trigger
    collections that traverse every object the process holds, the whole history included
    (a 1M-token pipeline-200k resuming in a fresh process: ~25 ms of its ~125 ms). A turn's
    few new messages build as they always did."""

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}  # history uid -> its length at the last build

    def over(self, request: BuildRequest) -> AbstractContextManager[None]:
        h = request.history
        last = self._seen.get(h.uid, 0)
        if len(self._seen) > 8 and h.uid not in self._seen:
            self._seen.clear()
        self._seen[h.uid] = len(h)
        return gc_paused_over(len(h) - last if last <= len(h) else len(h))


class PinnedCache:
    """The pinned prefix with extra text appended to its last message, reused while the
    extra text is unchanged so its identity (and the cache prefix) is stable."""

    def __init__(self) -> None:
        self._key: tuple[int, int, tuple[str, ...]] | None = None
        self._value: tuple[list[Message], list[int]] = ([], [])

    def get(self, request: BuildRequest, extra: tuple[str, ...]) -> tuple[list[Message], list[int]]:
        h = request.history
        p = request.pinned_count
        key = (h.uid, p, extra)
        if key != self._key:
            msgs = list(h.messages[:p])
            counts = list(h.counts[:p])
            if extra and msgs:
                last = msgs[-1]
                msgs[-1] = Message(last.role, last.content + tuple(TextBlock(t) for t in extra))
                tok = request.tokenizer
                counts[-1] += sum(tok.count(t) for t in extra) + DEFAULT_OVERHEAD.per_block * len(extra)
            self._key = key
            self._value = (msgs, counts)
        return self._value


def finish(
    name: str,
    request: BuildRequest,
    out: Output,
    tracker: PrefixTracker,
    *,
    tokens_in: int,
    kept: Sequence[int] = (),
    masked: Sequence[int] = (),
    summarized: Sequence[int] = (),
    dropped: Sequence[int] = (),
    retrieved_event_ids: Sequence[int] = (),
    breakpoints: Sequence[int] = (),
    notes: Sequence[str] = (),
    extra_tools: tuple[object, ...] = (),
) -> BuiltContext:
    fixed = request.fixed_tokens
    tokens_out = fixed + out.tokens
    stable, invalidated, lost = tracker.observe(request, out)
    sections = {"system_and_tools": fixed, **out.sections}
    report = Report(
        strategy=name,
        available=request.budget.available,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        sections=sections,
        kept=kept,
        masked=masked,
        summarized=summarized,
        dropped=dropped,
        retrieved_event_ids=retrieved_event_ids,
        stable_prefix_tokens=stable,
        cache_invalidated=invalidated,
        invalidated_tokens=lost,
        headroom_tokens=max(0, request.budget.trigger - tokens_out),
        notes=tuple(notes),
    )
    bps = tuple(sorted({b for b in breakpoints if 0 <= b < len(out.messages)}))[-3:]
    return BuiltContext(
        messages=out.messages,
        report=report,
        system=request.system,
        tools=request.tools,
        cache_breakpoints=bps,
        extra_tools=extra_tools,  # type: ignore[arg-type]
    )


#: how a compaction that extends an earlier one names it in its reason (see CompactionRecorder)
_EXTENDS = re.compile(r"\(extends compaction (\d+): \+\d+ source events(?:, less ([\d,-]+))?\)$")


def id_ranges(ids: Iterable[int]) -> str:
    """``1-4,7,9-12``: a compact, exact rendering of event ids (sorted, duplicates once)."""
    out: list[str] = []
    xs = sorted(set(ids))
    k = 0
    while k < len(xs):
        j = k
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[k]) if j == k else f"{xs[k]}-{xs[j]}")
        k = j + 1
    return ",".join(out)


def parse_id_ranges(text: str) -> list[int]:
    """The ids :func:`id_ranges` rendered, ascending."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


class CompactionRecorder:
    """Records a :class:`~ctxmem.events.CompactionEvent` in the request's session when a
    strategy's boundary moves (messages dropped or masked), once per boundary: builds that
    keep the same boundary, and rebuilds by another instance, record nothing.

    **Incremental provenance.** A boundary that only moves forward leaves out what the
    previous compaction left out and more. Listing the whole left-out span again would make
    each event O(history) and the log O(history²) over a session (at 10M tokens a masking
    boundary that moves every few turns would write ~12K ids each time). So an event lists
    only the source events the previous compaction (of this strategy, in this session) did
    not, and its reason ends with ``(extends compaction <event id>: +<n> source events)``,
    plus ``, less <id ranges>`` for the ids it no longer leaves out (masking's truncation
    point steps back when its mask boundary moves on); when that delta is not shorter than
    the whole set, the event lists the whole set. :func:`compaction_sources` follows the
    chain back to the full set, so any context sent can still be rebuilt from the log.
    """

    def __init__(self) -> None:
        # per session: (the full source ids of this strategy's last compaction, its event id)
        self._last: dict[str, tuple[frozenset[int], int | None]] = {}

    def record(
        self, name: str, request: BuildRequest, built: BuiltContext, source_event_ids: Sequence[int], reason: str
    ) -> bool:
        from ctxmem.events import CompactionEvent

        session = request.session
        ids = tuple(source_event_ids)
        if session is None or not request.record or not ids:
            return False
        key = session.id
        if key not in self._last:
            # First sight of this session: read its log once for what an earlier instance
            # (a rebuild, a resumed run) already recorded; afterwards this recorder knows.
            if len(self._last) > 64:
                self._last.clear()
            events = chain_events_of_kind(session, "compaction")
            last = next(
                (se for se in reversed(events) if isinstance(se.event, CompactionEvent) and se.event.strategy == name),
                None,
            )
            self._last[key] = (
                (frozenset(compaction_sources(events, last.id)), last.id) if last is not None else (frozenset(), None)
            )
        prev, prev_id = self._last[key]
        full = frozenset(ids)
        if full == prev:
            return False  # already recorded
        listed = ids
        if prev and prev_id is not None:
            added = tuple(filterfalse(prev.__contains__, ids))
            less = prev - full
            if len(added) + len(less) < len(full):  # a delta shorter than the whole set
                listed = added
                gone = f", less {id_ranges(less)}" if less else ""
                reason = f"{reason} (extends compaction {prev_id}: +{len(added)} source events{gone})"
        event_id = session.record_compaction(
            CompactionEvent(
                strategy=name,
                tokens_before=built.report.tokens_in,
                tokens_after=built.report.tokens_out,
                source_event_ids=listed,
                reason=reason,
            )
        )
        self._last[key] = (full, event_id)
        return True


def compaction_sources(events: Sequence[StoredEvent], event_id: int) -> tuple[int, ...]:
    """Every source event id of the compaction ``event_id`` (ascending), following the
    compactions it extends and the ids each one no longer leaves out (see
    :class:`CompactionRecorder`).

    Raises:
        KeyError: ``event_id`` (or a compaction it extends) is not a compaction in ``events``.
    """
    from ctxmem.events import CompactionEvent

    by_id = {se.id: se.event for se in events if isinstance(se.event, CompactionEvent)}
    chain: list[tuple[tuple[int, ...], str | None]] = []  # newest first: (added ids, removed ranges)
    at: int | None = event_id
    while at is not None:
        ev = by_id[at]
        m = _EXTENDS.search(ev.reason or "")
        chain.append((ev.source_event_ids, m.group(2) if m else None))
        at = int(m.group(1)) if m else None
    ids: set[int] = set()
    for added, less in reversed(chain):
        if less:
            ids.difference_update(parse_id_ranges(less))
        ids.update(added)
    return tuple(sorted(ids))


def chain_events_of_kind(session: Any, kind: str) -> list[StoredEvent]:
    """The session's chain events of one ``kind`` (and possibly others: callers filter), oldest
    first: through the store's ``chain_events_of_kind`` when it has one (SQLite decodes only
    those rows, ~0.1 ms on a 1M-token session instead of ~35 ms for the whole chain), else
    the whole chain."""
    of_kind = getattr(getattr(session, "store", None), "chain_events_of_kind", None)
    if of_kind is not None:
        got: list[StoredEvent] = of_kind(session.id, kind)
        return got
    events: list[StoredEvent] = session.events()
    return events
