"""Salience: which lines of tool output will matter later, found without a model or a word list.

A strategy that masks, summarizes or drops old tool outputs keeps a short **facts**
section instead: the lines of those outputs most likely to be needed again, verbatim,
each with its source event id and a recall handle (the tool call's id). What the agent
states in its own text (a finding, a conclusion: "the NaNs come from …") is read the same
way, a sentence per line, and can be kept as a fact too (marked ``assistant``, no handle);
so is what a user pastes or reports in a long message (marked ``user``), except what the
standing instructions carry already. This module
scores the lines; :class:`SalienceIndex` keeps the scores incrementally (each appended
message is read once) and :meth:`SalienceIndex.section` renders the best lines of a
history span within an exact token cap.

A line's score adds four kinds of evidence, none tied to one workload's vocabulary:

* **rarity in the session** — routine output repeats its *shape* (the line with numbers,
  hashes and quoted values blanked) and its *lead* (the first words of the shape): a
  compile log's hundredth ``warning: …`` is routine, a one-off ``root cause: …`` is not.
  Counts are over every tool-output line of the session so far.
* **specificity** — paths, hashes, numbers with units, large integers, dotted or
  snake_case identifiers, ``key=value`` pairs, test ids: what a paraphrase loses.
* **cue patterns of durable knowledge** — generic English markers of a fact that stays
  true: root cause / caused by, limit / maximum / exceeds, must / never / do not,
  decision / decided, regression / first bad commit, erratum / workaround / caveat,
  tolerance, known issue, golden / reference data. A workload's
  :class:`~ctxmem.context.profile.FactProfile` may add its own ``cue_words``.
* **later references** — a specific token of the line (a path, a hash, an identifier with
  digits) that a later message of the agent or the user (its text or a tool call's
  arguments) mentions again: the agent came back to it.

Lines that look like source code (operator-dense, ``def``/``import``/braces, indentation
plus assignment), table rows (mostly numbers) and very short lines are not candidates.
Repeated shapes are de-duplicated (the best-scored instance wins), so one limit hit forty
times costs one line.

Cost: :meth:`SalienceIndex.update` reads only the messages appended since its last call.
What a line yields (shape, lead, words, cues) and what a candidate yields (static score,
anchors) depend only on the text, so both are memoized process-wide (bounded) and a line
seen before — by this index, a summarizer's span index or another strategy — costs a dict
lookup and a few counter increments; the order-dependent part (routine counts, rarity)
stays per index. Cue patterns run without IGNORECASE on lower-cased ASCII text (same
matches; non-ASCII text keeps the case-folding pattern). ``tests/context/
test_salience_equivalence.py`` pins the result to the plain per-line reader.
:meth:`SalienceIndex.section` ranks the candidates of the span (about ten thousand in a
1M-token session) and is cached per (span, cap), so a strategy pays for it only when its
boundary moves; and then incrementally: :meth:`SalienceIndex.facts` rescores only the
candidates whose counts changed below the point where their score stops changing (or that
gained a reference) and updates the previous per-shape ranking, so a boundary move costs
what changed since the last one, not the span. The index of candidates by key that this
needs is built lazily, on the first incremental call, so a cold build ranks in one pass.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, ClassVar, NamedTuple

from ctxmem.context.facts import _PATH
from ctxmem.context.history import History, block_events
from ctxmem.context.profile import GENERIC, FactProfile
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.store.codec import GC_BATCH, gc_paused, gc_paused_over
from ctxmem.tokens import Tokenizer

FACTS_SECTION_HEADER = "Facts from earlier tool outputs and messages no longer shown (verbatim; source event, recall handle):"
#: a fact line longer than this is clipped (with an ellipsis) in the section
MAX_FACT_CHARS = 320
#: candidates scoring below this are never shown, whatever room is left
MIN_SCORE = 3.0
#: a line whose first five words (numbers blanked) were seen more often than this is routine
ROUTINE = 8

# ----------------------------------------------------------------------------- features

_SHAPE_BODY = r"0x[0-9a-f]+|\b(?=[0-9a-f]*\d)[0-9a-f]{6,40}\b|\d+(?:[.,:]\d+)*(?:e[-+]?\d+)?|'[^'\s]*'|\"[^\"\s]*\""
#: every alternative starts with a digit, a-f or a quote: the lookahead lets the engine skip the
#: other characters (~35% faster on tool output; a hypothesis test holds it to _SHAPE_BODY)
_SHAPE_SUB = re.compile(rf"(?=[\da-f'\"])(?:{_SHAPE_BODY})")
_WORD = re.compile(r"[a-z#][a-z#_'-]*")
_SHA = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")
_UNIT = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?(?:e[-+]?\d+)?\s?(?:x|×|ms|us|µs|ns|s|sec|min|h|KiB|MiB|GiB|KB|MB|GB|TB|B|bytes|%|"
    r"tokens|rows|GFLOPS|TFLOPS|GB/s|TB/s|registers|regs|threads|warps|req/s|rps|qps|Hz|MHz|GHz|W|V|°C)(?![\w/])",
    re.I,
)
_SCI = re.compile(r"(?<![\w.])\d+(?:\.\d+)?e[-+]?\d+(?![\w.])", re.I)
_BIGINT = re.compile(r"(?<![\w.#])\d{4,}(?![\w])")
_IDENT = re.compile(r"\b(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[a-z]+_[a-z0-9_]+|[A-Z][a-z]+[A-Z]\w+|[A-Z]{2,}_[A-Z0-9_]+)\b")
_KEYVAL = re.compile(r"\b\w+\s?[=:]\s?[-\w.]*\d")
_TESTID = re.compile(r"::\w+")
_CUE_STRONG = re.compile(
    r"\b(root[- ]cause\w*|caused by|culprit|first bad|bisect\w*|regress\w*|errat(?:um|a)|workaround|"
    r"known issue|caveat|never|must(?:n't)?|do not|don'?t|always|decid\w*|decision|chose|chosen|going forward|"
    r"from now on|tolerances?|limits?|limited|maximum|at most|at least|exceed\w*|cliff|golden|ground truth|"
    r"constraint\w*|required|requires|not supported|unsupported|deprecated|quirk\w*|gotcha|pitfall|"
    r"because|due to|turns out|important)\b",
    re.I,
)
_CUE_WEAK = re.compile(
    r"\b(note|warning|fail\w*|error|wrong|instead|only|reference|baseline|threshold|cap|budget|ceiling|"
    r"drops?|slow\w*|stall\w*|spike|saturat\w*|broken|flaky|mismatch\w*|nan|overflow\w*|leak\w*|"
    r"fixed|fix|resolved|conclusion|finding|verified|confirmed|record\w*)\b",
    re.I,
)
# The cue patterns without IGNORECASE, for lower-cased ASCII text (same matches, no case folding)
# Every alternative starts with a lower-case letter, so the lookahead in front changes no match;
# it gives the engine a first character to skip ahead by, which a leading \b does not (20-35%
# faster on tool output; tests/context/test_salience.py holds them to the plain patterns).
_CUE_STRONG_LOW = re.compile("(?=[a-z])" + _CUE_STRONG.pattern)
_CUE_WEAK_LOW = re.compile("(?=[a-z])" + _CUE_WEAK.pattern)
_DIGIT = re.compile(r"\d")
_CODE_START = re.compile(
    r"^\s*(?:def |class |import |from \S+ import|return\b|raise\b|assert\b|throw\b|@\w|if .*:$|for .*:$|while .*:$|elif |else:|try:|"
    r"except\b|with .*:$|[{}]\s*$|#include|fn |let |const |var |public |private )"
)
_ASSIGN = re.compile(r"^\s+[\w.\[\], ]+\s*[-+*/]?=\s*\S")
_SYMBOLS = re.compile(r"[()\[\]{}=+*/<>;,&|%]")
_COMMENT = re.compile(r"^\s*(?:#+|//+|--)\s+")


#: a search tool's hit: ``path:line:`` (or ``path:line:col:``, ``path-line-`` context) before the text
_LOCATION = re.compile(r"(?:[\w.~-]*/[\w./~-]+?|[\w-]+\.\w{1,8})(?::\d+(?::\d+)?:|[:-]\d+-)(?=\s|$)")
#: what a location prefix becomes in a shape: every hit of a search output shares it
LOCATION = "@loc"


def shape(line: str) -> str:
    """The line with numbers, hashes and quoted values blanked, lower-cased: what routine
    output repeats. A leading ``path:line:`` (a grep or compiler hit) becomes
    :data:`LOCATION`, so the hits of a search share their :func:`lead`."""
    low = line.lower()
    m = _LOCATION.match(low.lstrip())
    if m is not None:
        low = LOCATION + " " + low.lstrip()[m.end():]
    return " ".join(_SHAPE_SUB.sub("#", low).split())


def lead(shaped: str, n: int = 2) -> str:
    """The first ``n`` words of a shape: a log's template (``warning: …``, ``INFO worker …``).
    Every search hit (:data:`LOCATION` first) has the lead :data:`LOCATION`: a thousand grep
    hits are one routine template, however their text varies, not a thousand rare lines."""
    words = shaped.split(None, n)
    if n <= 2 and words and words[0] == LOCATION:
        return LOCATION
    return " ".join(words[:n])


def tail(shaped: str, n: int = 4) -> str:
    """The last ``n`` words of a shape: templates that vary in the middle end alike
    (``… near the register limit in loop at line #``)."""
    words = shaped.rsplit(None, n)
    return "\x00" + " ".join(words[-n:])


def _leaves(value: Any, path: str, out: list[str], most: int) -> None:
    if len(out) >= most:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _leaves(v, f"{path}.{k}" if path else str(k), out, most)
    elif isinstance(value, list):
        for k, v in enumerate(value):
            _leaves(v, f"{path}[{k}]", out, most)
    else:
        out.append(f"{json.dumps(path, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}")


def output_lines(text: str, most: int = 2000) -> list[str]:
    """The lines of a tool output as salience reads them: its lines, except that a line
    holding a whole JSON object or array too long to show as one fact (a one-line API
    response) is read as its leaves, ``"path.to.key": value`` each (at most ``most``), so a
    field in the middle of it can be a fact on its own."""
    lines = text.splitlines()
    if not any(len(ln) > MAX_FACT_CHARS and ln.lstrip()[:1] in ("{", "[") for ln in lines):
        return lines
    out: list[str] = []
    for ln in lines:
        if len(ln) > MAX_FACT_CHARS and ln.lstrip()[:1] in ("{", "["):
            try:
                value = json.loads(ln)
            except ValueError:
                out.append(ln)
                continue
            if isinstance(value, dict | list):
                _leaves(value, "", out, len(out) + most)
                continue
        out.append(ln)
    return out


#: the ``tool`` of a fact the assistant stated in its own text (it has no recall handle)
STATEMENT = "assistant"
#: the ``tool`` of a fact from a user's text (a pasted error, a measurement they report)
USER_TEXT = "user"
#: what :func:`_instructed` says of a user message the standing instructions carry whole
_WHOLE: frozenset[str] = frozenset({"\x00whole"})


def _instructed(msg: Message) -> frozenset[str]:
    """What the standing instructions carry of user message ``msg``: :data:`_WHOLE`, or its
    carried sentences (whitespace-normalized), which the facts then leave out."""
    from ctxmem.context.instructions import carried_whole, instructions_of, message_text

    if carried_whole(message_text(msg)):
        return _WHOLE
    return frozenset(" ".join(t.split()) for t in instructions_of(msg))


#: what a sentence of the assistant's or the user's own text starts behind a tool-output
#: line with the same evidence: most of an agent's text narrates its next step ("Let me
#: check the compile log for register usage.") and a user's long message holds asides ("I
#: ran it myself first."), rare in shape but saying nothing durable, so a sentence of
#: conversation needs specificity, a cue or rare words on top of its rarity to be kept
STATEMENT_PRIOR = 1.0
#: where an assistant's text is cut into statements: after a sentence's end and a space
#: (or a CJK full stop), and at line breaks
_STATEMENT_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


#: a sentence that announces what the agent does next ("Let me open …", "Now I'll try …",
#: "Next, I will …"): narration of an action, not a finding, whatever paths and ids it
#: names (unless it sets a rule: "I'll keep fp32 accumulators from now on")
_NARRATION = re.compile(
    r"^\W*(?:(?:now|ok(?:ay)?|alright|so|next|first|then|great|good|right)\b[\s,:—-]*)*"
    r"(?:let(?:['’]s| me| us)|i(?:['’]ll| will| am going to|['’]m going to|['’]m gonna| want to|['’]d like to)|"
    r"time to|going to)\b(?!.*\b(?:from now on|from here on|going forward|always|never)\b)",
    re.I,
)


#: the prior of a sentence that is counted (its shape, lead and words make others routine)
#: but never a candidate: an announced next step
COUNT_ONLY = math.inf


def statement_lines(text: str) -> list[str]:
    """An assistant text as salience reads it: its lines, each cut into sentences (a
    finding is often one sentence of a paragraph)."""
    return [s for ln in text.splitlines() for s in _STATEMENT_END.split(ln)]


def assistant_lines(text: str) -> list[tuple[str, float]]:
    """The sentences of an assistant text with their priors: :data:`STATEMENT_PRIOR`, or
    :data:`COUNT_ONLY` for one that announces the agent's next step (:data:`_NARRATION`)."""
    return [(x, COUNT_ONLY if _NARRATION.match(x) else STATEMENT_PRIOR) for x in statement_lines(text)]


def user_lines(text: str) -> list[tuple[str, float]]:
    """A user's text as salience reads it, each piece with the prior taken off its score: a
    line holding several sentences (or a text of one line) is conversation, its sentences
    read one by one behind a tool-output line (:data:`STATEMENT_PRIOR`); the lines of a
    block the user pasted (a log, an error, a table) are read as a tool output's."""
    lines = text.splitlines()
    out: list[tuple[str, float]] = []
    for ln in lines:
        parts = _STATEMENT_END.split(ln)
        pr = STATEMENT_PRIOR if len(parts) > 1 or len(lines) == 1 else 0.0
        out.extend((x, pr) for x in parts)
    return out


#: a Chinese, Japanese or Korean character: about half a word of meaning (they are not
#: separated by spaces, so a whole sentence would otherwise count as one "word")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def word_count(text: str) -> int:
    """Words of a line for the length term: whitespace-separated, plus one per two CJK
    characters (ASCII text: its split alone)."""
    n = len(text.split())
    return n if text.isascii() else n + len(_CJK.findall(text)) // 2


def is_code(line: str) -> bool:
    """Source code, not prose: a statement opener, an indented assignment, or dense operators."""
    if _COMMENT.match(line):
        return False
    if _CODE_START.match(line) or _ASSIGN.match(line):
        return True
    s = line.strip()
    if not s or not (line.startswith((" ", "\t")) or s.endswith((")", ",", ":", ";", "{"))):
        return False
    return len(_SYMBOLS.findall(s)) / len(s) > 0.09


_NUMERIC_TOKEN = re.compile(r"(?<!\S)[^\sA-Za-z]*\d[^\s]*(?!\S)")
_ALPHA3 = re.compile(r"[A-Za-z]{3}")


def is_table_row(line: str) -> bool:
    """Mostly numbers: a row of a table (its header or summary line is kept by other means)."""
    toks = line.split()
    if len(toks) < 4 or _DIGIT.search(line) is None:  # no digit: no numeric token (most prose)
        return False
    found = _NUMERIC_TOKEN.findall(line)
    if len(found) / len(toks) < 0.5:  # not enough even before the worded ones are taken out
        return False
    # the numeric tokens without three letters in a row, counted in C (a benchmark table's
    # row holds hundreds: a Python step per token cost ~30 µs a line)
    numeric = len(found) - len(list(filter(None, map(_ALPHA3.search, found))))
    return numeric / len(toks) >= 0.5


def anchors(line: str) -> list[str]:
    """Tokens specific enough that a later mention means a reference to this line."""
    out = [m.group(0).rstrip(".") for m in _PATH.finditer(line)] if ("/" in line or "." in line) else []
    out += _SHA.findall(line)
    out += [m.group(0) for m in _BIGINT.finditer(line) if len(m.group(0)) >= 5]
    out += [t for t in _IDENT.findall(line) if any(ch.isdigit() for ch in t) or ("_" in t and len(t) >= 8)]
    return out


def strong_cues(line: str) -> tuple[str, ...]:
    """The distinct durable-knowledge cues of a line (their weight depends on how common
    they are in the session: see :meth:`SalienceIndex._score`)."""
    if line.isascii():
        return tuple(sorted(set(_CUE_STRONG_LOW.findall(line.lower()))))
    return tuple(sorted({m.group(0).lower() for m in _CUE_STRONG.finditer(line)}))


def _static_parts(line: str) -> tuple[float, float]:
    """:func:`static_score` before its profile-cue term, and its length term (added last).

    Split so a line's profile-independent evidence can be memoized and the sum still adds
    in the same order (the same floats bit for bit)."""
    s = 0.0
    paths = len(_PATH.findall(line)) if ("/" in line or "." in line) else 0  # a path holds one of them
    s += min(2, paths) * 1.2
    s += min(2, len(_SHA.findall(line))) * 1.0
    units = len(_UNIT.findall(line)) + len(_SCI.findall(line))
    s += min(3, units) * 0.7
    s += min(2, len(_BIGINT.findall(line))) * 0.4
    s += min(3, len(_IDENT.findall(line))) * 0.3
    s += min(2, len(_KEYVAL.findall(line))) * 0.3
    s += 0.8 if _TESTID.search(line) else 0.0
    if line.isascii():  # lower-cased ASCII matches the case-sensitive pattern exactly, 3x faster
        weak = len(set(_CUE_WEAK_LOW.findall(line.lower())))
    else:
        weak = len(set(m.group(0).lower() for m in _CUE_WEAK.finditer(line)))
    s += min(2, weak) * 0.5
    words = word_count(line)
    return s, (-1.0 if words < 4 else 0.4 if words >= 7 else 0.0)  # a sentence states something; a bare label rarely does


def static_score(line: str, cues: re.Pattern[str] | None = None) -> float:
    """Specificity + cue evidence of one line (rarity and references are added at selection)."""
    s, length = _static_parts(line)
    if cues is not None and cues.search(line):
        s += 1.0
    if length:
        s += length
    return s


_CONTENT_WORD = re.compile(r"(?=[a-z])\b[a-z][a-z_]{3,}\b")  # the lookahead: as for _CUE_STRONG_LOW


def _common(df: int) -> float:
    """Weight of a cue by how many prose lines of the session hold it: 1 when rare."""
    return 1.0 if df <= 4 else max(0.2, 1.0 - 0.3 * math.log2(df / 4))


# Per-line and per-candidate features depend only on the text (and the line before it), and
# tool outputs repeat lines a lot (a third of a 1M-token session's lines are repeats), so
# they are memoized across indexes: a summarizer's per-span indexes and every strategy of a
# process reuse what the first read computed. Bounded: cleared when full.
_MEMO_MAX = 200_000


class _Line(NamedTuple):
    """What reading one raw line of tool output yields, whatever the session."""

    text: str  # stripped
    label: bool  # ends with ":" and is short: a label for the next line
    shape: str | None  # None: blank, short or not prose (never a candidate, never counted)
    lead: str = ""
    stem: str = ""
    tail: str = ""
    words: tuple[str, ...] = ()  # content words of the lower-cased line
    cues: tuple[str, ...] = ()  # strong cues of the lower-cased line
    body: str = ""  # the line without a comment marker


_LINES: dict[str, _Line] = {}
#: body -> (strong cues, content words, static score before profile and length terms, length term, anchors)
_BODIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], float, float, tuple[str, ...]]] = {}


