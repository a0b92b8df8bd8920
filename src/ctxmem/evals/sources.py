"""Haystack sources: license-clean text, cut into *units* that tokenize independently.

A source yields **units**: sentences (prose), lines (code, logs, rendered sessions) or the
sentences of a user's files. Units are the only places where a needle can be spliced in
and where a haystack can be cut, so the unit boundaries are the "sentence boundaries" of
the evaluator.

**The tokenization contract.** The evaluator counts a document as the *sum of its units'
token counts* and never re-encodes the whole text. That is only exact if encoding the
concatenation gives the same tokens as encoding each unit alone. Byte-level BPE
tokenizers (tiktoken's encodings, the HF byte-level ones) pre-split text with a regex
before merging, and a unit boundary is safe when it is also a pre-split boundary in the
whole text. Units are therefore shaped so that

* whitespace that *precedes* a sentence on the same line (a space, indentation) is the
  **prefix** of that unit (``" The next sentence."``) — pre-tokenizers attach a leading
  space to the following word;
* newlines that *end* a line are the **suffix** of the unit before them (``"x = 1\\n"``)
  — pre-tokenizers never join a newline with the following word.

:func:`split_units` applies these rules to any text, so a user's own files obey them too.
The property is tested across tokenizers (tiktoken o200k/cl100k and a HF byte-level
tokenizer): the claimed count of every built cell equals a full re-encode.

Generated sources (``prose``, ``code``, ``log``) are written here from our own word lists
and grammars, deterministic for a seed, and unbounded: they produce as many units as a
length asks for. Nothing is copied from essays or benchmark data. The ``folder`` source
reads a user's text files; the ``session`` source renders a recorded ctxmem session or a
JSONL transcript as text. Needle key words (see :mod:`ctxmem.evals.needles`) are drawn
from word lists disjoint from these, so a haystack never contains a needle by accident.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ctxmem.errors import ConfigError, InputError

# --------------------------------------------------------------------------- vocabulary
# Our own lists. Deliberately mundane: the haystack should read as plausible filler.

_SUBJECTS = (
    "the committee", "our neighbour", "the old ferry", "a quiet engineer", "the village council",
    "the night shift", "a travelling surveyor", "the library", "the harbour master", "a young botanist",
    "the weather station", "the orchard crew", "my grandmother", "the survey team", "a retired pilot",
    "the bakery", "the mountain hut", "the choir", "a careful clerk", "the repair shop",
)
_VERBS = (
    "repainted", "measured", "catalogued", "rebuilt", "inspected", "described", "postponed", "recorded",
    "photographed", "mended", "counted", "sketched", "reorganised", "watered", "polished", "compared",
    "questioned", "delivered", "replaced", "studied",
)
_OBJECTS = (
    "the wooden bridge", "every lantern on the pier", "the long hedge", "a box of letters", "the tide tables",
    "the clock tower", "three rusty bicycles", "the stone wall", "the greenhouse roof", "a stack of maps",
    "the footpath signs", "the rain gauges", "the mill wheel", "a crate of apples", "the stair railing",
    "the attic windows", "the fishing nets", "a ledger of accounts", "the chimney flue", "the garden beds",
)
_TIMES = (
    "after the spring fair", "before breakfast", "during the long winter", "on a windy Tuesday",
    "late in the season", "while the market was closed", "after the storm passed", "in the early evening",
    "over several weekends", "before the first frost", "at the end of the month", "without much fuss",
)
_REASONS = (
    "because the paint had started to peel", "so that visitors could find their way",
    "since nobody remembered the last time", "as the insurance form required", "to settle an old argument",
    "because the council asked twice", "so the numbers would finally agree", "for reasons nobody wrote down",
    "because the old one creaked", "to keep the damp out",
)
_SHORT = ("Nobody complained.", "It rained again.", "That was that.", "Work resumed.", "Tea was served.",
          "Nothing else changed.", "Few noticed.", "It took a while.", "Everyone agreed.", "Then it stopped.")
_CODE_WORDS = (
    "buffer", "record", "parser", "window", "cursor", "ledger", "channel", "offset", "payload", "segment",
    "router", "handle", "bucket", "column", "matrix", "vector", "reader", "writer", "signal", "filter",
)
_SERVICES = ("ingest", "scheduler", "billing", "auth", "gateway", "indexer", "mailer", "cache", "exporter", "sync")
_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
_LOG_EVENTS = (
    "request completed", "connection opened", "connection closed", "retrying upstream call", "cache miss",
    "cache refreshed", "job queued", "job finished", "slow query detected", "config reloaded",
    "health check passed", "rate limit applied", "batch flushed", "lease renewed", "checkpoint written",
)


@runtime_checkable
class Source(Protocol):
    """A haystack source: a stable id and an iterator of units (see the module docstring)."""

    @property
    def id(self) -> str:
        """Stable identity: everything that changes the text (kind, seed, file hashes, version)."""
        ...

    @property
    def name(self) -> str: ...

    def units(self) -> Iterator[str]: ...


def _sentence(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:
        return rng.choice(_SHORT)
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if r < 0.55:
        parts.append(rng.choice(_TIMES))
    if r > 0.4:
        parts.append(rng.choice(_REASONS))
    text = " ".join(parts)
    return text[0].upper() + text[1:] + "."


@dataclass(frozen=True)
class ProseSource:
    """Paragraphs of plain narrative sentences from a seeded grammar."""

    seed: int = 0
    name: str = "prose"

    @property
    def id(self) -> str:
        return f"prose:v1:{self.seed}"

    def units(self) -> Iterator[str]:
        rng = random.Random(f"prose:{self.seed}")
        while True:
            n = rng.randint(3, 9)
            for i in range(n):
                s = _sentence(rng)
                prefix = "" if i == 0 else " "
                yield prefix + s + ("\n\n" if i == n - 1 else "")


@dataclass(frozen=True)
class CodeSource:
    """Python-looking modules: functions, assignments, comments, from a seeded grammar."""

    seed: int = 0
    name: str = "code"

    @property
    def id(self) -> str:
        return f"code:v1:{self.seed}"

    def units(self) -> Iterator[str]:
        rng = random.Random(f"code:{self.seed}")
        w = _CODE_WORDS
        while True:
            fn = f"{rng.choice(w)}_{rng.choice(w)}"
            a, b = rng.choice(w), rng.choice(w)
            yield f"def {fn}({a}, {b}={rng.randint(0, 64)}):\n"
            yield f'    """Return the {rng.choice(w)} of {a} after applying {b}."""\n'
            for _ in range(rng.randint(2, 9)):
                k = rng.randrange(5)
                x, y = rng.choice(w), rng.choice(w)
                if k == 0:
                    yield f"    {x} = {a}.{y}({b}, limit={rng.randint(1, 4096)})\n"
                elif k == 1:
                    yield f"    if {x} is None or len({y}) > {rng.randint(2, 512)}:\n"
                    yield f"        {x} = {y}[{rng.randint(0, 9)}:]\n"
                elif k == 2:
                    yield f"    # {_sentence(rng).lower()}\n"
                elif k == 3:
                    yield f"    for {x} in {y}.items():\n"
                    yield f"        {b} += {x}.{rng.choice(w)} * {rng.randint(2, 9)}\n"
                else:
                    yield f"    {x}_{y} = [{', '.join(str(rng.randint(0, 99)) for _ in range(rng.randint(2, 6)))}]\n"
            yield f"    return {rng.choice(w)}\n\n"


@dataclass(frozen=True)
class LogSource:
    """Service log lines: timestamps, levels, services, request ids, latencies."""

    seed: int = 0
    name: str = "log"

    @property
    def id(self) -> str:
        return f"log:v1:{self.seed}"

    def units(self) -> Iterator[str]:
        rng = random.Random(f"log:{self.seed}")
        t = 1_700_000_000.0
        while True:
            t += rng.expovariate(2.0)
            sec = int(t)
            hh, mm, ss = (sec // 3600) % 24, (sec // 60) % 60, sec % 60
            yield (
                f"2024-03-{1 + (sec // 86400) % 28:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{int((t % 1) * 1000):03d}Z "
                f"{rng.choice(_LEVELS):<5} [{rng.choice(_SERVICES)}] {rng.choice(_LOG_EVENTS)} "
                f"req={rng.getrandbits(32):08x} latency_ms={rng.randint(1, 2500)} shard={rng.randint(0, 63)}\n"
            )


# --------------------------------------------------------------------------- splitting

_SENTENCE_END = re.compile(r"(?<=[.!?])[ \t]+(?=\S)|\n")


def split_units(text: str) -> list[str]:
    """Cut ``text`` into units that obey the tokenization contract (module docstring).

    Cuts after every newline and between sentences (``.``/``!``/``?`` followed by
    horizontal space). Newlines stay with the unit before the cut; the horizontal space
    after a sentence end becomes the prefix of the next unit; so does indentation (the
    whitespace at the start of a line). Concatenating the units gives ``text`` back.
    """
    units: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        # a newline ends the unit before the cut; spaces after a sentence start the next one
        cut = m.end() if m.group() == "\n" else m.start()
        if cut > start:
            units.append(text[start:cut])
            start = cut
    if start < len(text):
        units.append(text[start:])
    # Merge runs of blank lines into the unit before them: "\n" alone after "\n" is a
    # separate pre-token either way, but fewer tiny units keep the tables small.
    out: list[str] = []
    for u in units:
        if out and u.strip() == "" and "\n" in u and out[-1].endswith("\n"):
            out[-1] += u
        else:
            out.append(u)
    return out


@dataclass(frozen=True)
class FolderSource:
    """The user's own text files (``*.txt``, ``*.md``, code…), in sorted path order, cycled.

    The id includes a hash of every file's bytes, so edited files never reuse stale
    counts or results.
    """

    path: str
    pattern: str = "**/*"
    name: str = "folder"
    max_file_bytes: int = 50_000_000

    def _files(self) -> list[Path]:
        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise InputError(f"haystack folder {root} does not exist or is not a folder", field="source")
        files = [p for p in sorted(root.glob(self.pattern)) if p.is_file() and p.stat().st_size <= self.max_file_bytes]
        return files

    @property
    def id(self) -> str:
        h = hashlib.sha256()
        for f in self._files():
            h.update(str(f.relative_to(Path(self.path).expanduser())).encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return f"folder:v1:{h.hexdigest()[:16]}"

    def units(self) -> Iterator[str]:
        texts = []
        for f in self._files():
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary files are skipped, not an error: folders hold mixed content
            if text.strip():
                texts.append(text if text.endswith("\n") else text + "\n")
        if not texts:
            raise InputError(
                f"haystack folder {self.path} holds no non-empty UTF-8 text files", field="source"
            )
        units = [u for t in texts for u in split_units(t)]
        while True:  # cycle: a length beyond the folder's size repeats it, stated in the report
            yield from units


def render_messages_as_text(messages: list[object]) -> str:
    """A transcript as plain text: one ``[role]`` header per message, tool calls and results."""
    from ctxmem.messages import (
        Message,
        TextBlock,
        ThinkingBlock,
        ToolResultBlock,
        ToolUseBlock,
        canonical_json,
    )

    lines: list[str] = []
    for m in messages:
        assert isinstance(m, Message)
        for b in m.content:
            if isinstance(b, TextBlock):
                lines.append(f"[{m.role}] {b.text}")
            elif isinstance(b, ThinkingBlock):
                lines.append(f"[{m.role} thinking] {b.thinking}")
            elif isinstance(b, ToolUseBlock):
                lines.append(f"[tool call {b.name}] {canonical_json(b.input)}")
            elif isinstance(b, ToolResultBlock):
                lines.append(f"[tool result{' error' if b.is_error else ''}] {b.text}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SessionTextSource:
    """A recorded session rendered as text: a JSONL transcript path, or ``DB#SESSION_ID``."""

    ref: str
    name: str = "session"

    def _messages(self) -> list[object]:
        if "#" in self.ref:
            from ctxmem.session import Session
            from ctxmem.store import open_existing

            db, _, sid = self.ref.partition("#")
            with open_existing(db) as store:
                return list(Session.open(store, sid).messages())
        from ctxmem.jsonl import parse_jsonl

        path = Path(self.ref).expanduser()
        if not path.is_file():
            raise InputError(f"no session transcript {path} (expected a JSONL file or DB#SESSION_ID)", field="source")
        _, msgs = parse_jsonl(path.read_bytes(), source=str(path))
        return list(msgs)

    @property
    def id(self) -> str:
        digest = hashlib.sha256(render_messages_as_text(self._messages()).encode()).hexdigest()[:16]
        return f"session-text:v1:{digest}"

    def units(self) -> Iterator[str]:
        units = split_units(render_messages_as_text(self._messages()))
        if not units:
            raise InputError(f"session {self.ref} has no content", field="source")
        while True:
            yield from units


GENERATED = ("prose", "code", "log")


def get_source(spec: str, *, seed: int = 0) -> Source:
    """A source from a spec: ``prose``, ``code``, ``log``, ``folder:PATH``, ``session:JSONL|DB#ID``."""
    kind, _, arg = spec.partition(":")
    if kind == "prose":
        return ProseSource(seed)
    if kind == "code":
        return CodeSource(seed)
    if kind == "log":
        return LogSource(seed)
    if kind == "folder" and arg:
        return FolderSource(arg)
    if kind == "session" and arg:
        return SessionTextSource(arg)
    from ctxmem.errors import UnknownNameError

    if kind in ("folder", "session"):
        raise ConfigError(f"source {kind!r} needs an argument: '{kind}:PATH'", field="source")
    raise UnknownNameError("haystack source", spec, [*GENERATED, "folder:PATH", "session:PATH"])
