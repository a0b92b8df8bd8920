"""The agent loop: build context → request → record → run tools → record results → repeat.

:class:`Agent` ties a :class:`~ctxmem.session.Session`, a context builder, a
:class:`~ctxmem.clients.ModelClient` and a set of :class:`Tool` together::

    agent = Agent(client, session, preset="pipeline-200k",
                  tools=[Tool("read_file", read_file, "Read a file", schema)],
                  system="You optimize kernels.")
    result = agent.run_sync("Make the kernel faster.")

Every step is recorded before the next begins, so the session is always a faithful log:

1. **Build** the context through a :class:`~ctxmem.config.ContextBuilder`. ``preset=`` (a
   name, a TOML path, a :class:`~ctxmem.config.Preset` or a ready builder) is honoured in
   full: its window, reserve, threshold, pinned count and tokenizer, with the strategy's
   declared dependencies resolved (``summarizer = "llm"`` with ``summarizer_model =
   "agent"`` summarizes through this agent's client). ``strategy=`` keeps working: a
   string there is a preset too; a strategy object is used with ``context_window``
   (default 200,000). Without either, the session's own ``metadata["strategy"]`` preset
   is used (a resumed run keeps its strategy); failing that, the full history, truncated
   at a safe cut point if it outgrows the window. Explicit ``context_window=``,
   ``tokenizer=`` and ``pinned=`` override the preset.
   The agent keeps a :class:`~ctxmem.context.History` of the session and extends it with
   what it records, so a turn counts only its new messages. The result is checked with
   :func:`~ctxmem.messages.validate_conversation` before it is sent; the strategy's cache
   breakpoints are passed to the client.
2. **Offer what the context promises.** The tools a built context names
   (``BuiltContext.extra_tools``: ``recall`` wherever masked outputs carry handles) are
   offered with the agent's own and run with :func:`~ctxmem.context.run_context_tool`
   against the history and the session.
3. **Request**; record the assistant message and a ``model_call`` event (usage, stop reason,
   latency, our estimate of the prompt) in one transaction.
4. **Run** each requested tool, one after another, and record its result as soon as it
   finishes. A sync tool runs in a worker thread (it may call sync ctxmem code, a
   sub-agent's ``run_sync``); an ``async def`` tool runs on the loop. A tool that raises
   (``SystemExit`` included: argparse), an unknown tool name, or a call whose arguments were
   not valid JSON (kept as ``{"_unparsed_arguments": raw}``) gives an ``is_error`` result:
   the model sees the error. The History the context is built from is checked against the
   session's head each turn and reloaded when anything but this agent changed the chain (a
   message recorded through the Session API, a rewind, another writer).
5. **Stop** on any stop reason but ``tool_use``/``pause_turn`` (``end_turn``, ``max_tokens``,
   ``refusal``…), after ``max_turns`` requests, or before a request once ``max_total_tokens``
   or ``max_cost`` (dollars: needs a priced model or ``cost_fn``) is reached. Budgets are
   checked only between turns, so no tool call is ever left without its result.

**Cost.** Each request is priced from the client's model name in ctxmem's price table
(:func:`ctxmem.tune.prices.load_prices`: the shipped, dated ``prices.toml`` plus the user's
overrides, or ``prices=``): uncached input, output, cache reads and cache writes from the
reply's :class:`~ctxmem.clients.Usage`, at the long-context tier when that request's prompt
crosses its threshold, and at the 1-hour write price when ``cache_breakpoints.ttl`` is
``"1h"``. ``AgentResult.cost`` is the run's sum in US dollars; it is ``None`` only when the
table does not know the model (add it to the user price file to get a figure). A
``cost_fn(usage, model)`` replaces the table: it is called on the run's total usage.

**Counting.** Exact by default: the model's own tokenizer when the model → tokenizer map
(:func:`ctxmem.tokens.tokenizer_for_model`) knows it and it loads, else ``o200k_base``; the
heuristic only when nothing exact loads, and then the agent warns once, loudly. The
per-turn estimate is the built context's ``tokens_out``, summed by the strategy from
memoized per-message counts: appending a block encodes it once, and no turn re-tokenizes
the request (``benchmarks/bench_agent.py`` measures the difference).

**Calibration.** Each reply's reported prompt size is paired with that estimate and
stored with ``store.record_calibration`` per (model, tokenizer). The factor learns in both
directions within a safety band (:class:`~ctxmem.tokens.Calibration`); the input budget
handed to the strategy is the window's input part divided by it, so the budget holds in
the provider's tokens and an over-counting tokenizer does not leave the window unused.

**Context too long.** When the provider raises
:class:`~ctxmem.errors.ContextLengthExceeded`, the agent rebuilds the context with its
*fallback* under an input budget of ``shrink`` × the tokens it just sent (only the input
part shrinks: the reply's reserve is kept, so the budget cannot underflow), records a
``compaction`` event (tokens before/after, the event ids it left out, the reason) and
retries once. A second refusal is raised. The fallback, under the shrunk budget, stays in
use for the rest of the run (the provider has told us where its limit is). The default
fallback is the recent :class:`~ctxmem.context.builtins.Window`: the pinned task plus the
most recent messages that fit, cut only where every invariant allows.

**Telemetry.** Off unless asked for. ``tracer=`` (an OpenTelemetry ``Tracer``, a
``TracerProvider`` or ``True`` for the global provider) gives each run an ``invoke_agent``
span and each turn a ``ctxmem.turn`` span carrying the build's figures (strategy, input
budget, tokens before and after, the calibrated estimate, stable cache prefix, dropped
messages and session events, a compaction or provider-refusal event) and the model call's
usage, with the build and GenAI ``chat`` spans as its children
(:class:`ctxmem.integrations.otel.AgentTelemetry`). ``opentelemetry`` is imported only then.

**Resume.** A new Agent on an existing session (or a run after Ctrl-C stopped one:
``run_sync`` cancels the run before re-raising) first accounts for tool calls that never
got a result (a crash between the call and its result): with ``on_resume="rerun"`` known
tools are run again; otherwise (or for unknown tools) an ``is_error`` result says the call
was interrupted. A ``note`` event records what was done. Nothing is silently dropped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ctxmem.clients.base import (
    CacheBreakpoints,
    ModelClient,
    Response,
    ThinkingConfig,
    Usage,
    run_sync,
)
from ctxmem.context import CONTEXT_TOOLS, BuiltContext, ContextStrategy, History, run_context_tool
from ctxmem.context.builtins import Dump, Window
from ctxmem.errors import (
    ConfigError,
    ContextLengthExceeded,
    CtxmemError,
    InvalidConversationError,
    TokenizerError,
)
from ctxmem.events import CompactionEvent, ModelCallEvent, NoteEvent, events_from_message, role_of
from ctxmem.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    validate_conversation,
)
from ctxmem.session import Session
from ctxmem.tokens import Budget, Calibration, get_tokenizer, tokenizer_for_model

if TYPE_CHECKING:
    from ctxmem.config import ContextBuilder, Preset
    from ctxmem.tune.prices import Price, PriceTable

log = logging.getLogger("ctxmem.agent")

ToolFn = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Tool:
    """A tool the agent can run: ``fn(input) -> output`` (sync or async).

    The output is sent as text: a string as is, anything else as JSON. An exception (or
    ``SystemExit``) becomes an ``is_error`` result carrying its type and message. A sync
    ``fn`` runs in a worker thread, an ``async def`` one on the event loop.
    """

    name: str
    fn: ToolFn
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def spec(self) -> ToolSpec:
        """The :class:`~ctxmem.messages.ToolSpec` sent to the model (name, description, schema)."""
        return ToolSpec(self.name, self.description, self.input_schema)


@dataclass(frozen=True)
class AgentResult:
    """How a run ended.

    Attributes:
        stop_reason: the last reply's stop reason (``end_turn``, ``max_tokens``, ``refusal``…),
            or ``max_turns`` / ``token_budget`` / ``cost_budget`` when the agent stopped itself.
        turns: model requests made in this run (a retried refusal counts once).
        usage: tokens summed over this run's requests, as the provider reported them.
        cost: this run's price in US dollars (see "Cost" in the module docstring); ``None``
            when the model is not in the price table and no ``cost_fn`` was given.
        final: the last reply, or ``None`` when the run made no request.
        session_id: the session the run recorded into.
        compactions: how many times a provider refusal made the agent compact and retry.
    """

    stop_reason: str  # a model stop reason, or max_turns / token_budget / cost_budget
    turns: int
    usage: Usage
    cost: float | None
    final: Response | None
    session_id: str
    compactions: int = 0

    @property
    def text(self) -> str:
        """The text blocks of the final reply, joined (``""`` when there was none)."""
        return self.final.text if self.final is not None else ""


class Agent:
    """An agent loop that records everything into a session and builds each request's context.

    Each turn the agent builds the context from the session through its
    :class:`~ctxmem.config.ContextBuilder` (strategy, budget, tokenizer, pinned count),
    sends it with the tools, records the reply and its usage, runs the requested tools and
    records their results, until the model stops asking for tools or a budget is reached.
    A provider "context too long" refusal is answered by compacting with ``fallback`` and
    retrying once. The module docstring details each step, counting, calibration and cost.

    Args:
        client: the :class:`~ctxmem.clients.ModelClient` to ask; its ``model`` attribute
            names the model for pricing, tokenizer choice and calibration.
        session: the :class:`~ctxmem.session.Session` to record into (a resumed session's
            unfinished tool calls are settled first, see ``on_resume``).
        tools: the :class:`Tool` objects the model may call (names must be unique).
        system: the system prompt, sent with every request.
        preset: a preset name, TOML path, :class:`~ctxmem.config.Preset` or ready
            :class:`~ctxmem.config.ContextBuilder`; honoured in full.
        strategy: a :class:`~ctxmem.context.ContextStrategy` object, or a preset name;
            give ``preset`` or ``strategy``, not both. Neither: the session's
            ``metadata["strategy"]``, else the full history truncated at a safe point.
        fallback: the strategy used after a context-length refusal (default: the recent
            :class:`~ctxmem.context.builtins.Window`).
        pinned: leading messages kept verbatim (overrides the preset).
        context_window: the model's window in tokens (overrides the preset; default 200,000
            for a strategy object).
        max_tokens: the reply's token limit; also reserved out of the window.
        max_turns: stop after this many requests.
        max_total_tokens: stop before a request once the run's usage reaches this total.
        max_cost: stop before a request once the run has cost this many dollars.
        cost_fn: ``cost_fn(usage, model) -> dollars``, replacing the price table.
        prices: a price TOML file or a :class:`~ctxmem.tune.prices.PriceTable` (default:
            the shipped table plus ``~/.config/ctxmem/prices.toml`` when present).
        tokenizer: the tokenizer to count with (default: the model's own, else o200k_base).
        shrink: the fraction of the refused prompt the fallback must fit in, in (0, 1).
        on_resume: ``"rerun"`` re-runs interrupted calls to known tools; ``"fail"`` marks
            them failed.
        cache_breakpoints: where to ask for prompt-cache breakpoints (``None``: none).
        temperature: sampling temperature passed to the client.
        thinking: extended-thinking settings passed to the client.
        tracer: OpenTelemetry, opt-in: a ``Tracer``, a ``TracerProvider`` or ``True`` (the
            global provider). Each run gets a span and each turn a span with the context
            build's figures and the model call (see "Telemetry" in the module docstring).

    Raises:
        ConfigError: a bad argument (named in the message), ``max_cost`` for a model with
            neither a price nor ``cost_fn``, or a bad preset or price file.
        UnknownNameError: an unknown preset, strategy or tokenizer name.
    """

    def __init__(
        self,
        client: ModelClient,
        session: Session,
        *,
        tools: Sequence[Tool] = (),
        system: str | None = None,
        preset: str | os.PathLike[str] | Preset | ContextBuilder | None = None,
        strategy: ContextStrategy | str | None = None,
        fallback: ContextStrategy | None = None,
        pinned: int | None = None,
        context_window: int | None = None,
        max_tokens: int = 4096,
        max_turns: int = 50,
        max_total_tokens: int | None = None,
        max_cost: float | None = None,
        cost_fn: Callable[[Usage, str], float] | None = None,
        prices: str | os.PathLike[str] | PriceTable | None = None,
        tokenizer: str | None = None,
        shrink: float = 0.6,
        on_resume: Literal["rerun", "fail"] = "rerun",
        cache_breakpoints: CacheBreakpoints | None = CacheBreakpoints(),  # noqa: B008 (frozen)
        temperature: float | None = None,
        thinking: ThinkingConfig | None = None,
        tracer: Any = None,
    ):
        if not 0 < shrink < 1:
            raise ConfigError("must be in (0, 1)", field="shrink")
        if preset is not None and strategy is not None:
            raise ConfigError("give preset= or strategy=, not both", field="strategy")
        _check_agent_args(client, session, tools, system, on_resume, max_turns, max_tokens)
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"tool names must be unique, got {names}", field="tools")
        self.client = client
        self.session = session
        self.tools = {t.name: t for t in tools}
        self.system = system
        model = getattr(client, "model", "") or type(client).__name__
        self.model = str(model)
        #: the model's price entry (None: unknown to the table, or cost_fn given)
        self.price: Price | None = None
        if cost_fn is None:
            self.price = _find_price(self.model, prices)
            if max_cost is not None and self.price is None:
                raise ConfigError(
                    f"max_cost needs the model's price: {self.model!r} is not in the price table. "
                    f"Add a [models.\"{self.model}\"] entry to {_price_file(prices)} (see "
                    "ctxmem/tune/prices.toml), pass prices=FILE, or pass cost_fn= (a function of Usage and model name)",
                    field="max_cost",
                )
        self.max_tokens = max_tokens
        self.builder: ContextBuilder = _resolve_builder(
            preset if preset is not None else strategy, session, client,
            model=self.model, tokenizer=tokenizer, context_window=context_window, pinned=pinned,
            max_tokens=max_tokens,
        )
        self.strategy: ContextStrategy = self.builder.strategy
        self.fallback: ContextStrategy = fallback or Window()
        self.budget = self.builder.budget
        self.context_window = self.budget.context_window
        self.pinned = self.builder.pinned
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens
        self.max_cost = max_cost
        self.cost_fn = cost_fn
        self.shrink = shrink
        self.on_resume = on_resume
        self.cache_breakpoints = cache_breakpoints
        self.temperature = temperature
        self.thinking = thinking
        self.tokenizer_name = self.builder.tokenizer
        self.tokenizer = get_tokenizer(self.tokenizer_name)
        # exact only when it is the model's own tokenizer (o200k for Claude is a stand-in)
        own = tokenizer_for_model(self.model)
        exact = self.tokenizer.exact and own == (self.tokenizer_name, True)
        self.calibration = Calibration.for_tokenizer(self.model, self.tokenizer.id, exact=exact)
        for est, rep in session.store.calibration_observations(self.model, self.tokenizer_name):
            self.calibration.observe(est, rep)
        self._active: ContextStrategy = self.strategy
        self._fallback_input: int | None = None  # our tokens, set when the provider refused
        self._history: History | None = None
        self._seen_head: int | None = None  # the session's head when the History was last in step with it
        self._unsynced: list[tuple[Message, list[int]]] = []
        # a tuple, the same object every turn: the request keeps it, and its token count is cached by identity
        self._specs = tuple(t.spec for t in self.tools.values())
        #: tools the built contexts named (e.g. recall): offered with the agent's own, run by ctxmem
        self.context_tools: dict[str, ToolSpec] = {}
        self._telemetry: Any = None
        if tracer is not None and tracer is not False:
            from ctxmem.integrations.otel import AgentTelemetry

            self._telemetry = AgentTelemetry(tracer, conversation_id=session.id, model=self.model)

    # ------------------------------------------------------------------ running

    def run_sync(self, prompt: str | Message | None = None) -> AgentResult:
        """:meth:`run` from synchronous code (a script, a notebook, the CLI)."""
        return run_sync(lambda: self.run(prompt))

    async def run(self, prompt: str | Message | None = None) -> AgentResult:
        """Resume pending tool calls, record ``prompt`` (if any), and loop until a stop.

        Args:
            prompt: a user message (text or a :class:`~ctxmem.messages.Message`) to record
                first; ``None`` continues the session as it stands.

        Returns:
            An :class:`AgentResult`: why it stopped, turns, usage and cost of this run.

        Raises:
            ContextLengthExceeded: the provider refused the context twice (after the
                fallback compaction), or the fallback could not make it smaller.
            ProviderError: a provider error the client did not retry (the session holds
                everything recorded before it).
        """
        if self._telemetry is None:
            return await self._run(prompt)
        with self._telemetry.run() as span:
            result = await self._run(prompt)
            self._telemetry.finish_run(span, result)
            return result

    async def _run(self, prompt: str | Message | None) -> AgentResult:
        await self.resume()
        if prompt is not None:
            message = Message.user(prompt) if isinstance(prompt, str) else prompt
            self._unsynced.append((message, self.session.record(message)))
        usage = Usage()
        spent = 0.0  # priced request by request (a long-context tier applies per request)
        turns = 0
        compactions = 0
        final: Response | None = None
        stop = "max_turns"
        while turns < self.max_turns:
            if self.max_total_tokens is not None and usage.total_tokens >= self.max_total_tokens:
                stop = "token_budget"
                break
            if self.max_cost is not None and self._cost(usage, spent) >= self.max_cost:
                stop = "cost_budget"
                break
            response, compacted = await self._turn(turns)
            compactions += compacted
            turns += 1
            usage = usage + response.usage
            spent += self.request_cost(response.usage) or 0.0
            final = response
            if response.stop_reason not in ("tool_use", "pause_turn"):
                stop = response.stop_reason
                break
        cost = self._cost(usage, spent) if self.cost_fn is not None or self.price is not None else None
        return AgentResult(stop, turns, usage, cost, final, self.session.id, compactions)

    async def resume(self) -> list[str]:
        """Account for tool calls that never got a result (see "Resume" in the module docstring).

        Returns:
            The ids of the ``tool_use`` blocks that were pending, in session order.
        """
        pending = self.session.pending_tool_uses()
        if not pending:
            return []
        self._history = None  # results may join a partly answered message: reload after
        rerun = [u for u in pending if self.on_resume == "rerun" and (u.name in self.tools or u.name in CONTEXT_TOOLS)]
        for use in pending:
            if use in rerun:
                await self._run_tool(use, [])
            else:
                self.session.record_tool_result(
                    use.id,
                    f"tool call {use.name!r} ({use.id}) was interrupted (the agent stopped before it "
                    "finished) and was not re-run",
                    is_error=True,
                    tool_name=use.name,
                )
        self.session.note(
            f"resumed: {len(pending)} unfinished tool call(s); re-ran {len(rerun)}, "
            f"marked {len(pending) - len(rerun)} failed",
            "resume",
        )
        self._history, self._unsynced = None, []
        return [u.id for u in pending]

    # ------------------------------------------------------------------ one turn

    async def _turn(self, index: int) -> tuple[Response, int]:
        """One request and the tools it asked for (in a ``ctxmem.turn`` span when traced)."""
        if self._telemetry is None:
            response, compacted = await self._request_turn()
            if response.tool_uses:
                await self._run_tools(response.tool_uses)
            return response, compacted
        with self._telemetry.turn(index):
            response, compacted = await self._request_turn()
            if response.tool_uses:
                await self._run_tools(response.tool_uses)
            return response, compacted

    def _offered(self, built: BuiltContext) -> list[ToolSpec]:
        """The agent's tools plus those the context names (its own win on a name clash)."""
        extra = [t for t in built.extra_tools if t.name not in self.tools]
        for t in extra:
            self.context_tools[t.name] = t
        return [*self._specs, *extra]

    async def _send(
        self, built: BuiltContext, breakpoints: CacheBreakpoints | None
    ) -> tuple[Response, float]:
        context = list(built.messages)
        validate_conversation(context)
        start = time.monotonic()
        offered = self._offered(built)
        kwargs: dict[str, Any] = {
            "system": self.system, "tools": offered or None, "max_tokens": self.max_tokens,
            "temperature": self.temperature, "cache_breakpoints": breakpoints, "thinking": self.thinking,
        }
        if self._telemetry is None:
            response = await self.client.request(context, **kwargs)
        else:
            response = await self._telemetry.chat(self.client, kwargs, lambda: self.client.request(context, **kwargs))
        return response, time.monotonic() - start

    def _sync_history(self) -> History:
        """The session's history, extended with what this agent recorded since the last turn;
        loaded again from the session when its chain holds anything else (a message recorded
        through another handle or the Session API, a rewind, another writer)."""
        if self._history is not None and not self._chain_is_ours():
            self._history = None
        if self._history is None:
            self._history, self._seen_head, _ = History._load(self.session, self.tokenizer_name)
            self._unsynced = []
        elif self._unsynced:
            self._history.extend([m for m, _ in self._unsynced], event_ids=[ids for _, ids in self._unsynced])
            self._unsynced = []
        return self._history

    def _chain_is_ours(self) -> bool:
        """Whether the session's chain is the one the History was loaded from plus the
        messages this agent recorded since (``_unsynced``), and nothing else: events without a
        role (model calls, notes, compactions) do not change the conversation. One read of
        the head and the events after the one seen (``chain_since``, where the store has it);
        the head seen moves on when the answer is yes."""
        seen = self._seen_head  # None: the History was loaded from an empty session
        store = self.session.store
        since = getattr(store, "chain_since", None)
        if since is not None and seen is not None:
            got = since(self.session.id, seen, self.tokenizer_name, _CATCH_UP)
            if got is None:  # a rewind, a fork, or a long way behind
                return False
            head, new = got[0], got[1]
        else:
            head = self.session.info.head_event_id
            new = []
            eid = head
            while eid is not None and eid != seen and len(new) <= _CATCH_UP:
                se = store.event(eid)
                new.append(se)
                eid = se.parent_id
            if eid != seen:
                return False
        mine = {i for _, ids in self._unsynced for i in ids}
        if {se.id for se in new if role_of(se.event) is not None} != mine:
            return False
        self._seen_head = head
        return True

    def _budget(self, input_tokens: int | None = None) -> Budget:
        """The strategy's budget in our tokenizer's units.

        ``input_tokens`` (ours) caps the input after a refusal; otherwise the window's input
        part is divided by the calibration factor. Only the input part scales: the reply's
        reserve stays whole, so the budget never underflows.
        """
        b = self.budget
        if input_tokens is None:
            input_tokens = self._fallback_input
        if input_tokens is None:
            ours = int(b.available / self.calibration.factor)
            threshold = b.threshold
        else:
            ours, threshold = input_tokens, 1.0
        return Budget(max(1, ours) + b.reserve_output, reserve_output=b.reserve_output, threshold=threshold)

    def _build(self, strategy: ContextStrategy, history: History, budget: Budget, *, record: bool = True) -> BuiltContext:
        # record=False: the agent records this compaction itself (with the provider's reason)
        request = self.builder.request(
            history, system=self.system, tools=self._specs, session=self.session, record=record, budget=budget
        )
        return strategy.build(request)

    async def _build_off_loop(
        self, strategy: ContextStrategy, history: History, budget: Budget, *, record: bool = True
    ) -> BuiltContext:
        # Off the event loop: a strategy may call a model itself (an LLM summary through the
        # sync client wrapper, which needs the loop this coroutine runs on).
        if self._telemetry is None:
            return await asyncio.to_thread(self._build, strategy, history, budget, record=record)
        with self._telemetry.build(strategy.name, budget.available) as span:
            built = await asyncio.to_thread(self._build, strategy, history, budget, record=record)
            r = built.report
            dropped = sum(len(history.event_ids[i]) for i in r.dropped) if len(r.dropped) else 0
            self._telemetry.built(span, strategy.name, r, dropped)
            return built

    def _breakpoints(self, built: BuiltContext) -> CacheBreakpoints | None:
        if self.cache_breakpoints is None or not built.cache_breakpoints:
            return self.cache_breakpoints
        return replace(self.cache_breakpoints, messages=tuple(built.cache_breakpoints))

    async def _request_turn(self) -> tuple[Response, int]:
        history = self._sync_history()
        built = await self._build_off_loop(self._active, history, self._budget())
        compacted = 0
        try:
            response, latency = await self._send(built, self._breakpoints(built))
        except ContextLengthExceeded as exc:
            before = built.report.tokens_out
            target = max(1, int(before * self.shrink))
            try:
                smaller = await self._build_off_loop(self.fallback, history, self._budget(target), record=False)
            except CtxmemError as inner:
                raise ContextLengthExceeded(
                    f"{exc} (the fallback {self.fallback.name!r} could not make the context smaller: {inner})",
                    status=exc.status,
                    provider=exc.provider,
                ) from exc
            if list(smaller.messages) == list(built.messages):
                raise ContextLengthExceeded(
                    f"{exc} (the fallback {self.fallback.name!r} could not make the context smaller)",
                    status=exc.status,
                    provider=exc.provider,
                ) from exc
            kept = {id(m) for m in smaller.messages}
            dropped = tuple(
                i for m, ids in zip(history.messages, history.event_ids, strict=True) if id(m) not in kept for i in ids
            )
            self.session.record_compaction(
                CompactionEvent(
                    strategy=self.fallback.name,
                    tokens_before=before,
                    tokens_after=smaller.report.tokens_out,
                    source_event_ids=dropped,
                    reason=f"provider: context too long; retrying once. {exc}",
                )
            )
            self._active, self._fallback_input = self.fallback, target
            if self._telemetry is not None:
                self._telemetry.refused(before, smaller.report.tokens_out, self.fallback.name, str(exc))
            compacted = 1
            built = smaller
            response, latency = await self._send(built, self._breakpoints(built))
        estimate, recorded = self._record(response, built.report.tokens_out, latency)
        if recorded.content is not response.content:  # the reply as recorded: its tools run under its ids
            response = replace(response, content=recorded.content)
        if self._telemetry is not None:
            self._telemetry.responded(response, estimate, len(response.tool_uses))
        return response, compacted

    def _record(self, response: Response, estimate: int, latency: float) -> tuple[int, Message]:
        u = response.usage
        corrected = self.calibration.correct(estimate)  # what we expected, before this reply teaches us
        if u.prompt_tokens > 0:
            self.calibration.observe(estimate, u.prompt_tokens)
            self.session.store.record_calibration(self.model, self.tokenizer_name, estimate, u.prompt_tokens)
        call = ModelCallEvent(
            model=response.model or self.model,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            stop_reason=response.stop_reason,
            latency_s=round(latency, 6),
            estimated_input_tokens=corrected,
            request_id=response.id,
        )
        message = self._storable(response.message)
        if not message.content:
            # an empty reply (it happens after tool results) sent back next turn would be an
            # empty assistant message, which a provider refuses: its usage is kept, not it
            self.session.record_events([call, NoteEvent("the model's reply was empty; not kept in the conversation",
                                                        ("empty-reply",))])
            return corrected, message
        try:
            # the reply and its usage land together or not at all
            ids = self.session.record_events([call, *events_from_message(message)])
        except CtxmemError as exc:
            # the request was made and paid for: its usage is kept, and the error says whose reply it was
            self.session.record_events([call, NoteEvent(f"the model's reply could not be recorded: {exc}", ("bad-reply",))])
            raise InvalidConversationError(
                f"the reply of {response.model or self.model!r} could not be recorded ({exc}); its usage was "
                "recorded and the session is unchanged otherwise"
            ) from None
        self._unsynced.append((message, ids[1:]))
        return corrected, message

    def _storable(self, message: Message) -> Message:
        """The reply as the session can store it: a tool_use id the session already holds
        (servers that number calls ``call_0`` every turn) gets a fresh one, lone
        surrogates (undecodable bytes some servers pass through) become U+FFFD, and empty
        text blocks are left out (a reply of nothing else is then empty). Anything
        else it cannot store is refused by the session, naming the field."""
        changed = False
        blocks: list[Any] = []
        taken: set[str] = set()
        for b in message.content:
            if isinstance(b, TextBlock) and not b.text:
                changed = True  # an empty text block (beside a tool call): nothing to keep, and refused by some APIs
                continue
            new = _scrub_block(b)
            if isinstance(new, ToolUseBlock):
                uid, n = new.id, 1
                while uid in taken or self.session.tool_id_taken(uid):
                    n += 1
                    uid = f"{new.id}_{n}"
                taken.add(uid)
                if uid != new.id:
                    new = ToolUseBlock(uid, new.name, new.input)
            changed = changed or new is not b
            blocks.append(new)
        return Message(message.role, tuple(blocks)) if changed else message

    async def _run_tools(self, uses: Sequence[ToolUseBlock]) -> None:
        blocks: list[ToolResultBlock] = []
        ids: list[int] = []
        for use in uses:
            blocks.append(await self._run_tool(use, ids))
        self._unsynced.append((Message("user", tuple(blocks)), ids))

    def _context_tool(self, name: str) -> Callable[[dict[str, Any]], str]:
        def run(arguments: dict[str, Any]) -> str:
            return run_context_tool(name, arguments, history=self._history, session=self.session)

        return run

    async def _run_tool(self, use: ToolUseBlock, ids: list[int]) -> ToolResultBlock:
        tool = self.tools.get(use.name)
        fn: ToolFn | None = tool.fn if tool is not None else None
        if fn is None and (use.name in self.context_tools or use.name in CONTEXT_TOOLS):
            fn = self._context_tool(use.name)
        start = time.monotonic()
        is_error = False
        unparsed = _unparsed_arguments(use)
        if unparsed is not None:
            shown = unparsed if len(unparsed) <= 200 else unparsed[:200] + "..."
            output = (
                f"the arguments of this {use.name} call were not valid JSON ({shown!r}), so the tool was not run; "
                "call it again with its arguments as one JSON object"
            )
            is_error = True
        elif fn is None:
            known = ", ".join(sorted({*self.tools, *self.context_tools})) or "(none)"
            output = f"unknown tool {use.name!r}; available tools: {known}"
            is_error = True
        else:
            try:
                result = await _call_tool(fn, dict(use.input))
                output = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
            except asyncio.CancelledError:
                raise
            except (Exception, SystemExit) as exc:
                # SystemExit too: a tool wrapping a CLI (argparse, sys.exit) must not end the agent
                output = f"{use.name} failed: {type(exc).__name__}: {exc}"
                is_error = True
        output = _scrub_text(output)  # a file name or a process's output in undecodable bytes
        ids.append(
            self.session.record_tool_result(
                use.id, output, is_error=is_error, tool_name=use.name, duration_s=round(time.monotonic() - start, 6)
            )
        )
        return ToolResultBlock(use.id, output, is_error)

    def request_cost(self, usage: Usage) -> float | None:
        """One request's price in US dollars from the price table; ``None`` for an unpriced model.

        Uncached input, output, cache reads and cache writes are billed at the model's
        rates, at its long-context tier when ``usage.prompt_tokens`` crosses the threshold,
        and cache writes at the 1-hour price when ``cache_breakpoints.ttl == "1h"`` and the
        model has one.
        """
        if self.price is None:
            return None
        one_hour = (
            self.cache_breakpoints is not None
            and self.cache_breakpoints.ttl == "1h"
            and self.price.model.cache_write_1h is not None
        )
        rates = self.price.rates(usage.prompt_tokens, ttl="1h" if one_hour else "default")
        return rates.dollars(
            uncached=usage.input_tokens,
            written=usage.cache_write_tokens,
            read=usage.cache_read_tokens,
            output=usage.output_tokens,
        )

    def _cost(self, usage: Usage, spent: float) -> float:
        if self.cost_fn is not None:
            return self.cost_fn(usage, self.model)
        return spent if self.price is not None else math.nan

    def __repr__(self) -> str:
        return f"Agent(model={self.model!r}, session={self.session.id!r}, tools={sorted(self.tools)})"


__all__ = ["Agent", "AgentResult", "Tool", "ToolFn", "choose_tokenizer"]


_WARNED: set[str] = set()


def choose_tokenizer(model: str, preferred: str | None = None) -> tuple[str, bool]:
    """The tokenizer an agent counts with, and whether it is the model's own.

    ``preferred`` when given (an explicit choice must load); else the model's own via
    :func:`ctxmem.tokens.tokenizer_for_model` when it loads; else ``o200k_base`` (a stand-in
    for models whose tokenizer is unknown or not public, calibrated against usage); the
    heuristic only when nothing exact loads, with a loud warning (once per model).
    """
    if preferred is not None:
        tok = get_tokenizer(preferred)
        return preferred, tok.exact
    own, own_exact = tokenizer_for_model(model)
    candidates = [(own, own_exact)] + ([("o200k_base", False)] if own != "o200k_base" else [])
    failures: list[str] = []
    for name, exact in candidates:
        try:
            loaded = get_tokenizer(name)
            return name, exact and loaded.exact
        except (TokenizerError, CtxmemError, OSError) as exc:
            failures.append(f"{name}: {str(exc).split('. ')[0]}")
    message = (
        f"ctxmem: no exact tokenizer could be loaded for model {model!r} ({'; '.join(failures)}). "
        "Counting with the HEURISTIC estimate, which over-counts (about 1.8x o200k on code and logs): "
        "budgets are approximate until calibration against the provider's usage corrects them. "
        "Make o200k_base available (install quicktok-v1, which bundles it, or give tiktoken its file "
        "through TIKTOKEN_CACHE_DIR) or pass tokenizer=."
    )
    if model not in _WARNED:
        _WARNED.add(model)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)
    return "heuristic", False


