"""Standing instructions: what the user asked for is never silently lost to compaction.

The most reported failure of compaction in the field is that the user's own words go
first: "never do X", "from now on report Y". A strategy that drops (or summarizes) a user
message carries its instructions in a compact **standing instructions** section next to
the pinned task, verbatim, with provenance (message index and event id).

What is carried from a user text message (tool results are not user words):

* every sentence with an instruction cue — never / always / don't / do not / must /
  should / only / avoid / make sure / ensure / from now on / going forward / stop /
  instead / prefer / remember / keep / use / report / please / no longer / at most / at
  least / limit / under no circumstances / hard rule / rule: / stay away from / stick to /
  let's / I want / I'd like / refrain / … (see ``_CUE``) — verbatim (clipped at
  :data:`MAX_INSTRUCTION_CHARS`);
* the same cues in a few other languages (German, French, Spanish, Italian, Portuguese,
  Russian, Chinese, Japanese, Korean: ``_CUE_INTL``), and any sentence naming a concrete
  setting (``num_warps=8``, ``--fast-math``) whatever its language; sentences end at
  ``.!?;`` and at ``。！？；``;
* a short message (≤ :data:`SHORT_WORDS` words and ≤ :data:`MAX_INSTRUCTION_CHARS`
  characters) whole, whether or not it has a cue: a short user turn is nearly always a steer;
* nothing from a message of bare acknowledgements ("ok", "continue", "thanks").

How a span's instructions become a section (:meth:`InstructionIndex.section`):

* the same words said twice (a repeated reminder) are carried once, at their latest;
* a **template** — more than :data:`MAX_VARIANTS` different texts of one shape once
  numbers and quoted values are blanked (:func:`~ctxmem.context.salience.shape`), such as
  a harness status line posted every turn — is carried by its latest instance only. A
  user who words one rule a few ways with different numbers keeps every wording;
* with a token ``cap`` (only when the whole section does not fit, see
  :meth:`ctxmem.context.memory.Carry.settle`) the entries are ranked — instruction-cue
  bearing first, then the most recent — and the lowest ranked are left out. The section
  says how many messages were merged or left out, and so does the build report: nothing
  is left out silently.

The section depends only on the span (and the cap), so the same history gives the same
section, and between moves of a strategy's boundary it is byte-identical (prompt-cache
stability).

:class:`InstructionIndex` reads each message once (append-only); :meth:`section` renders
the instructions of a span. Strategies place the section on the pinned prefix, so it
changes only when their boundary moves and reserve its tokens before choosing that
boundary. When even a capped section does not fit next to the pinned content, the
strategy builds without it and its report says so.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field

from ctxmem.context.history import History
from ctxmem.context.salience import shape
from ctxmem.messages import Message, TextBlock
from ctxmem.tokens import Tokenizer

INSTRUCTIONS_HEADER = "Standing instructions from the user (earlier messages no longer shown; verbatim):"
MAX_INSTRUCTION_CHARS = 400
SHORT_WORDS = 40
#: a shape said in more than this many different texts is a template (a status line)
MAX_VARIANTS = 3

_CUE = re.compile(
    r"\b(never|always|don['’]?t|do not|must|mustn['’]?t|should|shouldn['’]?t|only|avoid|make sure|ensure|from now on|"
    r"going forward|stop|instead|prefer|remember|keep|use|report|please|no longer|at most|at least|limit\w*|"
    r"forbid\w*|require\w*|need to|needs to|skip|exclude|include|ignore|"
    # wordings of a rule without the words above (generic English, not one session's)
    r"under no circumstances?|in no case|no matter what|hard rule|rule is|rules?:|"
    r"stay away from|steer clear of|stick (?:to|with)|let['’]?s|let us|i want|i['’]?d like|i would like|i need|"
    r"we need|refrain|not allowed|off[- ]limits|do(?:n['’]?t| not) ever|under any circumstances?|"
    r"from here on|henceforth|in future|in the future|be sure|be careful|whatever you do)(?!\w)",
    re.I,
)
_ACK = re.compile(
    r"^\W*(?:(?:ok(?:ay)?|yes|no|thanks?(?: you)?|continue|go|go on|go ahead|proceed|sure|great|good|done|next)\W*)+$", re.I
)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])|\n+")
#: the same cues in other languages a user may write in (a rule is a rule whatever its language)
_CUE_INTL = re.compile(
    r"(?<!\w)(niemals|nie wieder|immer|keinesfalls|auf keinen fall|unbedingt|ab jetzt|künftig|muss|müssen|"
    r"jamais|toujours|surtout pas|il faut|désormais|à partir de maintenant|ne (?:\w+ )?(?:pas|jamais)|"
    r"nunca|siempre|jamás|de ahora en adelante|a partir de ahora|hay que|no (?:\w+ )?nunca|"
    r"sempre|d'ora in poi|a partir de agora|"
    r"никогда|всегда|обязательно|отныне)(?!\w)"
    r"|绝不|绝对不|不要|不准|禁止|必须|务必|一定要|以后|今后|从现在起|"
    r"決して|絶対に|しないで|してはいけない|必ず|今後|これから|"
    r"절대|반드시|앞으로|하지 마",
    re.I,
)
#: a concrete setting (``num_warps=8``, ``--fast-math``, ``BLOCK_M: 64``): worth carrying from any sentence
_SETTING = re.compile(r"\b[A-Za-z_][\w.-]*\s?=\s?[\w.+-]+|(?<!\w)--?[a-z][\w-]{2,}")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One carried instruction: the user's words, where they came from."""

    text: str
    message_index: int
    event_id: int | None
    #: it has an instruction cue (a bare short message has none): ranked first under a cap
    cued: bool = False
    #: the text with numbers and quoted values blanked: what a template's instances share
    shape: str = ""

    def render(self) -> str:
        where = f"message {self.message_index}" + (f", event {self.event_id}" if self.event_id is not None else "")
        return f"- [{where}] {self.text}"


