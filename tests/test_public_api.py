"""The public API is curated: pinned here so additions and removals are deliberate."""

import ctxmem

EXPECTED = {
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
    "ContextBuilder",
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
}


def test_all_is_sorted_and_pinned() -> None:
    assert list(ctxmem.__all__) == sorted(ctxmem.__all__)
    assert set(ctxmem.__all__) == EXPECTED


def test_every_name_resolves_and_errors_share_one_root() -> None:
    for name in ctxmem.__all__:
        obj = getattr(ctxmem, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, ctxmem.CtxmemError), name


def test_raw_sdk_helpers_are_a_public_module() -> None:
    from ctxmem import wire

    assert {"anthropic_request", "openai_request", "record_response", "run_tool"} <= set(wire.__all__)
