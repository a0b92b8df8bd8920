"""Shared fixtures for the whole suite.

* ``TIKTOKEN_CACHE_DIR`` points at ``<repo>/../shared/tokenizers/tiktoken-cache`` when that
  folder exists and the variable is unset, so tiktoken loads its encodings offline. The
  library itself never looks there. Without it, o200k_base's and cl100k_base's files are
  written into tiktoken's cache from quicktok's vocabulary (``provision_tiktoken_cache``).
* Store fixtures: ``db_path`` (a fresh file), ``make_store`` / ``store`` parametrized over
  the three backends every contract test runs on (SQLite on a real file, SQLite
  ``":memory:"``, :class:`~ctxmem.store.MemoryStore`).
* Tokenizer fixtures: ``o200k`` / ``cl100k`` (through quicktok offline, so they load on a
  fresh machine without network or ``../shared``; skip with the reason only where no engine
  can load them) and ``deepseek_tokenizer_path`` (skip when ``../shared`` is absent: that
  file is not redistributed in any package).

This folder is on ``sys.path`` (pytest inserts the folder of a conftest.py that is not in a
package), so test modules import the hypothesis strategies with ``from generators import
...`` and the helpers with ``from support import ...``. Never ``from conftest import``:
several folders have a conftest.py and only one of them is the module named ``conftest``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ctxmem.tokens import provision_tiktoken_cache
from support import DEEPSEEK_TOKENIZER, TIKTOKEN_CACHE, load_tokenizer_or_skip

if TIKTOKEN_CACHE.is_dir() and "TIKTOKEN_CACHE_DIR" not in os.environ:
    os.environ["TIKTOKEN_CACHE_DIR"] = str(TIKTOKEN_CACHE)
# Without ../shared (a fresh clone, offline), tiktoken's o200k_base and cl100k_base files are
# written into its cache from quicktok's vocabulary (the same bytes, checked against the hash
# tiktoken checks a download against), so the tests about tiktoken itself run instead of
# skipping, and so does third-party code that counts with it (Inspect's mockllm).
provision_tiktoken_cache()

# The whole suite is network-free: model clients refuse any host but loopback (the guard
# reads this variable at import, and subprocesses the tests start inherit it), and the HF
# libraries never try the hub.
os.environ["CTXMEM_ALLOW_MODEL_REQUESTS"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Examples build real SQLite stores and real tokenizers: no per-example deadline, and the
# function-scoped store fixtures are safe because every example opens a fresh session.
# The default profile keeps the whole suite within a few minutes on two cores; set
# CTXMEM_HYPOTHESIS_PROFILE=thorough for a deeper search (nightly, or after a change to
# messages/events/store).
settings.register_profile(
    "ctxmem",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("ctxmem"), max_examples=400)
settings.load_profile(os.environ.get("CTXMEM_HYPOTHESIS_PROFILE", "ctxmem"))


@pytest.fixture(scope="session", autouse=True)
def _simx_measurement_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SIMX-1's interpreter measurements (the kernel workload) go to a folder of the test run's,
    never to the user's ``~/.cache``.

    Session-scoped and autouse, so it is in place before any module- or session-scoped
    fixture runs a scripted kernel run (a function-scoped one came too late: such a fixture
    measured into ``~/.cache``, and the next test re-measured the same candidates cold). The
    folder is ``$CTXMEM_TEST_SIMX_CACHE`` when set (CI keeps one across clean checkouts:
    measurements are keyed by the candidate's code, config, shape and the instrument's
    version, so a kept one is never stale), else pytest's cache folder (shared across runs
    of one checkout and by xdist workers), else this session's temp folder (pytest without
    its cache plugin).
    """
    kept = os.environ.get("CTXMEM_TEST_SIMX_CACHE")
    cache = getattr(request.config, "cache", None)
    if kept:
        folder = Path(kept)
        folder.mkdir(parents=True, exist_ok=True)
    elif cache is not None:
        folder = cache.mkdir("simx-measure")
    else:
        folder = tmp_path_factory.mktemp("simx-measure")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CTXMEM_SIMX_CACHE", str(folder))
        yield str(folder)


@pytest.fixture(autouse=True)
def _no_model_requests() -> Iterator[None]:
    """Every test runs with the network guard on (a test may lift it inside a ``with``)."""
    from ctxmem.clients.testing import override_allow_model_requests

    with override_allow_model_requests(False):
        yield


# --------------------------------------------------------------------------- stores

STORE_KINDS = ("sqlite-file", "sqlite-memory", "memory")


def _open_store(kind: str, path: Path) -> Any:
    from ctxmem.store import MemoryStore, SQLiteStore

    if kind == "sqlite-file":
        return SQLiteStore(path)
    if kind == "sqlite-memory":
        return SQLiteStore(":memory:")
    if kind == "memory":
        return MemoryStore()
    raise ValueError(kind)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh SQLite database file (not created yet)."""
    return tmp_path / "ctxmem.db"


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A factory of fresh stores of the parametrized backend (each on its own file)."""
    opened: list[Any] = []
    counter = iter(range(1_000_000))

    def factory() -> Any:
        s = _open_store(store_kind, tmp_path / f"store-{next(counter)}.db")
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store: Callable[[], Any]) -> Any:
    """One fresh store of the parametrized backend."""
    return make_store()


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[Any]:
    from ctxmem.store import SQLiteStore

    s = SQLiteStore(db_path)
    yield s
    s.close()


# --------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="session")
def o200k() -> Any:
    return load_tokenizer_or_skip("o200k_base")


@pytest.fixture(scope="session")
def cl100k() -> Any:
    return load_tokenizer_or_skip("cl100k_base")


@pytest.fixture(scope="session")
def deepseek_tokenizer_path() -> Path:
    if not DEEPSEEK_TOKENIZER.is_file():
        pytest.skip(
            f"{DEEPSEEK_TOKENIZER} is absent: DeepSeek's tokenizer.json ships in no installed package "
            "(../shared/tokenizers holds it offline; with network, huggingface-cli download "
            "deepseek-ai/DeepSeek-V3 tokenizer.json)"
        )
    pytest.importorskip("tokenizers", reason="the HF backend needs the 'tokenizers' package (ctxmem[hf])")
    return DEEPSEEK_TOKENIZER