@dataclass(frozen=True, slots=True)
class InstructionSection:
    """The standing-instructions section of one span (see the module docstring)."""

    #: the rendered section ("" when nothing is carried)
    text: str = ""
    #: instructions carried
    count: int = 0
    #: instructions merged into a later instance of their template (a repeated status line)
    merged: int = 0
    #: instructions left out for lack of room (lowest ranked first), never silently
    omitted: int = 0


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_INSTRUCTION_CHARS else text[: MAX_INSTRUCTION_CHARS - 1].rstrip() + "…"


def message_text(message: Message) -> str:
    """A message's text blocks joined by newlines, stripped: what its instructions are read from."""
    return "\n".join(b.text for b in message.content if isinstance(b, TextBlock)).strip()


def carried_whole(text: str) -> bool:
    """Whether a user text is short enough to be carried whole: short in words and in
    characters (a Chinese or Japanese message has few spaces)."""
    return len(text.split()) <= SHORT_WORDS and len(text) <= MAX_INSTRUCTION_CHARS


def instructions_of(message: Message) -> list[str]:
    """The instructions a user message carries (see the module docstring), verbatim."""
    if message.role != "user":
        return []
    text = message_text(message)
    if not text or _ACK.match(text):
        return []
    if carried_whole(text):
        return [_clip(text)]
    out = []
    for sentence in _SENTENCE.split(text):
        if sentence.strip() and (_CUE.search(sentence) or _CUE_INTL.search(sentence) or _SETTING.search(sentence)):
            out.append(_clip(sentence))
    return out


