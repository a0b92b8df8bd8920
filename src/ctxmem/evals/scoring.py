"""Scorers: deterministic rules first, an LLM judge optional, and their agreement.

Rule scorers take a response and the expected answers and return a score in [0, 1]:

* :func:`exact` — the response equals an answer (after stripping).
* :func:`normalized` — equal after :func:`normalize` (case, punctuation, whitespace,
  articles folded away).
* :func:`contains` — some normalized answer occurs in the normalized response.
* :func:`all_parts` — every part of a several-value answer occurs (a natural needle's
  ``atol/rtol`` is right as "atol=2e-03, rtol=1e-02").
* :func:`regex` — a pattern matches the response.
* :func:`set_f1` — F1 between the set of predicted items and the set of answers.

:func:`score_needles` applies a :class:`~ctxmem.evals.needles.NeedleSet`'s own scorer
(``contains`` with distractor exclusion, ``set_f1``, or ``abstain`` for the needle-absent
control) and returns the score, whether it counts as correct, and every rule score for the
record. The :class:`LLMJudge` asks a model through any ``ModelClient`` whether the answer
is right; :func:`agreement` reports how often it agrees with a rule scorer (raw agreement
and Cohen's kappa), which is how a judge earns trust before anyone relies on it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ctxmem.evals.needles import NOT_FOUND, NeedleSet, extract_values

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "-"})


def normalize(text: str) -> str:
    """Lowercase, drop punctuation (hyphens kept: they are part of codes), articles, extra space."""
    t = text.lower().translate(_PUNCT)
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


def exact(response: str, answers: Sequence[str]) -> float:
    return float(any(response.strip() == a.strip() for a in answers))


def normalized(response: str, answers: Sequence[str]) -> float:
    r = normalize(response)
    return float(any(r == normalize(a) for a in answers))


def contains(response: str, answers: Sequence[str]) -> float:
    r = f" {normalize(response)} "
    return float(any(f" {normalize(a)} " in r for a in answers if normalize(a)))


def regex(response: str, pattern: str) -> float:
    return float(re.search(pattern, response) is not None)


def _items(response: str) -> set[str]:
    values = extract_values(response)
    if values:
        return {normalize(v) for v in values}
    return {normalize(p) for p in re.split(r"[,;\n]|\band\b", response) if normalize(p)}


def set_f1(response: str, answers: Sequence[str]) -> float:
    """F1 between the items named in the response and the answers (order ignored)."""
    gold = {normalize(a) for a in answers}
    pred = _items(response)
    if not gold and not pred:
        return 1.0
    tp = len(gold & pred)
    if tp == 0:
        return 0.0
    p, r = tp / len(pred), tp / len(gold)
    return 2 * p * r / (p + r)


def abstained(response: str) -> bool:
    """The response says the information is not there. An empty reply (a model that hit
    ``max_tokens`` or returned no text) says nothing: not an abstention, as the judge
    prompt grades it."""
    return normalize(NOT_FOUND) in normalize(response)


def answer_parts(needles: NeedleSet) -> tuple[str, ...]:
    """The values a several-part answer is made of: ``needles.parts``, or for a natural
    needle whose answer joins them with "/" (the Workload protocol's answer), the split."""
    if needles.parts:
        return needles.parts
    if needles.family == "natural" and len(needles.answers) == 1 and "/" in needles.answers[0]:
        return tuple(p for p in needles.answers[0].split("/") if p.strip())
    return ()


def all_parts(response: str, parts: Sequence[str]) -> float:
    """1 when every part occurs in the normalized response (each as :func:`contains`)."""
    return float(bool(parts) and all(contains(response, [p]) for p in parts))


@dataclass(frozen=True)
class Score:
    score: float
    correct: bool
    rules: dict[str, float]
    chose_distractor: bool = False


def score_needles(needles: NeedleSet, response: str) -> Score:
    """Score ``response`` with the needle set's scorer; every rule score is kept for the record."""
    answers = needles.answers
    rules = {
        "exact": exact(response, answers) if answers else 0.0,
        "normalized": normalized(response, answers) if answers else 0.0,
        "contains": contains(response, answers) if answers else 0.0,
        "set_f1": set_f1(response, answers) if answers else 0.0,
        "abstain": float(abstained(response)),
    }
    parts = answer_parts(needles)
    if parts:
        rules["all_parts"] = all_parts(response, parts)
    wrong = contains(response, needles.wrong) > 0 if needles.wrong else False
    if needles.scorer == "abstain":
        s = rules["abstain"] if not extract_values(response) else 0.0
        return Score(s, s == 1.0, rules, wrong)
    if needles.scorer == "set_f1":
        s = rules["set_f1"]
        return Score(s, s == 1.0, rules, wrong)
    s = max(rules["contains"], rules.get("all_parts", 0.0)) if not wrong else 0.0
    return Score(s, s == 1.0, rules, wrong)


# --------------------------------------------------------------------------- LLM judge

JUDGE_PROMPT = """You grade answers to a retrieval question. Reply with exactly one word: CORRECT or INCORRECT.

Question: {question}
Reference answer(s): {answers}
Answer to grade: {response}

An answer is CORRECT when it gives the reference answer (all of them, if there are several) and nothing that contradicts it. If the reference is "{not_found}", the answer is CORRECT only if it says the information is not in the document."""


class LLMJudge:
    """Grades an answer with a model through any :class:`~ctxmem.clients.ModelClient`."""

    def __init__(self, client: Any, *, max_tokens: int = 8):
        self.client = client
        self.max_tokens = max_tokens

    @property
    def id(self) -> str:
        return f"judge:{getattr(self.client, 'model', '?')}"

    async def judge(self, question: str, answers: Sequence[str], response: str) -> tuple[bool, Any]:
        from ctxmem.messages import Message

        prompt = JUDGE_PROMPT.format(
            question=question, answers="; ".join(answers) or NOT_FOUND, response=response or "(empty)",
            not_found=NOT_FOUND,
        )
        resp = await self.client.request([Message.user(prompt)], max_tokens=self.max_tokens, temperature=0.0)
        verdict = resp.text.strip().upper()
        return verdict.startswith("CORRECT"), resp.usage


def agreement(rule: Iterable[bool], judge: Iterable[bool]) -> dict[str, float]:
    """Raw agreement and Cohen's kappa between two binary labelings of the same items."""
    pairs = list(zip(rule, judge, strict=True))
    n = len(pairs)
    if n == 0:
        return {"n": 0, "agreement": float("nan"), "kappa": float("nan")}
    po = sum(a == b for a, b in pairs) / n
    pa = sum(a for a, _ in pairs) / n
    pb = sum(b for _, b in pairs) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    kappa = 1.0 if pe == 1 else (po - pe) / (1 - pe)
    return {"n": n, "agreement": po, "kappa": kappa}