@functools.lru_cache(maxsize=4)
def _default_prices(user_file: str, mtime: float | None) -> PriceTable:
    """The shipped table plus the user's file, loaded once per version of that file."""
    from ctxmem.tune.prices import load_prices

    return load_prices()


def _find_price(model: str, prices: str | os.PathLike[str] | PriceTable | None) -> Price | None:
    """The model's entry in the price table, or ``None`` when the table does not know it."""
    from ctxmem.tune.prices import MissingPriceError, PriceTable, default_user_file, load_prices

    if isinstance(prices, PriceTable):
        table = prices
    elif prices is not None:
        table = load_prices(prices)
    else:
        user = default_user_file()
        table = _default_prices(str(user), user.stat().st_mtime if user.is_file() else None)
    try:
        return table.get(model)
    except MissingPriceError:
        return None


def _price_file(prices: str | os.PathLike[str] | PriceTable | None) -> str:
    from ctxmem.tune.prices import PriceTable, default_user_file

    if isinstance(prices, PriceTable):
        return prices.user_file
    return str(prices) if prices is not None else str(default_user_file())


def _resolve_builder(
    spec: str | os.PathLike[str] | Preset | ContextBuilder | ContextStrategy | None,
    session: Session,
    client: ModelClient,
    *,
    model: str,
    tokenizer: str | None,
    context_window: int | None,
    pinned: int | None,
    max_tokens: int,
) -> ContextBuilder:
    """The builder for ``spec``: a builder as given (explicit overrides refused), a preset
    (by object, name or path: honoured in full), a strategy object, the session's
    ``metadata["strategy"]`` preset, or the truncating full history."""
    from ctxmem.config import ContextBuilder, Preset, load_preset

    if isinstance(spec, ContextBuilder):
        if tokenizer is not None or context_window is not None or pinned is not None:
            raise ConfigError(
                "a ContextBuilder already holds its window, tokenizer and pinned count; "
                "pass those to preset.builder(...) instead",
                field="preset",
            )
        b = spec.budget
        if b.reserve_output < max_tokens:  # the reply's room must hold what the agent asks for
            if max_tokens >= b.context_window:
                raise ConfigError(
                    f"max_tokens {max_tokens} leaves no input room in a {b.context_window}-token window",
                    field="max_tokens",
                )
            spec = replace(spec, budget=Budget(b.context_window, max_tokens, b.threshold))
        return spec
    if spec is None:
        meta = session.info.metadata.get("strategy")
        if meta is not None and not isinstance(meta, str):
            raise ConfigError(
                f"session {session.id} has metadata['strategy'] = {meta!r}; it must be a preset "
                "name or path (ctxmem strategies list)",
                field="metadata.strategy",
            )
        spec = meta
    if isinstance(spec, str | os.PathLike):
        spec = load_preset(spec)
    if isinstance(spec, Preset):
        if tokenizer is None and spec.tokenizer_set:
            spec.load_tokenizer()  # one that cannot load is an error naming the preset's line
        tok, _ = choose_tokenizer(model, tokenizer or (spec.model.tokenizer if spec.tokenizer_set else None))
        return spec.builder(
            context_window=context_window, tokenizer=tok, pinned=pinned, reserve_output=max_tokens, client=client
        )
    strategy: ContextStrategy = Dump(on_overflow="truncate") if spec is None else spec
    window = context_window or 200_000
    if max_tokens >= window:
        raise ConfigError(f"max_tokens {max_tokens} leaves no input room in a {window}-token window", field="max_tokens")
    return ContextBuilder(
        strategy,
        Budget(window, reserve_output=max_tokens),
        choose_tokenizer(model, tokenizer)[0],
        1 if pinned is None else pinned,
        name=getattr(strategy, "name", "custom"),
    )


