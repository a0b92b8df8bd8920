"""Budget: how many tokens a request may use."""

from __future__ import annotations

from dataclasses import dataclass

from ctxmem.errors import ConfigError


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
