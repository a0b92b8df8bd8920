"""Model clients: one :class:`ModelClient` protocol, several backends, doubles for tests.

=====================  ===========================================  =====================
spec                   client                                       needs
=====================  ===========================================  =====================
``anthropic:MODEL``    :class:`AnthropicClient` (Messages API)      ``ctxmem[anthropic]``
``openai:MODEL``       :class:`OpenAICompatClient` (chat completions) ``ctxmem[openai]``
``local:PATH``         :class:`TransformersClient` (local HF model) ``ctxmem[hf]`` + torch
``scripted``           :class:`ScriptedClient` (queued replies)     —
``function``           :class:`FunctionClient` (``fn=`` required)   —
=====================  ===========================================  =====================

:func:`get_client` builds one from such a spec; prefixes are an entry-point group
(``ctxmem.clients``, a factory ``(model: str, **kw) -> ModelClient`` per name), so plugins
add backends the same way. No SDK is imported until a client is constructed.
"""

from __future__ import annotations

from typing import Any

from ctxmem.clients.base import (
    BaseClient,
    CacheBreakpoints,
    MalformedResponseError,
    ModelClient,
    ModelRequest,
    ProviderTimeoutError,
    Response,
    RetryPolicy,
    ThinkingConfig,
    TokenCountingClient,
    Usage,
    request_sync,
)
from ctxmem.clients.testing import FunctionClient, ScriptedClient
from ctxmem.errors import ConfigError
from ctxmem.registry import Registry

CLIENTS = Registry(
    "ctxmem.clients",
    "client",
    {
        "anthropic": "ctxmem.clients:_anthropic",
        "openai": "ctxmem.clients:_openai",
        "local": "ctxmem.clients:_local",
        "scripted": "ctxmem.clients:_scripted",
        "function": "ctxmem.clients:_function",
    },
)


def get_client(spec: str, **kw: Any) -> ModelClient:
    """Build a client from ``"prefix:model"`` (``"anthropic:claude-sonnet-4-6"``,
    ``"openai:qwen3"``, ``"local:/models/qwen"``, ``"scripted"``); ``kw`` go to its constructor.

    The model part may itself contain colons (``"openai:qwen3:8b"``). An unknown prefix
    raises :class:`~ctxmem.errors.UnknownNameError` with a "did you mean".
    """
    prefix, _, model = spec.partition(":")
    factory = CLIENTS.get(prefix.strip().lower())
    client: ModelClient = factory(model, **kw)
    return client


def _anthropic(model: str, **kw: Any) -> ModelClient:
    from ctxmem.clients.anthropic import AnthropicClient

    return AnthropicClient(model, **kw) if model else AnthropicClient(**kw)


def _openai(model: str, **kw: Any) -> ModelClient:
    from ctxmem.clients.openai_compat import OpenAICompatClient

    if not model:
        raise ConfigError("an OpenAI-compatible client needs a model: 'openai:MODEL'", field="model")
    return OpenAICompatClient(model, **kw)


def _local(model: str, **kw: Any) -> ModelClient:
    from ctxmem.clients.transformers_local import TransformersClient

    if not model:
        raise ConfigError("a local client needs a path or name: 'local:/path/to/model'", field="model")
    return TransformersClient(model, **kw)


def _scripted(model: str, **kw: Any) -> ModelClient:
    return ScriptedClient(model=model or "scripted", **kw)


def _function(model: str, **kw: Any) -> ModelClient:
    if "fn" not in kw:
        raise ConfigError("a function client needs fn=: get_client('function', fn=my_policy)", field="fn")
    return FunctionClient(kw.pop("fn"), model=model or "function", **kw)


def __getattr__(name: str) -> Any:
    # The backends are importable from here without importing their modules up front.
    if name == "AnthropicClient":
        from ctxmem.clients.anthropic import AnthropicClient

        return AnthropicClient
    if name == "OpenAICompatClient":
        from ctxmem.clients.openai_compat import OpenAICompatClient

        return OpenAICompatClient
    if name == "TransformersClient":
        from ctxmem.clients.transformers_local import TransformersClient

        return TransformersClient
    if name in ("LoopbackServer", "Fault"):
        from ctxmem.clients import loopback

        return getattr(loopback, name)
    raise AttributeError(f"module 'ctxmem.clients' has no attribute {name!r}")


__all__ = [
    "CLIENTS",
    "AnthropicClient",
    "BaseClient",
    "CacheBreakpoints",
    "Fault",
    "FunctionClient",
    "LoopbackServer",
    "MalformedResponseError",
    "ModelClient",
    "ModelRequest",
    "OpenAICompatClient",
    "ProviderTimeoutError",
    "Response",
    "RetryPolicy",
    "ScriptedClient",
    "ThinkingConfig",
    "TokenCountingClient",
    "TransformersClient",
    "Usage",
    "get_client",
    "request_sync",
]
