"""State a strategy derives from a session, kept in the session's store for a later process.

A first build over a long session does work no later turn repeats: the salient-facts index
reads every tool-output line (:mod:`ctxmem.context.memory`), summarize summarizes every chunk
(:mod:`ctxmem.context.summarization`). A process that opens the session later would do it
all again; instead, what was derived is saved in the store (the
:class:`~ctxmem.store.base.DerivedStateStore` capability: SQLite and PostgreSQL keep it in
``derived_state``) and restored. It is a cache, never session content: each reader checks
that a saved state covers its own chain, and a row that does not fit or does not decode is
ignored and the work redone (:data:`DAMAGED` lists what decoding it may raise).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from ctxmem.context.base import BuildRequest
from ctxmem.errors import StoreError
from ctxmem.store.base import DerivedStateStore

#: what loading and decoding a saved state may raise when the row is damaged, of an older
#: layout or unreachable: the reader then derives the state again
DAMAGED = (StoreError, ValueError, KeyError, IndexError, TypeError, AttributeError, zlib.error)


def derived_store(request: BuildRequest) -> tuple[DerivedStateStore, str] | None:
    """The store that keeps derived state for the request's session, and the session id;
    ``None`` when there is no session or its store has no such capability (MemoryStore)."""
    session = request.session
    store = getattr(session, "store", None) if session is not None else None
    if not isinstance(store, DerivedStateStore):
        return None
    return store, session.id  # type: ignore[union-attr]


def pack(state: Any) -> bytes:
    """A state of plain JSON types as stored: compact JSON, zlib level 1 (~4x smaller)."""
    # raw UTF-8, surrogates passed through: any str round-trips exactly (strict UTF-8 refuses a
    # lone surrogate; ASCII escapes would turn two separate surrogates into one code point)
    return zlib.compress(json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"), 1)


def unpack(data: bytes) -> Any:
    """The state :func:`pack` stored (raises one of :data:`DAMAGED` on a damaged row)."""
    return json.loads(zlib.decompress(data).decode("utf-8", "surrogatepass"))


__all__ = ["DAMAGED", "derived_store", "pack", "unpack"]
