"""The needle-in-a-haystack evaluator: models *and* context strategies.

A grid of :class:`Cell` (haystack source, length, depth, needle family, strategy preset,
model, seed) is built token-exactly (:mod:`ctxmem.evals.haystack`), answered by any
:class:`~ctxmem.clients.ModelClient` or the offline :class:`ExtractiveReader`, scored by
deterministic rules (optionally an LLM judge), attributed (did the needle survive the
strategy; whose fault is a miss), stored in SQLite keyed by the resolved config (resume),
analysed (Wilson intervals, RULER and NoLiMa effective length with bootstrap intervals)
and reported (PNG heatmaps and one self-contained HTML page).

Modules: ``sources`` (haystack text), ``haystack`` (encoding and splicing), ``needles``,
``cells`` (resolution, keys, building, agent-session needles), ``readers``, ``scoring``,
``attribution``, ``store``, ``runner``, ``grid``, ``analysis``, ``report``. Importing this
package imports neither numpy nor matplotlib: reports and embedding readers load them
on first use.
"""

from __future__ import annotations

from ctxmem.evals.analysis import (
    effective_length_nolima,
    effective_length_ruler,
    effective_lengths,
    wilson,
)
from ctxmem.evals.cells import BuiltCell, Cell, CellRefusedError, build_cell, cell_key, resolve
from ctxmem.evals.grid import expand, parse_depths, parse_lengths
from ctxmem.evals.needles import FAMILIES, NeedleSet, make_needles
from ctxmem.evals.readers import ExtractiveReader, get_reader
from ctxmem.evals.runner import ModelPrice, RunSummary, estimate, run, run_sync
from ctxmem.evals.scoring import LLMJudge, agreement, score_needles
from ctxmem.evals.sources import get_source
from ctxmem.evals.store import ResultStore

__all__ = [
    "FAMILIES",
    "BuiltCell",
    "Cell",
    "CellRefusedError",
    "ExtractiveReader",
    "LLMJudge",
    "ModelPrice",
    "NeedleSet",
    "ResultStore",
    "RunSummary",
    "agreement",
    "build_cell",
    "cell_key",
    "effective_length_nolima",
    "effective_length_ruler",
    "effective_lengths",
    "estimate",
    "expand",
    "get_reader",
    "get_source",
    "make_needles",
    "parse_depths",
    "parse_lengths",
    "resolve",
    "run",
    "run_sync",
    "score_needles",
    "wilson",
]
