"""History: the untouched conversation a strategy reads, with counts computed once.

Strategies run every turn over a history of thousands of messages, so nothing per build
may be O(total text). A :class:`History` holds the messages (shared, never copied or
mutated), each message's exact token count (content + modelled overhead, identical to
:func:`ctxmem.tokens.count_messages`), prefix sums for O(1) range totals, and the
per-message structural flags the invariants need. It only grows: :meth:`extend` counts
the new messages and nothing else.

Counts come from the session store when the history is loaded from a session (the store
keeps them per event; the tokenizer itself is loaded only when something is counted), or
from one batched tokenizer call when built from messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, count
from typing import TYPE_CHECKING

from ctxmem.messages import (
    ContentBlock,
    Message,
    RedactedThinkingBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    late_result,
)
from ctxmem.store.codec import gc_paused_over
from ctxmem.tokens import Tokenizer, count_messages, get_tokenizer, tokenizer_id

if TYPE_CHECKING:
    from ctxmem.events import StoredEvent
    from ctxmem.session import Session
    from ctxmem.store.base import ChainView


@dataclass(frozen=True, slots=True)
class Flags:
    """Structure of one message, computed once."""

    role: str
    tool_uses: tuple[str, ...]
    tool_results: tuple[str, ...]
    thinking: bool


def _flags(m: Message) -> Flags:
    uses = []
    results = []
    thinking = False
    for b in m.content:
        if isinstance(b, ToolUseBlock):
            uses.append(b.id)
        elif isinstance(b, ToolResultBlock):
            results.append(b.tool_use_id)
        elif isinstance(b, ThinkingBlock | RedactedThinkingBlock):
            thinking = True
    return Flags(m.role, tuple(uses), tuple(results), thinking)


def block_events(m: Message) -> list[int]:
    """For each block of a message, the index of the session event it was recorded in: each
    tool call and tool result is one event, and so is each run of other blocks (see
    :func:`ctxmem.events.events_from_message`)."""
    out: list[int] = []
    k = -1
    in_run = False
    for block in m.content:
        if isinstance(block, ToolUseBlock | ToolResultBlock):
            k += 1
            in_run = False
        elif not in_run:
            k += 1
            in_run = True
        out.append(k)
    return out


def _event_groups(content: tuple[ContentBlock, ...]) -> list[list[ContentBlock]]:
    """The blocks of a message as the events they were recorded in (:func:`block_events`)."""
    groups: list[list[ContentBlock]] = []
    for b, k in zip(content, block_events(Message("user", content)), strict=True):
        if k == len(groups):
            groups.append([])
        groups[k].append(b)
    return groups


def _results_first(m: Message, ids: tuple[int, ...]) -> tuple[Message, tuple[int, ...]] | None:
    """A user message stored with content before its tool results (ctxmem recorded that
    before the session door refused it; every provider refuses it): the results first, in
    their order, then the rest, with its event ids in the same order. ``None`` where the
    reordered blocks would no longer group into the same events (text on both sides of a
    result): the message is left as it is."""
    groups = _event_groups(m.content)
    order = sorted(range(len(groups)), key=lambda g: not isinstance(groups[g][0], ToolResultBlock))
    content = tuple(b for g in order for b in groups[g])
    if len(_event_groups(content)) != len(groups) or (ids and len(ids) != len(groups)):
        return None
    return Message(m.role, content), (tuple(ids[g] for g in order) if ids else ids)


_UIDS = count(1)


@dataclass
class History:
    """Messages + exact per-message token counts + prefix sums. Append-only.

    ``History(tokenizer)`` takes a tokenizer, or its name: a name is loaded on the first
    use of :attr:`tokenizer` (loading o200k_base costs 1-3 s; a history loaded from a
    session has its counts without it).
    """

    _tok: Tokenizer | str
    messages: list[Message] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    event_ids: list[tuple[int, ...]] = field(default_factory=list)
    flags: list[Flags] = field(default_factory=list)
    cum: list[int] = field(default_factory=lambda: [0])
    #: bumped on every extend: strategies key their caches on (uid, version)
    version: int = 0
    #: unique for the life of the process (unlike id(), never reused after this History
    #: is garbage-collected): what per-history caches in strategies are keyed on
    uid: int = field(default_factory=lambda: next(_UIDS), repr=False, compare=False)
    _tool_names: dict[str, str] = field(default_factory=dict, repr=False)
    _results: dict[str, tuple[int, ToolResultBlock]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_messages(
        cls, messages: Iterable[Message], tokenizer: Tokenizer | str, *, event_ids: Sequence[Sequence[int]] | None = None
    ) -> History:
        """A history of ``messages`` counted with ``tokenizer`` (a name or a loaded one).

        ``event_ids`` (one sequence per message) links each message to the session events
        it came from, for compaction provenance; without it the links are empty.

        Raises:
            UnknownNameError, TokenizerError: the tokenizer name is unknown or cannot load.
        """
        tok = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        h = cls(tok)
        h.extend(list(messages), event_ids=event_ids)
        return h

    @classmethod
    def from_session(cls, session: Session, tokenizer: str) -> History:
        """Load a session's view with its stored counts (no re-tokenizing)."""
        return cls._load(session, tokenizer)[0]

    @classmethod
    def _load(cls, session: Session, tokenizer: str) -> tuple[History, int | None, int]:
        """:meth:`from_session`, with the head and the number of events the load read. A
        store that reads a chain straight into messages (``chain_messages``: SQLite) is
        asked that way; any other, and a chain it declines (a forked session), is read
        event by event."""
        direct = getattr(session.store, "chain_messages", None)
        got = direct(session.id, tokenizer) if direct is not None else None
        if got is None:
            view = session.chain(tokenizers=[tokenizer])
            return cls.from_chain(view, tokenizer), (view.events[-1].id if view.events else None), len(view.events)
        msgs, counts, ids, head, depth = got
        h = cls(tokenizer)
        with gc_paused_over(depth):
            h._append(msgs, counts, ids)
        return h, head, depth

    @classmethod
    def from_chain(cls, view: ChainView, tokenizer: str) -> History:
        """A History of a chain read with ``tokenizers=[tokenizer]`` (its stored counts)."""
        from ctxmem.events import message_spans

        per_event = {c.event_id: c.content + c.overhead for c in view.counts[tokenizer]}
        h = cls(tokenizer)  # loaded when first used: the counts come from the store
        msgs: list[Message] = []
        counts: list[int] = []
        ids: list[tuple[int, ...]] = []
        # a message object per few events, for the whole chain: acyclic, built with the GC
        # paused as the chain read that precedes it (see codec.gc_paused_over)
        with gc_paused_over(len(view.events)):
            for m, eids in message_spans(view.events):
                msgs.append(m)
                counts.append(sum(per_event[e] for e in eids))
                ids.append(tuple(eids))
            h._append(msgs, counts, ids)
        return h

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer every count of this history is in (loaded on first use)."""
        tok = self._tok
        if isinstance(tok, str):
            tok = self._tok = get_tokenizer(tok)
        return tok

    @property
    def tokenizer_id(self) -> str:
        """The tokenizer's id, without loading it."""
        return tokenizer_id(self._tok) if isinstance(self._tok, str) else self._tok.id

    def extend(self, messages: Sequence[Message], *, event_ids: Sequence[Sequence[int]] | None = None) -> None:
        """Append messages, counting only them (one batched tokenizer call)."""
        if not messages:
            return
        counts = [c.total for c in count_messages(messages, self.tokenizer)]
        ids: list[tuple[int, ...]] = (
            [tuple(e) for e in event_ids] if event_ids is not None else [() for _ in messages]
        )
        self._append(list(messages), counts, ids)

    def _append(self, messages: list[Message], counts: list[int], ids: list[tuple[int, ...]]) -> None:
        for k, m in enumerate(messages):  # (a user message of several blocks is rare: a cheap test first)
            if m.role == "user" and len(m.content) > 1 and late_result(m.content):
                got = _results_first(m, ids[k])
                if got is not None:  # same blocks, same count: only their order changes
                    messages[k], ids[k] = got
        self.messages.extend(messages)
        self.counts.extend(counts)
        self.event_ids.extend(ids)
        base = len(self.flags)
        for k, m in enumerate(messages):
            f = _flags(m)
            self.flags.append(f)
            for b in m.content:
                if isinstance(b, ToolUseBlock):
                    self._tool_names[b.id] = b.name
                elif isinstance(b, ToolResultBlock):
                    self._results[b.tool_use_id] = (base + k, b)
        self.cum.extend(list(accumulate(counts, initial=self.cum[-1]))[1:])
        self.version += 1

    def __len__(self) -> int:
        return len(self.messages)

    def tokens(self, start: int = 0, stop: int | None = None) -> int:
        """Tokens of messages[start:stop], O(1)."""
        stop = len(self.messages) if stop is None else stop
        return self.cum[stop] - self.cum[start]

    @property
    def total(self) -> int:
        """Tokens of all messages (per-message overhead included), in O(1)."""
        return self.cum[-1]

    def tool_result(self, tool_use_id: str) -> tuple[int, ToolResultBlock] | None:
        """The result of a tool call by id: (index of its message, the block)."""
        return self._results.get(tool_use_id)

    def tool_name(self, tool_use_id: str) -> str | None:
        """The name of the tool a ``tool_use`` id called; ``None`` for an unknown id."""
        return self._tool_names.get(tool_use_id)


