"""Replay costing: what a recorded session would have cost under a context strategy.

The session is replayed turn by turn. Before every assistant message, the history up to
that point (extended incrementally, each message counted once) is built into a request by
the strategy, exactly as an agent loop would. Each request is then billed with a
:class:`~ctxmem.tune.prices.Price`:

**Tokens sent** (``T``) are the request's tokens as the strategy counted them
(``report.tokens_out``: system, tools and messages, with the modelled overheads, in the
preset's tokenizer; calibrate against provider usage where exact figures matter).

**Shared prefix.** A provider's prompt cache serves the longest byte-identical prefix of
an earlier request. The replay compares this request's messages with the previous one's,
message by message (identity, then equality), and turns the common prefix into tokens
with prefix sums of the per-message counts (history messages reuse the history's counts;
messages the strategy rewrote — placeholders, summaries — are counted once, when first
seen). The system prompt and tool definitions come first on the wire, so a change there
(a strategy that starts offering a ``recall`` tool, say) shares nothing.

**Cache reads and writes.** Two cache models:

* ``prefix`` (OpenAI, vLLM, hosted Qwen): any shared prefix of at least
  ``cache_min_tokens`` is read, rounded down to ``cache_increment`` tokens;
* ``breakpoints`` (Anthropic, explicit ``cache_control``): entries exist only where the
  previous request placed a breakpoint (after system and tools, after each message index in
  its ``BuiltContext.cache_breakpoints``, and at its end); the read is the longest such
  entry inside the shared prefix. This is why strategies keep their prefix byte-stable
  between compactions and mark the end of the compacted part.

Everything after the read up to the request's last breakpoint is written to the cache
(``cache_write`` price; the input price for providers without a write surcharge); anything
after the last breakpoint is plain input. Without caching, all ``T`` tokens are input.

**TTL.** A cache entry lives ``cache_ttl_s`` (or one hour with ``ttl="1h"``) after its
last use. The time of each request comes from the recorded events (``created_at`` of the
last event before the assistant message), or from an assumed pace (seconds per turn) when
asked, or when the recording carries no usable timestamps (a bulk import records every
event at the same instant; the report says which was used). A gap longer than the TTL is
a miss.

**Summarizer calls** are billed only for a strategy whose summarizer calls a model
(:func:`summarizer_kind`: ``summarizer = "llm"`` in its config, the pipeline's core's
included, or an injected summarizer that is not the extractive one); an extractive
summarizer (``summarizer = "extractive"``) costs nothing. Such a strategy pays one extra
request per call it reports (``summarizer_calls``, or, failing that, one whenever
``report.summarized`` grows): the newly summarized messages in, the ``summary`` section
out, priced with ``summarizer_price``. A strategy with no summarizer is billed only the
calls its report states. The report says which summarizer it was (``summarizer``).

**Output tokens** are the content tokens of the recorded assistant message, identical for
every strategy (the replay changes what the model sees, not what it said).

The report keeps every turn, the totals, the peak context and the cumulative cost curve.
Full history re-sends everything every turn: cumulative tokens grow as turns² (the
``growth`` exponent of the curve is ≈ 2), caching turns most of that into cheap reads and
leaves writes linear, and bounded strategies (window, masking) grow ≈ linearly.
"""

from __future__ import annotations

import math
import statistics
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ctxmem.config import ContextBuilder, Preset, load_preset
from ctxmem.context import BuiltContext, History
from ctxmem.errors import ConfigError, ContextOverflowError
from ctxmem.messages import Message, ToolSpec
from ctxmem.tokens import Budget, Tokenizer, count_messages, get_tokenizer
from ctxmem.tune.prices import CacheTTL, Price

CacheMode = Literal["auto", "prefix", "breakpoints"]
DEFAULT_PACE_S = 30.0


@dataclass(frozen=True)
class Recording:
    """A session to replay: its messages and, optionally, when each was recorded."""

    messages: Sequence[Message]
    #: seconds (any epoch) at which each message was complete (its last event)
    times: Sequence[float] | None = None
    source: str = ""


def recording_from_session(session: Any) -> Recording:
    """A stored session's messages with the ``created_at`` of each message's last event."""
    from ctxmem.events import message_spans

    events = session.events()
    when = {se.id: se.created_at for se in events}
    msgs: list[Message] = []
    times: list[float] = []
    for m, ids in message_spans(events):
        msgs.append(m)
        times.append(max(when[i] for i in ids))
    return Recording(msgs, times, source=f"session {session.id}")