async def _call_tool(fn: ToolFn, arguments: dict[str, Any]) -> Any:
    """``fn(arguments)``, awaited when it returns an awaitable. A sync function runs in a
    worker thread, off the event loop: a slow tool does not stall the loop, and a tool that
    itself calls sync ctxmem code (a sub-agent's ``run_sync``) does not wait on the loop it
    blocks. An ``async def`` (or an object with one as ``__call__``) runs on the loop."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        result = fn(arguments)
    else:
        result = await asyncio.to_thread(fn, arguments)
    if inspect.isawaitable(result):
        result = await result
    return result


def _unparsed_arguments(use: ToolUseBlock) -> str | None:
    """The raw text of a call whose arguments were not valid JSON (recorded as
    ``{"_unparsed_arguments": text}``), else ``None``."""
    inp = use.input
    if len(inp) == 1 and isinstance(raw := inp.get("_unparsed_arguments"), str):
        return raw
    return None


#: the most events a turn reads to catch up with the session before loading it whole
_CATCH_UP = 512

_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub_text(text: str) -> str:
    """Lone surrogates (``os.listdir`` or ``subprocess`` output with ``surrogateescape``, a
    ``\\ud83d`` escape alone in a server's JSON) as U+FFFD: text the session can store."""
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() and _SURROGATE.search(text) else text


def _scrub_value(v: Any) -> Any:
    """``v`` with its strings scrubbed: the same object when nothing changed."""
    if isinstance(v, str):
        return _scrub_text(v)
    if isinstance(v, dict):
        pairs = [(_scrub_text(k) if isinstance(k, str) else k, _scrub_value(x)) for k, x in v.items()]
        same = all(k2 is k and x2 is x for (k2, x2), (k, x) in zip(pairs, v.items(), strict=True))
        return v if same else dict(pairs)
    if isinstance(v, list):
        items = [_scrub_value(x) for x in v]
        return v if all(a is b for a, b in zip(items, v, strict=True)) else items
    return v


def _scrub_block(b: Any) -> Any:
    if isinstance(b, TextBlock):
        text = _scrub_text(b.text)
        return b if text is b.text else replace(b, text=text)
    if isinstance(b, ThinkingBlock):
        text = _scrub_text(b.thinking)
        return b if text is b.thinking else replace(b, thinking=text)
    if isinstance(b, ToolUseBlock):
        inp = _scrub_value(b.input)
        return b if inp is b.input else ToolUseBlock(b.id, b.name, inp)
    return b


def _check_agent_args(
    client: Any, session: Any, tools: Any, system: Any, on_resume: Any, max_turns: Any, max_tokens: Any
) -> None:
    """Wrong arguments fail here, naming the field, not at the first request."""
    if not callable(getattr(client, "request", None)):
        raise ConfigError(
            f"expected a model client (ctxmem.clients: AnthropicClient, OpenAICompatClient, ScriptedClient, …), "
            f"got {type(client).__name__}",
            field="client",
        )
    if not isinstance(session, Session):
        raise ConfigError(f"expected a ctxmem Session (Session.create(store)), got {type(session).__name__}",
                          field="session")
    if isinstance(tools, str | dict) or not isinstance(tools, Sequence | tuple | list):
        raise ConfigError(f"expected a list of Tool, got {type(tools).__name__}", field="tools")
    for k, t in enumerate(tools):
        if not isinstance(t, Tool):
            raise ConfigError(f"expected a Tool (Tool(name, fn, description, schema)), got {t!r}", field=f"tools[{k}]")
        if not callable(t.fn):
            raise ConfigError(f"tool {t.name!r}: fn must be callable, got {t.fn!r}", field=f"tools[{k}].fn")
    if system is not None and not isinstance(system, str):
        raise ConfigError(f"expected the system prompt as text, got {type(system).__name__}", field="system")
    if on_resume not in ("rerun", "fail"):
        raise ConfigError(f"expected 'rerun' or 'fail', got {on_resume!r}", field="on_resume")
    for name, v in (("max_turns", max_turns), ("max_tokens", max_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"expected a whole number of at least 1, got {v!r}", field=name)
