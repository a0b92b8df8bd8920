"""Invariants: small objects that say where a context may be cut.

A strategy that drops history keeps a pinned prefix ``messages[:pinned]`` and a suffix
``messages[s:]`` (with summaries or retrieved text merged into the last pinned message in
between). ``s`` is a *cut point*. Each invariant decides which cut points it allows;
strategies cut only where all of them agree (:class:`SafeCuts`).

* :class:`ToolPairing` — the suffix may not start with a message holding ``tool_result``
  blocks: their ``tool_use`` would be gone (an orphan result). A suffix that starts at an
  assistant message keeps each of its calls with its results, parallel batches included,
  because results live in the very next message.
* :class:`Alternation` — the first kept message must not repeat the role of the message
  before it (the last pinned one), and with nothing pinned it must be a user message.
* :class:`PinnedPrefix` — never cut into the pinned prefix (system task, user rules).
* :class:`ThinkingWithToolLoop` — when the last assistant message carries thinking
  blocks, it must reach the provider intact together with its tool loop: the cut may not
  pass it. (Providers drop thinking of earlier turns themselves; only the last one must be
  passed back.)
* :class:`NoTrailingAssistant` — a request must end with a user message (tool results or
  text). This constrains the history's end, so it is checked, not cut around.

Static invariants decide each index from that message alone, so :class:`SafeCuts` extends
its sorted list of safe indices incrementally as the history grows; bounds that depend on
the end of the history are applied at query time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ctxmem.context.history import History
from ctxmem.errors import InvalidConversationError


class Invariant(Protocol):
    """One provider rule a cut must respect, as two questions a strategy asks about a cut
    point (see the module docstring for every rule and why it exists)."""

    name: str

    def allows(self, history: History, i: int, pinned: int) -> bool:
        """May the kept suffix start at message ``i``? Must depend only on messages[: i + 1]."""
        ...

    def bound(self, history: History, pinned: int) -> int | None:
        """An upper bound on cut points that depends on the history's end (None: no bound)."""
        ...


class ToolPairing:
    name = "tool_pairing"

    def allows(self, history: History, i: int, pinned: int) -> bool:
        if pinned and history.flags[pinned - 1].tool_uses:
            # The pinned prefix ends with tool calls: only their results may follow it.
            return i == pinned
        return not history.flags[i].tool_results

    def bound(self, history: History, pinned: int) -> int | None:
        return None


class Alternation:
    name = "alternation"

    def allows(self, history: History, i: int, pinned: int) -> bool:
        if pinned == 0:
            return history.flags[i].role == "user"
        return history.flags[i].role != history.flags[pinned - 1].role

    def bound(self, history: History, pinned: int) -> int | None:
        return None


class PinnedPrefix:
    name = "pinned_prefix"

    def allows(self, history: History, i: int, pinned: int) -> bool:
        return i >= pinned

    def bound(self, history: History, pinned: int) -> int | None:
        return None


class ThinkingWithToolLoop:
    name = "thinking_with_tool_loop"

    def allows(self, history: History, i: int, pinned: int) -> bool:
        return True

    def bound(self, history: History, pinned: int) -> int | None:
        for i in range(len(history) - 1, -1, -1):
            f = history.flags[i]
            if f.role == "assistant":
                return i if f.thinking else None
        return None


def check_last_turn_answers(history: History) -> None:
    """A last user turn that answers only some of the calls before it (a tool node that did
    not answer every call) cannot end a request: a provider refuses it. O(1)."""
    if len(history) >= 2 and history.flags[-1].role == "user" and history.flags[-2].tool_uses:
        answered = set(history.flags[-1].tool_results)
        missing = [u for u in history.flags[-2].tool_uses if u not in answered]
        if missing:
            raise InvalidConversationError(
                f"tool call{'s' if len(missing) > 1 else ''} {', '.join(missing)} of message {len(history) - 2} "
                f"{'have' if len(missing) > 1 else 'has'} no result in the last message: record "
                f"{'their results' if len(missing) > 1 else 'its result'} before building a context",
                field="messages",
            )


