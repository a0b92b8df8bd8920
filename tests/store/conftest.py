"""The store fixtures of this folder: the three embedded backends plus PostgreSQL.

``store_kind`` (and so ``make_store`` / ``store``, defined in ``tests/conftest.py``) gains a
``postgres`` param: a real server started once per test session (:mod:`pg_server`), a fresh
schema per store. Where no server can start, that param skips with the reason, unless
``CTXMEM_REQUIRE_POSTGRES=1`` (CI), where it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pg_server  # tests/ is on sys.path (its conftest.py)


def pg() -> pg_server.Server:
    return pg_server.shared()


@pytest.fixture
def pg_url() -> str:
    """The URL of a fresh, empty schema on the test server."""
    return pg().fresh_url()


@pytest.fixture(params=("sqlite-file", "sqlite-memory", "memory", "postgres"))
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A factory of fresh stores of the parametrized backend (each its own file or schema)."""
    from ctxmem.store import MemoryStore, PostgresStore, SQLiteStore

    opened: list[Any] = []
    counter = iter(range(1_000_000))

    def factory() -> Any:
        if store_kind == "postgres":
            s: Any = PostgresStore(pg().fresh_url(), pool_size=2)
        elif store_kind == "sqlite-file":
            s = SQLiteStore(tmp_path / f"store-{next(counter)}.db")
        elif store_kind == "sqlite-memory":
            s = SQLiteStore(":memory:")
        else:
            s = MemoryStore()
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()
