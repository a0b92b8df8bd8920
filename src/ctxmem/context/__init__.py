"""Context strategies: given a session's history and a budget, the next request's context.

See :mod:`ctxmem.context.base` for the contract. Strategies are found by name through
the ``ctxmem.strategies`` entry-point group (built-ins are registered the same way as
plugins); :func:`make_strategy` builds one from a type name and its parameters, with
errors that name the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ctxmem.context.base import BuildRequest, BuiltContext, ContextStrategy, Report, StrategyConfig
from ctxmem.context.history import History
from ctxmem.context.invariants import DEFAULT_INVARIANTS, Invariant, SafeCuts, check_output
from ctxmem.errors import ConfigError
from ctxmem.registry import Registry

STRATEGIES = Registry(
    "ctxmem.strategies",
    "strategy",
    {
        "dump": "ctxmem.context.builtins:Dump",
        "window": "ctxmem.context.builtins:Window",
        "masking": "ctxmem.context.masking:Masking",
        "summarization": "ctxmem.context.summarization:Summarization",
        "pipeline": "ctxmem.context.pipeline:Pipeline",
    },
)


def config_error(exc: ValidationError, source: str | None) -> ConfigError:
    """The first pydantic error as a ConfigError naming the field (dotted) and the fix."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or None
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field; remove it or check its spelling"
    return ConfigError(msg, source=source, field=loc)


def make_strategy(
    type_name: str, params: Mapping[str, Any] | None = None, *, source: str | None = None, **deps: Any
) -> Any:
    """Instantiate a registered strategy from its type name and parameters.

    ``deps`` are run-time objects a preset cannot hold (an LLM ``client=`` for
    summarization), passed to the constructor as keywords.
    """
    cls = STRATEGIES.get(type_name)
    config_cls = getattr(cls, "Config", None)
    if config_cls is None:
        raise ConfigError(f"strategy {type_name!r} has no Config class", source=source)
    try:
        config = config_cls(**dict(params or {}))
    except ValidationError as exc:
        raise config_error(exc, source) from None
    return cls(config, **deps)


__all__ = [
    "DEFAULT_INVARIANTS",
    "STRATEGIES",
    "BuildRequest",
    "BuiltContext",
    "ContextStrategy",
    "History",
    "Invariant",
    "Report",
    "SafeCuts",
    "StrategyConfig",
    "check_output",
    "config_error",
    "make_strategy",
]
