"""Budget: how many tokens a request may use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ctxmem.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]i?)?\s*$")


def parse_token_size(text: str) -> int:
    """``32k`` → 32,000, ``1m`` → 1,000,000 (decimal); ``32Ki`` → 32,768; plain integers as is.

    Raises:
        ValueError: not a size, or not a positive one (the message says what is accepted).
    """
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a token count: {text!r} (use e.g. 32k, 128000, 1m, 32Ki)")
    mult = {"": 1, "k": 1000, "m": 1_000_000, "ki": 1024, "mi": 1024**2}[(m.group(2) or "").lower()]
    n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise ValueError(f"a token count must be positive: {text!r}")
    return n


def token_size_field(value: Any) -> Any:
    """A pydantic ``mode="before"`` step for a token-count field: ``"128k"`` in a preset
    means what ``--window 128k`` means on the command line; anything else is left to the
    field's own validation (an int, or its type error)."""
    if isinstance(value, str):
        return parse_token_size(value)
    return value


@dataclass(frozen=True, slots=True)
class Budget:
    """A context budget.

    ``context_window`` is the model's window; ``reserve_output`` is kept free for the reply
    (the request's ``max_tokens``); ``threshold`` (0–1] is the fraction of the remaining
    input budget at which strategies start compacting, so there is headroom before a hard
    limit.
    """

    context_window: int
    reserve_output: int = 0
    threshold: float = 1.0

    def __post_init__(self) -> None:
        for name in ("context_window", "reserve_output"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Integral):  # numpy's ints too
                hint = " (parse_token_size('128k') reads a size)" if isinstance(v, str) else ""
                raise ConfigError(f"must be a whole number of tokens, got {v!r}{hint}", field=name)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, Real):
            raise ConfigError(f"must be a number in (0, 1], got {self.threshold!r}", field="threshold")
        if self.context_window <= 0:
            raise ConfigError("must be a positive number of tokens", field="context_window")
        if not 0 <= self.reserve_output < self.context_window:
            raise ConfigError(
                f"must be between 0 and context_window ({self.context_window}) exclusive",
                field="reserve_output",
            )
        if not 0 < self.threshold <= 1:
            raise ConfigError("must be in (0, 1]", field="threshold")

    @property
    def available(self) -> int:
        """Input tokens a request may use: window minus reserved output."""
        return self.context_window - self.reserve_output

    @property
    def trigger(self) -> int:
        """Input tokens at which compaction starts."""
        return int(self.available * self.threshold)

    def fits(self, tokens: int) -> bool:
        """True when a request of ``tokens`` input tokens fits the input budget (``available``)."""
        return tokens <= self.available

    def should_compact(self, tokens: int) -> bool:
        """True when ``tokens`` passed the compaction trigger (``threshold`` × ``available``)."""
        return tokens > self.trigger
