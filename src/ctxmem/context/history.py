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
    Message,
    RedactedThinkingBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ctxmem.store.codec import gc_paused_over
from ctxmem.tokens import Tokenizer, count_messages, get_tokenizer, tokenizer_id

if TYPE_CHECKING:
    from ctxmem.session import Session


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
        from ctxmem.events import message_spans

        view = session.chain(tokenizers=[tokenizer])
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
