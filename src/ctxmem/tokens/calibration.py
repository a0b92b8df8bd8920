"""Calibration of our counts against provider-reported usage.

Our counts are exact for content but the overhead is a model, and some providers
(Anthropic) do not publish their tokenizer at all. Each time a provider reports the
prompt size of a request we counted, the pair is an observation; the correction factor
for a (model, tokenizer) pair is the ratio of reported to estimated totals over the most
recent observations (a window, so a change in the provider's template is picked up).

**Both directions, within a safety band.** A tokenizer that over-counts (the heuristic
is 1.84× o200k on kernel content) leaves window unused unless the factor may go below 1;
one that under-counts overflows unless it may go above. The factor therefore learns in
both directions but stays inside a band — ``(0.8, 2.0)`` for an exact tokenizer,
``(0.4, 2.0)`` for an estimate — and it moves *down* only after ``min_down``
observations agree (one odd reply can make us send more than fits; moving up is always
safe, so it happens at once).

Observations are persisted by the session store (``calibration`` table, keyed by model
and tokenizer) when one is given, so corrections survive restarts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

#: the factor's bounds for an exact tokenizer (content exact, overhead modelled)
EXACT_BAND = (0.8, 2.0)
#: the factor's bounds for an estimate (the heuristic over-counts by up to ~2×)
ESTIMATE_BAND = (0.4, 2.0)


@dataclass
class Calibration:
    """A per-(model, tokenizer) correction factor from (estimated, reported) observations."""

    model: str
    tokenizer_id: str
    window: int = 50
    #: the factor is clamped to [low, high]
    band: tuple[float, float] = EXACT_BAND
    #: observations needed before the factor may go below 1
    min_down: int = 3
    _obs: deque[tuple[int, int]] = field(default_factory=deque, repr=False)

    @classmethod
    def for_tokenizer(cls, model: str, tokenizer_id: str, *, exact: bool, window: int = 50) -> Calibration:
        """A calibration with the band that suits the tokenizer (exact or an estimate)."""
        return cls(model, tokenizer_id, window, EXACT_BAND if exact else ESTIMATE_BAND)

    def observe(self, estimated: int, reported: int) -> None:
        """Learn from one request: our ``estimated`` prompt size and the provider's ``reported`` one.

        Non-positive values are ignored; only the latest ``window`` observations count.
        """
        if estimated <= 0 or reported <= 0:
            return
        self._obs.append((estimated, reported))
        while len(self._obs) > self.window:
            self._obs.popleft()

    @property
    def observations(self) -> int:
        """How many observations the factor is currently computed from (at most ``window``)."""
        return len(self._obs)

    @property
    def ratio(self) -> float:
        """reported / estimated over the window, unclamped; 1.0 with no observations."""
        if not self._obs:
            return 1.0
        est = sum(e for e, _ in self._obs)
        rep = sum(r for _, r in self._obs)
        return rep / est

    @property
    def factor(self) -> float:
        """The correction applied: :attr:`ratio` clamped to the band, and not below 1 before
        ``min_down`` observations."""
        raw = self.ratio
        low, high = self.band
        if raw < 1.0 and len(self._obs) < self.min_down:
            return 1.0
        return min(high, max(low, raw))

    def correct(self, estimated: int) -> int:
        """The estimate scaled by the factor, rounded up (over-counting is the safe side)."""
        return math.ceil(estimated * self.factor)
