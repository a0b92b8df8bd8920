"""Name → implementation registries backed by entry points.

Every extension point (tokenizers, strategies, clients, …) has one entry-point group
(``ctxmem.tokenizers``, ``ctxmem.strategies``, …). Built-ins are declared in ctxmem's own
``pyproject.toml`` in the same groups as third-party plugins, and are also listed here as
a fallback so a source checkout without installed metadata still works. Discovery is lazy
(nothing is imported until a name is looked up), cached, and duplicate-checked: two
distributions registering the same name is an error, not a silent override — raised when
that name is looked up, so one broken plugin leaves every other name usable. A plugin that
fails to import is a :class:`~ctxmem.errors.ConfigError` naming the name, the distribution
and its reference, not a traceback. Unknown names raise
:class:`~ctxmem.errors.UnknownNameError` with a "did you mean".
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from ctxmem.errors import ConfigError, UnknownNameError


def _load_ref(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry:
    """A lazily discovered mapping of names to objects for one entry-point group."""

    def __init__(self, group: str, kind: str, builtins: Mapping[str, str]):
        self.group = group
        self.kind = kind
        self._builtins = dict(builtins)
        self._refs: dict[str, tuple[str, str]] | None = None  # name -> (ref, source)
        self._loaded: dict[str, Any] = {}
        #: names two distributions register: the error their lookup raises
        self._conflicts: dict[str, str] = {}

    def _discover(self) -> dict[str, tuple[str, str]]:
        if self._refs is None:
            refs = {name: (ref, "ctxmem") for name, ref in self._builtins.items()}
            for ep in entry_points(group=self.group):
                dist = ep.dist.name if ep.dist is not None else "?"
                if ep.name in refs:
                    known_ref, source = refs[ep.name]
                    if known_ref == ep.value or dist == "ctxmem":
                        continue  # ctxmem's own entry point (maybe stale metadata): built-in wins
                    self._conflicts[ep.name] = (
                        f"{self.kind} {ep.name!r} is registered twice: by {source} ({known_ref}) "
                        f"and by {dist} ({ep.value}). Uninstall one of them."
                    )
                    continue
                refs[ep.name] = (ep.value, dist)
            self._refs = refs
        return self._refs

    def names(self) -> list[str]:
        return sorted(self._discover())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._discover()

    def get(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        ref, source = self._ref(name)
        try:
            obj = _load_ref(ref)
        except Exception as exc:  # a plugin's import error, or a reference to nothing
            raise ConfigError(
                f"{self.kind} {name!r} (registered by {source} as {ref}) could not be loaded: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}. Reinstall or uninstall {source}."
            ) from None
        self._loaded[name] = obj
        return obj

    def _ref(self, name: str) -> tuple[str, str]:
        refs = self._discover()
        if name in self._conflicts and refs.get(name, ("", ""))[1] != "runtime":
            raise ConfigError(self._conflicts[name])
        if name not in refs:
            raise UnknownNameError(self.kind, name, refs)
        return refs[name]

    def source(self, name: str) -> str:
        """Who registered ``name``: ``ctxmem`` (built-in), a distribution's name, or ``runtime``."""
        return self._ref(name)[1]

    def register(self, name: str, ref: str) -> None:
        """Register an object reference (``module:attr``) at run time (tests, notebooks)."""
        refs = self._discover()
        if name in refs and refs[name][0] != ref:
            raise ConfigError(f"{self.kind} {name!r} is already registered ({refs[name][0]})")
        refs[name] = (ref, "runtime")
        self._loaded.pop(name, None)