def forget_line_features() -> None:
    """Empty the process-wide line and body feature memos: the next read of any output is
    as cold as a new process's (what a benchmark of a first build must start from; a
    preset built before would otherwise have left its lines' features here)."""
    _LINES.clear()
    _BODIES.clear()


def _line_features(ln: str) -> _Line:
    text = ln.strip()
    if not text:
        out = _Line("", False, None)
    else:
        colon = text.endswith(":") and len(text) < 80
        if len(text) < 16 or is_code(ln) or is_table_row(text):
            out = _Line(text, colon, None)
        else:
            sh = shape(text)
            low = text.lower()
            if low.isascii():
                cues = set(_CUE_STRONG_LOW.findall(low))
            else:
                cues = {m.group(0).lower() for m in _CUE_STRONG.finditer(low)}
            out = _Line(text, colon, sh, lead(sh), lead(sh, 5), tail(sh), tuple(set(_CONTENT_WORD.findall(low))),
                        tuple(cues), _COMMENT.sub("", text))
    if len(_LINES) >= _MEMO_MAX:
        _LINES.clear()
    _LINES[ln] = out
    return out


def _body_features(
    body: str, line: _Line | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], float, float, tuple[str, ...]]:
    """``line``: the features of the line whose text ``body`` is, when it is (no comment
    marker, no label before it); its strong cues and content words are the body's (the same
    patterns over the same lower-cased text) and are not searched for again."""
    # static_score's and anchors' matches computed once and shared (same patterns, same order)
    paths = [m.group(0) for m in _PATH.finditer(body)] if ("/" in body or "." in body) else []
    digits = _DIGIT.search(body) is not None  # every numeric pattern needs a digit
    shas = _SHA.findall(body) if digits else []
    bigints = _BIGINT.findall(body) if digits else []
    idents = _IDENT.findall(body)
    s = 0.0
    s += min(2, len(paths)) * 1.2
    s += min(2, len(shas)) * 1.0
    units = len(_UNIT.findall(body)) + len(_SCI.findall(body)) if digits else 0
    s += min(3, units) * 0.7
    s += min(2, len(bigints)) * 0.4
    s += min(3, len(idents)) * 0.3
    # a key=value needs its "=" or ":", a test id its "::" (checked first, in C)
    s += min(2, len(_KEYVAL.findall(body)) if digits and ("=" in body or ":" in body) else 0) * 0.3
    s += 0.8 if "::" in body and _TESTID.search(body) else 0.0
    low = body.lower()
    if body.isascii():
        weak = len(set(_CUE_WEAK_LOW.findall(low)))
        cues = tuple(sorted(line.cues if line is not None else set(_CUE_STRONG_LOW.findall(low))))
    else:
        weak = len(set(m.group(0).lower() for m in _CUE_WEAK.finditer(body)))
        cues = tuple(sorted({m.group(0).lower() for m in _CUE_STRONG.finditer(body)}))
    s += min(2, weak) * 0.5
    n = word_count(body)
    length = -1.0 if n < 4 else 0.4 if n >= 7 else 0.0
    marks = [p.rstrip(".") for p in paths] + shas + [t for t in bigints if len(t) >= 5]
    marks += [t for t in idents if any(ch.isdigit() for ch in t) or ("_" in t and len(t) >= 8)]
    words = line.words if line is not None else tuple(set(_CONTENT_WORD.findall(low)))
    out = (cues, words, s, length, tuple(dict.fromkeys(marks)))
    if len(_BODIES) >= _MEMO_MAX:
        _BODIES.clear()
    _BODIES[body] = out
    return out


