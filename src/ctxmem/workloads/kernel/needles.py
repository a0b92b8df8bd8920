"""Natural needles of a kernel session and probes against a strategy's rendered context.

A *needle* is a fact that appears early in the session's own tool results (or, for the
NaN root cause, in the agent's diagnosis) and matters later: the shared-memory limit, the
device, its compute units, the register cap, the baseline's reference time, the fp16
tolerance, the NaN root cause, the spill quirk, the tuned baseline speedup, the baseline's
error, the occupancy limiter, and the best commit so far. Nothing is planted: the
:class:`NeedleTracker` watches the texts as they are recorded and registers each needle at
its first appearance (message index, token position, the evidence line, the true answer).

A *probe* asks about every needle registered so far against the messages a strategy
rendered for a turn — **without appending anything to the session**: it only reads the
built context. Per (needle, probe) it reports:

``verbatim``    the evidence line appears exactly in the rendered text;
``normalized``  not exactly, but the answer appears next to the needle's keyword
                (whitespace and case folded) — e.g. inside a reducer's gist;
``absent``      neither;

plus whether a simple extractive reader (the needle's regex, over the rendered text) gives
the right answer, and the distance (tokens of history since the fact appeared), which
``scores.py`` buckets into recall by distance. The best commit is the one needle whose
truth moves: its answer is the best commit at probe time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ctxmem.messages import Message
from ctxmem.workloads.kernel.policy import message_texts, parse_facts

Presence = Literal["verbatim", "normalized", "absent"]


@dataclass(frozen=True)
class NeedleSpec:
    name: str
    question: str
    pattern: re.Pattern[str]  # group 1 (and 2) make the answer
    keyword: str  # what a gist must still mention for "normalized"
    source: Literal["tool", "assistant"] = "tool"
    tools: tuple[str, ...] = ()  # only outputs of these tools ("" = any)

    def answer(self, m: re.Match[str]) -> str:
        return "/".join(g for g in m.groups() if g is not None)


NEEDLES: tuple[NeedleSpec, ...] = (
    NeedleSpec("smem_limit", "What is the device's shared-memory limit per block (bytes)?",
               re.compile(r"out of resource: shared memory, Required: \d+, Hardware limit: (\d+)"), "limit"),
    NeedleSpec("device", "Which device are timings measured on?",
               re.compile(r"device: (\S+) · simulated"), "device"),
    NeedleSpec("compute_units", "How many compute units does the device have?",
               re.compile(r"\((\d+) CUs x \d+ blocks/CU\)"), "CUs", tools=("profile",)),
    NeedleSpec("reg_cap", "How many registers per thread are available?",
               re.compile(r"\(\d+ registers needed, (\d+) available\)"), "available"),
    NeedleSpec("baseline_reference_us", "What is the reference time of the mixed_extend shape (us)?",
               re.compile(r"^mixed_extend\s+\d+\s+\S+\s+\d+\s+\d+\s+\d+\s+([\d.]+)\s", re.M), "mixed_extend",
               tools=("benchmark",)),
    NeedleSpec("fp16_tolerance", "What are the fp16 tolerances (atol/rtol)?",
               re.compile(r"fp16 atol=(\S+) rtol=(\S+)"), "fp16"),
    NeedleSpec("nan_root_cause", "What caused the NaN failure?",
               re.compile(r"Root cause of eval#\d+: (prefix_value_load_unmasked)"), "root cause",
               source="assistant"),
    NeedleSpec("spill_head_dim", "At which head_dim does the K tile spill?",
               re.compile(r"\(head_dim=(\d+)\): \d+ bytes spill stores, \d+ bytes spill loads "
                          r"\((?:K|a tl\.dot B) tile"),
               "spill"),
    NeedleSpec("tuned_baseline", "What speedup did the first autotune of the baseline reach?",
               re.compile(r"best config: [^\n]*· (\d+\.\d+)x geomean speedup"), "best config",
               tools=("autotune",)),
    NeedleSpec("baseline_max_abs_err", "What was the baseline's max_abs_err on the dev suite?",
               re.compile(r"^PASSED \d+/\d+ cases · max_abs_err (\S+)", re.M), "max_abs_err", tools=("check",)),
    NeedleSpec("occupancy_limiter", "What limited the baseline's occupancy in the first profile?",
               re.compile(r"\(limited by ([a-z ]+)\)"), "limited by", tools=("profile",)),
    NeedleSpec("best_commit", "Which commit is the best kernel so far?",
               re.compile(r"\[main ([0-9a-f]{7})\] [^\n]*?\d+\.\d+x"), "main"),
)


@dataclass
class Needle:
    spec: NeedleSpec
    message_index: int
    token_position: int  # history tokens before the message
    turn: int
    evidence: str  # the line the fact appeared on
    truth: str


@dataclass(frozen=True)
class ProbeResult:
    needle: str
    turn: int
    distance_tokens: int
    presence: Presence
    answer: str | None
    truth: str
    correct: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _line_of(text: str, m: re.Match[str]) -> str:
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    return text[start: end if end >= 0 else len(text)].strip()


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class NeedleTracker:
    """Registers each needle at its first appearance; keeps the best commit's truth current."""

    needles: dict[str, Needle] = field(default_factory=dict)
    best: tuple[float, str] | None = None

    def observe(self, *, turn: int, message_index: int, token_position: int, tool: str, text: str,
                source: Literal["tool", "assistant"]) -> None:
        for spec in NEEDLES:
            if spec.source != source or (spec.tools and tool not in spec.tools):
                continue
            if spec.name == "best_commit":
                continue
            if spec.name in self.needles:
                continue
            m = spec.pattern.search(text)
            if m:
                self.needles[spec.name] = Needle(spec, message_index, token_position, turn, _line_of(text, m),
                                                 spec.answer(m))
        if source == "tool" and tool == "git_commit":
            commits = parse_facts(text).commits
            for sha, x in commits.items():
                if self.best is None or x > self.best[0]:
                    self.best = (x, sha)
                    spec = next(s for s in NEEDLES if s.name == "best_commit")
                    line = next((ln for ln in text.splitlines() if sha in ln), text.splitlines()[0])
                    self.needles["best_commit"] = Needle(spec, message_index, token_position, turn, line, sha)

    def probe(self, messages: Sequence[Message], *, turn: int, history_tokens: int) -> list[ProbeResult]:
        """Ask about every registered needle against ``messages`` (read only)."""
        texts = message_texts(messages)
        joined = "\n".join(texts)
        folded: str | None = None
        out: list[ProbeResult] = []
        for name, n in sorted(self.needles.items()):
            if n.evidence in joined:
                presence: Presence = "verbatim"
            else:
                folded = _fold(joined) if folded is None else folded
                presence = "normalized" if _near(folded, _fold(n.truth), _fold(n.spec.keyword)) else "absent"
            answer = _extract(n.spec, texts)
            out.append(ProbeResult(name, turn, max(0, history_tokens - n.token_position), presence, answer,
                                   n.truth, answer == n.truth))
        return out


def _near(folded: str, answer: str, keyword: str, width: int = 160) -> bool:
    start = 0
    while True:
        i = folded.find(answer, start)
        if i < 0:
            return False
        if keyword in folded[max(0, i - width): i + len(answer) + width]:
            return True
        start = i + 1


def _extract(spec: NeedleSpec, texts: Sequence[str]) -> str | None:
    """The extractive reader: for the best commit the highest speedup commit line, else the
    first match in the rendered texts."""
    if spec.name == "best_commit":
        best: tuple[float, str] | None = None
        for t in texts:
            for sha, x in parse_facts(t).commits.items():
                if best is None or x > best[0]:
                    best = (x, sha)
        return best[1] if best else None
    for t in texts:
        m = spec.pattern.search(t)
        if m:
            return spec.answer(m)
    return None


Extractor = Callable[[Sequence[str]], str | None]

__all__ = ["NEEDLES", "Needle", "NeedleSpec", "NeedleTracker", "ProbeResult"]
