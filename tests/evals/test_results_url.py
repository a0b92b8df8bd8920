"""open_results(url): which results store a --results value names, and what it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctxmem.errors import InputError
from ctxmem.evals.store import ResultStore, open_results


def test_paths_and_sqlite_urls_open_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for given, made in (("bare.db", "bare.db"), ("sqlite:///rel.db", "rel.db"), (f"sqlite:///{tmp_path}/abs.db", "abs.db"),
                        ("SQLITE:///upper.db", "upper.db"), ("./odd:name.db", "odd:name.db")):
        store = open_results(given)
        assert isinstance(store, ResultStore), given
        assert (tmp_path / made).is_file(), given
    assert isinstance(open_results("memory:"), ResultStore)
    assert isinstance(open_results("sqlite://"), ResultStore)


@pytest.mark.parametrize("given", [
    "postgresql+psycopg://u:secret@127.0.0.1:5/db",  # SQLAlchemy's driver suffix
    "mysql://u@h/db",
    "postgresq://u@h/db",  # a typo of the scheme
    "my:results.db",  # a scheme-like name: refused, not a file named after it
])
def test_an_unknown_scheme_is_refused_and_makes_no_file(given: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as exc:
        open_results(given)
    assert "unknown scheme" in str(exc.value) and "postgresql://" in str(exc.value)
    assert "secret" not in str(exc.value)
    assert os.listdir(tmp_path) == []  # workers on several hosts must not each get a local grid


def test_a_sqlite_url_with_a_query_string_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="query string"):
        open_results("sqlite:///r.db?mode=ro")
    assert os.listdir(tmp_path) == []
