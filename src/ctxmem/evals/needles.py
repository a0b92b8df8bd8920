"""Needle families: what is hidden in a haystack, what is asked, and what counts as right.

A :class:`NeedleSet` is everything one cell hides and asks: the sentences to place (the
needle or needles, and any distractors) with their depths, the question, the expected
answers, the values that must *not* appear in a correct answer (distractor values), and
the scorer that decides. Families, all seeded and deterministic:

``literal``
    One fact with an unguessable random value (``The archive code assigned to the amber
    falcon is QX7-48213.``); the question repeats the key words.
``multikey``
    The same fact plus near-miss distractors: keys that share one of the two key words
    (``amber heron``, ``copper falcon``), each with its own value. A correct answer names
    the target value and none of the distractor values.
``multivalue``
    Several values for one key spread through the document, plus near-miss distractors
    written the same way for keys sharing one key word (``One archive code assigned to the
    amber heron is …``); the question asks for every value of the target key and the score
    is set-F1, so a distractor value in the answer costs precision (and is flagged).
``nonliteral``
    One of the authored associative needles below: the needle and the question share no
    content word (``… skiing the slopes above Zermatt`` / ``Which person knows the Swiss
    Alps?``); the answer is an invented name. Lexical readers are expected to fail here.
``absent``
    Control: near-miss distractors but no needle; the right answer is ``NOT FOUND``.
``nocontext``
    Control: the literal question with no document at all; measures guessing (should be 0).
``natural``
    Nothing is planted: the needle is a fact that occurs naturally in an agent session's
    tool results (the kernel workload's shared-memory limit, device, tolerances, …; see
    :mod:`ctxmem.workloads.kernel.needles`), chosen by tool-call index in
    :mod:`ctxmem.evals.cells`. Agent sources only.

Key words and names come from lists disjoint from the haystack generators' vocabulary,
and values are drawn from a per-cell RNG, so neither the haystack nor a model's prior can
supply the answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ctxmem.errors import InputError, UnknownNameError

NOT_FOUND = "NOT FOUND"

_KEY_ADJ = ("amber", "copper", "violet", "scarlet", "cobalt", "ivory", "saffron", "emerald", "crimson", "silver",
            "indigo", "ochre", "teal", "maroon", "golden", "azure")
_KEY_NOUN = ("falcon", "heron", "otter", "lynx", "badger", "marten", "osprey", "gecko", "ibis", "tapir", "bison",
             "walrus", "jackal", "puffin", "weasel", "kestrel")
_RELATION = "archive code assigned to the"
_CODE_ALPHA = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_SYLLABLES = ("ka", "vel", "tor", "mi", "zan", "dro", "lu", "sen", "bra", "quo", "fen", "rai", "mox", "ti", "gur",
              "ela", "nov", "pri", "sha", "dev")

#: Authored associative needles: (needle with {name}, question). No content word is shared
#: between a needle and its question (checked by a test); the answer is the name.
NONLITERAL: tuple[tuple[str, str], ...] = (
    ("{name} has spent every winter since childhood skiing the slopes above Zermatt.",
     "Which person knows the Swiss Alps well?"),
    ("{name} keeps a framed photo of the Golden Gate hanging over the desk at home.",
     "Who seems attached to San Francisco?"),
    ("{name} was the only one who could read the menu at the ramen stall in Sapporo.",
     "Which person understands Japanese?"),
    ("{name} got stung while collecting honey from the hives behind the barn.",
     "Who works as a beekeeper?"),
    ("{name} always orders a flat white and a pastel de nata when visiting Lisbon.",
     "Which person has been to Portugal?"),
    ("{name} has an apartment that looks straight onto the Charles Bridge.",
     "Who lives in Prague?"),
    ("{name} spent the night shift delivering twins on the maternity ward.",
     "Which person works as a midwife?"),
    ("{name} had to re-string the cello twice before the concert.",
     "Who plays a musical instrument?"),
    ("{name} cannot eat the birthday cake because it contains gluten.",
     "Which person has coeliac disease?"),
    ("{name} used a sextant to fix the ship's position at noon.",
     "Who knows celestial navigation?"),
    ("{name} was vaccinated against yellow fever before the trip to Manaus.",
     "Which person travelled to Brazil?"),
    ("{name} wrote an entire thesis on the phonology of Basque.",
     "Who is a linguist?"),
    ("{name} keeps insulin pens in the fridge next to the milk.",
     "Which person has diabetes?"),
    ("{name} bought new crampons for the Denali expedition.",
     "Who plans mountaineering in Alaska?"),
    ("{name} rescued a soaked kitten from under the porch and named it Pepper.",
     "Which person adopted a cat?"),
    ("{name} translated the instruction manual from Finnish for the whole office.",
     "Who speaks a Uralic language?"),
    ("{name} can be seen every Sunday morning rowing on the Thames near Putney.",
     "Which person lives in London?"),
    ("{name} finally passed the bar exam on the third attempt.",
     "Who is now a qualified lawyer?"),
    ("{name} was fined for parking a camper van outside the Reichstag.",
     "Which person drove around Berlin?"),
    ("{name} spent the summer excavating Roman coins near Hadrian's Wall.",
     "Who is an archaeologist?"),
)

#: Families whose generated needles changed after results may have been stored: the
#: revision enters the cell's resolved config (and key), so old results are not reused.
REVISIONS: dict[str, int] = {"multivalue": 2}

FAMILIES = ("literal", "multikey", "multivalue", "nonliteral", "absent", "nocontext", "natural")
CONTROLS = ("absent", "nocontext")


@dataclass(frozen=True)
class Insert:
    """One sentence to place: its text, depth in [0, 1], and role (needle or distractor)."""

    text: str
    depth: float
    role: str = "needle"


@dataclass(frozen=True)
class NeedleSet:
    """What one cell hides, asks and expects (see the module docstring)."""

    family: str
    question: str
    answers: tuple[str, ...]  # () means the right answer is NOT FOUND
    inserts: tuple[Insert, ...]
    scorer: str  # contains | set_f1 | abstain
    wrong: tuple[str, ...] = ()  # distractor values a correct answer must not contain
    with_context: bool = True
    multi: bool = False  # the question asks for every value
    #: a fact of several values (a natural needle's groups, which ``answers`` joins with "/"):
    #: a ``contains`` answer is also right when every part appears, in any wording
    parts: tuple[str, ...] = ()

    @property
    def needles(self) -> tuple[Insert, ...]:
        return tuple(i for i in self.inserts if i.role == "needle")

    def to_json(self) -> dict[str, object]:
        return {
            "family": self.family,
            "question": self.question,
            "answers": list(self.answers),
            "wrong": list(self.wrong),
            "scorer": self.scorer,
            "inserts": [{"text": i.text, "depth": i.depth, "role": i.role} for i in self.inserts],
            "with_context": self.with_context,
            **({"parts": list(self.parts)} if self.parts else {}),
        }


def _code(rng: random.Random) -> str:
    letters = "".join(rng.choice(_CODE_ALPHA) for _ in range(2))
    return f"{letters}{rng.randint(2, 9)}-{rng.randint(10000, 99999)}"


def _name(rng: random.Random) -> str:
    n = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return n.capitalize()


def _key(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_KEY_ADJ), rng.choice(_KEY_NOUN)


def _near_misses(rng: random.Random, adj: str, noun: str, n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    while len(out) < n:
        if len(out) % 2 == 0:
            k = (adj, rng.choice([x for x in _KEY_NOUN if x != noun]))
        else:
            k = (rng.choice([x for x in _KEY_ADJ if x != adj]), noun)
        if k not in out:
            out.append(k)
    return out


def _fact(adj: str, noun: str, value: str, *, one_of: bool = False) -> str:
    lead = "One" if one_of else "The"
    return f"{lead} {_RELATION} {adj} {noun} is {value}."


def _question(adj: str, noun: str, *, multi: bool = False) -> str:
    if multi:
        return f"List every {_RELATION} {adj} {noun}."
    return f"What is the {_RELATION} {adj} {noun}?"


def make_needles(family: str, depth: float, seed: int, *, distractors: int = 3, values: int = 4) -> NeedleSet:
    """The needle set of ``family`` for a cell at ``depth`` with ``seed`` (deterministic)."""
    rng = random.Random(f"needles:{family}:{seed}")
    if family not in FAMILIES:
        raise UnknownNameError("needle family", family, FAMILIES)
    if family == "natural":
        raise InputError("natural needles are facts found in an agent session's tool results; "
                         "they are chosen when the cell is built (use an agent source)", field="needle")
    adj, noun = _key(rng)
    value = _code(rng)
    other_depths = [rng.random() for _ in range(max(distractors, values))]
    if family == "literal":
        return NeedleSet(family, _question(adj, noun), (value,), (Insert(_fact(adj, noun, value), depth),), "contains")
    if family == "nocontext":
        return NeedleSet(family, _question(adj, noun), (value,), (), "contains", with_context=False)
    if family in ("multikey", "absent"):
        keys = _near_misses(rng, adj, noun, distractors)
        wrong = tuple(_code(rng) for _ in keys)
        dis = tuple(Insert(_fact(a, n, v), d, "distractor") for (a, n), v, d in zip(keys, wrong, other_depths, strict=False))
        if family == "absent":
            return NeedleSet(family, _question(adj, noun), (), dis, "abstain", wrong=wrong)
        return NeedleSet(family, _question(adj, noun), (value,), (Insert(_fact(adj, noun, value), depth), *dis),
                         "contains", wrong=wrong)
    if family == "multivalue":
        vals = [value] + [_code(rng) for _ in range(values - 1)]
        depths = [depth, *other_depths[:values - 1]]
        ins = tuple(Insert(_fact(adj, noun, v, one_of=True), d) for v, d in zip(vals, depths, strict=True))
        # near misses drawn after everything above, so the needles themselves are unchanged
        keys = _near_misses(rng, adj, noun, distractors)
        wrong = tuple(_code(rng) for _ in keys)
        dis = tuple(Insert(_fact(a, n, v, one_of=True), rng.random(), "distractor")
                    for (a, n), v in zip(keys, wrong, strict=True))
        return NeedleSet(family, _question(adj, noun, multi=True), tuple(vals), ins + dis, "set_f1", wrong=wrong,
                         multi=True)
    # nonliteral
    template, question = NONLITERAL[rng.randrange(len(NONLITERAL))]
    name = _name(rng)
    return NeedleSet(family, question, (name,), (Insert(template.format(name=name), depth),), "contains")


_VALUE = re.compile(r"\b[A-Z]{2}[0-9]-[0-9]{5}\b")


def extract_values(text: str) -> list[str]:
    """The literal values (``QX7-48213`` shape) in a text, in order, deduplicated."""
    seen: dict[str, None] = {}
    for m in _VALUE.finditer(text):
        seen.setdefault(m.group(), None)
    return list(seen)
