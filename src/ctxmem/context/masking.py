"""Observation masking: old tool outputs become short placeholders with a recall handle.

Tool outputs are most of an agent's context and most of them matter only for a few
turns. Masking replaces the output of older tool calls with a placeholder that names the
tool, its size, an optional reduced gist (:mod:`ctxmem.context.reducers`) and a stable
**handle**: the tool call's id. With ``reversible = true`` the build also offers a
``recall`` tool (:class:`RecallTool`) that returns the exact original, a line range of
it, or the lines matching a pattern. Nothing is lost: the history is untouched.

Every call and result pair stays intact (only the result's text changes), so masking
never breaks provider validity. The last ``keep_last`` tool-result messages are never
masked, unless they alone exceed the budget (the agent just read a log bigger than the
window): then they are masked too, so the calls stay in the context with a gist and a
handle instead of being dropped with everything before them.

Modes:

* ``tokens`` — mask oldest-first only as far as needed to get under the budget's
  trigger. The masking boundary sits on the boundary grid, so consecutive requests keep a
  byte-identical prefix until the next compaction.
* ``turns`` — mask every output older than the last ``keep_last`` (snapped down to the
  grid), whatever the budget: the SWE-agent style, cheapest per turn.

Per-tool policies override the default: ``never`` (e.g. a ``read_file`` the agent edits
from), ``always`` (noisy logs), and a per-tool reducer. If masking everything allowed
still does not fit, ``on_overflow = "truncate"`` also drops the oldest messages at a safe
cut; ``"raise"`` raises :class:`~ctxmem.errors.ContextOverflowError`.

**What is carried** (:mod:`ctxmem.context.memory`): the instructions of user messages a
truncation dropped, in a standing-instructions section, and — with ``facts_tokens`` — a
facts section holding the most salient lines of the masked and dropped outputs
(:mod:`ctxmem.context.salience`), each with its event id and recall handle. Both sit on
the pinned prefix and change only when the boundaries move; their tokens are held back
before the boundaries are chosen.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, ClassVar, Literal, overload

from pydantic import Field, field_validator

from ctxmem.context._assembly import (
    ColdPasses,
    CompactionRecorder,
    Output,
    PinnedCache,
    PrefixTracker,
    finish,
    grid_step,
    snap_down,
    snap_up,
)
from ctxmem.context.base import BuildRequest, BuiltContext, StrategyConfig, _cached_count
from ctxmem.context.builtins import _CutsCache, suffix_start
from ctxmem.context.history import History
from ctxmem.context.memory import Carry, split_sections
from ctxmem.context.profile import FactProfile
from ctxmem.context.reducers import REDUCERS, Reducer, get_reducer
from ctxmem.errors import ContextOverflowError, InputError, UnknownNameError
from ctxmem.messages import ContentBlock, Message, ToolResultBlock, ToolSpec, tool_to_anthropic
from ctxmem.tokens import count_messages, count_tools


def _reducer_name(v: str | None) -> str | None:
    """A registered reducer's name, or a ValueError with "did you mean" (pydantic then names
    the field it was given in: ``params.tools.compile.reducer``, and a preset its line)."""
    if v is not None and v not in REDUCERS:
        try:
            REDUCERS.get(v)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
    return v


class ToolPolicy(StrategyConfig):
    mask: Literal["auto", "never", "always"] = Field(
        "auto", description="auto: mask when the budget needs it; never: keep verbatim; always: mask once old."
    )
    reducer: str | None = Field(None, description="Reducer for this tool's placeholder (first_error, summary_line…).")

    @field_validator("reducer")
    @classmethod
    def _known_reducer(cls, v: str | None) -> str | None:
        return _reducer_name(v)


class MaskingConfig(StrategyConfig):
    mode: Literal["tokens", "turns"] = Field("tokens", description="Mask as needed for the budget, or by age.")
    keep_last: int = Field(
        3, ge=0, le=10_000, description="Most recent tool-result messages never masked (unless they alone overflow)."
    )
    min_tokens: int = Field(
        48, ge=0, description="Messages with fewer tokens than this are not worth masking."
    )
    reversible: bool = Field(True, description="Offer the recall tool that returns masked originals.")
    reducer: str | None = Field(None, description="Default reducer for placeholders (None: handle only).")
    tools: dict[str, ToolPolicy] = Field(default_factory=dict, description="Per-tool policies by tool name.")
    on_overflow: Literal["raise", "truncate"] = Field(
        "truncate", description="If masking is not enough: drop the oldest messages, or raise."
    )
    compaction_step: float = Field(0.1, gt=0, le=1, description="Boundary grid as a fraction of the budget.")
    carry_instructions: bool = Field(
        True, description="Carry the instructions of dropped user messages in a standing-instructions section."
    )
    facts_tokens: int = Field(
        0, ge=0, le=200_000, description="Cap of the facts section (salient lines of masked outputs); 0: none."
    )
    facts_fraction: float = Field(0.1, gt=0, le=0.5, description="The facts section's cap as a fraction of the budget.")
    fact_profile: str = Field("generic", description="Fact profile (ctxmem.fact_profiles entry point) for salience.")

    @field_validator("reducer")
    @classmethod
    def _known_reducer(cls, v: str | None) -> str | None:
        return _reducer_name(v)


# ----------------------------------------------------------------------------- recall


RECALL_TOOL = ToolSpec(
    name="recall",
    description=(
        "Return the original output of an earlier tool call whose output was masked in the context. "
        "Give the handle shown in the placeholder; optionally a line range like '10-40' or a regular "
        "expression to return only matching lines."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "handle": {"type": "string", "description": "The handle from the masked placeholder."},
            "lines": {"type": "string", "pattern": r"^\d+-\d+$", "description": "1-based inclusive range, e.g. '10-40'."},
            "grep": {"type": "string", "description": "Regular expression; only matching lines are returned."},
            "max_chars": {"type": "integer", "minimum": 100, "maximum": 200000, "description": "Cap on the reply size."},
        },
        "required": ["handle"],
        "additionalProperties": False,
    },
)


def recall_tool_cost(request: BuildRequest) -> int:
    """Tokens of :data:`RECALL_TOOL`'s definition for a strategy that offers it with this
    request (0 when the caller offers a recall tool already), counted once per tokenizer."""
    if any(t.name == RECALL_TOOL.name for t in request.tools):
        return 0
    tok = request.tokenizer
    return _cached_count(
        tok, ("recall-tool", RECALL_TOOL.name), lambda: count_tools([tool_to_anthropic(RECALL_TOOL)], tok).total
    )


@dataclass
class RecallTool:
    """Runs ``recall``: the exact original output of a masked tool call, from the history
    or, for outputs no longer in memory, from the session store."""

    history: History | None = None
    session: Any = None
    spec: ToolSpec = field(default=RECALL_TOOL)

    def original(self, handle: str) -> str:
        if self.history is not None:
            found = self.history.tool_result(handle)
            if found is not None:
                return found[1].text
        if self.session is not None:
            from ctxmem.events import ToolResultEvent

            for se in reversed(self.session.events()):
                ev = se.event
                if isinstance(ev, ToolResultEvent) and ev.result.tool_use_id == handle:
                    return ev.result.text
        raise InputError(f"no tool output with handle {handle!r}; use a handle shown in a placeholder", field="handle")

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        handle = arguments.get("handle")
        if not isinstance(handle, str) or not handle:
            raise InputError("recall needs a 'handle' string", field="handle")
        text = self.original(handle)
        lines = text.splitlines()
        if arguments.get("lines"):
            m = re.fullmatch(r"(\d+)-(\d+)", str(arguments["lines"]))
            if not m or int(m.group(1)) < 1 or int(m.group(2)) < int(m.group(1)):
                raise InputError("'lines' must look like '10-40' (1-based, start ≤ end)", field="lines")
            a, b = int(m.group(1)), int(m.group(2))
            text = "\n".join(f"{i}: {ln}" for i, ln in enumerate(lines[a - 1 : b], start=a))
        if arguments.get("grep"):
            try:
                pat = re.compile(str(arguments["grep"]))
            except re.error as exc:
                raise InputError(f"'grep' is not a valid regular expression: {exc}", field="grep") from None
            src = text.splitlines() if arguments.get("lines") else [f"{i}: {ln}" for i, ln in enumerate(lines, 1)]
            text = "\n".join(ln for ln in src if pat.search(ln)) or "(no matching lines)"
        raw = arguments.get("max_chars")
        cap = 50_000 if raw is None else _whole_number(raw)
        if cap is None or not 100 <= cap <= 200_000:  # 0 or -1 was read as "no cap"
            raise InputError(f"'max_chars' must be a whole number from 100 to 200000, got {raw!r}", field="max_chars")
        if len(text) > cap:
            text = text[:cap] + f"\n… [{len(text) - cap} more characters; narrow with 'lines' or 'grep']"
        return text


def _whole_number(v: Any) -> int | None:
    """A model's number as an int (``500``, ``500.0``, ``"500"``); None when it is not one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return None


