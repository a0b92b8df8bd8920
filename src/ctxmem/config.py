"""Presets: a named strategy configuration as data (TOML) → a validated strategy + budget.

A preset file::

    description = "Mask old tool outputs with recall handles; 200K window"
    type = "masking"                 # a registered strategy name
    tokenizer = "o200k_base"         # optional
    pinned = 1                       # optional: leading messages kept verbatim

    [budget]
    context_window = 200000
    reserve_output = 8000
    threshold = 0.9

    [params]                         # the strategy's Config fields
    keep_last = 3
    reducer = "first_error"

Presets are found by path, or by name in (first hit wins): the folders in
``$CTXMEM_PRESETS`` (colon-separated), the presets shipped in the package, and the
``strategies/`` folder of a source checkout. Every error names the file and the field.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ctxmem.errors import ConfigError, UnknownNameError
from ctxmem.tokens import Budget


class BudgetModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    context_window: int = Field(gt=0, description="The model's context window in tokens.")
    reserve_output: int = Field(0, ge=0, description="Tokens kept free for the reply.")
    threshold: float = Field(1.0, gt=0, le=1, description="Fraction of the input budget at which to compact.")


class PresetModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    description: str = Field("", description="One line: what this preset is for.")
    type: str = Field(description="A registered strategy type (ctxmem strategies list).")
    tokenizer: str = Field("o200k_base", description="Tokenizer that counts the budget.")
    pinned: int = Field(1, ge=0, description="Leading messages kept verbatim.")
    budget: BudgetModel
    params: dict[str, Any] = Field(default_factory=dict, description="The strategy's own Config fields.")


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path | None
    model: PresetModel

    @property
    def description(self) -> str:
        return self.model.description

    @property
    def type(self) -> str:
        return self.model.type

    def budget(self, context_window: int | None = None) -> Budget:
        b = self.model.budget
        window = context_window or b.context_window
        reserve = min(b.reserve_output, max(0, window // 4))
        return Budget(window, reserve, b.threshold)

    def strategy(self, **deps: Any) -> Any:
        """The preset's strategy; ``deps`` are run-time objects such as ``client=`` for LLM summaries."""
        from ctxmem.context import make_strategy

        return make_strategy(self.model.type, self.model.params, source=str(self.path or self.name), **deps)


def preset_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("CTXMEM_PRESETS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    dirs.append(here / "_presets")  # shipped in the wheel (see pyproject force-include)
    dirs.append(here.parents[1] / "strategies")  # a source checkout
    return [d for d in dirs if d.is_dir()]


def available_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def parse_preset(data: dict[str, Any], *, name: str, source: str) -> Preset:
    from ctxmem.context import STRATEGIES, config_error, make_strategy

    try:
        model = PresetModel(**data)
    except ValidationError as exc:
        raise config_error(exc, source) from None
    if model.type not in STRATEGIES:
        try:
            STRATEGIES.get(model.type)
        except UnknownNameError as exc:
            raise ConfigError(str(exc), source=source, field="type") from None
    # validate params now, naming the field (LLM-backed presets are checked without a client)
    cls = STRATEGIES.get(model.type)
    try:
        cls.Config(**model.params)
    except ValidationError as exc:
        raise config_error(exc, source) from None
    if model.type != "summarization" or model.params.get("summarizer") != "llm":
        make_strategy(model.type, model.params, source=source)
    return Preset(name, Path(source) if Path(source).exists() else None, model)


def load_preset(name_or_path: str | os.PathLike[str]) -> Preset:
    """A preset by file path or by name (see the module docstring for the search order)."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        presets = available_presets()
        if text not in presets:
            raise UnknownNameError("preset", text, presets)
        path = presets[text]
    if not path.is_file():
        raise ConfigError(f"no preset file {path}", source=str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=str(path)) from None
    return parse_preset(data, name=path.stem, source=str(path))
