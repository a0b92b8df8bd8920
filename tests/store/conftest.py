"""The store fixtures of this folder: the three embedded backends plus PostgreSQL.

``store_kind`` (and so ``make_store`` / ``store``, defined in ``tests/conftest.py``) gains a
``postgres`` param: a real server started once per test session (:mod:`pg_server`), a fresh
schema per store. Where no server can start, that param skips with the reason, unless
``CTXMEM_REQUIRE_POSTGRES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pg_server  # tests/ is on sys.path (its conftest.py)

_server: pg_server.Server | None = None
_unavailable: str | None = None


def pg() -> pg_server.Server:
    """The session's server, started on first use; skips (or fails in CI) when it cannot."""
    global _server, _unavailable
    if _server is None and _unavailable is None:
        try:
            _server = pg_server.start()
        except pg_server.Unavailable as exc:
            _unavailable = str(exc)
    if _server is None:
        if os.environ.get("CTXMEM_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (CTXMEM_REQUIRE_POSTGRES=1): {_unavailable}")
        pytest.skip(f"no PostgreSQL server: {_unavailable}")
    return _server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _server is not None:
        _server.stop()


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