@dataclass(frozen=True)
class TurnCost:
    """One request of the replay."""

    turn: int
    #: index of the assistant message this request produced
    message_index: int
    at_s: float
    #: tokens of the whole history at this point (what full history would send)
    history_tokens: int
    tokens_sent: int
    shared_prefix: int
    cache_read: int
    cache_write: int
    uncached: int
    output_tokens: int
    expired: bool
    #: this request rewrote bytes the previous one had marked stable (a compaction)
    invalidated: bool
    build_s: float
    summarizer_calls: int
    summarizer_dollars: float
    dollars: float
    cum_dollars: float
    cum_tokens_sent: int

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _growth(xs: Sequence[int], ys: Sequence[float]) -> float | None:
    """Exponent k in cumulative ∝ turns^k, from the second half of the curve."""
    n = len(ys)
    if n < 8:
        return None
    a, b = n // 2 - 1, n - 1
    if ys[a] <= 0 or ys[b] <= 0 or xs[a] <= 0:
        return None
    return math.log(ys[b] / ys[a]) / math.log(xs[b] / xs[a])


@dataclass
class CostReport:
    """Per-turn costs and totals of one replay."""

    label: str
    preset: str
    strategy: str
    context_window: int
    model: str
    caching: bool
    cache_mode: str
    ttl_s: float
    time_source: str
    turns: list[TurnCost] = field(default_factory=list)
    overflow: str | None = None
    notes: list[str] = field(default_factory=list)
    #: the strategy's summarizer: ``llm`` (billed), ``extractive`` (no model call), None: none
    summarizer: str | None = None

    # -- totals ---------------------------------------------------------------------

    def _sum(self, attr: str) -> Any:
        return sum(getattr(t, attr) for t in self.turns)

    @property
    def tokens_sent(self) -> int:
        return int(self._sum("tokens_sent"))

    @property
    def cache_read(self) -> int:
        return int(self._sum("cache_read"))

    @property
    def cache_write(self) -> int:
        return int(self._sum("cache_write"))

    @property
    def uncached(self) -> int:
        return int(self._sum("uncached"))

    @property
    def output_tokens(self) -> int:
        return int(self._sum("output_tokens"))

    @property
    def dollars(self) -> float:
        return float(self._sum("dollars"))

    @property
    def summarizer_calls(self) -> int:
        return int(self._sum("summarizer_calls"))

    @property
    def peak_context(self) -> int:
        return max((t.tokens_sent for t in self.turns), default=0)

    @property
    def compactions(self) -> int:
        return sum(1 for t in self.turns if t.invalidated)

    @property
    def hit_ratio(self) -> float:
        return self.cache_read / self.tokens_sent if self.tokens_sent else 0.0

    @property
    def build_ms_median(self) -> float:
        return statistics.median(t.build_s for t in self.turns) * 1000 if self.turns else 0.0

    def growth(self) -> dict[str, float | None]:
        """Exponents of the cumulative curves (≈2: quadratic, ≈1: linear)."""
        xs = [t.turn + 1 for t in self.turns]
        cum_w: list[float] = []
        acc = 0.0
        for t in self.turns:
            acc += t.cache_write + t.uncached
            cum_w.append(acc)
        return {
            "tokens_sent": _growth(xs, [t.cum_tokens_sent for t in self.turns]),
            "dollars": _growth(xs, [t.cum_dollars for t in self.turns]),
            "written_or_uncached": _growth(xs, cum_w),
        }

    def curve(self, points: int = 50) -> list[dict[str, float]]:
        """The cumulative-cost curve, down-sampled to about ``points`` points (last included)."""
        n = len(self.turns)
        if not n:
            return []
        step = max(1, math.ceil(n / points))
        idx = sorted({*range(step - 1, n, step), n - 1})
        return [
            {"turn": self.turns[i].turn + 1, "cum_tokens_sent": self.turns[i].cum_tokens_sent,
             "cum_dollars": round(self.turns[i].cum_dollars, 9)}
            for i in idx
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "preset": self.preset,
            "strategy": self.strategy,
            "context_window": self.context_window,
            "model": self.model,
            "caching": self.caching,
            "cache_mode": self.cache_mode,
            "ttl_s": self.ttl_s,
            "time_source": self.time_source,
            "turns": len(self.turns),
            "tokens_sent": self.tokens_sent,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "uncached": self.uncached,
            "output_tokens": self.output_tokens,
            "hit_ratio": round(self.hit_ratio, 4),
            "peak_context": self.peak_context,
            "compactions": self.compactions,
            "summarizer": self.summarizer,
            "summarizer_calls": self.summarizer_calls,
            "dollars": round(self.dollars, 6),
            "build_ms_median": round(self.build_ms_median, 4),
            "growth": {k: (round(v, 3) if v is not None else None) for k, v in self.growth().items()},
            "overflow": self.overflow,
            "notes": list(self.notes),
        }

    def to_json(self, *, per_turn: bool = False, curve_points: int = 50) -> dict[str, Any]:
        out = self.summary()
        out["curve"] = self.curve(curve_points)
        if per_turn:
            out["per_turn"] = [t.to_json() for t in self.turns]
        return out


