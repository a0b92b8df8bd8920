"""Session stores: the protocol, the backends, and :func:`open_store` to pick one by URL.

Backends are found through the ``ctxmem.stores`` entry-point group, keyed by URL scheme
(built-ins are registered there like plugins): ``sqlite:///path/to/file.db`` (relative;
``sqlite:////abs/file.db`` absolute, as SQLAlchemy writes them; ``sqlite://`` in memory; or
a bare path), ``memory:`` (nothing survives the process) and
``postgresql://user:pass@host:port/db`` (also ``postgres://``; needs ``ctxmem[postgres]``).
A plugin registers ``myscheme = "pkg.module:opener"`` where ``opener(url) -> SessionStore``.
"""

from __future__ import annotations

import os
from typing import Any

from ctxmem.errors import InputError
from ctxmem.registry import Registry
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
from ctxmem.store.postgres import PostgresStore
from ctxmem.store.sqlite import SQLiteStore

STORES = Registry(
    "ctxmem.stores",
    "store",
    {
        "sqlite": "ctxmem.store:_open_sqlite",
        "memory": "ctxmem.store:_open_memory",
        "postgresql": "ctxmem.store:_open_postgres",
        "postgres": "ctxmem.store:_open_postgres",
    },
)


def sqlite_url_path(url: str) -> str:
    """The file a ``sqlite:`` store URL names (``:memory:`` for ``sqlite://``). As SQLAlchemy:
    ``sqlite:///rel.db`` is relative to the current folder, ``sqlite:////abs.db`` absolute.
    A query string or fragment is refused: SQLite would take it as part of the file name
    (``w.db?mode=ro`` opened, and created, a new empty file of that name)."""
    rest = url.split(":", 1)[1]
    if rest.startswith("///"):
        path = rest[3:]
    elif rest.startswith("//"):
        path = rest[2:] or ":memory:"
    else:
        path = rest
    if not path:
        raise InputError(f"store URL {url!r} names no file: write sqlite:///path/to/file.db", field="store")
    if "?" in path or "#" in path:
        raise InputError(f"store URL {url!r}: a sqlite URL takes no query string or fragment; name the file only "
                         "(sqlite:///relative.db, sqlite:////absolute/path.db)", field="store")
    return path


def _open_sqlite(url: str, **options: Any) -> SQLiteStore:
    return SQLiteStore(sqlite_url_path(url), **options)


def _open_memory(url: str, **options: Any) -> MemoryStore:
    return MemoryStore()


def _open_postgres(url: str, **options: Any) -> PostgresStore:
    return PostgresStore(url, **options)


def store_scheme(url: str | os.PathLike[str]) -> str:
    """The scheme that picks the backend: ``sqlite`` for a bare path."""
    text = str(url)
    head, sep, _ = text.partition(":")
    if sep and head.replace("+", "").isalnum() and len(head) > 1:  # "C:\\x" is a path, not a scheme
        return head.lower()
    return "sqlite"


def open_store(url: str | os.PathLike[str], **options: Any) -> Any:
    """Open the session store ``url`` names (see the module docstring for the forms).

    A bare path (no scheme) is a SQLite file. An unknown scheme raises
    :class:`~ctxmem.errors.UnknownNameError` with the known ones; ``options`` go to the
    backend's constructor (``busy_timeout_ms`` for SQLite, ``pool_size`` for PostgreSQL).
    """
    text = str(url)
    scheme = store_scheme(text)
    if scheme == "sqlite" and not text[:7].lower().startswith("sqlite:"):
        return SQLiteStore(text, **options)  # a bare path
    opener = STORES.get(scheme)
    return opener(scheme + text[len(scheme):], **options)  # POSTGRESQL://… as postgresql://…


def open_existing(url: str | os.PathLike[str], **options: Any) -> Any:
    """:func:`open_store` for a reader: a SQLite path (or ``sqlite:`` URL) that holds no file
    is an :class:`~ctxmem.errors.InputError` naming it, instead of a new empty database
    created there (a read never creates a file); other URLs open as :func:`open_store` does."""
    text = str(url)
    scheme = store_scheme(text)
    path = text
    if scheme == "sqlite" and text[:7].lower().startswith("sqlite:"):
        path = sqlite_url_path("sqlite:" + text[7:])
        if path == ":memory:":
            return open_store(text, **options)
    elif scheme != "sqlite":
        return open_store(text, **options)
    if not os.path.isfile(path):
        raise InputError(f"no session store at {text}: nothing has been recorded there yet (`ctxmem sessions "
                         f"import FILE --db {text}` or any recording command creates it)", field="db")
    return SQLiteStore(path, **options)


__all__ = [
    "STORES",
    "ChainView",
    "EventCounts",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "SearchHit",
    "SessionInfo",
    "SessionStore",
    "TokenTotals",
    "content_hash",
    "open_existing",
    "open_store",
    "sqlite_url_path",
    "store_scheme",
]
