"""The price model: what a request costs, per model, with prompt-cache and batch pricing.

Prices are data, not code: a dated table shipped in the package (``prices.toml`` next to
this module), every entry with its ``source`` and ``as_of`` date, overridable field by
field by a user TOML file of the same shape (``--prices FILE``, ``$CTXMEM_PRICES``, or
``$XDG_CONFIG_HOME/ctxmem/prices.toml``, default ``~/.config/ctxmem/prices.toml``).

One request is billed as::

    dollars = (uncached·input + written·cache_write + read·cache_read + output·output) / 1e6
              × (1 − batch_discount if batched)

where ``read`` is the prefix served from the prompt cache, ``written`` what the request
writes into it, and ``uncached`` the rest (see :mod:`ctxmem.tune.replay` for how those
are derived). A model without ``cache_read`` has no prompt cache. A model without
``cache_write`` writes at the input price (OpenAI-style automatic caching). Anthropic
offers a 1-hour TTL at a higher write price (``cache_write_1h``). Some models bill a whole
request at a higher tier above a threshold of input tokens (``long_context``): Sonnet
above 200K tokens pays 2× input and 1.5× output.

Unknown model names raise :class:`MissingPriceError` (an
:class:`~ctxmem.errors.UnknownNameError`, with "did you mean") that names the file to add
the price to.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctxmem.errors import ConfigError, UnknownNameError

CacheTTL = Literal["default", "1h"]
MTOK = 1_000_000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LongContextTier(_Frozen):
    """Prices for a whole request whose input exceeds ``threshold`` tokens."""

    threshold: int = Field(gt=0, description="Input tokens above which the whole request bills at this tier.")
    input: float = Field(ge=0, description="$ per million input tokens.")
    output: float = Field(ge=0, description="$ per million output tokens.")
    cache_write: float | None = Field(None, ge=0, description="$ per million tokens written at the default TTL.")
    cache_write_1h: float | None = Field(None, ge=0, description="$ per million tokens written with a 1-hour TTL.")
    cache_read: float | None = Field(None, ge=0, description="$ per million tokens read from the cache.")


class ModelPrice(_Frozen):
    """One model's prices (US dollars per million tokens) and cache behaviour."""

    provider: str = Field(description="Who bills it (anthropic, openai, alibaba, …).")
    input: float = Field(ge=0, description="$ per million uncached input tokens.")
    output: float = Field(ge=0, description="$ per million output tokens.")
    cache_write: float | None = Field(
        None, ge=0, description="$ per million tokens written to the cache at the default TTL (None: the input price)."
    )
    cache_write_1h: float | None = Field(None, ge=0, description="$ per million tokens written with a 1-hour TTL.")
    cache_read: float | None = Field(None, ge=0, description="$ per million cached input tokens (None: no cache).")
    cache_ttl_s: float = Field(300, gt=0, description="Default cache lifetime in seconds, refreshed on each hit.")
    cache_min_tokens: int = Field(0, ge=0, description="Shortest prompt the provider caches.")
    cache_increment: int = Field(1, ge=1, description="Cached prefixes count in blocks of this many tokens.")
    batch_discount: float = Field(0.0, ge=0, lt=1, description="Fraction off through the batch API.")
    long_context: LongContextTier | None = Field(None, description="Higher tier for long requests.")
    aliases: tuple[str, ...] = Field((), description="Other names of this model.")
    source: str = Field(min_length=1, description="Where the prices come from (URL or document).")
    as_of: date = Field(description="When the source was read.")
    notes: str = Field("", description="Caveats.")

    @model_validator(mode="after")
    def _write_needs_read(self) -> ModelPrice:
        if self.cache_read is None and (self.cache_write is not None or self.cache_write_1h is not None):
            raise ValueError("a cache write price needs a cache_read price (a cache that is never read)")
        return self


@dataclass(frozen=True, slots=True)
class Rates:
    """The $/MTok rates that apply to one request (tier and TTL resolved)."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    discount: float = 0.0

    def dollars(self, *, uncached: int, written: int, read: int, output: int) -> float:
        raw = uncached * self.input + written * self.cache_write + read * self.cache_read + output * self.output
        return raw / MTOK * (1.0 - self.discount)


@dataclass(frozen=True)
class Price:
    """A model's price entry with its name and the file it came from."""

    name: str
    model: ModelPrice
    origin: str

    @property
    def caches(self) -> bool:
        return self.model.cache_read is not None

    def ttl_seconds(self, ttl: CacheTTL = "default") -> float:
        return 3600.0 if ttl == "1h" else self.model.cache_ttl_s

    def rates(self, input_tokens: int, *, ttl: CacheTTL = "default", batch: bool = False) -> Rates:
        """Rates for a request of ``input_tokens`` (long-context tier applied) and cache TTL."""
        m = self.model
        tier: ModelPrice | LongContextTier = m
        if m.long_context is not None and input_tokens > m.long_context.threshold:
            tier = m.long_context
        write: float | None
        if ttl == "1h":
            write = tier.cache_write_1h
            if write is None:
                raise ConfigError(
                    f"model {self.name!r} has no 1-hour cache write price; use the default TTL or add "
                    f"cache_write_1h to its entry in {self.origin}",
                    field="cache_write_1h",
                )
        else:
            write = tier.cache_write
        read = tier.cache_read if tier.cache_read is not None else m.cache_read
        return Rates(
            input=tier.input,
            output=tier.output,
            cache_write=write if write is not None else tier.input,
            cache_read=read if read is not None else tier.input,
            discount=m.batch_discount if batch else 0.0,
        )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, **self.model.model_dump(mode="json")}


