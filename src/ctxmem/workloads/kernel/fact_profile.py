"""The kernel workload's fact profile: its vocabulary, handed to the context code.

The context code (:mod:`ctxmem.context`) is workload-agnostic; this module tells it what
the kernel workload's tool outputs mean (:class:`~ctxmem.context.profile.FactProfile`):

* the metric is the **geomean speedup** (``geomean speedup 2.41x over the reference``);
  a geomean line ranks above a single table row's ``…x``;
* run ids are ``eval#N`` (correctness), ``bench#N`` (benchmark), ``prof#N``, ``tune#N``;
* a **candidate** is one benchmark: its header names the file, the source sha (the design
  tried) and the launch config; its correctness line says whether that source and config
  passed; its geomean is the score. A failed benchmark is a candidate with its error as
  the result and no score.
* durable cues beyond the generic ones: ``OutOfResources``, ``Hardware limit``, spills,
  occupancy limiters.

It is registered in the ``ctxmem.fact_profiles`` entry-point group as ``kernel`` and
returned by the kernel workload's ``fact_profile()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ctxmem.context.profile import Candidate, FactProfile, MetricValue

_SPEEDUP = re.compile(r"speedup[^\n\d]*?(\d+(?:\.\d+)?)\s?x|(\d+(?:\.\d+)?)\s?x\s+geomean speedup", re.I)
_GEOMEAN = re.compile(r"geomean|geometric", re.I)
_HEADER = re.compile(r"^(?P<id>(?:bench|eval|tune|prof)#\d+) · (?P<path>\S+) \(sha (?P<sha>[0-9a-f]+)\)(?: · (?P<config>.*))?$")
_CORRECT = re.compile(r"correctness: (?:(eval#\d+) (PASSED|FAILED)|not checked)")


def speedups(text: str) -> list[MetricValue]:
    """(value, value as written, is_geomean, line) for the summary speedups of an output (table
    rows are skipped when a geomean line exists)."""
    if "speedup" not in text.lower():
        return []
    found: list[MetricValue] = []
    for ln in text.splitlines():
        m = _SPEEDUP.search(ln) if "speedup" in ln.lower() else None
        if m:
            raw = m.group(1) or m.group(2)
            found.append((float(raw), f"{raw}x", bool(_GEOMEAN.search(ln)), ln.strip()))
    geo = [f for f in found if f[2]]
    return geo if geo else [f for f in found if "best" in f[3].lower() or len(found) == 1]


def candidate(tool: str, inputs: Mapping[str, Any], output: str, index: int) -> Candidate | None:
    """A benchmark output as a candidate row: (config, design, result, speedup)."""
    if tool != "benchmark":
        return None
    lines = output.strip().splitlines()
    if not lines:
        return None
    head = _HEADER.match(lines[0].strip())
    if head is None:
        return None
    config = head.group("config") or " ".join(f"{k}={v}" for k, v in dict(inputs.get("config") or {}).items())
    design = f"{head.group('path')}@{head.group('sha')}"
    geo = [v for v in speedups(output) if v[2]]
    score = geo[-1][0] if geo else None
    result = "ran"
    for ln in lines[1:4]:
        m = _CORRECT.search(ln)
        if m:
            result = f"{m.group(2)} {m.group(1)}" if m.group(1) else "unchecked"
            break
    if score is None:
        err = next((ln.strip() for ln in lines[1:] if ln.strip()), "no timings")
        result = err[:120]
    return Candidate(config=config or "(default)", design=design, result=result, score=score,
                     run_id=head.group("id"), message_index=index)


PROFILE = FactProfile(
    name="kernel",
    content_tools=frozenset({"read_file", "list_files"}),
    summary_words=("geomean", "geometric", "summary", "total", "overall", "mean", "median", "speedup", "passed",
                   "failed", "best"),
    result_words=("geomean", "speedup:", "eval#", "bench#", "compiled in"),
    cue_words=("OutOfResources", "Hardware limit", "spill", "occupancy", "registers available"),
    metric="geomean speedup",
    best=speedups,
    candidate=candidate,
)

__all__ = ["PROFILE", "candidate", "speedups"]
