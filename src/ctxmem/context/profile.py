"""Fact profiles: the workload's vocabulary, handed to the context code instead of hard-coded.

The context code (facts, ledger, reducers, summaries, salience) is workload-agnostic. What
one workload calls a result ("geomean speedup: 3.41x"), a run id (``bench#7``) or a
candidate (a config and its score) is supplied by a :class:`FactProfile`. The default,
:data:`GENERIC`, knows only what every agent session shares: paths, errors, numbers with
units, ``word#N`` run ids and summary words like *total* and *passed*. It tracks no
"best" metric and no candidate table.

A workload supplies its own profile (the kernel workload's lives in
``ctxmem.workloads.kernel.fact_profile``) and registers it in the ``ctxmem.fact_profiles``
entry-point group; strategies take ``fact_profile = "<name>"`` in their config, or a
profile object at construction. Nothing under ``ctxmem.context`` imports a workload.

Contract of a profile (all fields optional beyond ``name``):

* ``content_tools`` — tools whose output is file contents read back (``read_file``): the
  ledger takes no errors from them, since a source line ``raise ValueError(...)`` is not
  an error the agent hit.
* ``summary_words`` — words marking a tool output's summary line (the ``summary_line``
  reducer, the extractive summarizer's result lines).
* ``result_words`` — extra words marking result lines for the extractive summarizer.
* ``cue_words`` — extra durable-knowledge cues for the salience scorer.
* ``best`` — ``text -> [(value, raw, primary, line)]``: the metric values a tool output
  reports (``primary`` ranks above others, e.g. a geomean over one row); the ledger and
  the fact extractor keep the best so far. ``metric`` names it ("speedup").
* ``candidate`` — ``(tool, input, output, message index) -> Candidate | None``: one row of
  the ledger's candidate table (config, design, result, score).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ctxmem.registry import Registry

#: value, the value as written, primary (e.g. a geomean), the line it came from
MetricValue = tuple[float, str, bool, str]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One attempt the ledger tabulates: what was tried and how it scored."""

    #: the configuration tried (``BLOCK_M=64 BLOCK_N=32``), as written
    config: str
    #: the design / variant name, when the workload has one
    design: str
    #: the outcome as a short status (``ok``, ``FAIL 3/24``, ``OutOfResources``)
    result: str
    #: the score (higher is better), None when it did not run
    score: float | None
    #: the run id of the output (``bench#7``), if any
    run_id: str | None
    message_index: int


@dataclass(frozen=True)
class FactProfile:
    """What counts as a result, a run and a candidate in one workload's tool outputs."""

    name: str
    content_tools: frozenset[str] = frozenset({"read_file", "read", "cat", "view", "open_file", "get_file"})
    summary_words: tuple[str, ...] = ("summary", "total", "overall", "mean", "median", "passed", "failed", "best")
    result_words: tuple[str, ...] = ()
    cue_words: tuple[str, ...] = ()
    metric: str | None = None
    best: Callable[[str], list[MetricValue]] | None = field(default=None, compare=False)
    candidate: Callable[[str, Mapping[str, Any], str, int], Candidate | None] | None = field(default=None, compare=False)


GENERIC = FactProfile("generic")

FACT_PROFILES = Registry("ctxmem.fact_profiles", "fact profile", {"generic": "ctxmem.context.profile:GENERIC"})


def get_profile(profile: FactProfile | str | None) -> FactProfile:
    """A profile object from a name (registry lookup, "did you mean" on a typo) or itself."""
    if profile is None:
        return GENERIC
    if isinstance(profile, FactProfile):
        return profile
    found = FACT_PROFILES.get(profile)
    if not isinstance(found, FactProfile):
        from ctxmem.errors import ConfigError

        raise ConfigError(f"fact profile {profile!r} is not a FactProfile (got {type(found).__name__})", field="fact_profile")
    return found


__all__ = ["FACT_PROFILES", "GENERIC", "Candidate", "FactProfile", "MetricValue", "get_profile"]