@dataclass(frozen=True)
class TurnContext:
    """What an ``on_build`` hook sees after each build (probes in sweeps)."""

    turn: int
    message_index: int
    history: History
    built: BuiltContext


class _Counts:
    """Token counts of output messages: history messages by identity, rewritten ones once."""

    def __init__(self, history: History):
        self.history = history
        self._hist: dict[int, int] = {}
        self._seen = 0
        self._extra: dict[int, tuple[Message, int]] = {}

    def of(self, messages: Sequence[Message]) -> list[int]:
        h = self.history
        for i in range(self._seen, len(h)):
            self._hist[id(h.messages[i])] = h.counts[i]
        self._seen = len(h)
        new = [m for m in messages if id(m) not in self._hist and id(m) not in self._extra]
        if new:
            if len(self._extra) > 200_000:
                keep = {id(m) for m in messages}
                self._extra = {k: v for k, v in self._extra.items() if k in keep}
            for m, c in zip(new, count_messages(new, h.tokenizer), strict=True):
                self._extra[id(m)] = (m, c.total)  # the reference keeps the id valid
        return [self._hist[id(m)] if id(m) in self._hist else self._extra[id(m)][1] for m in messages]


def _common_prefix(a: Sequence[Message], b: Sequence[Message]) -> int:
    k = 0
    for x, y in zip(a, b, strict=False):
        if x is not y and x != y:
            break
        k += 1
    return k


def _resolve(
    strategy: Any, budget: Budget | int | None, tokenizer: str | Tokenizer | None, pinned: int | None
) -> tuple[ContextBuilder, Tokenizer, str]:
    """(builder, tokenizer, preset name) from a preset or a strategy object."""
    if isinstance(strategy, str):
        strategy = load_preset(strategy)
    tok = tokenizer or (strategy.model.tokenizer if isinstance(strategy, Preset) else "o200k_base")
    tk = get_tokenizer(tok) if isinstance(tok, str) else tok
    if isinstance(strategy, Preset):
        p = strategy
        builder = p.builder(context_window=None if isinstance(budget, Budget) else budget, tokenizer=tk.name,
                            pinned=pinned)
        if isinstance(budget, Budget):
            builder.budget = budget
        return builder, tk, p.name
    if not isinstance(budget, Budget):
        raise ConfigError("a strategy object needs an explicit Budget (or pass a preset)", field="budget")
    name = getattr(strategy, "name", type(strategy).__name__)
    return ContextBuilder(strategy, budget, tk.name, 1 if pinned is None else pinned, name=name), tk, name


def summarizer_kind(strategy: Any) -> str | None:
    """``"llm"`` when ``strategy`` summarizes with a model call, ``"extractive"`` when it
    summarizes without one, None when it has no summarizer.

    Read from the strategy's config (``summarizer = "extractive" | "llm"``; a pipeline's
    ``core``, a wrapper's ``inner``, looked through) and the summarizer object it holds: an
    injected summarizer other than the extractive one counts as a model call.
    """
    from ctxmem.context.summarize import ExtractiveSummarizer, LLMSummarizer

    seen: set[int] = set()
    s = strategy
    while s is not None and id(s) not in seen:
        seen.add(id(s))
        obj = getattr(s, "summarizer", None)
        if isinstance(obj, ExtractiveSummarizer):
            return "extractive"
        if isinstance(obj, LLMSummarizer) or (obj is not None and hasattr(obj, "summarize")):
            return "llm"  # the LLM summarizer, or a custom one: assumed to call a model
        kind = getattr(getattr(s, "config", None), "summarizer", None)
        if kind in ("llm", "extractive"):
            return str(kind)
        s = getattr(s, "core", None) or getattr(s, "inner", None)
    return None