def default_user_file() -> Path:
    """``$CTXMEM_PRICES``, else ``$XDG_CONFIG_HOME/ctxmem/prices.toml`` (``~/.config/…``)."""
    if os.environ.get("CTXMEM_PRICES"):
        return Path(os.environ["CTXMEM_PRICES"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ctxmem" / "prices.toml"


SHIPPED = "ctxmem/tune/prices.toml"


class MissingPriceError(UnknownNameError):
    """No price for a model name; says which file to add it to."""

    def __init__(self, name: str, known: Iterable[str], add_to: str):
        self.add_to = add_to
        super().__init__("priced model", name, known)
        msg = (
            f"{self.args[0]} Add its prices as a [models.{_toml_key(name)}] table (input, output, source, "
            f"as_of, …; see {SHIPPED}) to {add_to}, or pass another file with --prices."
        )
        self.args = (msg,)


def _toml_key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else f'"{name}"'


def _read_toml(path: Path | str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=str(path)) from None


@dataclass
class PriceTable:
    """Model name → price, merged from the shipped table and user overrides."""

    entries: dict[str, Price] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    #: where a missing price should be added
    user_file: str = field(default_factory=lambda: str(default_user_file()))

    def names(self) -> list[str]:
        return sorted(self.entries)

    def _alias_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, p in self.entries.items():
            for a in p.model.aliases:
                out.setdefault(a, name)
        return out

    def get(self, name: str) -> Price:
        if name in self.entries:
            return self.entries[name]
        aliases = self._alias_map()
        if name in aliases:
            return self.entries[aliases[name]]
        raise MissingPriceError(name, [*self.entries, *aliases], self.user_file)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.entries or name in self._alias_map())

    def merge(self, data: Mapping[str, Any], source: str) -> None:
        """Add or override entries from a parsed TOML document (field-level merge)."""
        unknown = set(data) - {"models", "as_of"}
        if unknown:
            raise ConfigError("unknown top-level key; expected [models.NAME] tables and as_of", source=source,
                              field=sorted(unknown)[0])
        models = data.get("models", {})
        if not isinstance(models, Mapping):
            raise ConfigError("must be a table of [models.NAME] tables", source=source, field="models")
        for name, fields in models.items():
            if not isinstance(fields, Mapping):
                raise ConfigError("must be a table", source=source, field=f"models.{name}")
            base: dict[str, Any] = {}
            if name in self.entries:
                base = self.entries[name].model.model_dump()
                if base.get("long_context") and isinstance(fields.get("long_context"), Mapping):
                    fields = {**fields, "long_context": {**base["long_context"], **fields["long_context"]}}
            try:
                model = ModelPrice(**{**base, **fields})
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                msg = "unknown field; remove it or check its spelling" if err["type"] == "extra_forbidden" else err["msg"]
                raise ConfigError(msg, source=source, field=f"models.{name}" + (f".{loc}" if loc else "")) from None
            self.entries[name] = Price(name, model, source)
        self.files.append(source)


def load_prices(path: str | os.PathLike[str] | None = None, *, user: bool = True) -> PriceTable:
    """The shipped price table, overridden by ``path`` or (``user=True``) the default user file.

    An explicit ``path`` must exist; the default user file is read only when present.
    """
    table = PriceTable()
    text = resources.files("ctxmem.tune").joinpath("prices.toml").read_text(encoding="utf-8")
    table.merge(_read_toml(SHIPPED, text), SHIPPED)
    override: Path | None = None
    if path is not None:
        override = Path(path)
        if not override.is_file():
            raise ConfigError("no such price file", source=str(override))
    elif user and default_user_file().is_file():
        override = default_user_file()
    if override is not None:
        table.user_file = str(override)
        table.merge(_read_toml(override, override.read_text(encoding="utf-8")), str(override))
    return table


def get_price(name: str, prices: str | os.PathLike[str] | None = None) -> Price:
    """One model's price (shipped table + overrides)."""
    return load_prices(prices).get(name)


__all__ = [
    "CacheTTL",
    "LongContextTier",
    "MissingPriceError",
    "ModelPrice",
    "Price",
    "PriceTable",
    "Rates",
    "default_user_file",
    "get_price",
    "load_prices",
]
