"""Grids: the axes a user gives (lengths, depths, families, presets, …) → cells.

Axis values are parsed the way the CLI writes them: lengths as ``4k``, ``128k``, ``1m``
or plain integers (``k`` = 1,000 and ``m`` = 1,000,000, the convention of published
long-context benchmarks; ``ki``/``mi`` for powers of two); depths as fractions in
[0, 1] or, when any value is above 1, as percentages (``0,25,50,75,100``).

Controls do not multiply the grid: the ``nocontext`` family has no document, so it gets
one cell per (model, seed) at the first length and depth 0.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ctxmem.errors import ConfigError
from ctxmem.evals.cells import Cell

_LEN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k|ki|m|mi)?\s*$", re.IGNORECASE)
_MULT = {None: 1, "k": 1_000, "ki": 1024, "m": 1_000_000, "mi": 1024 * 1024}


def parse_length(text: str) -> int:
    m = _LEN.match(text)
    if not m:
        raise ConfigError(f"bad length {text!r}: use an integer or 4k, 128k, 1m, 32ki", field="lengths")
    n = int(float(m.group(1)) * _MULT[m.group(2).lower() if m.group(2) else None])
    if n <= 0:
        raise ConfigError(f"length {text!r} must be positive", field="lengths")
    return n


def parse_lengths(text: str) -> list[int]:
    return [parse_length(t) for t in _items(text)]


def parse_depths(text: str) -> list[float]:
    try:
        vals = [float(t) for t in _items(text)]
    except ValueError:
        raise ConfigError(f"bad depths {text!r}: use fractions (0,0.5,1) or percents (0,50,100)",
                          field="depths") from None
    if any(v > 1 for v in vals):
        # percents: a value between 0 and 1 among them (0.5 beside 50) is a fraction, or a
        # fraction of a percent: which one cannot be told, so it is refused, not guessed
        odd = [t for t, v in zip(_items(text), vals, strict=True) if 0 < v < 1]
        if odd:
            raise ConfigError(f"depths {text!r} mix fractions ({', '.join(odd)}) and percents: write all as "
                              "fractions (0,0.5,1) or all as percents (0,50,100)", field="depths")
        vals = [v / 100 for v in vals]
    if any(not 0 <= v <= 1 for v in vals):
        raise ConfigError(f"depths {text!r} must lie in [0, 1] (or [0, 100] as percents)", field="depths")
    return vals


def _items(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError("needs at least one value", field="axis")
    return items


def expand(
    *,
    sources: Sequence[str],
    lengths: Sequence[int],
    depths: Sequence[float],
    needles: Sequence[str],
    presets: Sequence[str] = ("none",),
    models: Sequence[str] = ("extractive",),
    seeds: Iterable[int] = (0,),
    tokenizer: str = "o200k_base",
    window: int | None = None,
    max_tokens: int = 64,
) -> list[Cell]:
    """The cartesian product of the axes, controls collapsed (module docstring).

    Raises:
        InputError: an axis that is not a list of values of its kind (a bare string, a
            length that is not a positive whole number, a depth outside [0, 1], a window or
            ``max_tokens`` below 1), naming the axis.
        UnknownNameError: an unknown needle family.
    """
    from ctxmem.evals.needles import FAMILIES

    _check_axes(sources, lengths, depths, needles, presets, models, seeds, window, max_tokens)

    for n in needles:
        if n not in FAMILIES:
            from ctxmem.errors import UnknownNameError

            raise UnknownNameError("needle family", n, FAMILIES)
    seeds = list(seeds)
    cells: dict[Cell, None] = {}
    for src, length, depth, needle, preset, model, seed in itertools.product(
        sources, lengths, depths, needles, presets, models, seeds
    ):
        if needle == "nocontext":
            length, depth, preset = lengths[0], 0.0, "none"
        cells.setdefault(Cell(src, length, depth, needle, preset, model, seed, tokenizer, window, max_tokens), None)
    return list(cells)


def _check_axes(
    sources: Any, lengths: Any, depths: Any, needles: Any, presets: Any, models: Any, seeds: Any,
    window: Any, max_tokens: Any,
) -> None:
    from ctxmem.errors import InputError

    for name, axis in (("sources", sources), ("lengths", lengths), ("depths", depths), ("needles", needles),
                       ("presets", presets), ("models", models), ("seeds", seeds)):
        if isinstance(axis, str | bytes) or not hasattr(axis, "__iter__"):
            raise InputError(f"expected a list, got {axis!r} (a bare string would be read letter by letter)",
                             field=name)
    for k, n in enumerate(lengths):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"lengths[{k}] is {n!r}: a length is a positive whole number of tokens", field="lengths")
    for k, d in enumerate(depths):
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d <= 1.0:  # NaN fails both
            raise InputError(f"depths[{k}] is {d!r}: a depth is a fraction from 0 to 1", field="depths")
    for name, v in (("window", window), ("max_tokens", max_tokens)):
        if v is None and name == "window":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{v!r} is not a positive whole number of tokens", field=name)
