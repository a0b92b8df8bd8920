"""OpenTelemetry spans for context builds and model requests (GenAI semantic conventions).

Off unless asked for: nothing here imports ``opentelemetry`` until an Agent is given
``tracer=`` or :func:`enable` is called (or ``CTXMEM_OTEL=1`` is set and a traced object is
used), and the wrappers pass straight through while tracing is off::

    agent = Agent(client, session, preset="masking-200k", tracer=provider)   # one agent

    from ctxmem.integrations import otel       # or: every traced object of the process
    otel.enable()                              # the global TracerProvider, or pass one
    agent = Agent(otel.traced_client(client), session, strategy=otel.traced_strategy("masking-200k"))

``Agent(..., tracer=...)`` (a Tracer, a TracerProvider, or ``True`` for the global provider)
is the built-in hook: :class:`AgentTelemetry` gives each run a span and each turn a span
carrying the context build's figures and the model call, with the build and chat spans
below as its children. The wrappers below serve loops that are not ctxmem's Agent.

Spans:

``chat {model}`` (kind CLIENT, one per model request)
    ``gen_ai.operation.name`` = ``chat``, ``gen_ai.provider.name`` (and the older
    ``gen_ai.system``), ``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
    ``gen_ai.request.temperature``, ``gen_ai.conversation.id``, ``gen_ai.response.model``,
    ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens``
    (the whole prompt: uncached + cache read + cache creation), ``gen_ai.usage.output_tokens``,
    ``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``.
    A failed request records the exception and ``error.type``.
``ctxmem.build {strategy}`` (kind INTERNAL, one per context build)
    ``gen_ai.conversation.id`` (the session id), ``ctxmem.strategy``,
    ``ctxmem.budget.available``, ``ctxmem.tokens.before`` / ``ctxmem.tokens.after``,
    ``ctxmem.messages.{kept,masked,summarized,dropped}``, ``ctxmem.cache.stable_prefix_tokens``,
    ``ctxmem.cache.invalidated``; when the build compacted (anything masked, summarized or
    dropped), a ``ctxmem.compaction`` event with ``ctxmem.compaction.tokens_before`` /
    ``tokens_after`` and the strategy.

The conversation id reaches the model span from ``traced_client(..., conversation_id=...)``,
else from the build that preceded it in the same task (a context variable), else from the
process's most recent traced build (an Agent builds in a worker thread, whose context
variables do not flow back): several concurrent sessions in one process should pass
``conversation_id``.
:class:`~ctxmem.integrations._common.LoopBuilder` (Agents SDK session, LangChain
middleware, MCP ``build_context``) emits build spans whenever tracing is enabled.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ctxmem.errors import MissingDependencyError

_state: dict[str, Any] = {"enabled": None, "tracer": None}
_conversation: ContextVar[str | None] = ContextVar("ctxmem_conversation", default=None)


def enable(tracer_provider: Any = None) -> None:
    """Turn tracing on (with ``tracer_provider``, else OpenTelemetry's global one)."""
    try:
        from opentelemetry import trace
    except ImportError:
        raise MissingDependencyError("opentelemetry-api", "otel", "OpenTelemetry tracing") from None
    from importlib.metadata import version

    provider = tracer_provider or trace.get_tracer_provider()
    _state["tracer"] = provider.get_tracer("ctxmem", version("ctxmem"))
    _state["enabled"] = True


def disable() -> None:
    """Turn tracing off (traced objects pass straight through)."""
    _state["enabled"] = False
    _state["tracer"] = None


def enabled() -> bool:
    """Whether spans are emitted: :func:`enable` was called, or ``CTXMEM_OTEL=1`` is set."""
    if _state["enabled"] is None:  # first use: the environment decides
        if os.environ.get("CTXMEM_OTEL", "").lower() in ("1", "true", "yes", "on"):
            enable()
        else:
            _state["enabled"] = False
    return bool(_state["enabled"])


def _provider_name(client: Any) -> str:
    kind = type(client).__name__.lower()
    for name in ("anthropic", "openai", "transformers"):
        if name in kind:
            return name
    return "ctxmem"


# --------------------------------------------------------------------------- builds


def record_build(strategy_name: str, request: Any, build: Any) -> Any:
    """Run ``build()`` (a context build) inside a ``ctxmem.build`` span when tracing is on."""
    if not enabled():
        return build()
    from opentelemetry.trace import SpanKind, Status, StatusCode

    session = getattr(request, "session", None)
    conv = getattr(session, "id", None)
    if conv is not None:
        _conversation.set(str(conv))
        _state["last_conversation"] = str(conv)
    tracer = _state["tracer"]
    with tracer.start_as_current_span(f"ctxmem.build {strategy_name}", kind=SpanKind.INTERNAL) as span:
        if conv is not None:
            span.set_attribute("gen_ai.conversation.id", str(conv))
        span.set_attribute("ctxmem.strategy", strategy_name)
        span.set_attribute("ctxmem.budget.available", int(request.budget.available))
        try:
            built = build()
        except Exception as exc:
            _failed(span, exc, Status, StatusCode)
            raise
        _build_attributes(span, strategy_name, built.report)
        return built


def _failed(span: Any, exc: BaseException, status: Any, code: Any) -> None:
    span.record_exception(exc)
    span.set_status(status(code.ERROR, str(exc)))
    span.set_attribute("error.type", type(exc).__name__)


def _build_attributes(span: Any, strategy_name: str, r: Any) -> None:
    """A build's figures on ``span``, and a ``ctxmem.compaction`` event when it compacted."""
    span.set_attribute("ctxmem.tokens.before", int(r.tokens_in))
    span.set_attribute("ctxmem.tokens.after", int(r.tokens_out))
    for what in ("kept", "masked", "summarized", "dropped"):
        span.set_attribute(f"ctxmem.messages.{what}", len(getattr(r, what)))
    span.set_attribute("ctxmem.cache.stable_prefix_tokens", int(r.stable_prefix_tokens))
    span.set_attribute("ctxmem.cache.invalidated", bool(r.cache_invalidated))
    if len(r.masked) or len(r.summarized) or len(r.dropped):
        span.add_event("ctxmem.compaction", {
            "ctxmem.compaction.strategy": strategy_name,
            "ctxmem.compaction.tokens_before": int(r.tokens_in),
            "ctxmem.compaction.tokens_after": int(r.tokens_out),
        })


class TracedStrategy:
    """A :class:`~ctxmem.context.ContextStrategy` whose builds are traced (when tracing is on)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)

    @property
    def config(self) -> Any:
        """The wrapped strategy's config."""
        return self.inner.config

    def build(self, request: Any) -> Any:
        """The wrapped strategy's build, inside a context-build span (when enabled)."""
        return record_build(self.name, request, lambda: self.inner.build(request))

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def traced_strategy(strategy: Any) -> TracedStrategy:
    """Wrap a strategy object, or a preset name/path (its strategy), in build spans."""
    if isinstance(strategy, str):
        from ctxmem.config import load_preset

        strategy = load_preset(strategy).strategy()
    return TracedStrategy(strategy)


# --------------------------------------------------------------------------- model requests


class TracedClient:
    """A :class:`~ctxmem.clients.ModelClient` whose requests are ``chat`` spans (when tracing is on)."""

    def __init__(self, inner: Any, *, conversation_id: str | None = None):
        self.inner = inner
        self.model = inner.model
        self.conversation_id = conversation_id

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    async def request(self, messages: Sequence[Any], **kwargs: Any) -> Any:
        """The wrapped client's request, inside a GenAI chat span with its usage (when enabled)."""
        if not enabled():
            return await self.inner.request(messages, **kwargs)
        conv = self.conversation_id or _conversation.get() or _state.get("last_conversation")
        return await chat_span(_state["tracer"], self.inner, conv, kwargs,
                               lambda: self.inner.request(messages, **kwargs))


async def chat_span(tracer: Any, client: Any, conversation: str | None, kwargs: dict[str, Any],
                    call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` (one model request of ``client``) inside a GenAI ``chat {model}`` span."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = _provider_name(client)
    model = str(getattr(client, "model", "") or "")
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT) as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", provider)
        span.set_attribute("gen_ai.system", provider)
        span.set_attribute("gen_ai.request.model", model)
        if kwargs.get("max_tokens") is not None:
            span.set_attribute("gen_ai.request.max_tokens", int(kwargs["max_tokens"]))
        if kwargs.get("temperature") is not None:
            span.set_attribute("gen_ai.request.temperature", float(kwargs["temperature"]))
        if conversation:
            span.set_attribute("gen_ai.conversation.id", conversation)
        try:
            response = await call()
        except Exception as exc:
            _failed(span, exc, Status, StatusCode)
            raise
        span.set_attribute("gen_ai.response.model", response.model or model)
        if response.id:
            span.set_attribute("gen_ai.response.id", response.id)
        span.set_attribute("gen_ai.response.finish_reasons", [str(response.stop_reason)])
        _usage_attributes(span, response.usage)
        return response


def _usage_attributes(span: Any, u: Any) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", int(u.prompt_tokens))
    span.set_attribute("gen_ai.usage.output_tokens", int(u.output_tokens))
    span.set_attribute("gen_ai.usage.cache_read.input_tokens", int(u.cache_read_tokens))
    span.set_attribute("gen_ai.usage.cache_creation.input_tokens", int(u.cache_write_tokens))


def traced_client(client: Any, *, conversation_id: str | None = None) -> TracedClient:
    """Wrap a model client in ``chat`` spans."""
    return TracedClient(client, conversation_id=conversation_id)


# --------------------------------------------------------------------------- the Agent's own hook


def _resolve_tracer(tracer: Any) -> Any:
    """``True`` → the global provider's tracer; a ``TracerProvider`` → its tracer; a ``Tracer`` as is."""
    try:
        from opentelemetry import trace
    except ImportError:
        raise MissingDependencyError("opentelemetry-api", "otel", "OpenTelemetry tracing") from None
    from importlib.metadata import version

    if tracer is True:
        tracer = trace.get_tracer_provider()
    if hasattr(tracer, "get_tracer"):
        return tracer.get_tracer("ctxmem", version("ctxmem"))
    if not hasattr(tracer, "start_as_current_span"):
        from ctxmem.errors import ConfigError

        raise ConfigError(
            f"tracer must be an OpenTelemetry Tracer or TracerProvider, or True for the global provider; "
            f"got {type(tracer).__name__}",
            field="tracer",
        )
    return tracer


class AgentTelemetry:
    """The spans of one :class:`~ctxmem.agent.Agent` given ``tracer=`` (opt-in, per agent).

    Independent of :func:`enable` / :func:`disable` and of ``CTXMEM_OTEL``: the agent's own
    tracer is used, whatever the global switch says. Per :meth:`Agent.run
    <ctxmem.agent.Agent.run>` one ``invoke_agent ctxmem`` span (kind INTERNAL;
    ``gen_ai.operation.name = invoke_agent``, ``gen_ai.agent.name``, the conversation id,
    the model, the run's summed usage, ``ctxmem.turns`` and ``ctxmem.stop_reason``), and
    under it one ``ctxmem.turn`` span per turn (request, then the tools it asked for):

    ``ctxmem.turn.index``, ``gen_ai.conversation.id``, ``ctxmem.strategy`` (the one that
    built this turn: the preset's, or the fallback after a refusal),
    ``ctxmem.budget.available`` (the input budget in the agent's tokens, after calibration),
    ``ctxmem.tokens.before`` / ``ctxmem.tokens.after`` (the history, and what was sent),
    ``ctxmem.tokens.estimate`` (the calibrated estimate of the prompt in provider tokens),
    ``ctxmem.cache.stable_prefix_tokens``, ``ctxmem.cache.invalidated``,
    ``ctxmem.messages.{kept,masked,summarized,dropped}``, ``ctxmem.events.dropped`` (session
    events behind the dropped messages), ``ctxmem.tools.called``, the reply's
    ``gen_ai.response.finish_reasons`` and ``gen_ai.usage.*`` (with cache read and
    creation), a ``ctxmem.compaction`` event when the build compacted, and a
    ``ctxmem.provider_refusal`` event (tokens sent, tokens after the fallback) when the
    provider refused the context. Its children are the ``ctxmem.build {strategy}`` and
    ``chat {model}`` spans described above.
    """

    def __init__(self, tracer: Any, *, conversation_id: str, model: str):
        self.tracer = _resolve_tracer(tracer)
        self.conversation_id = conversation_id
        self.model = model
        self.turn_span: Any = None

    @contextmanager
    def run(self) -> Iterator[Any]:
        """The span of one run; the caller ends it with :meth:`finish_run`'s figures."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self.tracer.start_as_current_span("invoke_agent ctxmem", kind=SpanKind.INTERNAL) as span:
            span.set_attribute("gen_ai.operation.name", "invoke_agent")
            span.set_attribute("gen_ai.agent.name", "ctxmem")
            span.set_attribute("gen_ai.conversation.id", self.conversation_id)
            span.set_attribute("gen_ai.request.model", self.model)
            try:
                yield span
            except Exception as exc:
                _failed(span, exc, Status, StatusCode)
                raise

    @staticmethod
    def finish_run(span: Any, result: Any) -> None:
        """A finished run's turns, stop reason and summed usage on its span."""
        span.set_attribute("ctxmem.turns", int(result.turns))
        span.set_attribute("ctxmem.stop_reason", str(result.stop_reason))
        _usage_attributes(span, result.usage)

    @contextmanager
    def turn(self, index: int) -> Iterator[Any]:
        """The span of one turn (the request and the tools it asked for)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self.tracer.start_as_current_span("ctxmem.turn", kind=SpanKind.INTERNAL) as span:
            span.set_attribute("ctxmem.turn.index", index)
            span.set_attribute("gen_ai.conversation.id", self.conversation_id)
            self.turn_span = span
            try:
                yield span
            except Exception as exc:
                _failed(span, exc, Status, StatusCode)
                raise
            finally:
                self.turn_span = None

    @contextmanager
    def build(self, strategy_name: str, available: int) -> Iterator[Any]:
        """A ``ctxmem.build`` span around one context build (the caller reports it with :meth:`built`)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self.tracer.start_as_current_span(f"ctxmem.build {strategy_name}", kind=SpanKind.INTERNAL) as span:
            span.set_attribute("gen_ai.conversation.id", self.conversation_id)
            span.set_attribute("ctxmem.strategy", strategy_name)
            span.set_attribute("ctxmem.budget.available", int(available))
            try:
                yield span
            except Exception as exc:
                _failed(span, exc, Status, StatusCode)
                raise

    def built(self, span: Any, strategy_name: str, report: Any, dropped_events: int) -> None:
        """The build's figures on its own span and on the turn's."""
        _build_attributes(span, strategy_name, report)
        turn = self.turn_span
        if turn is not None:
            turn.set_attribute("ctxmem.strategy", strategy_name)
            turn.set_attribute("ctxmem.budget.available", int(report.available))
            _build_attributes(turn, strategy_name, report)
            turn.set_attribute("ctxmem.events.dropped", int(dropped_events))

    async def chat(self, client: Any, kwargs: dict[str, Any], call: Callable[[], Awaitable[Any]]) -> Any:
        """One model request in a ``chat {model}`` span."""
        return await chat_span(self.tracer, client, self.conversation_id, kwargs, call)

    def responded(self, response: Any, estimate: int, tools: int) -> None:
        """The reply's usage and stop reason, the prompt estimate and the tool count on the turn."""
        turn = self.turn_span
        if turn is None:
            return
        turn.set_attribute("ctxmem.tokens.estimate", int(estimate))
        turn.set_attribute("ctxmem.tools.called", int(tools))
        turn.set_attribute("gen_ai.response.finish_reasons", [str(response.stop_reason)])
        _usage_attributes(turn, response.usage)

    def refused(self, tokens_sent: int, tokens_after: int, fallback: str, reason: str) -> None:
        """A provider's context-length refusal and the fallback's rebuild, as a turn event."""
        if self.turn_span is not None:
            self.turn_span.add_event("ctxmem.provider_refusal", {
                "ctxmem.compaction.strategy": fallback,
                "ctxmem.compaction.tokens_before": int(tokens_sent),
                "ctxmem.compaction.tokens_after": int(tokens_after),
                "ctxmem.refusal": reason[:500],
            })


__all__ = ["AgentTelemetry", "TracedClient", "TracedStrategy", "chat_span", "disable", "enable", "enabled",
           "record_build", "traced_client", "traced_strategy"]
