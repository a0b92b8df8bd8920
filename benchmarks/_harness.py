"""Tiny timing harness shared by the suites: repeated runs, median, a result row."""

from __future__ import annotations

import re
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

    @property
    def met(self) -> bool | None:
        """Whether every clause of ``target`` holds; None when there is no target."""
        return target_met(self.target, self.ctxmem, self.unit, self.ratio)


_SCALE = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6}
_CLAUSE = re.compile(r"^(≤|≥)\s*([0-9.,]+)\s*(×\s*faster|×|ms|µs|us|s)?$")


def target_met(target: str, value: float, unit: str, ratio: float) -> bool | None:
    """Check a target written the way the issues write them, clause by clause.

    ``≤ 1.5×`` bounds the ratio ctxmem ÷ peer, ``≥ 1000× faster`` bounds its inverse,
    ``≤ 30 ms`` / ``≤ 200 µs`` bound ctxmem's own time (in the row's unit), and a bare
    ``≥ 0.99`` bounds ctxmem's value. An unparseable clause raises, so a typo in a target
    cannot pass silently.
    """
    if not target.strip():
        return None
    ok = True
    for clause in (c.strip() for c in re.split(r",\s*(?=[≤≥])", target)):
        m = _CLAUSE.match(clause)
        if m is None:
            raise ValueError(f"benchmark target clause {clause!r} is not of the form '≤ 1.5×', '≥ 50× faster', '≤ 30 ms' or '≥ 0.99'")
        op, num, what = m.group(1), float(m.group(2).replace(",", "")), (m.group(3) or "").replace(" ", "")
        if what == "×faster":
            got, bound = (1 / ratio if ratio else float("inf")), num
        elif what == "×":
            got, bound = ratio, num
        elif what in _SCALE:
            if unit not in _SCALE:
                raise ValueError(f"target {clause!r} is a time but the row's unit is {unit!r}")
            got, bound = value * _SCALE[unit], num * _SCALE[what]
        else:
            got, bound = value, num
        ok &= got <= bound if op == "≤" else got >= bound
    return ok


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
