"""OpenTelemetry spans for context builds and model requests (GenAI semantic conventions).

Off unless enabled: nothing here imports ``opentelemetry`` until :func:`enable` is called
(or ``CTXMEM_OTEL=1`` is set and a traced object is used), and the wrappers pass straight
through while tracing is off::

    from ctxmem.integrations import otel
    otel.enable()                                   # the global TracerProvider, or pass one
    agent = Agent(otel.traced_client(client), session, strategy=otel.traced_strategy("masking-200k"))

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
from collections.abc import Sequence
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
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.set_attribute("error.type", type(exc).__name__)
            raise
        r = built.report
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
        return built


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
        from opentelemetry.trace import SpanKind, Status, StatusCode

        provider = _provider_name(self.inner)
        tracer = _state["tracer"]
        with tracer.start_as_current_span(f"chat {self.model}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", provider)
            span.set_attribute("gen_ai.system", provider)
            span.set_attribute("gen_ai.request.model", self.model)
            if kwargs.get("max_tokens") is not None:
                span.set_attribute("gen_ai.request.max_tokens", int(kwargs["max_tokens"]))
            if kwargs.get("temperature") is not None:
                span.set_attribute("gen_ai.request.temperature", float(kwargs["temperature"]))
            conv = self.conversation_id or _conversation.get() or _state.get("last_conversation")
            if conv:
                span.set_attribute("gen_ai.conversation.id", conv)
            try:
                response = await self.inner.request(messages, **kwargs)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            u = response.usage
            span.set_attribute("gen_ai.response.model", response.model or self.model)
            if response.id:
                span.set_attribute("gen_ai.response.id", response.id)
            span.set_attribute("gen_ai.response.finish_reasons", [str(response.stop_reason)])
            span.set_attribute("gen_ai.usage.input_tokens", int(u.prompt_tokens))
            span.set_attribute("gen_ai.usage.output_tokens", int(u.output_tokens))
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", int(u.cache_read_tokens))
            span.set_attribute("gen_ai.usage.cache_creation.input_tokens", int(u.cache_write_tokens))
            return response


def traced_client(client: Any, *, conversation_id: str | None = None) -> TracedClient:
    """Wrap a model client in ``chat`` spans."""
    return TracedClient(client, conversation_id=conversation_id)


__all__ = ["TracedClient", "TracedStrategy", "disable", "enable", "enabled", "record_build",
           "traced_client", "traced_strategy"]
