"""The agent loop: build context → request → record → run tools → record results → repeat.

:class:`Agent` ties a :class:`~ctxmem.session.Session`, a context builder, a
:class:`~ctxmem.clients.ModelClient` and a set of :class:`Tool` together::

    agent = Agent(client, session, tools=[Tool("read_file", read_file, "Read a file", schema)],
                  system="You optimize kernels.", context_window=200_000)
    result = agent.run_sync("Make the kernel faster.")

Every step is recorded before the next begins, so the session is always a faithful log:

1. **Build** the context from the session's messages with the *strategy* (anything with
   ``build(messages, budget)`` returning messages, or an object with ``.messages``, such as
   a ``BuiltContext``; default: the full history). The result is checked with
   :func:`~ctxmem.messages.validate_conversation` before it is sent.
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
use for the rest of the run (the provider has told us where its limit is). The default fallback, :class:`TruncateOldest`, keeps the first message (the task)
and the longest recent suffix that starts at an assistant message (a safe cut: no tool
result loses its call) and fits.

**Resume.** A new Agent on an existing session first accounts for tool calls that never
got a result (a crash between the call and its result): with ``on_resume="rerun"`` known
tools are run again; otherwise (or for unknown tools) an ``is_error`` result says the call
was interrupted. A ``note`` event records what was done. Nothing is silently dropped.

**Calibration.** Each reply's reported prompt size is paired with the agent's own estimate
(``tokenizer``, default the over-counting heuristic) and stored with
``store.record_calibration``; prompt estimates for the budget use the corrected count.

Assumptions while ``ctxmem.context`` is being written: the strategy seam is the small
:class:`ContextBuilder` protocol below; a strategy that records its own compaction events
may do so through the session it is given at construction.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ctxmem.clients.base import (
    CacheBreakpoints,
    ModelClient,
    Response,
    ThinkingConfig,
    Usage,
    run_sync,
)
from ctxmem.errors import ConfigError, ContextLengthExceeded
from ctxmem.events import CompactionEvent, ModelCallEvent, events_from_message
from ctxmem.messages import (
    Message,
    ToolSpec,
    ToolUseBlock,
    tool_to_anthropic,
    validate_conversation,
)
from ctxmem.session import Session
from ctxmem.tokens import Budget, Calibration, Tokenizer, count_request, get_tokenizer

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


class ContextBuilder(Protocol):
    """The seam to context strategies: messages in, the messages to send out."""

    def build(self, messages: Sequence[Message], budget: Budget) -> Any: ...


class FullHistory:
    """Send everything (the default strategy)."""

    name = "full_history"

    def build(self, messages: Sequence[Message], budget: Budget) -> list[Message]:
        return list(messages)


class TruncateOldest:
    """Keep the first message and the longest suffix starting at an assistant message that fits.

    Counting uses ``tokenizer`` (content plus modelled overhead). If nothing but the first
    message fits, the last assistant turn and what follows are kept anyway (the smallest
    valid context); the provider will say if that is still too long.
    """

    name = "truncate_oldest"

    def __init__(self, tokenizer: Tokenizer | str = "heuristic"):
        self.tokenizer = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer

    def build(self, messages: Sequence[Message], budget: Budget) -> list[Message]:
        if len(messages) <= 2:
            return list(messages)
        head = [messages[0]]
        cuts = [i for i in range(1, len(messages)) if messages[i].role == "assistant"]
        if not cuts:
            return list(messages)
        for i in cuts:  # earliest cut first: the longest suffix that fits wins
            candidate = head + list(messages[i:])
            if count_request(candidate, self.tokenizer).total <= budget.available:
                return candidate
        return head + list(messages[cuts[-1] :])


def _messages_of(built: Any) -> list[Message]:
    if hasattr(built, "messages"):
        built = built.messages
    return list(built)


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
        strategy: ContextBuilder | None = None,
        fallback: ContextBuilder | None = None,
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
        self.strategy: ContextBuilder = strategy or FullHistory()
        self.fallback: ContextBuilder = fallback or TruncateOldest(tokenizer)
        self.budget = Budget(context_window, reserve_output=max_tokens)
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
        self._active: ContextBuilder = self.strategy
        self._active_budget = self.budget
        self._specs = [t.spec for t in tools]

    # ------------------------------------------------------------------ running

    def run_sync(self, prompt: str | Message | None = None) -> AgentResult:
        return run_sync(lambda: self.run(prompt))

    async def run(self, prompt: str | Message | None = None) -> AgentResult:
        """Resume pending tool calls, record ``prompt`` (if any), and loop until a stop."""
        await self.resume()
        if prompt is not None:
            self.session.record(Message.user(prompt) if isinstance(prompt, str) else prompt)
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
        rerun = [u for u in pending if self.on_resume == "rerun" and u.name in self.tools]
        for use in pending:
            if use in rerun:
                await self._run_tool(use)
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
        return [u.id for u in pending]

    # ------------------------------------------------------------------ one turn

    def _estimate(self, messages: Sequence[Message]) -> int:
        tools = [tool_to_anthropic(t) for t in self._specs]
        return count_request(messages, self.tokenizer, system=self.system, tools=tools).total

    async def _send(self, context: Sequence[Message]) -> tuple[Response, int, float]:
        validate_conversation(context)
        estimate = self._estimate(context)
        start = time.monotonic()
        response = await self.client.request(
            context,
            system=self.system,
            tools=self._specs or None,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            cache_breakpoints=self.cache_breakpoints,
            thinking=self.thinking,
        )
        return response, estimate, time.monotonic() - start

    async def _request_turn(self) -> tuple[Response, int]:
        spans = self.session.messages_with_ids()
        history = [m for m, _ in spans]
        context = _messages_of(self._active.build(history, self._active_budget))
        compacted = 0
        try:
            response, estimate, latency = await self._send(context)
        except ContextLengthExceeded as exc:
            before = self._estimate(context)
            target = max(1, int(before * self.shrink))
            shrunk = Budget(target + self.max_tokens, reserve_output=self.max_tokens)
            smaller = _messages_of(self.fallback.build(history, shrunk))
            if smaller == context:
                raise ContextLengthExceeded(
                    f"{exc} (the fallback {type(self.fallback).__name__} could not make the context smaller)",
                    status=exc.status,
                    provider=exc.provider,
                ) from exc
            kept = {id(m) for m in smaller}
            dropped = tuple(i for m, ids in spans if id(m) not in kept for i in ids)
            self.session.record_compaction(
                CompactionEvent(
                    strategy=getattr(self.fallback, "name", type(self.fallback).__name__),
                    tokens_before=before,
                    tokens_after=self._estimate(smaller),
                    source_event_ids=dropped,
                    reason=f"provider: context too long; retrying once. {exc}",
                )
            )
            self._active, self._active_budget = self.fallback, shrunk
            compacted = 1
            context = smaller
            response, estimate, latency = await self._send(context)
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
        self.session.record_events([call, *events_from_message(response.message)])

    async def _run_tools(self, uses: Sequence[ToolUseBlock]) -> None:
        for use in uses:
            await self._run_tool(use)

    async def _run_tool(self, use: ToolUseBlock) -> None:
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
        self.session.record_tool_result(
            use.id, output, is_error=is_error, tool_name=use.name, duration_s=round(time.monotonic() - start, 6)
        )

    def _cost(self, usage: Usage) -> float:
        return self.cost_fn(usage, self.model) if self.cost_fn is not None else math.nan

    def __repr__(self) -> str:
        return f"Agent(model={self.model!r}, session={self.session.id!r}, tools={sorted(self.tools)})"
__all__ = ["Agent", "AgentResult", "ContextBuilder", "FullHistory", "Tool", "ToolFn", "TruncateOldest"]
