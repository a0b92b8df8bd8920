"""Per-tool reducers: shrink a tool output to what usually matters later.

A reducer is a pure function ``(text) -> str``. They are deterministic and cheap (one
pass over the text), so a masked output can carry its gist instead of only a handle:

* ``first_error`` — a compile/test log becomes its first error (with the line before it
  when that names the file and line), or "no errors" and the last line.
* ``summary_line`` — a benchmark or correctness table becomes its id/header line and its
  summary line (the last line with summary/total/overall/mean/median/passed/failed/best/
  result — so a geomean line too), or its last line.
* ``head_tail`` — the first and last three lines.
* ``none`` — nothing (the placeholder carries only the handle).

Reducers are registered in the ``ctxmem.reducers`` entry-point group like everything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ctxmem.registry import Registry

Reducer = Callable[[str], str]

_ERROR = re.compile(
    r"(error|Error|ERROR|Traceback|OutOfResources|FAILED|FAIL\b|Exception|exception|panic|fatal)"
)
_LOCATION = re.compile(r'^\s*File "|:\d+:\d+|line \d+')
# Generic words only ("mean" also finds a "geomean" line); a workload's own words live in its
# FactProfile, not here.
_SUMMARY = re.compile(r"(summary|total|overall|mean|median|passed|failed|best|result)", re.I)


def first_error(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _ERROR.search(line):
            parts = [line.strip()]
            if i > 0 and _LOCATION.search(lines[i - 1]):
                parts.insert(0, lines[i - 1].strip())
            return f"first error (line {i + 1} of {len(lines)}): " + " | ".join(parts)
    last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    return f"no error lines in {len(lines)} lines; last: {last}"


_SUMMARY_WORDS = ("summary", "total", "overall", "mean", "median", "passed", "failed", "best", "result")
_ASCII_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e"  # what str.splitlines splits ASCII text at


def summary_line(text: str) -> str:
    if text.isascii():
        return _summary_line_ascii(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "(empty output)"
    summary = next((ln for ln in reversed(lines) if _SUMMARY.search(ln)), lines[-1])
    if summary == lines[0]:
        return summary
    return f"{lines[0]} … {summary}"


def _summary_line_ascii(text: str) -> str:
    """:func:`summary_line` of ASCII text, without a regex pass per line: on ASCII, the
    case-insensitive ``_SUMMARY`` matches exactly where a lower-cased word occurs, so the last
    matching line is the line holding the last occurrence of any of the words."""
    first = next((s for ln in text.splitlines() if (s := ln.strip())), None)
    if first is None:
        return "(empty output)"
    low = text.lower()
    pos = max(low.rfind(w) for w in _SUMMARY_WORDS)
    if pos < 0:
        summary = next(s for ln in reversed(text.splitlines()) if (s := ln.strip()))
    else:
        start = max(text.rfind(c, 0, pos) for c in _ASCII_BREAKS) + 1
        end = min((e for c in _ASCII_BREAKS if (e := text.find(c, pos)) != -1), default=len(text))
        summary = text[start:end].strip()
    if summary == first:
        return summary
    return f"{first} … {summary}"


def head_tail(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= 6:
        return " | ".join(ln.strip() for ln in lines)
    return " | ".join(ln.strip() for ln in lines[:3]) + f" | … {len(lines) - 6} lines … | " + " | ".join(
        ln.strip() for ln in lines[-3:]
    )


def none(text: str) -> str:
    return ""


REDUCERS = Registry(
    "ctxmem.reducers",
    "reducer",
    {
        "first_error": "ctxmem.context.reducers:first_error",
        "summary_line": "ctxmem.context.reducers:summary_line",
        "head_tail": "ctxmem.context.reducers:head_tail",
        "none": "ctxmem.context.reducers:none",
    },
)


def get_reducer(name: str) -> Reducer:
    fn: Reducer = REDUCERS.get(name)
    return fn