# ------------------------------------------------------------------ following a session


@dataclass
class _Seen:
    """A session's History as the last call left it, and where the session's head was."""

    store: object
    history: History
    head: int | None
    depth: int


#: the most events read one by one before a full reload is the cheaper read
_MAX_STEP = 512


class FollowedHistories:
    """Sessions' Histories, each extended with only what was recorded since it was last asked for.

    A loop that builds every turn from a :class:`~ctxmem.session.Session` (``ContextBuilder.
    build(session)``, ``wire.anthropic_request``) gets the *same* History object turn after
    turn, so a strategy's per-history caches stay warm and a turn costs what it appended,
    not the session's length. The first call loads the History from the stored counts;
    later calls read the session's head and depth, walk back from the new head to the one
    seen last (at most ``_MAX_STEP`` events, one lookup each) and count only those
    messages. The History is reloaded in full when that is not sound: after a rewind or
    fork (the new head's chain does not pass through the old one), when the new events
    continue the last message instead of opening one (another handle added a tool result
    to it), or for another store object. Any writer, in this process or another, is seen,
    since head and depth are read from the store each call.

    Not for concurrent use: one thread at a time per instance (like a strategy's caches).
    """

    def __init__(self, limit: int = 64) -> None:
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._limit = limit

    def get(self, session: Session, tokenizer: str) -> History:
        """``session``'s History counted in ``tokenizer``, current with its head."""
        from ctxmem.events import message_spans, role_of

        key = (session.id, tokenizer)
        seen = self._seen.get(key)
        store = session.store
        since = getattr(store, "chain_since", None)  # one read of the head and what follows it
        totals: list[int | None] | None = None
        if seen is not None and seen.store is store and since is not None and seen.head is not None:
            got = since(session.id, seen.head, tokenizer, _MAX_STEP)
            if got is not None and got[0] == seen.head:
                return seen.history
            head, new, totals = (got[0], got[1], got[2]) if got is not None else (None, None, None)
            depth = seen.depth + len(new) if new is not None else 0
        else:
            head = session.info.head_event_id
            depth = store.event_count(session.id)
            if seen is not None and seen.store is store and seen.head == head and seen.depth == depth:
                return seen.history
            new = _new_events(session, seen, head, depth) if seen is not None and seen.store is store else None
        if seen is not None and new is not None:
            h = seen.history
            first = next((se.event for se in new if role_of(se.event) is not None), None)
            last_role = h.messages[-1].role if len(h) else None
            merges = first is not None and role_of(first) == last_role and not getattr(first, "new_message", False)
            if not merges:
                spans = list(message_spans(new))
                # the counts the store keeps per event, as a full load reads them; counted
                # here when the store has none for this tokenizer
                stored = dict(zip([se.id for se in new], totals, strict=True)) if totals is not None else {}
                counts = [sum(stored.get(e) or 0 for e in ids) for _, ids in spans]
                if all(stored.get(e) is not None for _, ids in spans for e in ids):
                    h._append([m for m, _ in spans], counts, [tuple(ids) for _, ids in spans])
                else:
                    h.extend([m for m, _ in spans], event_ids=[ids for _, ids in spans])
                seen.head, seen.depth = head, depth
                return h
        # a full load: head and depth are those of the events loaded (the chain's last event
        # is its head), whatever another writer appends meanwhile
        history, head, depth = History._load(session, tokenizer)
        self._seen.pop(key, None)
        if len(self._seen) >= self._limit:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = _Seen(store, history, head, depth)
        return history


def _new_events(session: Session, seen: _Seen, head: int | None, depth: int) -> list[StoredEvent] | None:
    """The events after ``seen.head`` on the current chain, oldest first; ``None`` when the
    chain no longer passes through it (rewind, fork) or the read would be long."""
    k = depth - seen.depth
    if k <= 0 or k > _MAX_STEP or head is None:
        return None
    out: list[StoredEvent] = []
    eid: int | None = head
    for _ in range(k):
        if eid is None:
            return None
        se = session.store.event(eid)
        out.append(se)
        eid = se.parent_id
    return out[::-1] if eid == seen.head else None
