"""Context strategies: given a session's history and a budget, the next request's context.

See :mod:`ctxmem.context.base` for the contract. Strategies are found by name through
the ``ctxmem.strategies`` entry-point group (built-ins are registered the same way as
plugins); :func:`make_strategy` builds one from a type name and its parameters, with
errors that name the field.

Tools a built context names (``BuiltContext.extra_tools``, e.g. ``recall`` for masked
outputs) are run by :func:`run_context_tool`, which the Agent and raw-SDK loops
(:mod:`ctxmem.wire`) share: whoever offers the tool can execute it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ctxmem.context._assembly import compaction_sources
from ctxmem.context.base import (
    BuildRequest,
    BuiltContext,
    ContextStrategy,
    Report,
    SessionLike,
    StrategyConfig,
)
from ctxmem.context.history import History
from ctxmem.context.invariants import DEFAULT_INVARIANTS, Invariant, SafeCuts, check_output
from ctxmem.errors import ConfigError, InputError
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


def validation_detail(exc: ValidationError) -> tuple[str | None, str]:
    """The first pydantic error as (dotted field, message with the fix)."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or None
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field; remove it or check its spelling"
    elif err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")  # a validator's own sentence says what to fix
    return loc, msg


def config_error(exc: ValidationError, source: str | None, *, prefix: str | None = None) -> ConfigError:
    """The first pydantic error as a ConfigError naming the field (dotted, under ``prefix``) and the fix."""
    loc, msg = validation_detail(exc)
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    return ConfigError(msg, source=source, field=loc)


def _with_source(exc: ConfigError, source: str) -> ConfigError:
    """The same error, naming the file it came from (the field stays, said once)."""
    text = str(exc)
    head = f"field {exc.field!r}: " if exc.field else ""
    message = text[len(head) :] if head and text.startswith(head) else text
    return ConfigError(message, source=source, field=exc.field)


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
    try:
        return cls(config, **deps)
    except ConfigError as exc:  # nested configs (a pipeline's core_params) are checked here
        if source is None or exc.source is not None:
            raise
        raise _with_source(exc, source) from None


#: tools a strategy may name in ``extra_tools``, each run by :func:`run_context_tool`
CONTEXT_TOOLS: tuple[str, ...] = ("recall",)


def run_context_tool(
    name: str, arguments: Mapping[str, Any], *, history: History | None = None, session: SessionLike | None = None
) -> str:
    """Run a tool a built context offered (see ``BuiltContext.extra_tools``).

    ``recall`` returns the original output behind a masked placeholder's handle, from
    ``history`` when it is still in memory, else from ``session``'s log. Raises
    :class:`~ctxmem.errors.InputError` naming the argument for bad input or an unknown
    handle, and for a tool name no strategy offers.
    """
    if name == "recall":
        from ctxmem.context.masking import RecallTool

        return RecallTool(history, session)(arguments)
    raise InputError(f"no context tool {name!r}; context tools are {', '.join(CONTEXT_TOOLS)}", field="name")


__all__ = [
    "CONTEXT_TOOLS",
    "DEFAULT_INVARIANTS",
    "STRATEGIES",
    "BuildRequest",
    "BuiltContext",
    "ContextStrategy",
    "History",
    "Invariant",
    "Report",
    "SafeCuts",
    "SessionLike",
    "StrategyConfig",
    "check_output",
    "compaction_sources",
    "config_error",
    "make_strategy",
    "run_context_tool",
]
