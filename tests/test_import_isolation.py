"""``import ctxmem`` (and the core modules) must not pull in heavy or optional packages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch", "triton", "faiss", "transformers", "tiktoken", "anthropic", "openai",
    "sentence_transformers", "numpy", "tokenizers",
)


def _loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {m.split(".")[0] for m in json.loads(r.stdout.splitlines()[-1])}


def test_import_ctxmem_loads_no_heavy_package() -> None:
    assert _loaded_after("import ctxmem") & set(HEAVY) == set()


@pytest.mark.parametrize(
    "module",
    ["ctxmem.messages", "ctxmem.events", "ctxmem.session", "ctxmem.jsonl", "ctxmem.store", "ctxmem.tokens",
     "ctxmem.samples", "ctxmem.errors", "ctxmem.registry"],
)
def test_core_modules_load_no_heavy_package(module: str) -> None:
    # Tokenizer backends load tiktoken / tokenizers only when a tokenizer is asked for.
    assert _loaded_after(f"import {module}") & set(HEAVY) == set()


def test_heavy_packages_load_lazily_on_use() -> None:
    loaded = _loaded_after("from ctxmem.tokens import get_tokenizer\nget_tokenizer('heuristic')")
    assert "tiktoken" not in loaded