@dataclass
class InstructionIndex:
    """The instructions of every user text message of one append-only history."""

    _uid: int | None = None
    _seen: int = 0
    items: list[Instruction] = field(default_factory=list)
    _cache: dict[tuple[int, int, str, int | None], InstructionSection] = field(default_factory=dict)
    #: tokens of each rendered line, by tokenizer (a capped section is chosen line by line)
    _line_tokens: dict[tuple[str, str], int] = field(default_factory=dict)

    def update(self, history: History) -> None:
        if self._uid != history.uid or self._seen > len(history):
            self._uid, self._seen, self.items, self._cache, self._line_tokens = history.uid, 0, [], {}, {}
        for i in range(self._seen, len(history)):
            if history.flags[i].role == "user":
                ids = history.event_ids[i]
                for t in instructions_of(history.messages[i]):
                    self.items.append(Instruction(t, i, ids[0] if ids else None, _CUE.search(t) is not None, shape(t)))
        self._seen = len(history)

    def between(self, start: int, stop: int) -> list[Instruction]:
        lo = bisect_left(self.items, start, key=lambda x: x.message_index)
        hi = bisect_left(self.items, stop, key=lambda x: x.message_index)
        return self.items[lo:hi]

    def section(self, start: int, stop: int, tokenizer: Tokenizer, cap: int | None = None) -> InstructionSection:
        """The section of messages[start:stop] (empty when there are none).

        Uncapped, every distinct instruction is carried (templates by their latest
        instance); with ``cap`` (tokens) the lowest ranked are left out to fit it.
        """
        key = (start, stop, tokenizer.id, cap)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        kept, merged = _distinct(self.between(start, stop))
        omitted = 0
        if cap is not None:
            kept, omitted = self._fit(kept, tokenizer, cap)
        text = "\n".join([INSTRUCTIONS_HEADER, *(x.render() for x in kept)]) if kept else ""
        if text and (merged or omitted):
            text += "\n" + _left_out_line(merged, omitted)
        out = InstructionSection(text, len(kept), merged, omitted)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = out
        return out

    def _fit(self, items: list[Instruction], tokenizer: Tokenizer, cap: int) -> tuple[list[Instruction], int]:
        """The highest ranked of ``items`` (cue-bearing first, then the most recent) whose
        lines fit ``cap`` tokens next to the header, in message order; and how many are left out."""
        # the header and the left-out line (a bound: its numbers have at most 7 digits)
        room = cap - tokenizer.count(INSTRUCTIONS_HEADER) - tokenizer.count(_left_out_line(9_999_999, 9_999_999)) - 1
        chosen: list[Instruction] = []
        for x in sorted(items, key=lambda x: (not x.cued, -x.message_index)):
            line = x.render()
            k = (tokenizer.id, line)
            n = self._line_tokens.get(k)
            if n is None:
                n = self._line_tokens[k] = tokenizer.count(line) + 1  # and its newline
            if n <= room:
                chosen.append(x)
                room -= n
        chosen.sort(key=lambda x: x.message_index)
        return chosen, len(items) - len(chosen)


def _distinct(items: list[Instruction]) -> tuple[list[Instruction], int]:
    """The instructions to carry, in message order, and how many templates merged away.

    The same words said twice are carried once, at their latest (a repeated reminder: not
    counted as merged). A shape with more than :data:`MAX_VARIANTS` different texts is a
    template (a status line posted every turn): only its latest instance is carried.
    """
    latest: dict[str, Instruction] = {}
    for x in items:
        latest[" ".join(x.text.lower().split())] = x
    by_shape: dict[str, list[Instruction]] = {}
    for x in latest.values():
        by_shape.setdefault(x.shape or shape(x.text), []).append(x)
    kept: list[Instruction] = []
    merged = 0
    for group in by_shape.values():
        if len(group) > MAX_VARIANTS:
            merged += len(group) - 1
            kept.append(max(group, key=lambda x: x.message_index))
        else:
            kept.extend(group)
    kept.sort(key=lambda x: x.message_index)
    return kept, merged


def _left_out_line(merged: int, omitted: int) -> str:
    parts = []
    if merged:
        parts.append(f"{merged} earlier instances of repeated status-like messages")
    if omitted:
        parts.append(f"{omitted} lower-ranked instructions, for lack of room")
    return "- (not shown: " + "; ".join(parts) + ")"


__all__ = ["INSTRUCTIONS_HEADER", "MAX_VARIANTS", "Instruction", "InstructionIndex", "InstructionSection", "instructions_of"]