# ----------------------------------------------------------------------------- masking


class _Spliced(Sequence[int]):
    """Output positions for a cut: ``head[i]`` up to ``b`` (masked sizes), then ``tail[i]``
    shifted to continue from ``head[b]`` (full sizes). A view, read by index and bisection:
    building it as a list copied the whole history's prefix sums twice a turn (O(n))."""

    __slots__ = ("_b", "_head", "_shift", "_tail")

    def __init__(self, head: Sequence[int], tail: Sequence[int], b: int):
        self._head, self._tail, self._b = head, tail, b
        self._shift = head[b] - tail[b]

    def __len__(self) -> int:
        return len(self._tail)

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> list[int]: ...

    def __getitem__(self, i: int | slice) -> int | list[int]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self._tail)
        if i <= self._b:
            return self._head[i]
        return self._tail[i] + self._shift


@dataclass
class _MaskState:
    """Per-history cache: masked versions and savings of every maskable message."""

    history: History
    seen: int = 0
    masked: list[Message | None] = field(default_factory=list)
    masked_counts: list[int] = field(default_factory=list)
    always: list[bool] = field(default_factory=list)
    auto_cum: list[int] = field(default_factory=lambda: [0])  # prefix sums of auto savings
    always_cum: list[int] = field(default_factory=lambda: [0])  # prefix sums of always-masked savings
    #: prefix sums of every message at its smallest (masked where maskable): only grows as the
    #: history grows, so a truncation point computed on it moves forward, never back
    min_cum: list[int] = field(default_factory=lambda: [0])
    result_msgs: list[int] = field(default_factory=list)  # indices of tool-result messages
    region_key: tuple[int, int] | None = None
    region_msgs: list[Message] = field(default_factory=list)
    region_counts: list[int] = field(default_factory=list)
    region_masked: list[int] = field(default_factory=list)
    region_upto: int = 0
    region_total: int = 0  # sum(region_counts)