# ----------------------------------------------------------------------------- snapshots


def _encode_cands(
    cands: Sequence[_Cand], shapes: Counter[str], leads: Counter[str], stems: Counter[str],
    word_df: Counter[str], cue_df: Counter[str],
) -> dict[str, Any]:
    """Candidates column by column, their keys as positions in the counters they count in
    (a candidate's shape, lead, stem and tail are counted there) and handles, tools, words and
    cues as positions in a table: a third of the bytes of the plain columns, decoded without
    hashing the strings. The word and cue tables start with the counters' keys and add the
    ones a candidate holds uncounted (a "Root cause:" label line is too short to be counted,
    but its words join the next line's body)."""
    pos_shape = {k: i for i, k in enumerate(shapes)}
    pos_lead = {k: i for i, k in enumerate(leads)}
    pos_stem = {k: i for i, k in enumerate(stems)}
    pos_word = {k: i for i, k in enumerate(word_df)}
    pos_cue = {k: i for i, k in enumerate(cue_df)}
    handles: dict[str, int] = {}
    tools: dict[str, int] = {}
    cues = [[pos_cue.setdefault(w, len(pos_cue)) for w in c.cues] for c in cands]
    words = [[pos_word.setdefault(w, len(pos_word)) for w in c.words] for c in cands]
    return {
        "text": [c.text for c in cands],
        "shape": [pos_shape[c.shape] for c in cands],
        "lead": [pos_lead[c.lead] for c in cands],
        "stem": [pos_stem[c.stem] for c in cands],
        "tail": [pos_stem[c.tail] for c in cands],
        "message_index": [c.message_index for c in cands],
        "event_id": [c.event_id for c in cands],
        "handle": [handles.setdefault(c.handle, len(handles)) for c in cands],
        "tool": [tools.setdefault(c.tool, len(tools)) for c in cands],
        "static": [c.static for c in cands],
        "refs": [c.refs for c in cands],
        "cues": cues,
        "words": words,
        "handles": list(handles),
        "tools": list(tools),
        "cue_table": list(pos_cue),
        "word_table": list(pos_word),
    }


