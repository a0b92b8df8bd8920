"""Full history ("dump") and the recent window.

Both keep the pinned prefix and a suffix of the history. The window drops the oldest
messages after the pinned prefix once the history passes the budget's trigger, cutting
only where every invariant allows and only on the boundary grid, so its prefix stays
byte-identical between compactions. Dump sends everything and is honest when it cannot:
``ContextOverflowError(needed, available)``, or (``on_overflow = "truncate"``) the same
safe cut as the window.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Sequence
from itertools import chain
from typing import ClassVar, Literal

from pydantic import Field

from ctxmem.context._assembly import (
    CompactionRecorder,
    Output,
    PinnedCache,
    PrefixTracker,
    finish,
    grid_step,
    snap_up,
)
from ctxmem.context.base import BuildRequest, BuiltContext, StrategyConfig
from ctxmem.context.history import History
from ctxmem.context.invariants import SafeCuts
from ctxmem.context.memory import Carry, split_sections
from ctxmem.errors import ContextOverflowError


class _CutsCache:
    def __init__(self) -> None:
        self._cuts: dict[tuple[int, int], SafeCuts] = {}

    def get(self, history: History, pinned: int) -> SafeCuts:
        key = (history.uid, pinned)
        cuts = self._cuts.get(key)
        if cuts is None or cuts.history is not history:
            if len(self._cuts) > 8:
                self._cuts.clear()
            cuts = self._cuts[key] = SafeCuts(history, pinned)
        return cuts


def suffix_start(
    request: BuildRequest,
    cuts: SafeCuts,
    base: int,
    limit: int,
    step_fraction: float,
    strategy: str,
    cum: Sequence[int] | None = None,
) -> int:
    """Where the kept suffix starts so that ``base + suffix ≤ limit``, on the grid, at a safe cut.

    ``cum`` gives the token position of each history index in the *output* (default: the
    history's own prefix sums); strategies that shrink messages before cutting (masking)
    pass theirs. The grid is always the history's, so it does not move when they do.
    """
    h = request.history
    p = request.pinned_count
    n = len(h)
    cum = h.cum if cum is None else cum
    room = limit - base

    def tail(c: int) -> int:
        return cum[n] - cum[c]

    if tail(p) <= room:
        return p
    s_min = min(n, bisect_left(cum, cum[n] - room, lo=p))
    available = request.budget.available

    def fits(c: int | None) -> bool:
        return c is not None and base + tail(c) <= available

    # On the grid first (prefix stability), then the first safe cut after the minimum,
    # then the last one before it (over the soft trigger but within the hard limit),
    # then no cut at all if the whole history is within the hard limit.
    for candidate in (
        cuts.at_or_after(snap_up(h, s_min, grid_step(request, step_fraction))),
        cuts.at_or_after(s_min),
        cuts.at_or_before(s_min),
    ):
        if fits(candidate):
            assert candidate is not None
            return candidate
    if base + tail(p) <= available:
        return p
    options = [c for c in (cuts.at_or_after(s_min), cuts.at_or_before(s_min)) if c is not None]
    needed = base + min((tail(c) for c in options), default=tail(p))
    raise ContextOverflowError(
        needed,
        available,
        hint=(
            f"{strategy}: no safe cut point fits (the last assistant turn and its tool loop must stay whole, "
            "and the pinned prefix is kept verbatim). Raise the budget, pin less, or mask tool outputs."
        ),
    )


class _Suffix(ABC):
    """Shared by Dump and Window: the pinned prefix plus the history from a cut point."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._tracker = PrefixTracker()
        self._pinned = PinnedCache()
        self._cuts = _CutsCache()
        self._recorder = CompactionRecorder()
        self._carry = Carry()
        self._pinned_carry = PinnedCache()
        self._recorded_at: tuple[str, int, int, int] | None = None  # (session, history uid, p, s) last recorded

    @abstractmethod
    def _limit(self, request: BuildRequest, base: int, needed: int) -> int | None:
        """The token limit to cut to, or None to keep everything after the pinned prefix."""

    @abstractmethod
    def _step(self) -> float:
        """The boundary grid as a fraction of the budget."""

    def build(self, request: BuildRequest) -> BuiltContext:
        h = request.history
        request.check_end()
        p = request.pinned_count
        n = len(h)
        fixed = request.fixed_tokens
        pinned_msgs, pinned_counts = self._pinned.get(request, request.pinned_facts)
        base = fixed + sum(pinned_counts)
        if base > request.budget.available:
            raise ContextOverflowError(base, request.budget.available, hint="the pinned content alone exceeds the budget.")
        def cut(extra: int) -> tuple[int, int]:
            limit = self._limit(request, base + extra, base + extra + h.tokens(p, n))
            at = p if limit is None else suffix_start(request, self._cuts.get(h, p), base + extra, limit, self._step(), self.name)
            return at, at

        # Instructions of dropped user messages are carried (ctxmem.context.memory), held back first.
        settled = self._carry.settle(request, cut)
        s = cut(settled.extra)[0]
        carried = self._carry.carried(request, settled)
        if carried.texts:
            pinned_msgs, pinned_counts = self._pinned_carry.get(request, (*request.pinned_facts, *carried.texts))
        out = Output()
        out.add("pinned", pinned_msgs, pinned_counts)
        split_sections(out.sections, carried)
        out.add("recent", h.messages[s:], h.counts[s:], h.tokens(s, n))
        built = finish(
            self.name,
            request,
            out,
            self._tracker,
            tokens_in=fixed + h.total,
            kept=range(s, n),
            dropped=range(p, s),
            breakpoints=(p - 1, len(out.messages) - 1),
            notes=((f"dropped {s - p} oldest messages at a safe cut", *carried.notes()) if s > p else ()),
        )
        if s > p and request.session is not None and request.record:
            # The dropped ids are the whole history before the cut: gather them only when the
            # cut moved (the recorder would find the same ids and record nothing), so a turn
            # that keeps its boundary costs nothing here however long the session is.
            at = (request.session.id, h.uid, p, s)
            if at != self._recorded_at:
                ids = list(chain.from_iterable(h.event_ids[p:s]))  # C-level, no Python step per id
                self._recorder.record(self.name, request, built, ids, f"dropped messages {p}-{s - 1} at a safe cut")
                self._recorded_at = at
        return built


class DumpConfig(StrategyConfig):
    on_overflow: Literal["raise", "truncate"] = Field(
        "raise", description="Over budget: raise ContextOverflowError, or truncate at a safe cut point."
    )
    compaction_step: float = Field(
        0.1, gt=0, le=1, description="Boundary grid (fraction of the budget) used when truncating."
    )


class Dump(_Suffix):
    """The full history, verbatim."""

    name: ClassVar[str] = "dump"
    Config = DumpConfig

    def __init__(self, config: DumpConfig | None = None, **params: object):
        super().__init__()
        self.config = config or DumpConfig(**params)  # type: ignore[arg-type]

    def _step(self) -> float:
        return self.config.compaction_step

    def _limit(self, request: BuildRequest, base: int, needed: int) -> int | None:
        if needed <= request.budget.available:
            return None
        if self.config.on_overflow == "raise":
            raise ContextOverflowError(needed, request.budget.available)
        return request.budget.trigger


class WindowConfig(StrategyConfig):
    keep_tokens: int | None = Field(
        None, ge=1, description="Recent-history tokens to keep at most (default: all the budget's trigger allows)."
    )
    compaction_step: float = Field(
        0.1, gt=0, le=1, description="Boundary grid as a fraction of the budget: larger means fewer, bigger cuts."
    )


class Window(_Suffix):
    """The pinned prefix plus the most recent messages that fit."""

    name: ClassVar[str] = "window"
    Config = WindowConfig

    def __init__(self, config: WindowConfig | None = None, **params: object):
        super().__init__()
        self.config = config or WindowConfig(**params)  # type: ignore[arg-type]

    def _step(self) -> float:
        return self.config.compaction_step

    def _limit(self, request: BuildRequest, base: int, needed: int) -> int | None:
        limit = request.budget.trigger
        if self.config.keep_tokens is not None:
            limit = min(limit, base + self.config.keep_tokens)
        return limit
