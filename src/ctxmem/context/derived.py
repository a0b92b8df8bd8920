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

import contextlib
import json
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from ctxmem.context.base import BuildRequest
from ctxmem.errors import StoreError
from ctxmem.store.base import DerivedStateStore
from ctxmem.store.codec import gc_paused

T = TypeVar("T")

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


#: the first byte of a state packed from orjson's output (a zlib stream starts with 0x78)
_ORJSON = b"\x01"


def pack(state: Any) -> bytes:
    """A state of plain JSON types as stored: compact JSON, zlib level 1 (~4x smaller).

    Written by orjson when it can spell the state exactly (~10x faster to write, ~3x to
    read, which a resuming process pays on its first build), else by ``json``: orjson
    refuses an integer past 64 bits and a lone surrogate, and :func:`unpack` tells the two
    apart by the first byte. orjson also writes an infinite or NaN float as null: output
    holding a null is kept only if it reads back equal to the state (else ``json`` writes
    it, as ``Infinity`` / ``NaN``)."""
    try:
        body = orjson.dumps(state)
        if b"null" in body and orjson.loads(body) != state:
            raise ValueError("not exact")
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        # raw UTF-8, surrogates passed through: any str round-trips exactly (strict UTF-8
        # refuses a lone surrogate; ASCII escapes would turn two separate surrogates into one)
        text = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
        return zlib.compress(text.encode("utf-8", "surrogatepass"), 1)
    return _ORJSON + zlib.compress(body, 1)


def unpack(data: bytes) -> Any:
    """The state :func:`pack` stored (raises one of :data:`DAMAGED` on a damaged row).

    Decoded with the cyclic GC paused: a state is hundreds of thousands of acyclic objects,
    whose allocation would trigger collections that traverse every object the process
    holds (a 1M-token facts snapshot: 45 → 25 ms in a fresh process)."""
    with gc_paused():
        if data[:1] == _ORJSON:
            return orjson.loads(zlib.decompress(data[1:]))
        return json.loads(zlib.decompress(data).decode("utf-8", "surrogatepass"))


#: a state covering a prefix of the history is saved once it covers this many more messages
#: than the last one saved (and a quarter more): O(1) amortized per message
SNAPSHOT_MIN = 1000


def snapshot_due(seen: int, last: int) -> bool:
    """Whether a state covering ``seen`` messages is worth saving after one covering ``last``."""
    return seen - last >= max(SNAPSHOT_MIN, last // 4)


def _ids_key(ids: tuple[int, ...] | list[int]) -> str:
    return ",".join(map(str, ids))


def load_prefix(request: BuildRequest, kind: str) -> tuple[int, Any] | None:
    """``(n, state)`` saved for the request's session and ``kind`` by :func:`save_prefix`,
    when it covers a prefix ``messages[:n]`` of this very history: keyed by the event ids of
    its last message, so a rewound or forked chain is never served another chain's state.
    ``None`` when there is none, it does not fit, or the row is damaged."""
    h = request.history
    at = derived_store(request)
    if at is None or not h.event_ids or not all(h.event_ids):
        return None
    store, session_id = at
    try:
        got = store.load_derived(session_id, kind)
        if got is None:
            return None
        key, data = got
        seen, _, ids = key.partition(":")
        n = int(seen)
        if not 0 < n <= len(h) or ids != _ids_key(h.event_ids[n - 1]):
            return None  # another chain (a rewind, a fork) or a longer one
        return n, unpack(data)
    except DAMAGED:
        return None


def save_prefix(request: BuildRequest, kind: str, n: int, state: Any) -> bool:
    """Save ``state``, derived from ``messages[:n]`` of the request's history (see
    :func:`load_prefix`); False when there is nowhere to save it (no store, or messages not
    from one). A store that cannot take it (read-only, locked) only costs a re-derivation."""
    h = request.history
    at = derived_store(request)
    if at is None or not 0 < n <= len(h) or not all(h.event_ids):
        return False
    store, session_id = at
    store_derived(request, store, session_id, kind, f"{n}:{_ids_key(h.event_ids[n - 1])}", pack(state))
    return True


def store_derived(request: BuildRequest, store: Any, session_id: str, kind: str, key: str, data: bytes) -> None:
    """Save one derived-state row; a store that cannot take it (read-only, locked) only
    costs a re-derivation. A dry run (``record=False``, saving because it asked for the
    cache) never waits for another writer: with a store that can tell (``try_save_derived``,
    SQLite's write lock), a busy store skips the save instead."""
    nowait = None if request.record else getattr(store, "try_save_derived", None)
    with contextlib.suppress(StoreError):
        if nowait is not None:
            nowait(session_id, kind, key, data)
        else:
            store.save_derived(session_id, kind, key, data)


class PrefixSnapshots:
    """One kind of state a strategy saves per history: when it is due (:func:`snapshot_due`
    after the last one saved or restored) and how it is restored. A snapshot that cannot
    be saved (no store, messages not from one) is not tried again before the history grows."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._saved: dict[int, int] = {}  # history uid -> messages the last snapshot covered

    def clear(self) -> None:
        self._saved.clear()

    def restore(self, request: BuildRequest, rebuild: Callable[[int, Any], T | None]) -> T | None:
        """``rebuild(n, state)`` of the state saved for a prefix of this history (see
        :func:`load_prefix`); None when there is none, or ``rebuild`` returns None or raises
        one of :data:`DAMAGED`."""
        got = load_prefix(request, self.kind)
        if got is None:
            return None
        try:
            out = rebuild(*got)
        except DAMAGED:
            return None
        if out is not None:
            self._saved[request.history.uid] = got[0]
        return out

    def save_if_due(self, request: BuildRequest, n: int, state: Callable[[], Any]) -> None:
        """Save ``state()`` (skipped when it gives None), derived from ``messages[:n]``, when
        due; nothing is written on a dry run (``record=False``) unless it asks for the cache
        (``cache_derived=True``)."""
        h = request.history
        if not request.saves_derived or not snapshot_due(n, self._saved.get(h.uid, 0)):
            return
        if derived_store(request) is None or not all(h.event_ids):
            self._saved[h.uid] = len(h)  # nowhere to save (no store, or messages not from it)
            return
        with gc_paused():  # a state is a large acyclic structure (as in unpack): built, packed, dropped
            got = state()
            if got is None:
                return
            save_prefix(request, self.kind, n, got)
            del got
        self._saved[h.uid] = n


__all__ = [
    "DAMAGED", "SNAPSHOT_MIN", "PrefixSnapshots", "derived_store", "load_prefix", "pack", "save_prefix", "snapshot_due",
    "store_derived",
    "unpack",
]