def _decode_cands(cols: Any, index: SalienceIndex) -> list[_Cand]:
    if not isinstance(cols, dict):
        raise ValueError("snapshot candidates do not match this version's layout")
    shapes, leads, stems = list(index._shapes), list(index._leads), list(index._stems)
    words, cues = cols["word_table"], cols["cue_table"]
    handles, tools = cols["handles"], cols["tools"]
    text = cols["text"]
    n = len(text)
    names = ("shape", "lead", "stem", "tail", "message_index", "event_id", "handle", "tool", "static", "refs", "cues", "words")
    if any(len(cols[k]) != n for k in names):
        raise ValueError("snapshot columns differ in length")
    cue_at, word_at = cues.__getitem__, words.__getitem__  # tables looked up in C (map), not a generator
    return [
        _Cand(t, shapes[sh], leads[ld], stems[st], stems[tl], mi, eid, handles[hd], tools[tl_], static, refs,
              tuple(map(cue_at, cu)), tuple(map(word_at, wo)))
        for t, sh, ld, st, tl, mi, eid, hd, tl_, static, refs, cu, wo in zip(
            text, *(cols[k] for k in names), strict=True
        )
    ]


# ----------------------------------------------------------------------------- index


@dataclass(slots=True)
class _Cand:
    text: str
    shape: str
    lead: str
    stem: str
    tail: str
    message_index: int
    event_id: int | None
    handle: str
    tool: str
    static: float
    refs: int = 0
    cues: tuple[str, ...] = ()
    words: tuple[str, ...] = ()