class Masking:
    """Replace older tool outputs by placeholders with recall handles."""

    name: ClassVar[str] = "masking"
    Config = MaskingConfig

    def __init__(self, config: MaskingConfig | None = None, *, fact_profile: FactProfile | None = None, **params: object):
        self.config = config or MaskingConfig(**params)  # type: ignore[arg-type]
        self._states: dict[int, _MaskState] = {}
        self._tracker = PrefixTracker()
        self._cold = ColdPasses()
        self._pinned = PinnedCache()
        self._pinned_carry = PinnedCache()  # with the carried sections (a second key: no thrashing)
        self._cuts = _CutsCache()
        self._recorder = CompactionRecorder()
        self._recorded_at: tuple[str, int, int, int, int] | None = None  # last recorded boundary
        self._recorded_behind: object = ()
        self._auto_policy: tuple[MaskingConfig, ToolPolicy] | None = None
        self._reducers: dict[str, Reducer] = {}  # reducers by name, looked up once
        cfg = self.config
        self._carry = Carry(
            instructions=cfg.carry_instructions,
            facts_tokens=cfg.facts_tokens,
            facts_fraction=cfg.facts_fraction,
            profile=fact_profile if fact_profile is not None else cfg.fact_profile,
        )

    # -- placeholders -----------------------------------------------------------------

    def _policy(self, tool: str | None) -> ToolPolicy:
        cfg = self.config
        got = cfg.tools.get(tool or "")
        if got is not None:
            return got
        # the policy of every tool the config does not name: made once per config (a pydantic
        # model is ~1.5 µs to build, twice per masked output: a whole history's at a cold build)
        auto = self._auto_policy
        if auto is None or auto[0] is not cfg:
            auto = self._auto_policy = (cfg, ToolPolicy(mask="auto", reducer=cfg.reducer))
        return auto[1]

    def _reducer(self, name: str) -> Reducer:
        fn = self._reducers.get(name)
        if fn is None:
            fn = self._reducers[name] = get_reducer(name)
        return fn

    def placeholder(self, block: ToolResultBlock, tool: str | None, policy: ToolPolicy | None = None) -> str:
        """The masked form of ``block``'s output: its size, its handle and its reducer's gist
        (``policy``: the tool's, when the caller already looked it up)."""
        text = block.text
        if policy is None:
            policy = self._policy(tool)
        reducer = policy.reducer if policy.reducer is not None else self.config.reducer
        gist = self._reducer(reducer)(text) if reducer else ""
        n_lines = text.count("\n") + 1 if text else 0
        head = f"[masked {tool or 'tool'} output: {len(text)} chars, {n_lines} lines; "
        # a handle only where the recall tool that takes it is offered; otherwise the call's id
        if self.config.reversible:
            head += f"handle {block.tool_use_id} (recall it with the recall tool)"
        else:
            head += f"tool call {block.tool_use_id}"
        return head + ("]\n" + gist if gist else "]")

    def _state(self, h: History) -> _MaskState:
        st = self._states.get(h.uid)
        if st is None or st.history is not h:
            if len(self._states) > 8:
                self._states.clear()
            st = self._states[h.uid] = _MaskState(h)
        if st.seen < len(h):
            self._extend(st)
        return st

    def _extend(self, st: _MaskState) -> None:
        h = st.history
        new_masked: list[tuple[int, Message]] = []
        for i in range(st.seen, len(h)):
            f = h.flags[i]
            st.masked.append(None)
            st.masked_counts.append(h.counts[i])
            st.always.append(False)
            if not f.tool_results:
                continue
            st.result_msgs.append(i)
            if h.counts[i] < self.config.min_tokens:
                continue
            msg = h.messages[i]
            blocks: list[ContentBlock] = []
            changed = False
            always = False
            for b in msg.content:
                if isinstance(b, ToolResultBlock):
                    tool = h.tool_name(b.tool_use_id)
                    pol = self._policy(tool)
                    if pol.mask == "never":
                        blocks.append(b)
                        continue
                    always = always or pol.mask == "always"
                    blocks.append(ToolResultBlock(b.tool_use_id, self.placeholder(b, tool, pol), b.is_error))
                    changed = True
                else:
                    blocks.append(b)
            if changed:
                st.always[i] = always
                new_masked.append((i, Message(msg.role, tuple(blocks))))
        if new_masked:
            counts = count_messages([m for _, m in new_masked], h.tokenizer)
            for (i, m), c in zip(new_masked, counts, strict=True):
                if c.total < h.counts[i]:
                    st.masked[i] = m
                    st.masked_counts[i] = c.total
                else:
                    st.always[i] = False
        for i in range(st.seen, len(h)):
            saving = 0 if st.masked[i] is None else h.counts[i] - st.masked_counts[i]
            st.auto_cum.append(st.auto_cum[-1] + (0 if st.always[i] else saving))
            st.always_cum.append(st.always_cum[-1] + (saving if st.always[i] else 0))
            st.min_cum.append(st.min_cum[-1] + st.masked_counts[i])
        st.seen = len(h)

    # -- build ------------------------------------------------------------------------

    def _region(self, st: _MaskState, s: int, b: int, k: int) -> tuple[list[Message], list[int], list[int]]:
        """Output for history[s:k]: auto-masked before b, always-masked anywhere (cached, extended)."""
        h = st.history
        key = st.region_key
        if key is not None and key[1] == b and key[0] < s <= st.region_upto <= k:
            # the cut moved forward, the mask boundary did not: the region is a suffix of the
            # one kept (a slice in C, not a pass over the region in Python)
            cut = s - key[0]
            st.region_total -= sum(st.region_counts[:cut])
            del st.region_msgs[:cut], st.region_counts[:cut]
            del st.region_masked[: bisect_left(st.region_masked, s)]
            st.region_key = (s, b)
        if st.region_key != (s, b) or st.region_upto > k:
            st.region_key = (s, b)
            st.region_msgs, st.region_counts, st.region_masked = [], [], []
            st.region_upto = s
            st.region_total = 0
        added = 0
        for i in range(st.region_upto, k):
            m = st.masked[i]
            if m is not None and (i < b or st.always[i]):
                st.region_msgs.append(m)
                c = st.masked_counts[i]
                st.region_masked.append(i)
            else:
                st.region_msgs.append(h.messages[i])
                c = h.counts[i]
            st.region_counts.append(c)
            added += c
        st.region_total += added
        st.region_upto = k
        return st.region_msgs, st.region_counts, st.region_masked

    def build(self, request: BuildRequest) -> BuiltContext:
        with self._cold.over(request):
            return self._build(request)

    def _build(self, request: BuildRequest) -> BuiltContext:
        h = request.history
        request.check_end()
        cfg = self.config
        st = self._state(h)
        p = request.pinned_count
        n = len(h)
        fixed = request.fixed_tokens
        pinned_msgs, pinned_counts = self._pinned.get(request, request.pinned_facts)
        recall_cost = self._recall_cost(request)
        base = fixed + recall_cost + sum(pinned_counts)
        if base > request.budget.available:
            raise ContextOverflowError(base, request.budget.available, hint="the pinned content alone exceeds the budget.")
        # k: first index of the protected tail (the last keep_last tool-result messages).
        results_after_p = st.result_msgs[bisect_left(st.result_msgs, p) :]
        if not cfg.keep_last:
            k = n
        elif len(results_after_p) >= cfg.keep_last:
            k = max(p, results_after_p[-cfg.keep_last])
        else:
            k = p
        step = grid_step(request, cfg.compaction_step)
        # The masking boundary b lives on the grid too: it may not pass the protected tail
        # snapped down, so it moves only at grid points, not each time a result leaves
        # the last keep_last.
        k_grid = max(p, snap_down(h, k, step))
        relaxed = k < n and base + h.cum[n] - h.cum[k] > request.budget.trigger
        if relaxed:
            # The protected outputs alone overflow (the agent just read a huge log): masking
            # them keeps the calls and a gist of what they returned, with a recall handle;
            # dropping them would leave the model to run the same tools again.
            k = k_grid = n
        always_saving = st.always_cum[k] - st.always_cum[p]  # prefix sums: O(1), not a pass over [p, k)
        trigger = request.budget.trigger

        def plan(extra: int) -> tuple[int, int, list[str]]:
            """(mask boundary b, truncation point s, notes) with ``extra`` tokens held back."""
            base_x = base + extra
            if cfg.mode == "turns":
                b = k_grid
            else:
                need = base_x + h.tokens(p, n) - always_saving - trigger
                if need <= 0:
                    b = p
                else:
                    b = min(k_grid, max(p, snap_up(h, min(n, bisect_left(st.auto_cum, st.auto_cum[p] + need)), step)))
            # Planned size from history index i on: masked sizes before b, full sizes after. An
            # upper bound of the output (always-masked outputs after b only shrink it) that,
            # between moves of b, only grows with the history: a cut measured on it moves
            # forward, never back, and only at grid points.
            planned = base_x + (st.min_cum[b] - st.min_cum[p]) + (h.cum[n] - h.cum[b])
            s = p
            notes: list[str] = []
            if planned > trigger and (cfg.on_overflow == "truncate" or planned > request.budget.available):
                if cfg.on_overflow == "raise":
                    raise ContextOverflowError(
                        planned, request.budget.available, hint="masking every allowed output is not enough."
                    )
                s = self._truncate(request, st, b, base_x, trigger)
                notes.append(f"masking was not enough: dropped {s - p} oldest messages at a safe cut")
            return b, s, notes

        planned_at: dict[int, tuple[int, int, list[str]]] = {}

        def stops(extra: int) -> tuple[int, int]:
            b, s, _notes = planned_at[extra] = plan(extra)
            return s, max(b, s)

        # The carried sections (dropped user instructions, facts of masked outputs) are held
        # back from the budget before the boundaries are chosen.
        settled = self._carry.settle(request, stops)
        b, s, notes = planned_at.get(settled.extra) or plan(settled.extra)
        if relaxed:
            notes = [f"the newest tool outputs (keep_last = {cfg.keep_last}) alone exceed the budget: masked them too", *notes]
        carried = self._carry.carried(request, settled)
        if carried.texts:
            pinned_msgs, pinned_counts = self._pinned_carry.get(request, (*request.pinned_facts, *carried.texts))
        # whether or not anything was carried: what could not be carried is reported too
        notes.extend(carried.notes())
        region_msgs, region_counts, masked_idx = self._region(st, s, b, k) if s < k else ([], [], [])
        tail_start = max(k, s)  # the cut may reach into the protected tail
        out = Output()
        out.add_extra("recall_tool", recall_cost)
        out.add("pinned", pinned_msgs, pinned_counts)
        split_sections(out.sections, carried)
        out.add("masked_history", region_msgs, region_counts, st.region_total if s < k else 0)
        out.add("recent", h.messages[tail_start:], h.counts[tail_start:], h.cum[n] - h.cum[tail_start])
        # cache breakpoint after the last masked message: the end of the compacted prefix
        masked_end = (masked_idx[-1] - s + p) if masked_idx else p - 1
        # Offered whenever reversible, masked or not: a tool list that changes when masking
        # starts would invalidate the provider's cache of everything after it.
        extra = (RECALL_TOOL,) if recall_cost else ()
        built = finish(
            self.name,
            request,
            out,
            self._tracker,
            tokens_in=fixed + h.total,
            kept=range(s, n),
            masked=tuple(masked_idx),
            dropped=range(p, s),
            breakpoints=(p - 1, masked_end, len(out.messages) - 1),
            notes=notes,
            extra_tools=extra,
        )
        # The compaction is the boundary (b, and s when truncating): outputs masked by an
        # "always" policy after b come and go with the turns and are not a boundary move.
        behind = masked_idx[: bisect_left(masked_idx, b)]
        if request.session is not None and request.record and (s > p or behind):
            # Gather the source ids (the whole history behind the boundary) only when the
            # boundary moved: the recorder would find the same ids and record nothing.
            at = (request.session.id, h.uid, p, s, b)
            if at != self._recorded_at or behind != self._recorded_behind:
                # C-level iteration: O(left-out messages) without a Python step per id
                ids = list(chain.from_iterable(map(h.event_ids.__getitem__, (*range(p, s), *behind))))
                reason = f"masked {len(behind)} tool outputs before message {b}" + (
                    f", dropped messages {p}-{s - 1}" if s > p else ""
                )
                self._recorder.record(self.name, request, built, ids, reason)
                self._recorded_at, self._recorded_behind = at, behind
        return built

    def _recall_cost(self, request: BuildRequest) -> int:
        """Tokens of the recall tool's definition when this build may add it (budgeted up front)."""
        return recall_tool_cost(request) if self.config.reversible else 0

    def _truncate(self, request: BuildRequest, st: _MaskState, b: int, base: int, limit: int) -> int:
        """Drop the oldest messages at a safe cut (see suffix_start), measured on the planned sizes."""
        h = request.history
        p = request.pinned_count
        cum = _Spliced(st.min_cum, h.cum, b)
        return suffix_start(
            request, self._cuts.get(h, p), base, limit, self.config.compaction_step, self.name, cum=cum
        )
