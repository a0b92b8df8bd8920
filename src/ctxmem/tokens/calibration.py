"""Calibration of our counts against provider-reported usage.

Our counts are exact for content but the overhead is a model, and some providers
(Anthropic) do not publish their tokenizer at all. Each time a provider reports
``input_tokens`` for a request we counted, the pair is an observation; the correction
factor for a model is the ratio of reported to estimated totals over the most recent
observations (a window, so a change in the provider's template is picked up).
Observations are persisted by the session store (``calibration`` table) when one is
given, so corrections survive restarts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Calibration:
    """A per-model correction factor from (estimated, reported) observations."""

    model: str
    tokenizer_id: str
    window: int = 50
    _obs: deque[tuple[int, int]] = field(default_factory=deque, repr=False)

    def observe(self, estimated: int, reported: int) -> None:
        if estimated <= 0 or reported <= 0:
            return
        self._obs.append((estimated, reported))
        while len(self._obs) > self.window:
            self._obs.popleft()

    @property
    def observations(self) -> int:
        return len(self._obs)

    @property
    def factor(self) -> float:
        """reported / estimated over the window; 1.0 with no observations."""
        if not self._obs:
            return 1.0
        est = sum(e for e, _ in self._obs)
        rep = sum(r for _, r in self._obs)
        return rep / est

    def correct(self, estimated: int) -> int:
        """The estimate scaled by the factor, rounded up (over-counting is the safe side)."""
        return math.ceil(estimated * self.factor)
