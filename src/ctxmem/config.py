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
``strategies/`` folder of a source checkout.

**Errors say where.** Every error names the file, the line and the dotted field, e.g.
``strategies/x.toml:7: field 'params.keep_last': Input should be greater than 0``.
:mod:`tomllib` keeps no positions, so :func:`toml_field_line` finds the line itself: it
walks the text tracking the current ``[table]`` / ``[[array]]`` header and skipping
multi-line strings and arrays, and maps each key to the line that sets it. A field that is
missing (or lives inside an inline table) is reported at the nearest enclosing table or
key that the file has; one with no such place (a missing ``type``) names the file only.
An unknown top-level table (``[budgett]``) is reported as such, with a "did you mean".

**One way from a preset to a request.** :meth:`Preset.builder` returns a
:class:`ContextBuilder`: the strategy, the budget, the tokenizer that counts it, the
pinned count and the run-time dependencies the strategy declares
(:meth:`~ctxmem.context.StrategyConfig.dependencies`, e.g. an LLM summarizer's client).
The Agent, ``ctxmem context build``, the demo, the evaluator, the tuner's replay and the
kernel workload all build their requests through it, so a preset means the same thing
everywhere: its window, its tokenizer, its pinned prefix.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ctxmem.errors import ConfigError, UnknownNameError
from ctxmem.tokens import Budget
from ctxmem.tokens.budget import parse_token_size, token_size_field

if TYPE_CHECKING:
    from ctxmem.context import BuildRequest, BuiltContext, ContextStrategy, History, SessionLike
    from ctxmem.context.history import FollowedHistories
    from ctxmem.messages import ToolSpec
    from ctxmem.session import Session


class BudgetModel(BaseModel):
    """The ``[budget]`` table: window, reply reserve and compaction threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    context_window: int = Field(gt=0, description="The model's context window in tokens.")
    reserve_output: int = Field(0, ge=0, description="Tokens kept free for the reply.")
    threshold: float = Field(1.0, gt=0, le=1, description="Fraction of the input budget at which to compact.")

    _sizes = field_validator("context_window", "reserve_output", mode="before")(token_size_field)

    @field_validator("reserve_output")
    @classmethod
    def _reserve_fits(cls, v: int, info: ValidationInfo) -> int:
        # A build caps the reserve at a quarter of the window (so a smaller --window override
        # still leaves input room): a preset asking for more got a quarter, silently.
        window = info.data.get("context_window")
        if window is not None and v > window // 4:
            raise ValueError(f"reserve_output {v} is over a quarter of context_window {window} ({window // 4}): "
                             "a build would cap it there; lower it, or raise context_window")
        return v


class PresetModel(BaseModel):
    """A preset file's schema (validated; unknown keys refused)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    description: str = Field("", description="One line: what this preset is for.")
    type: str = Field(description="A registered strategy type (ctxmem strategies list).")
    tokenizer: str = Field("o200k_base", description="Tokenizer that counts the budget.")
    pinned: int = Field(1, ge=0, description="Leading messages kept verbatim.")
    budget: BudgetModel
    params: dict[str, Any] = Field(default_factory=dict, description="The strategy's own Config fields.")


@dataclass(frozen=True)
class Preset:
    """A validated preset: its ``name`` (the file's stem), ``path`` (``None`` when built from
    data) and parsed ``model``. Load one with :func:`load_preset`; turn it into requests
    with :meth:`builder`."""

    name: str
    path: Path | None
    model: PresetModel

    @property
    def description(self) -> str:
        """The file's one-line ``description``."""
        return self.model.description

    @property
    def type(self) -> str:
        """The registered strategy type the preset configures."""
        return self.model.type

    def budget(self, context_window: int | None = None) -> Budget:
        """The preset's :class:`~ctxmem.tokens.Budget`, optionally for another window.

        The reply reserve is capped at a quarter of the window, so a small
        ``context_window`` override still leaves room for input.
        """
        b = self.model.budget
        if isinstance(context_window, str):  # "128k", as on the command line and in a preset file
            from ctxmem.errors import InputError

            try:
                context_window = parse_token_size(context_window)
            except ValueError as exc:
                raise InputError(str(exc), field="context_window") from None
        if context_window is not None and context_window <= 0:
            from ctxmem.errors import InputError

            raise InputError(f"a context window must be at least 1 token, got {context_window}", field="context_window")
        window = b.context_window if context_window is None else context_window
        reserve = min(b.reserve_output, max(0, window // 4))
        return Budget(window, reserve, b.threshold)

    @property
    def source(self) -> str:
        """Where the preset came from, for error messages: its path, else its name."""
        return str(self.path or self.name)

    @property
    def tokenizer_set(self) -> bool:
        """True when the file names its tokenizer (else ``o200k_base`` is only a default)."""
        return "tokenizer" in self.model.model_fields_set

    def load_tokenizer(self, name: str | None = None) -> Any:
        """The tokenizer ``name`` (default: the file's ``tokenizer``), loaded; one that cannot
        load is a ConfigError naming the file, line and field ``tokenizer`` (never a silent
        fallback to another count: the budget is in that tokenizer's units)."""
        from ctxmem.errors import TokenizerError
        from ctxmem.tokens import get_tokenizer

        name = name or self.model.tokenizer
        try:
            return get_tokenizer(name)
        except (TokenizerError, UnknownNameError, OSError) as exc:
            detail = str(exc.detail if isinstance(exc, ConfigError) else exc)
            path = Path(name[3:]).expanduser() if name.startswith("hf:") else None
            looks_local = path is not None and (
                path.is_absolute() or name[3:].startswith((".", "~")) or path.suffix == ".json"
            )
            if path is not None and looks_local and not path.exists():  # not a hub name: say so
                detail = f"cannot load tokenizer {name!r}: no such file or folder {str(path)!r}"
            raise ConfigError(
                detail.split("\n")[0].rstrip(". ")
                + ("; or remove the line to count with o200k_base" if self.tokenizer_set else ""),
                source=self.source,
                field="tokenizer",
            ).at_line(toml_field_line(_file_text(self.path), "tokenizer")) from None

    def with_fact_profile(self, profile: str) -> Preset:
        """This preset with ``params.fact_profile = profile`` where it matters.

        A workload knows its own vocabulary (the kernel workload registers a ``kernel``
        profile in ``ctxmem.fact_profiles``); its run path hands that to whatever preset the
        user chose. The file's own ``fact_profile`` wins, and a strategy type without the
        field (``window``, ``dump``) is returned unchanged.
        """
        from ctxmem.context import STRATEGIES
        from ctxmem.context.profile import get_profile

        if "fact_profile" in self.model.params:
            return self
        if "fact_profile" not in STRATEGIES.get(self.model.type).Config.model_fields:
            return self
        get_profile(profile)  # an unknown name fails here, naming the registry
        params = {**self.model.params, "fact_profile": profile}
        return Preset(self.name, self.path, self.model.model_copy(update={"params": params}))

    def dependencies(self) -> dict[str, str]:
        """What the strategy declares it needs at run time (keyword → ``"agent"`` or a client spec)."""
        from ctxmem.context import STRATEGIES

        deps: dict[str, str] = STRATEGIES.get(self.model.type).Config(**self.model.params).dependencies()
        return deps

    def strategy(self, *, client: Any = None, **deps: Any) -> Any:
        """The preset's strategy with its declared dependencies resolved.

        A dependency given in ``deps`` is used as is; otherwise a declared ``"agent"``
        takes ``client`` and a declared client spec is built with
        :func:`ctxmem.clients.get_client`. A missing one is a ConfigError naming the field.
        """
        from ctxmem.context import make_strategy

        resolved: dict[str, Any] = {}
        for name, spec in self.dependencies().items():
            if name in deps:
                resolved[name] = deps[name]
            elif spec == "agent":
                if client is None:
                    raise ConfigError(
                        f"this preset's strategy needs {name}= (summarizer_model = 'agent' uses the caller's "
                        "client): pass client=, use it through Agent(client, session, preset=...), or set "
                        "summarizer_model to a client spec such as 'anthropic:claude-haiku-4-5'",
                        source=self.source,
                        field="params.summarizer_model",
                    ).at_line(toml_field_line(_file_text(self.path), "params.summarizer_model"))
                resolved[name] = client
            else:
                from ctxmem.clients import get_client

                try:
                    resolved[name] = get_client(spec)
                except UnknownNameError as exc:
                    raise ConfigError(str(exc), source=self.source, field="params.summarizer_model").at_line(
                        toml_field_line(_file_text(self.path), "params.summarizer_model")
                    ) from None
        try:
            return make_strategy(self.model.type, self.model.params, source=self.source, **resolved)
        except ConfigError as exc:
            raise _in_params(exc, self.source, _file_text(self.path)) from None

    def builder(
        self,
        *,
        context_window: int | None = None,
        tokenizer: str | None = None,
        pinned: int | None = None,
        reserve_output: int | None = None,
        client: Any = None,
        **deps: Any,
    ) -> ContextBuilder:
        """A :class:`ContextBuilder` for this preset; each argument overrides the file.

        ``reserve_output`` raises the reserve to at least that many tokens (an Agent's
        ``max_tokens``); ``client`` and ``deps`` resolve the strategy's dependencies
        (see :meth:`strategy`).
        """
        budget = self.budget(context_window)
        for name, v in (("pinned", pinned), ("reserve_output", reserve_output)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, Integral) or v < 0):
                raise ConfigError(f"must be a whole number, 0 or more, got {v!r}", field=name)
        if reserve_output is not None and reserve_output > budget.reserve_output:
            if reserve_output >= budget.context_window:
                raise ConfigError(
                    f"max_tokens {reserve_output} leaves no input room in a {budget.context_window}-token window",
                    source=self.source,
                    field="budget.reserve_output",
                )
            budget = Budget(budget.context_window, reserve_output, budget.threshold)
        if tokenizer is None or (self.tokenizer_set and tokenizer == self.model.tokenizer):
            self.load_tokenizer()  # the file's own choice: fail here, naming the file, not at the first build
        # an override may name a caller's own Tokenizer object (tune.replay_cost passes one): not resolved here
        return ContextBuilder(
            self.strategy(client=client, **deps),
            budget,
            tokenizer or self.model.tokenizer,
            self.model.pinned if pinned is None else pinned,
            name=self.name,
        )


@dataclass
class ContextBuilder:
    """A strategy with everything it needs to build requests: the one owner of that step.

    Made by :meth:`Preset.builder` (or directly, from a strategy object). It holds the
    strategy instance, whose per-history caches make consecutive builds incremental, so
    keep one builder per agent loop. ``build(session)`` turn after turn keeps the
    session's :class:`~ctxmem.context.History` too and extends it with only what was
    recorded since the last build (see :class:`~ctxmem.context.history.FollowedHistories`),
    so a turn costs what it appended, not the session's length.
    """

    strategy: ContextStrategy
    budget: Budget
    #: the tokenizer name that counts the budget (a History must use the same)
    tokenizer: str = "o200k_base"
    pinned: int = 1
    name: str = "custom"
    pinned_facts: tuple[str, ...] = field(default=())
    #: the sessions :meth:`build` was given, each History kept and extended turn by turn
    _followed: FollowedHistories = field(default_factory=lambda: _followed_histories(), init=False,
                                         repr=False, compare=False)

    def history(self, session: Session) -> History:
        """The session's history, counted with this builder's tokenizer (stored counts): a
        new History of your own, loaded in full. To build turn after turn, keep it and
        ``extend`` it with what you record, or let :meth:`build` follow the session for you
        (``build(session)``); a History loaded anew each turn costs a read of the whole
        session and finds every strategy cache cold."""
        from ctxmem.context import History

        return History.from_session(session, self.tokenizer)

    def current_history(self, session: Session) -> History:
        """The History :meth:`build` uses for ``session``: loaded on the first call, then the
        same object extended with what was recorded since (reloaded after a rewind, a fork
        or another handle's write to the last message). Read it; do not extend it yourself
        (:meth:`history` gives a History of your own)."""
        return self._followed.get(session, self.tokenizer)

    def request(
        self,
        history: History,
        *,
        system: str | None = None,
        tools: Sequence[ToolSpec] = (),
        session: SessionLike | None = None,
        record: bool = True,
        expect_input: bool = False,
        budget: Budget | None = None,
        cache_derived: bool | None = None,
    ) -> BuildRequest:
        """The :class:`~ctxmem.context.BuildRequest` for ``history`` under this builder's settings."""
        from ctxmem.context import BuildRequest
        from ctxmem.tokens import tokenizer_id

        tok = history.tokenizer
        if tok.name != self.tokenizer and tok.id != tokenizer_id(self.tokenizer):
            raise ConfigError(
                f"the history is counted with {history.tokenizer.name!r} but this builder's budget is in "
                f"{self.tokenizer!r} tokens; load it with builder.history(session)",
                field="tokenizer",
            )
        return BuildRequest(
            history,
            budget or self.budget,
            system=system,
            tools=tuple(tools),
            pinned=self.pinned,
            pinned_facts=self.pinned_facts,
            session=session,
            record=record,
            expect_input=expect_input,
            cache_derived=cache_derived,
        )

    def build(
        self,
        source: Session | History,
        *,
        system: str | None = None,
        tools: Sequence[ToolSpec] = (),
        session: SessionLike | None = None,
        record: bool = True,
        expect_input: bool = False,
        budget: Budget | None = None,
        cache_derived: bool | None = None,
    ) -> BuiltContext:
        """Build the next request's context from a session (loaded with its stored counts)
        or from a :class:`~ctxmem.context.History` (``session`` then names where recall
        and retrieval read and compactions are recorded). ``record=False`` is a dry run;
        ``cache_derived=True`` lets it still save the derived-state cache (see
        :class:`~ctxmem.context.BuildRequest`), so the next build does not read every
        message again."""
        from ctxmem.context import History

        if isinstance(source, History):
            history = source
        else:
            history, session = self.current_history(source), session or source
        request = self.request(
            history, system=system, tools=tools, session=session, record=record, expect_input=expect_input,
            budget=budget, cache_derived=cache_derived,
        )
        return self.strategy.build(request)


def _followed_histories() -> FollowedHistories:
    from ctxmem.context.history import FollowedHistories

    return FollowedHistories(limit=8)


def preset_dirs() -> list[Path]:
    """The folders searched for presets by name, in order (see the module docstring)."""
    dirs = [Path(p) for p in os.environ.get("CTXMEM_PRESETS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    dirs.append(here / "_presets")  # shipped in the wheel (see pyproject force-include)
    dirs.append(here.parents[1] / "strategies")  # a source checkout
    return [d for d in dirs if d.is_dir()]


def available_presets() -> dict[str, Path]:
    """Preset name → file, over :func:`preset_dirs` (the first folder with a name wins)."""
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


# ---------------------------------------------------------------- where a field is set

def _split_key(key: str) -> list[str]:
    """A TOML key (``a."b.c".d``) as its parts, quotes removed."""
    parts: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    for ch in key:
        if quote:
            if ch == quote:
                quote = None
            else:
                buf.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf).strip())
    return parts


class _ValueScanner:
    """Follows a value across lines: multi-line strings, and arrays/inline tables by depth."""

    def __init__(self) -> None:
        self.string: str | None = None  # the open multi-line delimiter
        self.depth = 0

    @property
    def open(self) -> bool:
        return self.string is not None or self.depth > 0

    def feed(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            if self.string is not None:
                end = text.find(self.string, i)
                if end < 0:
                    return
                i = end + 3
                self.string = None
                continue
            ch = text[i]
            if text.startswith(('"""', "'''"), i):
                self.string, i = text[i : i + 3], i + 3
            elif ch in "\"'":
                i += 1
                while i < n and text[i] != ch:
                    i += 2 if ch == '"' and text[i] == "\\" else 1
                i += 1
            elif ch == "#":
                return
            else:
                self.depth += (ch in "[{") - (ch in "]}")
                i += 1


_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")


def toml_field_lines(text: str) -> dict[str, int]:
    """Dotted key → the 1-based line that sets it (or opens its table) in TOML ``text``.

    Section-aware: a key under ``[params]`` is ``params.key``; the n-th ``[[a.b]]`` table is
    ``a.b.n`` (0-based, as pydantic locates list items). Text inside multi-line strings and
    arrays is skipped; a malformed line is ignored (tomllib reports it).
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    counts: dict[str, int] = {}
    scanner = _ValueScanner()
    for number, raw in enumerate(text.splitlines(), start=1):
        if scanner.open:
            scanner.feed(raw)
            continue
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = _HEADER.match(raw) if stripped.startswith("[") else None
        if header is not None:
            path = _split_key(header.group(2))
            if header.group(1) == "[[":
                key = ".".join(path)
                lines.setdefault(key, number)
                index = counts.get(key, 0)
                counts[key] = index + 1
                path = [*path, str(index)]
            table = path
            for i in range(1, len(path) + 1):
                lines.setdefault(".".join(path[:i]), number)
            continue
        key, eq, value = _split_assignment(raw)
        if not eq:
            continue
        full = [*table, *_split_key(key)]
        for i in range(len(table) + 1, len(full) + 1):
            lines.setdefault(".".join(full[:i]), number)
        scanner.feed(value)
    return lines


def _split_assignment(line: str) -> tuple[str, bool, str]:
    """``key = value`` → (key, True, value), the ``=`` found outside quoted key parts."""
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            return line[:i], True, line[i + 1 :]
    return line, False, ""


def toml_field_line(text: str | None, field: str | None) -> int | None:
    """The line where dotted ``field`` is set in TOML ``text``, else the nearest enclosing
    key or table the text has; ``None`` when there is none (or no text or field)."""
    if not text or not field:
        return None
    lines = toml_field_lines(text)
    parts = field.split(".")
    for i in range(len(parts), 0, -1):
        line = lines.get(".".join(parts[:i]))
        if line is not None:
            return line
    return None


def _file_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _in_params(exc: ConfigError, source: str, text: str | None) -> ConfigError:
    """A strategy Config error (fields relative to ``[params]``) as a preset error."""
    field = exc.field
    if field is not None and not field.startswith("params"):
        field = f"params.{field}"
    return ConfigError(exc.detail, source=source, field=field or "params").at_line(toml_field_line(text, field))


def parse_preset(data: dict[str, Any], *, name: str, source: str, text: str | None = None) -> Preset:
    """Validate parsed preset ``data`` (type, budget, the strategy's params) into a :class:`Preset`.

    Args:
        data: the parsed TOML document.
        name: the preset's name (a file's stem).
        source: where it came from, named in errors.
        text: the TOML text, when there is one, so errors name the line.

    Raises:
        ConfigError: naming ``source``, the line (given ``text``) and the dotted field.
    """
    from ctxmem.context import STRATEGIES, make_strategy, validation_detail

    def located(error: ConfigError) -> ConfigError:
        return error.at_line(toml_field_line(text, error.field))

    known = set(PresetModel.model_fields)
    for key in data:
        if key not in known:
            kind = "table" if isinstance(data[key], dict) else "field"
            hint = get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            fix = f"did you mean {hint[0]!r}?" if hint else f"expected one of {', '.join(sorted(known))}"
            raise located(ConfigError(f"unknown {kind}; {fix}", source=source, field=key))
    try:
        model = PresetModel(**data)
    except ValidationError as exc:
        loc, msg = validation_detail(exc)
        raise located(ConfigError(msg, source=source, field=loc)) from None
    if model.type not in STRATEGIES:
        try:
            STRATEGIES.get(model.type)
        except UnknownNameError as exc:
            raise located(ConfigError(str(exc), source=source, field="type")) from None
    # validate params now, naming the field; a strategy that declares run-time
    # dependencies (an LLM client) is built when they are given, by Preset.strategy
    cls = STRATEGIES.get(model.type)
    try:
        config = cls.Config(**model.params)
    except ValidationError as exc:
        loc, msg = validation_detail(exc)
        raise _in_params(ConfigError(msg, field=loc), source, text) from None
    except ConfigError as exc:
        raise _in_params(exc, source, text) from None
    try:
        needs = config.dependencies()
    except (ValidationError, ConfigError):
        needs = {}  # a nested config error: make_strategy reports it, naming the field
    if not needs:
        try:
            make_strategy(model.type, model.params, source=source)
        except ConfigError as exc:
            raise _in_params(exc, source, text) from None
    return Preset(name, Path(source) if Path(source).exists() else None, model)


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def load_preset(name_or_path: str | os.PathLike[str]) -> Preset:
    """A preset by file path or by name (see the module docstring for the search order).

    Raises:
        UnknownNameError: no preset of that name (with "did you mean").
        ConfigError: a missing file, invalid TOML or an invalid field, naming the file, the
            line and the field.
    """
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        presets = available_presets()
        if text not in presets:
            raise UnknownNameError("preset", text, presets)
        path = presets[text]
    if not path.is_file():
        hint = ""
        if text.endswith(".toml") and path.stem in available_presets() and len(path.parts) == 1:
            hint = f"; the shipped preset is named {path.stem!r} (without .toml)"
        raise ConfigError(f"no preset file {path}{hint}", source=str(path))
    try:
        body = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=str(path)) from None
    try:
        data = tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        at = _TOML_LINE.search(str(exc))
        message = _TOML_LINE.sub("", str(exc)).strip()
        raise ConfigError(
            f"invalid TOML: {message}", source=str(path), line=int(at.group(1)) if at else None
        ) from None
    return parse_preset(data, name=path.stem, source=str(path), text=body)
