"""The public API is curated: pinned here so additions and removals are deliberate."""

import ctxmem

EXPECTED = {
    "Budget", "Calibration", "CompactionEvent", "ConfigError", "ContentBlock", "ContextLengthExceeded",
    "ContextOverflowError", "Count", "CtxmemError", "InputError", "InvalidConversationError", "MemoryStore",
    "Message", "MessageEvent", "MissingDependencyError", "ModelCallEvent", "NoteEvent", "ProviderError",
    "RedactedThinkingBlock", "SQLiteStore", "Session", "SessionNotFoundError", "SessionStore", "StoreError",
    "StoredEvent", "TextBlock", "ThinkingBlock", "TokenTotals", "Tokenizer", "TokenizerError", "ToolCallEvent",
    "ToolResultBlock", "ToolResultEvent", "ToolUseBlock", "UnknownNameError", "count_messages", "count_request",
    "from_anthropic", "from_openai", "get_tokenizer", "to_anthropic", "to_openai", "validate_conversation",
}


def test_all_is_sorted_and_pinned() -> None:
    assert list(ctxmem.__all__) == sorted(ctxmem.__all__)
    assert set(ctxmem.__all__) == EXPECTED


def test_every_name_resolves_and_errors_share_one_root() -> None:
    for name in ctxmem.__all__:
        obj = getattr(ctxmem, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, ctxmem.CtxmemError), name
