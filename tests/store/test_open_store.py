"""open_store(url): the backend is picked by URL scheme through the ctxmem.stores registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctxmem.errors import UnknownNameError
from ctxmem.store import STORES, MemoryStore, SQLiteStore, open_store, store_scheme


def test_urls_pick_the_backend(tmp_path: Path) -> None:
    rel = os.path.relpath(tmp_path / "rel.db")
    with open_store(tmp_path / "bare.db") as s:
        assert isinstance(s, SQLiteStore) and s.path == str(tmp_path / "bare.db")
    with open_store(f"sqlite:///{rel}") as s:  # three slashes: relative, as SQLAlchemy
        assert isinstance(s, SQLiteStore) and Path(s.path).resolve() == (tmp_path / "rel.db").resolve()
    with open_store(f"sqlite:///{tmp_path}/abs.db") as s:  # four slashes: absolute
        assert s.path == f"{tmp_path}/abs.db" and Path(s.path).is_file()
    assert open_store("sqlite://").path == ":memory:"
    assert isinstance(open_store("memory:"), MemoryStore)
    assert {"sqlite", "memory", "postgresql", "postgres"} <= set(STORES.names())


def test_schemes() -> None:
    assert store_scheme("postgresql://u@h/db") == "postgresql"
    assert store_scheme("/var/x.db") == store_scheme("x.db") == store_scheme("C:\\x.db") == "sqlite"
    assert store_scheme("memory:") == "memory"


def test_an_unknown_scheme_says_what_is_known() -> None:
    with pytest.raises(UnknownNameError) as exc:
        open_store("postgresq://u@h/db")
    assert "postgresql" in str(exc.value)


def test_a_scheme_is_read_in_any_case(tmp_path: Path) -> None:
    assert isinstance(open_store("MEMORY:"), MemoryStore)
    with open_store(f"SQLite:///{tmp_path}/upper.db") as s:
        assert isinstance(s, SQLiteStore) and s.path == f"{tmp_path}/upper.db"


def test_open_existing_reads_and_never_creates(tmp_path: Path) -> None:
    from ctxmem.errors import InputError
    from ctxmem.store import open_existing

    for given in (str(tmp_path / "none.db"), f"sqlite:///{tmp_path}/none.db"):
        with pytest.raises(InputError, match="no session store at"):
            open_existing(given)
    assert list(tmp_path.iterdir()) == []  # a read made no file
    with open_store(tmp_path / "there.db") as s:
        s.create_session()
    with open_existing(f"sqlite:///{tmp_path}/there.db") as s:
        assert isinstance(s, SQLiteStore) and len(s.list_sessions()) == 1
    assert isinstance(open_existing("memory:"), MemoryStore)
    assert open_existing("sqlite://").path == ":memory:"
