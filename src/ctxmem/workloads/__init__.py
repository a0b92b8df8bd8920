"""Workloads that drive ctxmem: agent tasks that produce long, realistic sessions.

The :class:`~ctxmem.workloads.base.Workload` protocol is documented in
:mod:`ctxmem.workloads.base`. Workloads are found by name in the ``ctxmem.workloads``
entry-point group; the built-ins are registered the same way as plugins:

``kernel``     an agent optimizing an original Triton extend-attention kernel (the driving
               workload; needs ``ctxmem[kernels]``)
``synthetic``  a deterministic tool-heavy transcript with planted needles (no extras)

A plugin declares, in its ``pyproject.toml``::

    [project.entry-points."ctxmem.workloads"]
    log_triage = "my_package.workload:LogTriage"

and then runs through ``ctxmem workload run log_triage``, ``ctxmem tune sweep --workload
log_triage`` and ``ctxmem eval session-needles --workload log_triage`` with no edit to
ctxmem (``examples/plugin_workload/`` is one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ctxmem.errors import ConfigError
from ctxmem.registry import Registry
from ctxmem.workloads.base import NaturalNeedle, Progress, Workload, WorkloadRun

WORKLOADS = Registry(
    "ctxmem.workloads",
    "workload",
    {
        "kernel": "ctxmem.workloads.kernel.workload:KernelWorkload",
        "synthetic": "ctxmem.workloads.synthetic.workload:SyntheticWorkload",
    },
)


def parse_settings(items: Iterable[str]) -> dict[str, str]:
    """``key=value`` strings (the CLI's ``--set``) as a dict; values stay text for pydantic."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"a setting is KEY=VALUE, got {item!r}", field="set")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


#: what ctxmem reads of a workload class (the protocol, :class:`Workload`)
PROTOCOL_MEMBERS = ("Config", "description", "modes", "score_columns", "system_prompt", "tools", "check", "run",
                    "needles", "fact_profile")


def workload_class(name: str) -> Any:
    """The class registered as ``name``, checked against the protocol: a plugin that is not
    a class or lacks a member is a :class:`~ctxmem.errors.ConfigError` naming the plugin and
    what it lacks (not an ``AttributeError`` halfway through a sweep)."""
    cls = WORKLOADS.get(name)
    where = f"workload {name!r} (from {WORKLOADS.source(name)})"
    if not isinstance(cls, type):
        raise ConfigError(f"{where} is registered as a {type(cls).__name__} object: its entry point must name the "
                          "workload class (ctxmem calls it with the settings)")
    missing = [m for m in PROTOCOL_MEMBERS if not hasattr(cls, m)]
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)} of the Workload protocol (ctxmem.workloads.Workload)")
    config_cls = getattr(cls, "Config", None)
    if not (isinstance(config_cls, type) and issubclass(config_cls, BaseModel)):
        raise ConfigError(f"{where}: its Config must be a pydantic model of the settings")
    return cls


def get_workload(name: str, settings: Mapping[str, Any] | None = None) -> Workload:
    """The workload registered as ``name``, configured from ``settings`` (validated by its
    ``Config``; a bad key or value raises :class:`~ctxmem.errors.ConfigError` naming it)."""
    cls = workload_class(name)
    try:
        config = cls.Config(**dict(settings or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "set"
        allowed = ", ".join(sorted(cls.Config.model_fields))
        raise ConfigError(f"{err['msg']} (workload {name!r} settings: {allowed})", field=loc) from None
    workload: Workload = cls(config)
    if not isinstance(getattr(workload, "config", None), BaseModel):
        raise ConfigError(f"workload {name!r} (from {WORKLOADS.source(name)}) must keep its settings as self.config "
                          "(the Config instance it is constructed with)")
    return workload


def describe(name: str) -> dict[str, Any]:
    """What ``workload list --json`` prints for one workload: name, description, settings
    (with types, defaults and descriptions), modes and score columns."""
    cls = workload_class(name)
    settings = {
        key: {"type": getattr(f.annotation, "__name__", str(f.annotation)),
              "default": None if f.is_required() else f.default, "description": f.description or ""}
        for key, f in cls.Config.model_fields.items()
    }
    return {"name": name, "description": cls.description, "modes": list(cls.modes),
            "settings": settings, "score_columns": [key for _, key in cls.score_columns],
            "source": WORKLOADS.source(name)}


__all__ = [
    "PROTOCOL_MEMBERS",
    "WORKLOADS",
    "NaturalNeedle",
    "Progress",
    "Workload",
    "WorkloadRun",
    "describe",
    "get_workload",
    "parse_settings",
    "workload_class",
]
