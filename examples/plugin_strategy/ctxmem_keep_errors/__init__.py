"""keep_errors: a recent window that remembers what failed.

When the window drops old messages, the first line of each failed tool call among them
(``is_error`` results) is kept as a pinned fact right after the task, newest first, up to
``max_errors``. The window pays for those lines out of the same budget, so the contract
(fits, provider-valid, deterministic, pinned verbatim) holds by construction.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pydantic import Field

from ctxmem import BuildRequest, BuiltContext, ContextOverflowError, ToolResultBlock, make_strategy
from ctxmem.context import StrategyConfig


class KeepErrorsConfig(StrategyConfig):
    max_errors: int = Field(12, ge=0, le=1000, description="Most dropped error lines kept as pinned facts.")
    max_chars: int = Field(200, ge=20, le=5000, description="Characters kept of each error line.")
    compaction_step: float = Field(0.1, gt=0, le=1, description="Boundary grid as a fraction of the budget.")


class KeepErrors:
    """A recent window that keeps the first line of every error it drops."""

    name: ClassVar[str] = "keep_errors"
    Config = KeepErrorsConfig

    def __init__(self, config: KeepErrorsConfig | None = None, **params: object):
        self.config = config or KeepErrorsConfig(**params)  # type: ignore[arg-type]
        # the built-in window, by name, as any plugin composes a registered strategy
        self._window = make_strategy("window", {"compaction_step": self.config.compaction_step})

    def build(self, request: BuildRequest) -> BuiltContext:
        first = self._window.build(request)
        dropped = first.report.dropped
        if not dropped or not self.config.max_errors:
            return first
        errors: list[str] = []
        for i in reversed(dropped):
            for block in request.history.messages[i].content:
                if isinstance(block, ToolResultBlock) and block.is_error:
                    line = next((ln for ln in block.text.splitlines() if ln.strip()), "(empty error)")
                    errors.append(f"earlier failure ({block.tool_use_id}): {line.strip()[: self.config.max_chars]}")
            if len(errors) >= self.config.max_errors:
                break
        if not errors:
            return first
        facts = (*request.pinned_facts, *errors[: self.config.max_errors])
        try:
            built = self._window.build(dataclasses.replace(request, pinned_facts=facts))
        except ContextOverflowError:
            return first  # no room for the error lines next to the mandatory tail: plain window
        report = dataclasses.replace(built.report, strategy=self.name, notes=(*built.report.notes, f"kept {len(facts) - len(request.pinned_facts)} dropped errors"))
        return dataclasses.replace(built, report=report)