def replay_cost(
    recording: Recording | Sequence[Message],
    strategy: Any,
    price: Price,
    *,
    budget: Budget | int | None = None,
    tokenizer: str | Tokenizer | None = None,
    caching: bool = True,
    cache_mode: CacheMode = "auto",
    ttl: CacheTTL = "default",
    pace_s: float | None = None,
    batch: bool = False,
    system: str | None = None,
    tools: tuple[ToolSpec, ...] = (),
    pinned: int | None = None,
    summarizer_price: Price | None = None,
    label: str | None = None,
    on_build: Callable[[TurnContext], None] | None = None,
) -> CostReport:
    """Replay ``recording`` under ``strategy`` (a preset name, a Preset, or a strategy with a
    Budget) and bill every request with ``price``. See the module docstring for the model.

    ``budget`` as an int overrides the preset's context window. A ``ContextOverflowError``
    stops the replay; the report keeps the turns so far and says where it stopped.
    """
    rec = recording if isinstance(recording, Recording) else Recording(list(recording))
    builder, tok, preset_name = _resolve(strategy, budget, tokenizer, pinned)
    strat, bud = builder.strategy, builder.budget
    msgs = rec.messages
    mode: str = cache_mode
    if mode == "auto":
        mode = "breakpoints" if price.model.provider == "anthropic" else "prefix"
    ttl_s = price.ttl_seconds(ttl)
    use_cache = caching and price.caches
    notes: list[str] = []
    if caching and not price.caches:
        notes.append(f"{price.name} has no prompt cache in the price table: billed without caching")
    if ttl == "1h" and use_cache:
        price.rates(0, ttl="1h")  # fail early when the model has no 1-hour price
    # Request times: recorded, or an assumed pace.
    times = rec.times
    if pace_s is not None:
        time_source = f"assumed pace {pace_s:g} s/turn"
    elif times is not None and len(times) == len(msgs) and len(msgs) > 2 and max(times) > min(times):
        time_source = "recorded timestamps"
    else:
        pace_s = DEFAULT_PACE_S
        time_source = f"assumed pace {pace_s:g} s/turn"
        if times is not None:
            notes.append("recorded timestamps carry no spacing (bulk import?): assumed a pace instead")
    out_counts = count_messages([m for m in msgs if m.role == "assistant"], tok)
    out_iter = iter(out_counts)

    s_kind = summarizer_kind(strat)
    report = CostReport(
        label=label or (preset_name + ("" if caching else " (no cache)")),
        preset=preset_name,
        strategy=getattr(strat, "name", type(strat).__name__),
        context_window=bud.context_window,
        model=price.name,
        caching=use_cache,
        cache_mode=mode if use_cache else "none",
        ttl_s=ttl_s,
        time_source=time_source,
        notes=notes,
        summarizer=s_kind,
    )
    history = History(tok)
    counter = _Counts(history)
    prev_msgs: Sequence[Message] = ()
    prev_head: tuple[Any, ...] | None = None
    prev_head_tokens = 0
    prev_entries: list[int] = []  # token positions of the previous request's cache entries
    prev_t: float | None = None
    prev_stable = 0  # tokens of the previous request up to its last message breakpoint
    prev_summarized = 0
    cum_dollars = 0.0
    cum_sent = 0
    pos = 0
    turn = 0
    for i, m in enumerate(msgs):
        if m.role != "assistant":
            continue
        out_tokens = next(out_iter).content
        if i == 0:
            continue
        history.extend(msgs[pos:i])
        pos = i
        at = turn * pace_s if pace_s is not None else float(times[i - 1]) - float(times[0])  # type: ignore[index]
        request = builder.request(history, system=system, tools=tools)
        t0 = time.perf_counter()
        try:
            built = strat.build(request)
        except ContextOverflowError as exc:
            report.overflow = f"turn {turn + 1} (message {i}): {exc}"
            break
        build_s = time.perf_counter() - t0
        r = built.report
        counts = counter.of(built.messages)
        cum = [0]
        for c in counts:
            cum.append(cum[-1] + c)
        total = r.tokens_out
        head_tokens = max(0, total - cum[-1])
        head = (built.system, tuple(t.name for t in built.tools), tuple(t.name for t in built.extra_tools))
        # Shared prefix with the previous request.
        if prev_head is None or head != prev_head or head_tokens != prev_head_tokens:
            k = 0
            shared = 0
        else:
            k = _common_prefix(prev_msgs, built.messages)
            shared = head_tokens + cum[k]
        # A compaction rewrote bytes the previous request had marked as stable: everything up
        # to its last message breakpoint (or all of it, when it marked none). What follows
        # the last breakpoint is declared volatile by the strategy (the pipeline's restated
        # tail, say) and rewriting it is not a compaction.
        invalidated = prev_head is not None and shared < prev_stable
        expired = prev_t is not None and (at - prev_t) > ttl_s
        # This request's cache entries (token positions), for reads now and by the next request.
        entries = sorted({head_tokens, *(head_tokens + cum[b + 1] for b in built.cache_breakpoints
                                         if 0 <= b < len(counts)), total})
        read = write = 0
        if use_cache and total >= price.model.cache_min_tokens:
            if prev_t is not None and not expired:
                if mode == "prefix":
                    read = shared
                else:
                    j = bisect_right(prev_entries, shared) - 1
                    read = prev_entries[j] if j >= 0 else 0
                inc = price.model.cache_increment
                read = (read // inc) * inc
                if read < price.model.cache_min_tokens:
                    read = 0
            last_entry = total if mode == "prefix" else entries[-1]
            write = max(0, last_entry - read)
        uncached = total - read - write
        rates = price.rates(total, ttl=ttl, batch=batch)
        dollars = rates.dollars(uncached=uncached, written=write, read=read, output=out_tokens)
        # Summarizer calls the strategy reports (or that its summarized set implies).
        s_calls, s_dollars = _summarizer(r, history, prev_summarized, summarizer_price or price, batch, s_kind)
        prev_summarized = len(r.summarized)
        dollars += s_dollars
        cum_dollars += dollars
        cum_sent += total
        report.turns.append(TurnCost(
            turn=turn, message_index=i, at_s=at, history_tokens=request.fixed_tokens + history.total,
            tokens_sent=total, shared_prefix=shared, cache_read=read, cache_write=write, uncached=uncached,
            output_tokens=out_tokens, expired=expired, invalidated=invalidated, build_s=build_s,
            summarizer_calls=s_calls, summarizer_dollars=s_dollars, dollars=dollars, cum_dollars=cum_dollars,
            cum_tokens_sent=cum_sent,
        ))
        if on_build is not None:
            on_build(TurnContext(turn, i, history, built))
        prev_msgs, prev_head, prev_head_tokens = built.messages, head, head_tokens
        prev_entries, prev_t = entries, at
        marks = [head_tokens + cum[b + 1] for b in built.cache_breakpoints if 0 <= b < len(counts)]
        prev_stable = max(marks) if marks else total
        turn += 1
    if s_kind == "extractive":
        notes.append("summarizer: extractive (no model call): no summarizer requests billed")
    elif s_kind == "llm":
        notes.append(f"summarizer: llm: {report.summarizer_calls} summarizer request(s) billed at "
                     f"{(summarizer_price or price).name} prices")
    return report


def _summarizer(
    report: Any, history: History, prev_count: int, price: Price, batch: bool, kind: str | None = "llm"
) -> tuple[int, float]:
    if kind == "extractive":
        return 0, 0.0  # an extractive summarizer makes no model call
    calls = getattr(report, "summarizer_calls", None)
    summarized = list(report.summarized)
    if calls is None:
        if kind is None:
            return 0, 0.0  # no summarizer: nothing implies a model call
        calls = 1 if len(summarized) > prev_count else 0
    if not calls:
        return 0, 0.0
    new = summarized[prev_count:] if len(summarized) > prev_count else summarized
    tokens_in = sum(history.counts[i] for i in new if 0 <= i < len(history))
    tokens_out = int(report.sections.get("summary", 0))
    rates = price.rates(tokens_in, batch=batch)
    return int(calls), rates.dollars(uncached=tokens_in, written=0, read=0, output=tokens_out)


def compare(
    recording: Recording | Sequence[Message],
    presets: Sequence[str],
    price: Price,
    *,
    caching: Literal["on", "off", "both"] = "on",
    budget: int | None = None,
    **kwargs: Any,
) -> list[CostReport]:
    """Replay one recording under several presets (and with/without caching), side by side."""
    modes = {"on": (True,), "off": (False,), "both": (False, True)}[caching]
    out: list[CostReport] = []
    for name in presets:
        for c in modes:
            out.append(replay_cost(recording, name, price, caching=c, budget=budget, **kwargs))
    return out


__all__ = [
    "DEFAULT_PACE_S",
    "CacheMode",
    "CostReport",
    "Recording",
    "TurnContext",
    "TurnCost",
    "compare",
    "recording_from_session",
    "replay_cost",
    "summarizer_kind",
]
