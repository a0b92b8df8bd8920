"""Must-keep facts: what a summary may not lose, extracted deterministically.

A summary (LLM or extractive) is lossy by design. Some details are cheap to keep and
expensive to lose: the file an agent edits, a hardware limit it ran into, the id of the
benchmark that produced the best result, a constraint the user stated. :func:`extract_facts`
finds them with regular expressions — no model, same input → same facts — and
:func:`missing_facts` says which of them a summary dropped, so the fidelity guard
(:class:`ctxmem.context.summarize.FidelityGuard`) can re-pin them verbatim.

Kinds, in priority order (the cap keeps the higher kinds first):

=============  ================================================================
``constraint`` a sentence of a user *text* message with must/never/always/keep/don't/only/limit
``best``       the best value of the profile's metric seen so far, with its id and message
``salient``    a tool-output line the salience scorer ranks high (:mod:`ctxmem.context.salience`);
               added by the caller, kept when its specific tokens all appear
``error``      an error signature: exception class + the head of its message
``path``       file paths (``kernel.py``, ``src/a/b.py``, ``/abs/path``)
``id``         run ids (``eval#12``, ``bench#7``) and commit shas
``number``     numbers with units (``3.41x``, ``12.5 ms``, ``96 KiB``) and big integers (``101376``)
=============  ================================================================

Only *informative* lines of tool outputs are scanned for numbers and ids (headers, error
lines, summary lines): a 40-row benchmark table has one line worth keeping, its geomean.
Text the user or the assistant wrote is scanned whole.

Matching is normalized (NFKC, case-folded, whitespace collapsed, markdown backticks and
emphasis removed), so ``**Kernel.py**`` in a summary matches the fact ``kernel.py``. A
``best`` fact matches when its value and its id both appear.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ctxmem.context.profile import GENERIC, FactProfile
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock

FactKind: TypeAlias = Literal["constraint", "best", "salient", "error", "id", "path", "number"]
KIND_PRIORITY: tuple[FactKind, ...] = ("constraint", "best", "salient", "error", "path", "id", "number")
DEFAULT_MAX_FACTS = 48
_MAX_FACT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Fact:
    """One must-keep fact: its verbatim text, its kind, and the message it came from."""

    text: str
    kind: FactKind
    #: index of the message (in the sequence given to :func:`extract_facts`, plus ``start``)
    message_index: int


# ----------------------------------------------------------------------------- patterns

_EXT = (
    r"py|pyi|md|rst|txt|json|jsonl|toml|yaml|yml|cfg|ini|csv|tsv|log|cu|cuh|c|cc|cpp|h|hpp|rs|go|js|ts|"
    r"tsx|jsx|sh|sql|ipynb|lock|html|css|proto|ptx|mlir|ll"
)
_PATH_BODY = rf"(?:(?:~|\.{{1,2}})?/(?:[\w.-]+/)+[\w.-]+|(?:[\w.-]+/)*[\w-][\w.-]*\.(?:{_EXT}))(?![\w/])"
#: Every path holds a "/" or a "." that a run of word characters, dots, "~" and "-" from its
#: start reaches: the lookahead says so first, and most words (none of them) are passed over
#: before the alternatives backtrack through them (~20% faster; the same matches:
#: tests/context/test_facts.py holds it to the pattern without the lookahead).
_PATH = re.compile(rf"(?<![\w/.-])(?=[\w.~-]*[/.]){_PATH_BODY}")
_ID = re.compile(r"\b[A-Za-z][\w-]*#\d+\b")
_SHA = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")
_UNIT = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?(?:e[-+]?\d+)?\s?"
    r"(?:x|×|ms|us|µs|ns|s|KiB|MiB|GiB|KB|MB|GB|TB|B|bytes|%|tokens|TFLOPS|GFLOPS|GB/s|TB/s|registers)(?![\w/])"
)
_BIGINT = re.compile(r"(?<![\w.#])\d{4,}(?!\w|\.\d)")
_ERROR = re.compile(
    r"(?:^|[\s(])((?:[A-Za-z_][\w]*\.)*(?:[A-Z]\w*(?:Error|Exception|Exceeded|Failure|Interrupt)|OutOfResources|"
    r"Traceback|panic|fatal error|error(?=:)))\b:?\s*(.*)"
)
_CONSTRAINT = re.compile(r"\b(must|never|always|keep|don'?t|do not|only|limit|limits|at most|at least)\b", re.I)
_INFORMATIVE = re.compile(r"(error|exception|outofresources|traceback|summary|total|overall|mean|median|best|result|limit)", re.I)
_INFORMATIVE_LOW = re.compile(_INFORMATIVE.pattern)
_COMMIT = re.compile(r"\bcommit|\bHEAD\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _clip(text: str, limit: int = _MAX_FACT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


#: a substring every match of ``_ERROR`` holds (its alternatives' fixed parts): a line with
#: none of them cannot match, and most lines hold none (checked in C, ~20x cheaper than the
#: search, which backtracks through every word)
_ERROR_NEEDS = ("rror", "xception", "xceeded", "ailure", "nterrupt", "OutOfResources", "Traceback", "panic")


def error_signature(line: str) -> str | None:
    """``ExceptionClass: message head`` of an error line, or None if the line has no error."""
    for needle in _ERROR_NEEDS:
        if needle in line:
            break
    else:
        return None
    m = _ERROR.search(line)
    if not m:
        return None
    cls, rest = m.group(1), m.group(2).strip()
    if cls == "Traceback":
        return None  # the exception line that follows is the signature
    # The head of the message: up to its first sentence end, so the detail stays short.
    head = re.split(r"(?<=[.!?])\s", rest, maxsplit=1)[0] if rest else ""
    return _clip(f"{cls}: {head}" if head else cls)


@dataclass(frozen=True, slots=True)
class Best:
    """The best value of the profile's metric seen: value, the line it came from, the run id."""

    value: float
    #: the value as written (``3.40x``), so a summary quoting it matches
    raw: str
    text: str
    run_id: str | None
    message_index: int
    #: a primary value (e.g. a geomean) rather than one row's
    geomean: bool
    metric: str = "result"

    def describe(self) -> str:
        where = f"{self.run_id}, " if self.run_id else ""
        return f"best {self.metric} so far: {self.raw} ({where}message {self.message_index})"