def _message_index(c: _Cand) -> int:
    return c.message_index


@dataclass(frozen=True, slots=True)
class SalientFact:
    """One line kept for the facts section."""

    text: str
    score: float
    message_index: int
    event_id: int | None
    #: the tool call id whose output holds the line (what ``recall`` takes); empty for a
    #: sentence of the assistant's or the user's text (``tool`` is then :data:`STATEMENT`
    #: or :data:`USER_TEXT`)
    handle: str
    tool: str

    def render(self) -> str:
        where = f"ev {self.event_id}" if self.event_id is not None else f"msg {self.message_index}"
        text = self.text if len(self.text) <= MAX_FACT_CHARS else self.text[: MAX_FACT_CHARS - 1].rstrip() + "…"
        if not self.handle:
            return f"- [{where} · {self.tool}] {text}"
        return f"- [{where} · {self.tool} · recall {self.handle}] {text}"


#: messages (or candidates) past which a batch read (or index) runs with the cyclic GC paused
_BATCH = GC_BATCH

# Counts past which a score term no longer changes (see SalienceIndex._touch): the shape's
# rarity term caps at n = 9 (0.8·log2 9 > 2.5), the stem's and the lead's at 16, a cue's
# weight at its floor 0.2 from df = 26; a word counts as rare while its df is at most 2.
_SAT_SHAPE = 9
_SAT_STEM = 16
_SAT_LEAD = 16
_SAT_CUE = 26
_RARE_WORD = 2


@dataclass(slots=True)
class _Top:
    """The best candidate of each shape over candidates [lo, hi), ranked.

    ``ranked`` holds one entry per shape, ``(-score, message_index, first, k)``: the score
    and message index of the shape's best candidate (the last of equal scores), ``first``
    its first candidate in the span that passes ``MIN_SCORE`` (the order a plain pass meets
    the shapes in, which breaks ties) and ``k`` its **latest** candidate that passes, the one
    shown: a value stated again later (a revised limit, a newer commit) is shown as it now
    stands, ranked as high as the shape's best instance (an older one may have earned its
    score from later references to the old value). Kept sorted with bisection, so a turn that touched a few shapes costs
    O(shapes touched · log shapes) and a C memmove, not a re-sort of the span.
    """

    lo: int
    hi: int
    best: dict[str, tuple[float, int, int, int]] = field(default_factory=dict)
    ranked: list[tuple[float, int, int, int]] = field(default_factory=list)

    def extend(self, index: SalienceIndex, new: range, changed: set[int]) -> None:
        cands, sc = index._cands, index._sc
        lo, hi = self.lo, max(self.hi, new.stop)
        if not self.ranked and not changed:
            # a fresh span: one pass in candidate order, then one sort
            best = self.best
            for k in new:
                s = sc[k]
                if s < MIN_SCORE:
                    continue
                c = cands[k]
                old = best.get(c.shape)
                if old is None:
                    best[c.shape] = (-s, c.message_index, k, k)
                elif s >= -old[0]:
                    best[c.shape] = (-s, c.message_index, old[2], k)
                else:  # ranked by its best instance, shown by its latest (a revised value)
                    best[c.shape] = (old[0], old[1], old[2], k)
            self.ranked = sorted(best.values())
            return
        shapes = {cands[k].shape for k in changed if lo <= k < self.hi}
        shapes.update(cands[k].shape for k in new)
        index._index(len(sc))  # the shapes' groups
        by_shape, ranked, best = index._by[0], self.ranked, self.best
        for sh in shapes:
            group = by_shape[sh]
            entry = None
            for k in group[bisect_left(group, lo) :]:
                if k >= hi:
                    break
                s = sc[k]
                if s < MIN_SCORE:
                    continue
                if entry is None:
                    entry = (-s, cands[k].message_index, k, k)
                elif s >= -entry[0]:
                    entry = (-s, cands[k].message_index, entry[2], k)
                else:
                    entry = (entry[0], entry[1], entry[2], k)
            old = best.get(sh)
            if old == entry:
                continue
            if old is not None:
                del ranked[bisect_left(ranked, old)]
            if entry is None:
                del best[sh]
            else:
                best[sh] = entry
                insort(ranked, entry)


