"""The agent loop: build context → request → record → run tools → record results → repeat.

:class:`Agent` ties a :class:`~ctxmem.session.Session`, a context builder, a
:class:`~ctxmem.clients.ModelClient` and a set of :class:`Tool` together::

    agent = Agent(client, session, tools=[Tool("read_file", read_file, "Read a file", schema)],
                  system="You optimize kernels.", context_window=200_000)
    result = agent.run_sync("Make the kernel faster.")

Every step is recorded before the next begins, so the session is always a faithful log:

1. **Build** the context with the session's *strategy*: any
   :class:`~ctxmem.context.ContextStrategy`, or a preset name or TOML path
   (``strategy="masking-200k"``). Without one, the session's own ``metadata["strategy"]``
   preset is used, so a session created with ``metadata={"strategy": "pipeline-200k"}``
   resumes under the same strategy; failing that, the full history, truncated at a safe cut
   point if it outgrows the window. The agent keeps a
   :class:`~ctxmem.context.History` of the session and extends it with what it records, so
   a turn counts only its new messages. The result is checked with
   :func:`~ctxmem.messages.validate_conversation` before it is sent; the strategy's cache
   breakpoints are passed to the client. A strategy that offers a ``recall`` tool
   (reversible masking) gets it run by the agent against the session.
2. **Request**; record the assistant message and a ``model_call`` event (usage, stop reason,
   latency, our estimate of the prompt) in one transaction.
3. **Run** each requested tool and record its result as soon as it finishes. A tool that
   raises, or an unknown tool name, gives an ``is_error`` result: the model sees the error.
4. **Stop** on any stop reason but ``tool_use``/``pause_turn`` (``end_turn``, ``max_tokens``,
   ``refusal``…), after ``max_turns`` requests, or before a request once ``max_total_tokens``
   or ``max_cost`` (needs ``cost_fn``) is reached. Budgets are checked only between turns,
   so no tool call is ever left without its result.

**Context too long.** When the provider raises
:class:`~ctxmem.errors.ContextLengthExceeded`, the agent rebuilds the context with its
*fallback* under a budget shrunk to ``shrink`` × the tokens it just sent, records a
``compaction`` event (tokens before/after, the event ids it left out, the reason) and
retries once. A second refusal is raised. The fallback, under the shrunk budget, stays in
use for the rest of the run (the provider has told us where its limit is). The default
fallback is the recent :class:`~ctxmem.context.builtins.Window`: the pinned task plus the
most recent messages that fit, cut only where every invariant allows.

**Resume.** A new Agent on an existing session first accounts for tool calls that never
got a result (a crash between the call and its result): with ``on_resume="rerun"`` known
tools are run again; otherwise (or for unknown tools) an ``is_error`` result says the call
was interrupted. A ``note`` event records what was done. Nothing is silently dropped.

**Calibration.** Each reply's reported prompt size is paired with the agent's own estimate
(``tokenizer``, default the over-counting heuristic) and stored with
``store.record_calibration``; when the provider counts more than we do, the window handed
to the strategy shrinks by that factor, so the budget holds in the provider's tokens.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ctxmem.clients.base import (
    CacheBreakpoints,
    ModelClient,
    Response,
    ThinkingConfig,
    Usage,
    run_sync,
)
from ctxmem.context import BuildRequest, BuiltContext, ContextStrategy, History
from ctxmem.context.builtins import Dump, Window
from ctxmem.context.masking import RECALL_TOOL, RecallTool
from ctxmem.errors import ConfigError, ContextLengthExceeded, CtxmemError
from ctxmem.events import CompactionEvent, ModelCallEvent, events_from_message
from ctxmem.messages import (
    Message,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    tool_to_anthropic,
    validate_conversation,
)
from ctxmem.session import Session
from ctxmem.tokens import Budget, Calibration, count_request, get_tokenizer

ToolFn = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Tool:
    """A tool the agent can run: ``fn(input) -> output`` (sync or async).

    The output is sent as text: a string as is, anything else as JSON. An exception becomes
    an ``is_error`` result carrying its type and message.
    """

    name: str
    fn: ToolFn
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.input_schema)


@dataclass(frozen=True)
class AgentResult:
    """How a run ended."""

    stop_reason: str  # a model stop reason, or max_turns / token_budget / cost_budget
    turns: int
    usage: Usage
    cost: float | None
    final: Response | None
    session_id: str
    compactions: int = 0

    @property
    def text(self) -> str:
        return self.final.text if self.final is not None else ""


class Agent:
    """See the module docstring."""

    def __init__(
        self,
        client: ModelClient,
        session: Session,
        *,
        tools: Sequence[Tool] = (),
        system: str | None = None,
        strategy: ContextStrategy | str | None = None,
        fallback: ContextStrategy | None = None,
        pinned: int = 1,
        context_window: int = 200_000,
        max_tokens: int = 4096,
        max_turns: int = 50,
        max_total_tokens: int | None = None,
        max_cost: float | None = None,
        cost_fn: Callable[[Usage, str], float] | None = None,
        tokenizer: str = "heuristic",
        shrink: float = 0.6,
        on_resume: Literal["rerun", "fail"] = "rerun",
        cache_breakpoints: CacheBreakpoints | None = CacheBreakpoints(),  # noqa: B008 (frozen)
        temperature: float | None = None,
        thinking: ThinkingConfig | None = None,
    ):
        if max_cost is not None and cost_fn is None:
            raise ConfigError("max_cost needs cost_fn= (a function of Usage and model name)", field="max_cost")
        if not 0 < shrink < 1:
            raise ConfigError("must be in (0, 1)", field="shrink")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"tool names must be unique, got {names}", field="tools")
        self.client = client
        self.session = session
        self.tools = {t.name: t for t in tools}
        self.system = system
        self.strategy: ContextStrategy = _resolve_strategy(strategy, session)
        self.fallback: ContextStrategy = fallback or Window()
        self.context_window = context_window
        self.budget = Budget(context_window, reserve_output=max_tokens)
        self.pinned = pinned
        self.max_tokens = max_tokens
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens
        self.max_cost = max_cost
        self.cost_fn = cost_fn
        self.shrink = shrink
        self.on_resume = on_resume
        self.cache_breakpoints = cache_breakpoints
        self.temperature = temperature
        self.thinking = thinking
        self.tokenizer_name = tokenizer
        self.tokenizer = get_tokenizer(tokenizer)
        model = getattr(client, "model", "") or type(client).__name__
        self.model = str(model)
        self.calibration = Calibration(self.model, self.tokenizer.id)
        for est, rep in session.store.calibration_observations(self.model, tokenizer):
            self.calibration.observe(est, rep)
        self._active: ContextStrategy = self.strategy
        self._active_window: int | None = None  # set when the provider refused a larger context
        self._history: History | None = None
        self._unsynced: list[tuple[Message, list[int]]] = []
        if "recall" not in self.tools and any(
            getattr(getattr(s, "config", None), "reversible", False) for s in (self.strategy, self.fallback)
        ):
            self.tools["recall"] = Tool("recall", self._recall, RECALL_TOOL.description, RECALL_TOOL.input_schema)
        self._specs = [t.spec for t in self.tools.values()]

    # ------------------------------------------------------------------ running

    def run_sync(self, prompt: str | Message | None = None) -> AgentResult:
        return run_sync(lambda: self.run(prompt))

    async def run(self, prompt: str | Message | None = None) -> AgentResult:
        """Resume pending tool calls, record ``prompt`` (if any), and loop until a stop."""
        await self.resume()
        if prompt is not None:
            message = Message.user(prompt) if isinstance(prompt, str) else prompt
            self._unsynced.append((message, self.session.record(message)))
        usage = Usage()
        turns = 0
        compactions = 0
        final: Response | None = None
        stop = "max_turns"
        while turns < self.max_turns:
            if self.max_total_tokens is not None and usage.total_tokens >= self.max_total_tokens:
                stop = "token_budget"
                break
            if self.max_cost is not None and self._cost(usage) >= self.max_cost:
                stop = "cost_budget"
                break
            response, compacted = await self._request_turn()
            compactions += compacted
            turns += 1
            usage = usage + response.usage
            final = response
            if response.tool_uses:
                await self._run_tools(response.tool_uses)
            if response.stop_reason not in ("tool_use", "pause_turn"):
                stop = response.stop_reason
                break
        return AgentResult(stop, turns, usage, self._cost(usage) if self.cost_fn else None, final, self.session.id, compactions)

    async def resume(self) -> list[str]:
        """Account for tool calls that never got a result. Returns their ids."""
        pending = self.session.pending_tool_uses()
        if not pending:
            return []
        self._history = None  # results may join a partly answered message: reload after
        rerun = [u for u in pending if self.on_resume == "rerun" and u.name in self.tools]
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

    def _estimate(self, messages: Sequence[Message]) -> int:
        tools = [tool_to_anthropic(t) for t in self._specs]
        return count_request(messages, self.tokenizer, system=self.system, tools=tools).total

    async def _send(
        self, context: Sequence[Message], breakpoints: CacheBreakpoints | None
    ) -> tuple[Response, int, float]:
        validate_conversation(context)
        estimate = self._estimate(context)
        start = time.monotonic()
        response = await self.client.request(
            context,
            system=self.system,
            tools=self._specs or None,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            cache_breakpoints=breakpoints,
            thinking=self.thinking,
        )
        return response, estimate, time.monotonic() - start

    def _sync_history(self) -> History:
        """The session's history, extended with what this agent recorded since the last turn."""
        if self._history is None:
            self._history = History.from_session(self.session, self.tokenizer_name)
            self._unsynced = []
        elif self._unsynced:
            self._history.extend([m for m, _ in self._unsynced], event_ids=[ids for _, ids in self._unsynced])
            self._unsynced = []
        return self._history

    def _budget(self, window: int | None = None) -> Budget:
        """The strategy's budget, in our tokenizer's units, corrected by calibration."""
        window = window or self._active_window or self.context_window
        factor = max(1.0, self.calibration.factor)
        return Budget(max(self.max_tokens + 1, int(window / factor)), reserve_output=self.max_tokens)

    def _build(self, strategy: ContextStrategy, history: History, budget: Budget, *, record: bool = True) -> BuiltContext:
        # record=False: the agent records this compaction itself (with the provider's reason)
        request = BuildRequest(
            history, budget, system=self.system, tools=tuple(self._specs), pinned=self.pinned,
            session=self.session if record else None,
        )
        return strategy.build(request)

    def _breakpoints(self, built: BuiltContext) -> CacheBreakpoints | None:
        if self.cache_breakpoints is None or not built.cache_breakpoints:
            return self.cache_breakpoints
        return replace(self.cache_breakpoints, messages=tuple(built.cache_breakpoints))

    async def _request_turn(self) -> tuple[Response, int]:
        history = self._sync_history()
        built = self._build(self._active, history, self._budget())
        context = list(built.messages)
        compacted = 0
        try:
            response, estimate, latency = await self._send(context, self._breakpoints(built))
        except ContextLengthExceeded as exc:
            before = self._estimate(context)
            target = max(1, int(before * self.shrink))
            window = target + self.max_tokens
            try:
                smaller_built = self._build(self.fallback, history, self._budget(window), record=False)
            except CtxmemError as inner:
                raise ContextLengthExceeded(
                    f"{exc} (the fallback {self.fallback.name!r} could not make the context smaller: {inner})",
                    status=exc.status,
                    provider=exc.provider,
                ) from exc
            smaller = list(smaller_built.messages)
            if smaller == context:
                raise ContextLengthExceeded(
                    f"{exc} (the fallback {self.fallback.name!r} could not make the context smaller)",
                    status=exc.status,
                    provider=exc.provider,
                ) from exc
            kept = {id(m) for m in smaller}
            dropped = tuple(
                i for m, ids in zip(history.messages, history.event_ids, strict=True) if id(m) not in kept for i in ids
            )
            self.session.record_compaction(
                CompactionEvent(
                    strategy=self.fallback.name,
                    tokens_before=before,
                    tokens_after=self._estimate(smaller),
                    source_event_ids=dropped,
                    reason=f"provider: context too long; retrying once. {exc}",
                )
            )
            self._active, self._active_window = self.fallback, window
            compacted = 1
            context = smaller
            response, estimate, latency = await self._send(context, self._breakpoints(smaller_built))
        self._record(response, estimate, latency)
        return response, compacted

    def _record(self, response: Response, estimate: int, latency: float) -> None:
        u = response.usage
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
            estimated_input_tokens=self.calibration.correct(estimate),
            request_id=response.id,
        )
        # the reply and its usage land together or not at all
        ids = self.session.record_events([call, *events_from_message(response.message)])
        self._unsynced.append((response.message, ids[1:]))

    async def _run_tools(self, uses: Sequence[ToolUseBlock]) -> None:
        blocks: list[ToolResultBlock] = []
        ids: list[int] = []
        for use in uses:
            blocks.append(await self._run_tool(use, ids))
        self._unsynced.append((Message("user", tuple(blocks)), ids))

    def _recall(self, arguments: dict[str, Any]) -> str:
        return RecallTool(self._history, self.session)(arguments)

    async def _run_tool(self, use: ToolUseBlock, ids: list[int]) -> ToolResultBlock:
        tool = self.tools.get(use.name)
        start = time.monotonic()
        is_error = False
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "(none)"
            output = f"unknown tool {use.name!r}; available tools: {known}"
            is_error = True
        else:
            try:
                result = tool.fn(dict(use.input))
                if inspect.isawaitable(result):
                    result = await result
                output = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                output = f"{use.name} failed: {type(exc).__name__}: {exc}"
                is_error = True
        ids.append(
            self.session.record_tool_result(
                use.id, output, is_error=is_error, tool_name=use.name, duration_s=round(time.monotonic() - start, 6)
            )
        )
        return ToolResultBlock(use.id, output, is_error)

    def _cost(self, usage: Usage) -> float:
        return self.cost_fn(usage, self.model) if self.cost_fn is not None else math.nan

    def __repr__(self) -> str:
        return f"Agent(model={self.model!r}, session={self.session.id!r}, tools={sorted(self.tools)})"
__all__ = ["Agent", "AgentResult", "Tool", "ToolFn"]


def _resolve_strategy(strategy: ContextStrategy | str | None, session: Session) -> ContextStrategy:
    """The strategy object for ``strategy``: as given, a preset by name or path, the
    session's ``metadata["strategy"]`` preset, or the truncating full history."""
    if strategy is None:
        strategy = session.info.metadata.get("strategy")
        if strategy is not None and not isinstance(strategy, str):
            raise ConfigError(
                f"session {session.id} has metadata['strategy'] = {strategy!r}; it must be a preset "
                "name or path (ctxmem strategies list)",
                field="metadata.strategy",
            )
    if strategy is None:
        return Dump(on_overflow="truncate")
    if isinstance(strategy, str):
        from ctxmem.config import load_preset

        built: ContextStrategy = load_preset(strategy).strategy()
        return built
    return strategy
