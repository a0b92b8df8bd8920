"""Analysis: accuracies with Wilson intervals, and effective length with bootstrap intervals.

**Effective length** is the longest tested length at which a model (or a model through a
strategy) still performs, under the two published definitions:

* **RULER** (Hsieh et al., 2024): the score stays at or above an *absolute* threshold,
  85.6 % (Llama-2-7B's score at 4K in that paper).
* **NoLiMa** (Modarressi et al., 2025): the score stays at or above **85 % of the model's
  own base score**, where the base score is its performance on short contexts. NoLiMa
  takes the mean over its short lengths (250, 500, 1K); here the base is the mean score
  over the tested lengths ≤ ``short_max`` (default 1,000 tokens), or the shortest tested
  length when none is that short (the result says which).

Both are computed the conservative way: the effective length is the largest tested
length ``L`` such that *every* tested length up to ``L`` meets the threshold (a dip at 8K
followed by a lucky 16K does not make 16K effective). ``None`` means even the shortest
length fails. Scores are in [0, 1]; thresholds are given in percent as published.

**Intervals.** Per-cell accuracy gets a Wilson score interval (well behaved at 0 % and
100 % with few trials, where the normal approximation fails). Effective length gets a
percentile bootstrap: trials are resampled with replacement within each length (and the
base score is recomputed from the resampled short lengths), the effective length
recomputed, and the 2.5 / 97.5 percentiles reported. Pure Python, seeded, deterministic.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RULER_THRESHOLD = 85.6
NOLIMA_RATIO = 0.85


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (``successes`` may be fractional scores summed)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        from ctxmem.errors import InputError

        raise InputError(f"successes {successes} must be between 0 and n ({n})", field="successes")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def effective_length_ruler(scores: Mapping[int, Sequence[float]], threshold: float = RULER_THRESHOLD) -> int | None:
    """RULER effective length: largest L with every tested length ≤ L scoring ≥ ``threshold`` %."""
    best = None
    for length in sorted(scores):
        if _mean(scores[length]) * 100 >= threshold - 1e-9:
            best = length
        else:
            break
    return best


def base_score(scores: Mapping[int, Sequence[float]], short_max: int = 1000) -> tuple[float, list[int]]:
    """NoLiMa base score: mean over tested lengths ≤ ``short_max`` (else the shortest); and those lengths."""
    short = [length for length in sorted(scores) if length <= short_max] or sorted(scores)[:1]
    return _mean([_mean(scores[length]) for length in short]), short


def effective_length_nolima(
    scores: Mapping[int, Sequence[float]], ratio: float = NOLIMA_RATIO, short_max: int = 1000
) -> int | None:
    """NoLiMa effective length: largest L with every tested length ≤ L scoring ≥ ``ratio`` × base.

    ``None`` when the base score is 0: a model (or reader, or prompt) that fails at the short
    lengths has no effective length; ``ratio`` × 0 would let every length pass, and a model
    that fails every cell would be reported effective up to the longest one."""
    if not scores:
        return None
    base, _ = base_score(scores, short_max)
    if base <= 0:
        return None
    return effective_length_ruler(scores, threshold=ratio * base * 100)


@dataclass(frozen=True)
class Interval:
    point: int | None
    low: int | None
    high: int | None
    n_boot: int

    def to_json(self) -> dict[str, Any]:
        return {"point": self.point, "low": self.low, "high": self.high, "n_boot": self.n_boot}


def _percentile(sorted_vals: Sequence[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def bootstrap(
    scores: Mapping[int, Sequence[float]],
    fn: Callable[[Mapping[int, Sequence[float]]], int | None],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap of an effective-length function over per-length trials.

    ``None`` (no length passes) is treated as length 0 inside the bootstrap and reported
    as ``None`` again when a bound is 0.
    """
    point = fn(scores)
    if n_boot <= 0 or not scores:
        return Interval(point, point, point, 0)
    rng = random.Random(seed)
    lengths = sorted(scores)
    vals: list[float] = []
    for _ in range(n_boot):
        sample = {length: rng.choices(list(scores[length]), k=len(scores[length])) for length in lengths}
        v = fn(sample)
        vals.append(float(v or 0))
    vals.sort()
    a = (1 - level) / 2

    def snap(x: float) -> int | None:
        # report a tested length: the largest one not above the percentile
        candidates = [length for length in lengths if length <= x + 1e-9]
        return candidates[-1] if candidates else None

    return Interval(point, snap(_percentile(vals, a)), snap(_percentile(vals, 1 - a)), n_boot)


# --------------------------------------------------------------------------- tables from rows


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    return tuple((0, x) if isinstance(x, int | float) else (1, str(x)) for x in key)


def group(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    out: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return dict(out)


def scored(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows that count toward accuracy: finished and scored (refused/errored cells excluded)."""
    return [r for r in rows if r.get("status") == "done" and r.get("score") is not None]


def cell_table(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Accuracy per group with a Wilson interval and the miss labels counted."""
    out = []
    for k, rs in sorted(group(scored(rows), keys).items(), key=lambda kv: _sort_key(kv[0])):
        n = len(rs)
        s = sum(float(r["score"]) for r in rs)
        lo, hi = wilson(s, n)
        labels: dict[str, int] = defaultdict(int)
        for r in rs:
            labels[str(r.get("label"))] += 1
        out.append({**dict(zip(keys, k, strict=True)), "n": n, "accuracy": s / n, "low": lo, "high": hi,
                    "labels": dict(labels)})
    return out


def effective_lengths(
    rows: Iterable[Mapping[str, Any]],
    *,
    by: Sequence[str] = ("model", "preset"),
    threshold: float = RULER_THRESHOLD,
    ratio: float = NOLIMA_RATIO,
    short_max: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Both effective lengths with bootstrap intervals, per group (controls excluded, and the
    needle families the reader cannot answer by design: a blind reader's misses are not
    forgetting, :func:`ctxmem.evals.readers.blind_families`)."""
    from ctxmem.evals.needles import CONTROLS
    from ctxmem.evals.readers import blind_families

    out = []
    rows = [r for r in scored(rows) if r.get("needle") not in CONTROLS
            and r.get("needle") not in blind_families(str(r.get("model") or ""))]
    for k, rs in sorted(group(rows, by).items(), key=lambda kv: _sort_key(kv[0])):
        per_len: dict[int, list[float]] = defaultdict(list)
        for r in rs:
            per_len[int(r["length"])].append(float(r["score"]))
        base, short = base_score(per_len, short_max)
        ruler = bootstrap(per_len, lambda s: effective_length_ruler(s, threshold), n_boot=n_boot, seed=seed)
        nolima = bootstrap(per_len, lambda s: effective_length_nolima(s, ratio, short_max), n_boot=n_boot, seed=seed)
        out.append({
            **dict(zip(by, k, strict=True)),
            "lengths": sorted(per_len),
            "accuracy_by_length": {str(length): _mean(v) for length, v in sorted(per_len.items())},
            "ruler": {"threshold": threshold, **ruler.to_json()},
            "nolima": {"ratio": ratio, "base_score": base, "base_lengths": short, **nolima.to_json()},
        })
    return out
