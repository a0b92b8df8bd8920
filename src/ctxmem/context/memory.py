"""What a compacting strategy carries for what it leaves out: standing instructions and facts.

:class:`Carry` is the one object the strategies share for this (window and dump carry
instructions; masking, summarization and the pipeline's core carry both). Given the
boundary of a build — messages before ``stop`` are dropped, masked or summarized — it
returns the texts to append to the pinned prefix:

1. the **standing instructions** of the user messages before ``stop``
   (:mod:`ctxmem.context.instructions`), whole whenever they fit; and
2. the **facts** section: the most salient lines of the tool outputs before ``stop``
   (:mod:`ctxmem.context.salience`) within ``facts_tokens`` (at most ``facts_fraction`` of
   the available budget).

Both depend only on the boundary, so between compactions they are byte-identical and the
pinned prefix keeps its prompt cache. Strategies reserve their cost before choosing the
boundary with :meth:`Carry.settle`: a boundary that moves further drops more user
messages, so the reservation is re-checked until it stops growing (user messages are
few, so this converges in one or two rounds).

When the sections do not fit next to the content a strategy must keep, they degrade in
steps rather than all at once: the facts go first, then the instructions section is
capped at a shrinking share of the budget (:data:`INSTRUCTION_CAPS`; the lowest-ranked
instructions are left out, see :meth:`InstructionIndex.section`), and only when even the
smallest cap fails is nothing carried. Every step down is a report note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctxmem.context.base import BuildRequest
from ctxmem.context.derived import PrefixSnapshots
from ctxmem.context.instructions import InstructionIndex, InstructionSection
from ctxmem.context.profile import FactProfile, get_profile
from ctxmem.context.salience import SalienceIndex, SalientFact
from ctxmem.store.codec import gc_paused
from ctxmem.tokens.counting import DEFAULT_OVERHEAD

#: shares of the available budget the instructions section is capped at, in turn, when the
#: whole section does not fit (a share of the budget, not of the section: the cap and so
#: the section stay the same from turn to turn while the boundary holds)
INSTRUCTION_CAPS = (0.25, 0.1, 0.04, 0.01)


@dataclass(frozen=True)
class Carried:
    """The carried sections of one build."""

    texts: tuple[str, ...] = ()
    instructions_tokens: int = 0
    instructions: int = 0
    facts_tokens: int = 0
    facts: tuple[SalientFact, ...] = ()
    #: what the budget could not hold ("" when everything was carried)
    dropped: str = ""
    #: instructions carried by a later instance of their template (a repeated status line)
    instructions_merged: int = 0
    #: instructions left out to fit the budget (the lowest ranked)
    instructions_omitted: int = 0

    @property
    def tokens(self) -> int:
        return self.instructions_tokens + self.facts_tokens

    def notes(self) -> list[str]:
        out = []
        if self.instructions:
            out.append(f"carried {self.instructions} standing user instructions ({self.instructions_tokens} tokens)")
        if self.instructions_merged:
            out.append(
                f"merged {self.instructions_merged} earlier instances of repeated status-like user messages into their latest"
            )
        if self.instructions_omitted:
            out.append(
                f"the budget cannot hold the standing instructions of the left-out messages in full: left out "
                f"{self.instructions_omitted} of {self.instructions_omitted + self.instructions} "
                "(lowest ranked: without an instruction cue, then the oldest)"
            )
        if self.facts:
            out.append(f"kept {len(self.facts)} salient facts from left-out tool outputs ({self.facts_tokens} tokens)")
        if self.dropped:
            out.append(f"the budget cannot hold the {self.dropped} of the left-out messages next to the content that must stay")
        return out


class Carry:
    """Standing instructions and salient facts for a strategy's left-out span."""

    def __init__(
        self,
        *,
        instructions: bool = True,
        facts_tokens: int = 0,
        facts_fraction: float = 0.1,
        profile: FactProfile | str | None = None,
    ):
        self.instructions = instructions
        self.facts_tokens = facts_tokens
        self.facts_fraction = facts_fraction
        self.profile = get_profile(profile)
        self._instr: dict[int, InstructionIndex] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._salience: dict[int, SalienceIndex] = {}
        #: snapshots of the facts index (a cache in the session's store)
        self._snapshots = PrefixSnapshots(SalienceIndex(self.profile).state_kind())

    @property
    def enabled(self) -> bool:
        return self.instructions or self.facts_tokens > 0

    def _count(self, request: BuildRequest, text: str) -> int:
        # the sections repeat turn after turn until the boundary moves: count each text once
        key = (request.tokenizer.id, text)
        n = self._counts.get(key)
        if n is None:
            if len(self._counts) > 64:
                self._counts.clear()
            n = self._counts[key] = request.tokenizer.count(text)
        return n

    def facts_cap(self, request: BuildRequest) -> int:
        if self.facts_tokens <= 0:
            return 0
        return max(0, min(self.facts_tokens, int(request.budget.available * self.facts_fraction)))

    def _index(self, request: BuildRequest) -> tuple[InstructionIndex | None, SalienceIndex | None]:
        h = request.history
        ii = si = None
        if self.instructions:
            ii = self._instr.get(h.uid)
            if ii is None:
                if len(self._instr) > 8:
                    self._instr.clear()
                ii = self._instr[h.uid] = InstructionIndex()
            ii.update(h)
        if self.facts_tokens > 0:
            si = self._salience.get(h.uid)
            if si is None:
                if len(self._salience) > 8:
                    self._salience.clear()
                    self._snapshots.clear()
                si = self._salience[h.uid] = self._restore(request) or SalienceIndex(self.profile)
            si.update(h)
        return ii, si

    def read_ahead(self, request: BuildRequest, stop: int) -> None:
        """Let the facts index read the history up to ``stop`` now (see
        :meth:`SalienceIndex.read_ahead`); nothing when it was not asked for yet."""
        si = self._salience.get(request.history.uid) if self.facts_tokens > 0 else None
        if si is not None:
            si.read_ahead(stop)

    # -- snapshots of the facts index (a cache in the session's store) --------------------

    def _restore(self, request: BuildRequest) -> SalienceIndex | None:
        """The facts index as a previous process left it for this session, when it covers a
        prefix of this history: only the messages appended since are read (a cold read of a
        1M-token session costs ~1 s). Anything that does not fit (another chain, a rewind, an
        older layout, a damaged row) is ignored and the history is read from the start."""

        def rebuild(n: int, state: Any) -> SalienceIndex:
            with gc_paused():  # tens of thousands of acyclic candidates (see derived.unpack)
                return SalienceIndex.from_state(state, request.history, self.profile)

        return self._snapshots.restore(request, rebuild)

    def _save(self, request: BuildRequest, si: SalienceIndex) -> None:
        """Save the facts index when it has read many messages since it was last saved or
        restored (:func:`~ctxmem.context.derived.snapshot_due`: O(1) amortized per message)."""
        self._snapshots.save_if_due(request, si._seen, si.to_state)

    def _section(self, request: BuildRequest, stop: int, cap: int | None) -> InstructionSection:
        ii, _ = self._index(request)
        p = request.pinned_count
        if ii is None or stop <= p:
            return InstructionSection()
        return ii.section(p, stop, request.tokenizer, cap)

    def instructions_cost(self, request: BuildRequest, stop: int, cap: int | None = None) -> int:
        """Tokens of the instructions section for messages[pinned:stop] (0 when none),
        capped at ``cap`` tokens when given."""
        sec = self._section(request, stop, cap)
        return self._count(request, sec.text) + DEFAULT_OVERHEAD.per_block if sec.count else 0

    def reserve(
        self, request: BuildRequest, instr_stop: int, facts_stop: int, *, facts: bool = True, cap: int | None = None
    ) -> int:
        """What to hold back for the carried sections at these boundaries (facts at their
        cap, instructions at ``cap`` tokens when given)."""
        if request.pinned_count == 0:
            return 0
        fcap = self.facts_cap(request) + DEFAULT_OVERHEAD.per_block if facts and self.facts_tokens > 0 else 0
        return self.instructions_cost(request, instr_stop, cap) + (fcap if facts_stop > request.pinned_count else 0)

    def settle(self, request: BuildRequest, plan: Callable[[int], tuple[int, int]]) -> Settled:
        """Run ``plan(extra) -> (instr_stop, facts_stop)`` until the reservation covers its
        own boundaries.

        When the carried sections cannot fit next to the content a strategy must keep (the
        pinned prefix and the last tool loop), the facts go first, then the instructions
        are capped at shrinking shares of the budget (:data:`INSTRUCTION_CAPS`), then
        nothing is carried, and the result says so (a report note, never a silent loss):
        the strategy still builds whenever its minimal request fits.
        """
        from ctxmem.errors import ContextOverflowError

        stops = plan(0)
        if not self.enabled or request.pinned_count == 0:
            return Settled(*stops, 0, "none")
        levels: list[tuple[str, bool, int | None]] = [("full", True, None), ("instructions", False, None)]
        if self.instructions:
            avail = request.budget.available
            levels += [("partial", False, int(avail * share)) for share in INSTRUCTION_CAPS]
        for level, facts, cap in levels:
            extra = 0
            at = stops
            try:
                for _ in range(6):
                    need = self.reserve(request, *at, facts=facts, cap=cap)
                    if need <= extra:
                        break
                    extra = need
                    at = plan(extra)
                return Settled(*at, extra, level, cap)
            except ContextOverflowError:
                continue
        return Settled(*stops, 0, "none")

    def carried(self, request: BuildRequest, settled: Settled) -> Carried:
        """The sections for a settled build (nothing without a pinned prefix to hold them)."""
        p = request.pinned_count
        instr_stop, facts_stop = settled.instr_stop, settled.facts_stop
        if p == 0 or not self.enabled:
            return Carried()
        if settled.level == "none":
            lost = self.instructions_cost(request, instr_stop) if self.instructions else 0
            return Carried(dropped="standing instructions and facts" if lost else "")
        ii, si = self._index(request)
        tok = request.tokenizer
        texts: list[str] = []
        itok = ftok = 0
        sec = InstructionSection()
        facts: tuple[SalientFact, ...] = ()
        if ii is not None and instr_stop > p:
            sec = ii.section(p, instr_stop, tok, settled.instr_cap)
            if sec.text:
                texts.append(sec.text)
                itok = self._count(request, sec.text) + DEFAULT_OVERHEAD.per_block
        if si is not None and facts_stop > p and settled.level == "full":
            text, facts = si.section(p, facts_stop, tok, self.facts_cap(request))
            self._save(request, si)
            if text:
                texts.append(text)
                ftok = self._count(request, text) + DEFAULT_OVERHEAD.per_block
        dropped = "facts" if settled.level != "full" and self.facts_tokens > 0 and facts_stop > p else ""
        return Carried(tuple(texts), itok, sec.count, ftok, facts, dropped, sec.merged, sec.omitted)


@dataclass(frozen=True)
class Settled:
    """Boundaries chosen with the carried sections held back, and what could be carried."""

    instr_stop: int
    facts_stop: int
    extra: int
    #: "full" (instructions and facts), "instructions" (no room for facts), "partial" (no
    #: facts, the instructions capped at ``instr_cap`` tokens), "none"
    level: str
    instr_cap: int | None = None


def split_sections(sections: dict[str, int], carried: Carried, into: str = "pinned") -> None:
    """Move the carried sections' tokens out of ``into`` into their own report sections."""
    if carried.instructions_tokens:
        sections[into] -= carried.instructions_tokens
        sections["instructions"] = carried.instructions_tokens
    if carried.facts_tokens:
        sections[into] -= carried.facts_tokens
        sections["facts"] = carried.facts_tokens


__all__ = ["INSTRUCTION_CAPS", "Carried", "Carry", "Settled", "split_sections"]
