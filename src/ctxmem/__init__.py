"""ctxmem: memory and context management for long-running LLM agents.

The public API is what ``__all__`` lists (pinned by ``tests/test_public_api.py``, every
name documented: ``tests/test_public_docs.py``), plus these documented extension packages,
each with its own ``__all__``:

* :mod:`ctxmem.context` — for strategy authors: the ``ContextStrategy`` contract, the
  invariants (safe cut points), the built-in strategies and ``make_strategy``;
* :mod:`ctxmem.workloads` — the ``Workload`` protocol (:mod:`ctxmem.workloads.base`) and
  the registry that plugin workloads join by entry point;
* :mod:`ctxmem.integrations` — the OpenAI Agents SDK session, LangChain/LangGraph, MCP,
  Inspect AI, OpenTelemetry and Responses-API adapters (each behind its extra);
* :mod:`ctxmem.wire` — raw ``anthropic`` / ``openai`` SDK loops: request params from a
  session and a preset, replies recorded as they come;
* :mod:`ctxmem.tokens` — tokenizers, exact counting, budgets, calibration;
* :mod:`ctxmem.store` — the ``SessionStore`` protocol, ``open_store`` and its backends.

Everything else is internal and may change without notice. The API reference
(``mkdocs build``, pages under ``docs/api/``) is built from these docstrings. Importing
ctxmem is cheap: heavy dependencies (tiktoken, torch, triton, faiss, transformers, provider
SDKs) load only where they are used.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctxmem.agent import Agent, AgentResult, Tool
    from ctxmem.clients import ModelClient, Response, Usage, get_client
    from ctxmem.config import ContextBuilder, Preset, load_preset
    from ctxmem.context import (
        BuildRequest,
        BuiltContext,
        ContextStrategy,
        History,
        Report,
        SessionLike,
        make_strategy,
        run_context_tool,
    )
    from ctxmem.errors import (
        ConfigError,
        ContextLengthExceeded,
        ContextOverflowError,
        CtxmemError,
        InputError,
        InvalidConversationError,
        MissingDependencyError,
        ProviderError,
        SessionNotFoundError,
        StoreError,
        TokenizerError,
        UnknownNameError,
    )
    from ctxmem.events import (
        CompactionEvent,
        MessageEvent,
        ModelCallEvent,
        NoteEvent,
        StoredEvent,
        ToolCallEvent,
        ToolResultEvent,
    )
    from ctxmem.messages import (
        ContentBlock,
        Message,
        RedactedThinkingBlock,
        TextBlock,
        ThinkingBlock,
        ToolResultBlock,
        ToolSpec,
        ToolUseBlock,
        from_anthropic,
        from_openai,
        to_anthropic,
        to_openai,
        validate_conversation,
    )
    from ctxmem.session import Session
    from ctxmem.store import MemoryStore, SessionStore, SQLiteStore, TokenTotals
    from ctxmem.tokens import (
        Budget,
        Calibration,
        Count,
        Tokenizer,
        count_messages,
        count_request,
        get_tokenizer,
    )

# Names load on first use (PEP 562): ``import ctxmem`` or ``ctxmem.cli`` does not pay for
# the agent, strategies, pydantic models and stores until one is touched (CLI start-up
# to first byte went from ~1 s to well under 0.5 s).
_LAZY: dict[str, str] = {
    "Agent": "ctxmem.agent",
    "AgentResult": "ctxmem.agent",
    "Budget": "ctxmem.tokens",
    "BuildRequest": "ctxmem.context",
    "BuiltContext": "ctxmem.context",
    "Calibration": "ctxmem.tokens",
    "CompactionEvent": "ctxmem.events",
    "ConfigError": "ctxmem.errors",
    "ContentBlock": "ctxmem.messages",
    "ContextBuilder": "ctxmem.config",
    "ContextLengthExceeded": "ctxmem.errors",
    "ContextOverflowError": "ctxmem.errors",
    "ContextStrategy": "ctxmem.context",
    "Count": "ctxmem.tokens",
    "CtxmemError": "ctxmem.errors",
    "History": "ctxmem.context",
    "InputError": "ctxmem.errors",
    "InvalidConversationError": "ctxmem.errors",
    "MemoryStore": "ctxmem.store",
    "Message": "ctxmem.messages",
    "MessageEvent": "ctxmem.events",
    "MissingDependencyError": "ctxmem.errors",
    "ModelCallEvent": "ctxmem.events",
    "ModelClient": "ctxmem.clients",
    "NoteEvent": "ctxmem.events",
    "Preset": "ctxmem.config",
    "ProviderError": "ctxmem.errors",
    "RedactedThinkingBlock": "ctxmem.messages",
    "Report": "ctxmem.context",
    "Response": "ctxmem.clients",
    "SQLiteStore": "ctxmem.store",
    "Session": "ctxmem.session",
    "SessionLike": "ctxmem.context",
    "SessionNotFoundError": "ctxmem.errors",
    "SessionStore": "ctxmem.store",
    "StoreError": "ctxmem.errors",
    "StoredEvent": "ctxmem.events",
    "TextBlock": "ctxmem.messages",
    "ThinkingBlock": "ctxmem.messages",
    "TokenTotals": "ctxmem.store",
    "Tokenizer": "ctxmem.tokens",
    "TokenizerError": "ctxmem.errors",
    "Tool": "ctxmem.agent",
    "ToolCallEvent": "ctxmem.events",
    "ToolResultBlock": "ctxmem.messages",
    "ToolResultEvent": "ctxmem.events",
    "ToolSpec": "ctxmem.messages",
    "ToolUseBlock": "ctxmem.messages",
    "UnknownNameError": "ctxmem.errors",
    "Usage": "ctxmem.clients",
    "count_messages": "ctxmem.tokens",
    "count_request": "ctxmem.tokens",
    "from_anthropic": "ctxmem.messages",
    "from_openai": "ctxmem.messages",
    "get_client": "ctxmem.clients",
    "get_tokenizer": "ctxmem.tokens",
    "load_preset": "ctxmem.config",
    "make_strategy": "ctxmem.context",
    "run_context_tool": "ctxmem.context",
    "to_anthropic": "ctxmem.messages",
    "to_openai": "ctxmem.messages",
    "validate_conversation": "ctxmem.messages",
}



def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ctxmem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentResult",
    "Budget",
    "BuildRequest",
    "BuiltContext",
    "Calibration",
    "CompactionEvent",
    "ConfigError",
    "ContentBlock",
    "ContextBuilder",
    "ContextLengthExceeded",
    "ContextOverflowError",
    "ContextStrategy",
    "Count",
    "CtxmemError",
    "History",
    "InputError",
    "InvalidConversationError",
    "MemoryStore",
    "Message",
    "MessageEvent",
    "MissingDependencyError",
    "ModelCallEvent",
    "ModelClient",
    "NoteEvent",
    "Preset",
    "ProviderError",
    "RedactedThinkingBlock",
    "Report",
    "Response",
    "SQLiteStore",
    "Session",
    "SessionLike",
    "SessionNotFoundError",
    "SessionStore",
    "StoreError",
    "StoredEvent",
    "TextBlock",
    "ThinkingBlock",
    "TokenTotals",
    "Tokenizer",
    "TokenizerError",
    "Tool",
    "ToolCallEvent",
    "ToolResultBlock",
    "ToolResultEvent",
    "ToolSpec",
    "ToolUseBlock",
    "UnknownNameError",
    "Usage",
    "count_messages",
    "count_request",
    "from_anthropic",
    "from_openai",
    "get_client",
    "get_tokenizer",
    "load_preset",
    "make_strategy",
    "run_context_tool",
    "to_anthropic",
    "to_openai",
    "validate_conversation",
]
