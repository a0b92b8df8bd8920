"""Survival attribution: did the needle reach the reader, and whose fault is a miss?

For each cell the evaluator records two independent facts:

* **survival** — is the needle in the context the strategy built? ``verbatim`` (the
  needle sentence as placed), ``normalized`` (only after folding case and whitespace, or
  only its value survives: a reducer or summary rewrote the sentence but kept the fact),
  or ``absent``. Controls with no needle record ``n/a``.
* **fate** — what the strategy's :class:`~ctxmem.context.Report` says it did to the
  message holding the needle: ``kept``, ``masked``, ``summarized`` or ``dropped``.

and the reader's correctness. A miss then gets exactly one label:

=======================  ==========================================================
``dropped-by-strategy``  the needle is absent and its message was dropped or masked
``distorted-by-summary`` the needle was summarized away, or survives only rewritten
                         (normalized) inside a summarized or masked message
``missed-by-model``      the needle reached the reader verbatim (or the cell is a
                         control) and the answer was still wrong
``reader-cannot-answer`` the needle survived but the reader is blind to its family by
                         design (the offline lexical reader and non-literal or
                         natural needles): a miss that says nothing about the
                         strategy or a model
=======================  ==========================================================

A correct answer is labelled ``correct``; a refused cell (too long for the window) is
labelled ``refused`` by the runner and never scored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ctxmem.messages import Message, message_texts

SURVIVAL = ("verbatim", "normalized", "absent", "n/a")
LABELS = ("correct", "dropped-by-strategy", "distorted-by-summary", "missed-by-model", "reader-cannot-answer")
_RANK = {"absent": 0, "normalized": 1, "verbatim": 2, "n/a": 3}


def render(messages: Iterable[Message], system: str | None = None) -> str:
    """Every content text a request carries, joined: what survival is checked against."""
    parts = [system] if system else []
    for m in messages:
        parts.extend(message_texts(m))
    return "\n".join(parts)


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def survival(sentence: str, rendered: str, *, value: str | None = None, folded: str | None = None) -> str:
    """``verbatim`` | ``normalized`` | ``absent`` for one needle sentence in a rendered context.

    ``folded`` is ``_fold(rendered)`` when the caller checks several needles (fold once).
    """
    s = sentence.strip()
    if s in rendered:
        return "verbatim"
    f = folded if folded is not None else _fold(rendered)
    if _fold(s) and _fold(s) in f:
        return "normalized"
    if value and value in rendered:
        return "normalized"
    return "absent"


def worst(statuses: Sequence[str]) -> str:
    """The weakest survival among several needles (``n/a`` when there are none)."""
    return min(statuses, key=lambda s: _RANK[s]) if statuses else "n/a"


def fate(index: int | None, *, dropped: Sequence[int], masked: Sequence[int], summarized: Sequence[int]) -> str:
    """What a strategy's report says happened to the message at ``index``."""
    if index is None:
        return "kept"
    if index in summarized:
        return "summarized"
    if index in masked:
        return "masked"
    if index in dropped:
        return "dropped"
    return "kept"


def label(correct: bool, survived: str, fate_: str, *, reader_blind: bool = False) -> str:
    """One label per cell (see the module docstring).

    ``reader_blind``: the reader cannot answer this needle family by design
    (:func:`ctxmem.evals.readers.blind_families`), so a surviving needle it missed is
    ``reader-cannot-answer``, never a model's miss.
    """
    if correct:
        return "correct"
    if survived == "absent":
        return "distorted-by-summary" if fate_ == "summarized" else "dropped-by-strategy"
    if survived == "normalized" and fate_ in ("summarized", "masked"):
        return "distorted-by-summary"
    return "reader-cannot-answer" if reader_blind else "missed-by-model"
