"""Session stores: the protocol, the durable SQLite backend and the in-memory backend."""

from ctxmem.store.base import (
    ChainView,
    EventCounts,
    SearchHit,
    SessionInfo,
    SessionStore,
    TokenTotals,
    content_hash,
)
from ctxmem.store.memory import MemoryStore
from ctxmem.store.sqlite import SQLiteStore

__all__ = [
    "ChainView",
    "EventCounts",
    "MemoryStore",
    "SQLiteStore",
    "SearchHit",
    "SessionInfo",
    "SessionStore",
    "TokenTotals",
    "content_hash",
]