class NoTrailingAssistant:
    name = "no_trailing_assistant"

    def allows(self, history: History, i: int, pinned: int) -> bool:
        return True

    def bound(self, history: History, pinned: int) -> int | None:
        return None

    def check(self, history: History) -> None:
        check_last_turn_answers(history)
        if history.messages and history.flags[-1].role == "assistant":
            f = history.flags[-1]
            if f.tool_uses:
                raise InvalidConversationError(
                    f"the history ends with an assistant message (message {len(history) - 1}) whose tool calls "
                    f"have no results ({', '.join(f.tool_uses)}): record the tool results before building a context",
                    field="messages",
                )
            raise InvalidConversationError(
                f"the history ends with the model's answer (message {len(history) - 1}): record the next user "
                "message, or build with expect_input=True for the context that message will follow",
                field="messages",
            )


DEFAULT_INVARIANTS: tuple[Invariant, ...] = (
    PinnedPrefix(),
    ToolPairing(),
    Alternation(),
    ThinkingWithToolLoop(),
    NoTrailingAssistant(),
)


@dataclass
class SafeCuts:
    """The cut points every invariant allows, kept sorted and extended incrementally."""

    history: History
    pinned: int
    invariants: Sequence[Invariant] = DEFAULT_INVARIANTS
    _safe: list[int] = field(default_factory=list)
    _seen: int = 0

    def _refresh(self) -> None:
        h = self.history
        n = len(h)
        for i in range(self._seen, n):
            if all(inv.allows(h, i, self.pinned) for inv in self.invariants):
                self._safe.append(i)
        self._seen = n

    def _upper(self) -> int:
        """Largest allowed cut point: n (keep nothing after the pinned prefix), or an invariant's bound."""
        upper = len(self.history)
        for inv in self.invariants:
            b = inv.bound(self.history, self.pinned)
            if b is not None:
                upper = min(upper, b)
        return upper

    def _end_ok(self) -> bool:
        """May everything after the pinned prefix be dropped? Only if the prefix itself
        is a valid request: non-empty and ending with a user message."""
        p = self.pinned
        return 0 < p <= len(self.history) and self.history.flags[p - 1].role == "user" and self._upper() == len(
            self.history
        )

    def points(self) -> list[int]:
        """Every safe cut point (message index the kept suffix may start at), ascending,
        up to the bound the history's end allows; computed incrementally."""
        self._refresh()
        upper = self._upper()
        pts = self._safe[: bisect_right(self._safe, upper)]
        if self._end_ok():
            pts = [*pts, len(self.history)]  # dropping everything after the pinned prefix
        return pts

    def at_or_after(self, x: int) -> int | None:
        """The smallest safe cut point ≥ x (None if there is none)."""
        self._refresh()
        upper = self._upper()
        k = bisect_left(self._safe, max(x, self.pinned))
        if k < len(self._safe) and self._safe[k] <= upper:
            return self._safe[k]
        n = len(self.history)
        if x <= n and self._end_ok():
            return n
        return None

    def at_or_before(self, x: int) -> int | None:
        """The largest safe cut point ≤ x (None if there is none)."""
        self._refresh()
        x = min(x, self._upper())
        if x == len(self.history) and self._end_ok():
            return x
        k = bisect_right(self._safe, x)
        return self._safe[k - 1] if k else None


def check_output(messages: Sequence[object]) -> None:
    """Validate a built context the way a provider would (used by tests and debug mode)."""
    from ctxmem.messages import Message, validate_conversation

    msgs = [m for m in messages if isinstance(m, Message)]
    validate_conversation(msgs)
    if msgs and msgs[-1].role != "user":
        raise InvalidConversationError("a context must end with a user message", line=len(msgs))