def better(old: Best | None, value: float, geomean: bool) -> bool:
    """Whether (value, primary) beats the best so far: a primary value beats any other."""
    if old is None:
        return True
    if geomean != old.geomean:
        return geomean  # a primary value (a geomean) beats any single row
    return value > old.value


def run_id(text: str) -> str | None:
    """The run id (``bench#7``) in the first line of a tool output, if any."""
    head = text.lstrip().split("\n", 1)[0]
    m = _ID.search(head)
    return m.group(0) if m else None


# ----------------------------------------------------------------------------- extraction


class _Collector:
    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, text: str, kind: FactKind, index: int) -> None:
        text = _clip(text.strip().strip(",;:"))
        if not text:
            return
        key = (kind if kind != "number" else "id", normalize(text))
        if key in self._seen or ("id", key[1]) in self._seen:
            return
        self._seen.add(key)
        self.facts.append(Fact(text, kind, index))


def _scan_numbers(c: _Collector, text: str, index: int, *, shas: bool = True) -> None:
    for m in _ID.finditer(text):
        c.add(m.group(0), "id", index)
    if shas:
        for m in _SHA.finditer(text):
            c.add(m.group(0), "id", index)
    for m in _UNIT.finditer(text):
        c.add(m.group(0), "number", index)
    for m in _BIGINT.finditer(text):
        c.add(m.group(0), "number", index)


_NOT_A_PATH = re.compile(r"[\d./]+")  # dates, versions, ratios


def _scan_paths(c: _Collector, text: str, index: int) -> None:
    if "/" not in text and "." not in text:  # every path holds one of them
        return
    for m in _PATH.finditer(text):
        path = m.group(0).rstrip(".")
        if not _NOT_A_PATH.fullmatch(path):
            c.add(path, "path", index)


def _scan_errors(c: _Collector, text: str, index: int) -> None:
    for ln in text.splitlines():
        sig = error_signature(ln)
        if sig:
            c.add(sig, "error", index)


def _scan_tool_output(c: _Collector, text: str, index: int) -> None:
    lines = text.splitlines()
    if text.isascii():  # lower-cased ASCII: the same lines, matched without case folding (3x faster)
        lows = text.lower().splitlines()
        informative = [ln for k, ln in enumerate(lines) if k == 0 or _INFORMATIVE_LOW.search(lows[k])]
    else:
        informative = [ln for k, ln in enumerate(lines) if k == 0 or _INFORMATIVE.search(ln)]
    _scan_errors(c, "\n".join(informative), index)
    _scan_paths(c, text, index)
    for k, ln in enumerate(informative):
        # A git log lists many shas; the newest (first line) and ones named a commit matter.
        _scan_numbers(c, ln, index, shas=k == 0 or _COMMIT.search(ln) is not None)


