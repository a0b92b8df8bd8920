"""Standing instructions: what the user asked for is never silently lost to compaction.

The most reported failure of compaction in the field is that the user's own words go
first: "never do X", "from now on report Y". A strategy that drops (or summarizes) a user
message carries its instructions in a compact **standing instructions** section next to
the pinned task, verbatim, with provenance (message index and event id).

What is carried from a user text message (tool results are not user words):

* every sentence with an instruction cue — never / always / don't / do not / must /
  should / only / avoid / make sure / ensure / from now on / going forward / stop /
  instead / prefer / remember / keep / use / report / please / no longer / at most / at
  least / limit — verbatim (clipped at :data:`MAX_INSTRUCTION_CHARS`);
* a short message (≤ :data:`SHORT_WORDS` words) whole, whether or not it has a cue: a
  short user turn is nearly always a steer;
* nothing from a message of bare acknowledgements ("ok", "continue", "thanks").

:class:`InstructionIndex` reads each message once (append-only); :meth:`section` renders
the instructions of a span. Strategies place the section on the pinned prefix, so it
changes only when their boundary moves (prompt-cache stability) and reserve its tokens
before choosing that boundary. When even the section does not fit next to the pinned
content, the strategy raises :class:`~ctxmem.errors.ContextOverflowError` rather than
drop an instruction silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ctxmem.context.history import History
from ctxmem.messages import Message, TextBlock
from ctxmem.tokens import Tokenizer

INSTRUCTIONS_HEADER = "Standing instructions from the user (earlier messages no longer shown; verbatim):"
MAX_INSTRUCTION_CHARS = 400
SHORT_WORDS = 40

_CUE = re.compile(
    r"\b(never|always|don'?t|do not|must|mustn'?t|should|shouldn'?t|only|avoid|make sure|ensure|from now on|"
    r"going forward|stop|instead|prefer|remember|keep|use|report|please|no longer|at most|at least|limit\w*|"
    r"forbid\w*|require\w*|need to|needs to|skip|exclude|include|ignore)\b",
    re.I,
)
_ACK = re.compile(
    r"^\W*(?:(?:ok(?:ay)?|yes|no|thanks?(?: you)?|continue|go|go on|go ahead|proceed|sure|great|good|done|next)\W*)+$", re.I
)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One carried instruction: the user's words, where they came from."""

    text: str
    message_index: int
    event_id: int | None

    def render(self) -> str:
        where = f"message {self.message_index}" + (f", event {self.event_id}" if self.event_id is not None else "")
        return f"- [{where}] {self.text}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_INSTRUCTION_CHARS else text[: MAX_INSTRUCTION_CHARS - 1].rstrip() + "…"


def instructions_of(message: Message) -> list[str]:
    """The instructions a user message carries (see the module docstring), verbatim."""
    if message.role != "user":
        return []
    text = "\n".join(b.text for b in message.content if isinstance(b, TextBlock)).strip()
    if not text or _ACK.match(text):
        return []
    if len(text.split()) <= SHORT_WORDS:
        return [_clip(text)]
    out = []
    for sentence in _SENTENCE.split(text):
        if sentence.strip() and _CUE.search(sentence):
            out.append(_clip(sentence))
    return out


@dataclass
class InstructionIndex:
    """The instructions of every user text message of one append-only history."""

    _uid: int | None = None
    _seen: int = 0
    items: list[Instruction] = field(default_factory=list)
    _cache: dict[tuple[int, int, str], tuple[str, int]] = field(default_factory=dict)

    def update(self, history: History) -> None:
        if self._uid != history.uid or self._seen > len(history):
            self._uid, self._seen, self.items, self._cache = history.uid, 0, [], {}
        for i in range(self._seen, len(history)):
            if history.flags[i].role == "user":
                ids = history.event_ids[i]
                for t in instructions_of(history.messages[i]):
                    self.items.append(Instruction(t, i, ids[0] if ids else None))
        self._seen = len(history)

    def between(self, start: int, stop: int) -> list[Instruction]:
        return [x for x in self.items if start <= x.message_index < stop]

    def section(self, start: int, stop: int, tokenizer: Tokenizer) -> tuple[str, int]:
        """(text, number of instructions) of messages[start:stop]; "" when there are none.

        Never capped: a strategy reserves what this costs, or refuses the budget.
        """
        key = (start, stop, tokenizer.id)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        items = self.between(start, stop)
        # The same words said twice (a repeated reminder) are carried once, at their latest.
        latest: dict[str, Instruction] = {}
        for x in items:
            latest[" ".join(x.text.lower().split())] = x
        chosen = sorted(latest.values(), key=lambda x: x.message_index)
        text = "\n".join([INSTRUCTIONS_HEADER, *(x.render() for x in chosen)]) if chosen else ""
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = (text, len(chosen))
        return text, len(chosen)


__all__ = ["INSTRUCTIONS_HEADER", "Instruction", "InstructionIndex", "instructions_of"]
