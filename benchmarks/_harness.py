"""Tiny timing harness shared by the suites: repeated runs, median, a result row."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    suite: str
    metric: str
    ctxmem: float
    peer_name: str
    peer: float
    unit: str
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ctxmem / self.peer if self.peer else float("nan")


def timed(fn: Callable[[], object], repeat: int = 5, setup: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs (``setup`` untimed before each)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "us":
        return f"{value:.0f} µs"
    return f"{value:.3g} {unit}"