def extract_facts(
    messages: Sequence[Message], *, start: int = 0, max_facts: int = DEFAULT_MAX_FACTS, profile: FactProfile = GENERIC
) -> list[Fact]:
    """The must-keep facts of ``messages``, de-duplicated, capped, in message order.

    ``start`` offsets ``Fact.message_index`` (pass the span's index in the history). When
    there are more than ``max_facts``, higher-priority kinds win (see the module
    docstring); within a kind, earlier facts win. The result is ordered by message index,
    then by kind priority. The ``best`` fact comes from ``profile.best`` (none in the
    generic profile).
    """
    c = _Collector()
    best: Best | None = None
    for k, msg in enumerate(messages):
        i = start + k
        for b in msg.content:
            if isinstance(b, TextBlock):
                if msg.role == "user":
                    for sentence in _SENTENCE.split(b.text):
                        if _CONSTRAINT.search(sentence):
                            c.add(sentence, "constraint", i)
                _scan_errors(c, b.text, i)
                _scan_paths(c, b.text, i)
                _scan_numbers(c, b.text, i)
            elif isinstance(b, ToolUseBlock):
                for v in _strings(b.input):
                    _scan_paths(c, v, i)
                    _scan_numbers(c, v, i)
            elif isinstance(b, ToolResultBlock):
                text = b.text
                _scan_tool_output(c, text, i)
                for value, raw, geo, line in profile.best(text) if profile.best is not None else ():
                    if better(best, value, geo):
                        best = Best(value, raw, line, run_id(text), i, geo, profile.metric or "result")
    facts = c.facts
    if best is not None:
        facts.append(Fact(best.describe(), "best", best.message_index))
    return cap_facts(facts, max_facts)


def cap_facts(facts: Sequence[Fact], max_facts: int) -> list[Fact]:
    """At most ``max_facts``, higher-priority kinds first, then re-ordered by message."""
    rank = {k: r for r, k in enumerate(KIND_PRIORITY)}
    chosen = sorted(range(len(facts)), key=lambda j: (rank[facts[j].kind], j))[: max(0, max_facts)]
    return [facts[j] for j in sorted(chosen, key=lambda j: (facts[j].message_index, rank[facts[j].kind], j))]


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


# ----------------------------------------------------------------------------- matching


_MARKUP = re.compile(r"[`*_]{1,3}")


def normalize(text: str) -> str:
    """Case-folded, NFKC, whitespace collapsed, markdown emphasis and backticks removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _MARKUP.sub("", text)
    return " ".join(text.split()).strip(" .,;:")


_BEST_VALUE = re.compile(r"so far: (\S+)")


def _specific(text: str) -> list[str]:
    """The tokens of a line a paraphrase must keep: paths, ids, hashes, numbers with units,
    large integers (what a summary quoting the fact has to reproduce exactly)."""
    out = [m.group(0).rstrip(".") for m in _PATH.finditer(text)]
    out += [m.group(0) for m in _ID.finditer(text)] + _SHA.findall(text)
    out += [m.group(0) for m in _UNIT.finditer(text)] + [m.group(0) for m in _BIGINT.finditer(text)]
    return list(dict.fromkeys(out))


def fact_keys(fact: Fact) -> tuple[str, ...]:
    """What must appear (normalized) in a text for the fact to count as kept."""
    if fact.kind == "salient":
        specific = _specific(fact.text)
        return tuple(normalize(k) for k in specific) if specific else (normalize(fact.text),)
    if fact.kind == "best":
        value = _BEST_VALUE.search(fact.text)
        keys = ([value.group(1)] if value else []) + _ID.findall(fact.text)
        return tuple(normalize(k) for k in keys) or (normalize(fact.text),)
    return (normalize(fact.text),)


def missing_facts(facts: Iterable[Fact], summary_text: str) -> list[Fact]:
    """The facts whose keys do not all appear in ``summary_text`` (normalized matching)."""
    hay = normalize(summary_text)
    return [f for f in facts if not all(k in hay for k in fact_keys(f))]