@dataclass
class SalienceIndex:
    """Scores tool-output lines of one append-only history, incrementally."""

    profile: FactProfile = GENERIC
    _uid: int | None = None
    _seen: int = 0
    _shapes: Counter[str] = field(default_factory=Counter)
    _leads: Counter[str] = field(default_factory=Counter)
    _stems: Counter[str] = field(default_factory=Counter)
    _cands: list[_Cand] = field(default_factory=list)
    _by_anchor: dict[str, list[int]] = field(default_factory=dict)
    _anchor_df: Counter[str] = field(default_factory=Counter)
    _cache: dict[tuple[int, int, int, str], tuple[str, tuple[SalientFact, ...]]] = field(default_factory=dict)
    _cues: re.Pattern[str] | None = None
    _names: dict[str, str] = field(default_factory=dict)
    _word_df: Counter[str] = field(default_factory=Counter)
    _cue_df: Counter[str] = field(default_factory=Counter)
    #: each scored candidate's score under the current counts (see :meth:`_rescore`)
    _sc: list[float] = field(default_factory=list)
    #: candidates by the keys their score reads, for rescoring what a count change touched
    #: per key kind (shape, stem or tail, lead, word, cue): key -> candidates whose score reads it
    _by: tuple[dict[str, list[int]], ...] = field(default_factory=lambda: ({}, {}, {}, {}, {}))
    _indexed: int = 0
    #: keys whose count changed below saturation since the last rescore, and candidates with new references
    _marks: tuple[set[str], ...] = field(default_factory=lambda: (set(), set(), set(), set(), set()))
    _dirty: set[int] = field(default_factory=set)
    _top: _Top | None = None
    #: the history :meth:`update` was last given (read up to ``_seen`` so far)
    _history: History | None = None

    def __post_init__(self) -> None:
        words = self.profile.cue_words
        self._cues = re.compile("|".join(re.escape(w) for w in words), re.I) if words else None

    # -- reading ------------------------------------------------------------------------

    def update(self, history: History) -> None:
        """Take in the messages appended since the last call (a different history starts over).

        Lazy: they are read when a ranking is next needed (:meth:`facts`, or a
        :meth:`section` not in its cache), not here. The section is cached per (span, cap)
        and stays byte-identical until the boundary moves, so reading each turn's new output
        eagerly only moved counts that no one read before that move; read then, in one batch,
        the counts, marks and scores come out the same (the reads are in message order either
        way), and a turn that does not move the boundary reads nothing.
        """
        if self._uid != history.uid or self._seen > len(history):
            self.__init__(self.profile)  # type: ignore[misc]
            self._uid = history.uid
        self._history = history

    def _catch_up(self) -> None:
        """Read what :meth:`update` took in and has not been read yet."""
        if self._history is not None:
            self.read_ahead(len(self._history))

    def read_ahead(self, stop: int) -> None:
        """Read the messages before ``stop`` that :meth:`update` took in and were not read
        yet, now rather than at the next ranking: the same counts and scores (the reads are
        in message order either way). For a caller that has just read those messages into
        another index (a summarizer's per-chunk ones): their lines are still in the
        process-wide feature memo, which a second pass over a long session (over ~7M
        tokens, more distinct lines than the memo holds) would find evicted."""
        h = self._history
        if h is None:
            return
        stop = min(stop, len(h))
        # A cold read allocates a candidate, tuples and counters for tens of thousands of
        # lines; with the cyclic GC on, those allocations trigger collections that traverse
        # every object the process holds (its whole history): paused for a large batch.
        with gc_paused_over(stop - self._seen):
            for i in range(self._seen, stop):
                self._read(h.messages[i], i, h.event_ids[i])
        self._seen = max(self._seen, stop)

    # -- snapshots ----------------------------------------------------------------------
    #
    # A cold read of a 1M-token session costs ~1 s of Python (every tool-output line's
    # features), so a store-backed strategy saves what the read produced and a later process
    # restores it and reads only the messages appended since (see ctxmem.context.memory). The
    # snapshot is the index's state right after a ranking (counts, candidates, scores; the
    # lazily built key index and the caches are rebuilt on use), so the restored index goes on
    # exactly as the one that wrote it would have: tests/context/test_derived_state.py.

    #: bump when the state's layout or a score definition changes: older snapshots are ignored
    STATE_VERSION: ClassVar[int] = 5

    def state_kind(self) -> str:
        """What a snapshot of this index is valid for: the layout and the profile's cue words."""
        import hashlib

        cues = hashlib.sha256("\x00".join(self.profile.cue_words).encode()).hexdigest()[:16]
        return f"salience/v{self.STATE_VERSION}/{cues}"

    def to_state(self) -> dict[str, object] | None:
        """The index's state after a ranking (plain JSON types), for :meth:`from_state`;
        ``None`` while counts are read but not ranked yet (the state is only taken between
        rankings, where nothing is pending: saving must not change what the next one does)."""
        cands = self._cands
        if any(self._marks) or self._dirty or len(self._sc) != len(cands):
            return None
        return {
            "seen": self._seen,
            "shapes": self._shapes,
            "leads": self._leads,
            "stems": self._stems,
            "names": self._names,
            "word_df": self._word_df,
            "cue_df": self._cue_df,
            "anchor_df": self._anchor_df,
            "by_anchor": self._by_anchor,
            "sc": self._sc,
            "cands": _encode_cands(cands, self._shapes, self._leads, self._stems, self._word_df, self._cue_df),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], history: History, profile: FactProfile = GENERIC) -> SalienceIndex:
        """An index over ``history`` restored from :meth:`to_state` (its first ``seen``
        messages read); raises ``ValueError`` (or ``KeyError``/``TypeError``) on a state that
        does not fit."""
        index = cls(profile)
        seen = state["seen"]
        if not isinstance(seen, int) or not 0 <= seen <= len(history):
            raise ValueError(f"snapshot covers {seen!r} messages, the history has {len(history)}")
        index._shapes = Counter(state["shapes"])
        index._leads = Counter(state["leads"])
        index._stems = Counter(state["stems"])
        index._names = dict(state["names"])
        index._word_df = Counter(state["word_df"])
        index._cue_df = Counter(state["cue_df"])
        index._anchor_df = Counter(state["anchor_df"])
        index._by_anchor = {str(a): list(ks) for a, ks in state["by_anchor"].items()}
        sc = [float(x) for x in state["sc"]]
        index._cands = _decode_cands(state["cands"], index)
        if len(sc) != len(index._cands):
            raise ValueError("snapshot scores and candidates differ in number")
        index._sc = sc
        index._seen = seen
        index._uid = history.uid
        index._history = history
        return index

    @classmethod
    def of_messages(cls, messages: Sequence[Message], *, start: int = 0, profile: FactProfile = GENERIC) -> SalienceIndex:
        """An index over a span alone (rarity within the span): what a summary of that span
        must keep, the same whatever the rest of the history holds."""
        index = cls(profile)
        for k, m in enumerate(messages):
            index._read(m, start + k, ())
        index._seen = len(messages)
        return index

    def _read(self, msg: Message, i: int, ids: Sequence[int]) -> None:
        mentions: list[str] = []
        where = block_events(msg)
        told: frozenset[str] | None = None  # what the standing instructions carry of a user message
        for j, b in enumerate(msg.content):
            if isinstance(b, ToolResultBlock):
                eid = ids[where[j]] if where[j] < len(ids) else None
                self._read_output(i, eid, b)
            elif isinstance(b, TextBlock):
                mentions.append(b.text)
                eid = ids[where[j]] if where[j] < len(ids) else None
                if msg.role == "assistant":
                    # what the agent itself states (a finding, a conclusion) is read like a
                    # tool output's lines, a sentence each: it can be a fact as well
                    self._read_said(i, eid, assistant_lines(b.text), STATEMENT)
                    continue
                # what the user pastes or tells (an error from their terminal, a measurement):
                # its lines and sentences, but not what the standing instructions carry
                # already (a short message whole, a long one's rule-like sentences)
                if told is None:
                    told = _instructed(msg)
                if told is not _WHOLE:
                    said = [(x, pr) for x, pr in user_lines(b.text) if " ".join(x.split()) not in told]
                    self._read_said(i, eid, said, USER_TEXT)
            elif isinstance(b, ToolUseBlock):
                self._names[b.id] = b.name
                mentions.append(" ".join(str(v) for v in b.input.values()))
        self._references(i, "\n".join(mentions))

    def _read_output(self, i: int, eid: int | None, b: ToolResultBlock) -> None:
        self._read_lines(i, eid, output_lines(b.text), b.tool_use_id, self._names.get(b.tool_use_id, "tool"))

    def _read_said(self, i: int, eid: int | None, said: Sequence[tuple[str, float]], tool: str) -> None:
        """Read the sentences of an assistant's or a user's text, each with its prior."""
        self._read_lines(i, eid, [x for x, _ in said], "", tool, [pr for _, pr in said])

    def _read_lines(
        self, i: int, eid: int | None, lines: Sequence[str], handle: str, tool: str,
        priors: Sequence[float] | None = None,
    ) -> None:
        """Count and score ``lines`` of message ``i``: a tool output's, or the sentences of an
        assistant's or a user's text (``handle`` empty, ``tool`` :data:`STATEMENT` or
        :data:`USER_TEXT`); ``priors`` (one per line; none for a tool output) are taken off
        the candidates' scores."""
        shapes, leads, stems = self._shapes, self._leads, self._stems
        word_df, cue_df = self._word_df, self._cue_df
        track = bool(self._sc)  # nothing scored yet: nothing to rescore
        prev = ""
        for ln, pr in zip(lines, repeat(0.0) if priors is None else priors, strict=False):
            f = _LINES.get(ln)
            if f is None:
                f = _line_features(ln)
            text, colon, sh = f[0], f[1], f[2]
            if sh is None:
                # short, or not prose: never a candidate (and not counted: no candidate shares its shape)
                prev = text if colon else ""
                continue
            ld, st, tl = f[3], f[4], f[5]
            shapes[sh] += 1
            leads[ld] += 1
            stems[st] += 1
            stems[tl] += 1
            for w in f[6]:
                word_df[w] += 1
            for w in f[7]:
                cue_df[w] += 1
            if track:
                self._touch(sh, ld, st, tl, f[6], f[7])
            if stems[st] > ROUTINE or stems[tl] > ROUTINE or pr == COUNT_ONLY:
                # routine: its first or last words were seen often already, and only get more
                # common (or an announced next step: counted, never kept)
                prev = text if colon else ""
                continue
            body = f[8]
            same = not prev and body == text  # the body is the line's text: its cues and words too
            if prev:  # "Root cause:" on one line, the cause on the next: keep them together
                body = f"{prev} {body}"
            prev = text if colon else ""
            g = _BODIES.get(body)
            if g is None:
                g = _body_features(body, f if same else None)
            cues, words, pre, length, marks = g
            static = pre
            if self._cues is not None and self._cues.search(body):
                static += 1.0
            if length:
                static += length
            bonus = 1.6 * min(2, len(cues))  # the most a cue can add
            score = static + bonus
            if score < 0.0:
                continue
            static = score - bonus - pr  # pr 0.0 for a tool output: x - 0.0 is x, bit for bit
            k = len(self._cands)
            self._cands.append(_Cand(body, sh, ld, st, tl, i, eid, handle, tool, static, cues=cues, words=words))
            for a in marks:
                self._by_anchor.setdefault(a, []).append(k)

    def _references(self, i: int, text: str) -> None:
        if not self._by_anchor or not text:
            return
        for a in set(anchors(text)):
            self._anchor_df[a] += 1
            ks = self._by_anchor.get(a)
            if ks is None or self._anchor_df[a] > 6:
                continue  # unknown, or too common to be a reference
            for k in ks:
                c = self._cands[k]
                if c.message_index < i and c.refs < 3:
                    c.refs += 1
                    if self._sc:
                        self._dirty.add(k)

    # -- scoring and selection -----------------------------------------------------------

    def _score(self, c: _Cand) -> float:
        """A candidate's score: the readable definition :meth:`facts` inlines (a test holds
        the two equal)."""
        n = self._shapes[c.shape]
        rarity = 1.5 if n == 1 else -min(2.5, 0.8 * math.log2(n))
        m = max(self._stems[c.stem], self._stems[c.tail])
        rarity += 1.0 if m <= 2 else -min(2.0, 0.5 * math.log2(m))
        m = self._leads[c.lead]
        rarity += 0.5 if m <= 2 else -min(1.0, 0.25 * math.log2(m))
        # a line repeated verbatim through the session only counts as referenced once
        # A cue word the session uses everywhere ("limit" in every log line) says little; a
        # rare one ("root cause", once) says a lot. Same for the line's other words.
        cue = sum(sorted((_common(self._cue_df[w]) for w in c.cues), reverse=True)[:2]) * 1.6
        rare = min(3, sum(1 for w in c.words if self._word_df[w] <= 2)) * 0.4
        return c.static + cue + rare + rarity + 0.7 * min(c.refs, 3) * (1.0 if n <= 3 else 0.3)

    # Incremental scoring. A candidate's score reads five counts (its shape's, its stem's and
    # tail's, its lead's, its cues' and words' document frequencies) and its references. Each
    # term stops changing once its count passes a saturation point (the log terms hit their
    # caps), so after a turn only the candidates whose keys changed *below* saturation, or
    # that gained a reference, need a new score: :meth:`_touch` marks the keys while reading,
    # :meth:`_rescore` rescores their candidates and scores the new ones. ``_SAT`` holds the
    # points (a test checks each term is constant past its point).

    def _touch(self, sh: str, ld: str, st: str, tl: str, words: tuple[str, ...], cues: tuple[str, ...]) -> None:
        marks = self._marks
        if self._shapes[sh] <= _SAT_SHAPE:
            marks[0].add(sh)
        if self._stems[st] <= _SAT_STEM:
            marks[1].add(st)
        if self._stems[tl] <= _SAT_STEM:
            marks[1].add(tl)
        if self._leads[ld] <= _SAT_LEAD:
            marks[2].add(ld)
        word_df = self._word_df
        for w in words:
            if word_df[w] == _RARE_WORD + 1:
                marks[3].add(w)
        cue_df = self._cue_df
        for w in cues:
            if cue_df[w] <= _SAT_CUE:
                marks[4].add(w)

    def _score_of(self, c: _Cand) -> float:
        # :meth:`_score` inlined (the same arithmetic in the same order, so the same floats)
        shapes, stems, leads, word_df = self._shapes, self._stems, self._leads, self._word_df
        log2 = math.log2
        n = shapes[c.shape]
        rarity = 1.5 if n == 1 else -min(2.5, 0.8 * log2(n))
        m = max(stems[c.stem], stems[c.tail])
        rarity += 1.0 if m <= 2 else -min(2.0, 0.5 * log2(m))
        m = leads[c.lead]
        rarity += 0.5 if m <= 2 else -min(1.0, 0.25 * log2(m))
        if c.cues:
            cue_df = self._cue_df
            cue = sum(sorted((_common(cue_df[w]) for w in c.cues), reverse=True)[:2]) * 1.6
        else:
            cue = 0.0
        r = 0
        for w in c.words:
            if word_df.get(w, 0) <= _RARE_WORD:
                r += 1
                if r == 3:
                    break
        return c.static + cue + r * 0.4 + rarity + 0.7 * min(c.refs, 3) * (1.0 if n <= 3 else 0.3)

    def _rescore(self) -> set[int]:
        """Bring ``_sc`` up to date with the counts; the scored candidates whose score changed."""
        cands, sc = self._cands, self._sc
        done = len(sc)
        changed: set[int] = set()
        marks = self._marks
        if done and (any(marks) or self._dirty):
            self._index(done)
            touched = set(self._dirty)
            for by, keys in zip(self._by, marks, strict=True):
                for key in keys:
                    touched.update(by.get(key, ()))
            for k in touched:
                if k < done:
                    new = self._score_of(cands[k])
                    if new != sc[k]:
                        sc[k] = new
                        changed.add(k)
        for keys in marks:
            keys.clear()
        self._dirty.clear()
        # New candidates: :meth:`_score_of` inlined over locals (the same arithmetic in the
        # same order, so the same floats) — a cold build scores ten thousand of them.
        shapes, stems, leads, cue_df, word_df = self._shapes, self._stems, self._leads, self._cue_df, self._word_df
        log2 = math.log2
        append = sc.append
        for k in range(done, len(cands)):
            c = cands[k]
            n = shapes[c.shape]
            rarity = 1.5 if n == 1 else -min(2.5, 0.8 * log2(n))
            m = max(stems[c.stem], stems[c.tail])
            rarity += 1.0 if m <= 2 else -min(2.0, 0.5 * log2(m))
            m = leads[c.lead]
            rarity += 0.5 if m <= 2 else -min(1.0, 0.25 * log2(m))
            cue = sum(sorted((_common(cue_df[w]) for w in c.cues), reverse=True)[:2]) * 1.6 if c.cues else 0.0
            r = 0
            for w in c.words:
                if word_df.get(w, 0) <= _RARE_WORD:
                    r += 1
                    if r == 3:
                        break
            append(c.static + cue + r * 0.4 + rarity + 0.7 * min(c.refs, 3) * (1.0 if n <= 3 else 0.3))
        return changed

    def _index(self, upto: int) -> None:
        """Index candidates [indexed, upto) by the keys their score reads (built lazily: a
        cold build that ranks once never needs it).

        A word is indexed while it is still rare and a cue while its weight can still
        change — or when the key was marked since (its count crossed the point after the
        candidate was scored, and its score must be recomputed once more).
        """
        if upto - self._indexed > _BATCH:
            # the first boundary move after a cold build indexes every candidate at once
            # (~10^5 lists at 10M tokens): the GC paused as for a cold read (see _catch_up)
            with gc_paused():
                self._index_range(upto)
        else:
            self._index_range(upto)

    def _index_range(self, upto: int) -> None:
        by_shape, by_stem, by_lead, by_word, by_cue = self._by
        marked_words, marked_cues = self._marks[3], self._marks[4]
        cands, word_df, cue_df = self._cands, self._word_df, self._cue_df
        for k in range(self._indexed, upto):
            c = cands[k]
            for by, key in ((by_shape, c.shape), (by_stem, c.stem), (by_stem, c.tail), (by_lead, c.lead)):
                group = by.get(key)
                if group is None:
                    by[key] = [k]
                else:
                    group.append(k)
            for w in c.words:
                if word_df.get(w, 0) <= _RARE_WORD or w in marked_words:
                    by_word.setdefault(w, []).append(k)
            for w in c.cues:
                if cue_df[w] < _SAT_CUE or w in marked_cues:
                    by_cue.setdefault(w, []).append(k)
        self._indexed = max(self._indexed, upto)

    def facts(self, start: int, stop: int, *, limit: int = 200) -> list[SalientFact]:
        """The best candidates of messages[start:stop], one per shape, best first.

        Incremental: a call rescores only what changed since the last one (see
        :meth:`_rescore`) and, for the same ``start`` and a ``stop`` that did not move back,
        updates the previous ranking for the shapes those candidates and the newly covered
        ones hold; otherwise it ranks the span afresh.
        """
        self._catch_up()
        changed = self._rescore()
        cands = self._cands
        # Candidates are appended in message order, so the span is found by bisection.
        lo = bisect_left(cands, start, key=_message_index)
        hi = bisect_left(cands, stop, lo, key=_message_index)
        top = self._top
        if top is None or top.lo != lo or top.hi > hi:
            top = self._top = _Top(lo, lo)
            top.extend(self, range(lo, hi), set())
        else:
            top.extend(self, range(top.hi, hi), changed)
        top.hi = hi
        out: list[SalientFact] = []
        seen: set[str] = set()
        for neg, _mi, _first, k in top.ranked:
            c = cands[k]
            key = " ".join(c.text.lower().split())
            if key not in seen:
                seen.add(key)
                out.append(SalientFact(c.text, -neg, c.message_index, c.event_id, c.handle, c.tool))
            if len(out) >= limit:
                break
        return out

    def section(
        self, start: int, stop: int, tokenizer: Tokenizer, max_tokens: int
    ) -> tuple[str, tuple[SalientFact, ...]]:
        """The facts section of messages[start:stop] within ``max_tokens`` (exact), and its facts.

        Cached per (span, cap): between compactions the section is byte-identical.
        """
        if max_tokens <= 0 or stop <= start:
            return "", ()
        key = (start, stop, max_tokens, tokenizer.id)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        from ctxmem.context.summarize import fit_lines

        facts = self.facts(start, stop)
        cands = [(f.score, f.render()) for f in sorted(facts, key=lambda f: (f.message_index, f.text))]
        text = fit_lines(cands, tokenizer, max_tokens, header=FACTS_SECTION_HEADER) if cands else ""
        kept = set(text.splitlines()[1:]) if text else set()
        chosen = tuple(f for f in sorted(facts, key=lambda f: (f.message_index, f.text)) if f.render() in kept)
        if not chosen:
            text = ""
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = (text, chosen)
        return text, chosen


__all__ = ["FACTS_SECTION_HEADER", "STATEMENT", "USER_TEXT", "SalienceIndex", "SalientFact", "anchors", "block_events", "is_code", "shape", "static_score"]
