"""ctxmem: memory and context management for long-running LLM agents.

The public API is what ``__all__`` lists (pinned by ``tests/test_public_api.py``);
everything else is internal. Importing ctxmem is cheap: heavy dependencies (tiktoken,
torch, triton, faiss, transformers, provider SDKs) load only where they are used.
"""

from ctxmem.agent import Agent, AgentResult, Tool
from ctxmem.clients import ModelClient, Response, Usage, get_client
from ctxmem.config import Preset, load_preset
from ctxmem.context import (
    BuildRequest,
    BuiltContext,
    ContextStrategy,
    History,
    Report,
    make_strategy,
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
    "to_anthropic",
    "to_openai",
    "validate_conversation",
]
