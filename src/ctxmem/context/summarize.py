"""Summarizers: turn a span of messages into a short text, plus the fidelity guard.

A :class:`Summarizer` is one sync call, ``summarize(messages, *, max_tokens, tokenizer,
prior=None) -> str``; its ``id`` names it in cache keys and reports, so two summarizers
never share a cached summary. Two ship here:

* :class:`ExtractiveSummarizer` — offline and deterministic. It scores every line of the
  span (user constraints, error signatures, result summary lines, run headers, assistant
  decisions, one line per tool call) and keeps the best within ``max_tokens``, counted
  exactly with the given tokenizer, in their original order. Lines already in ``prior``
  are skipped, so a rolling summary does not repeat itself.
* :class:`LLMSummarizer` — renders the span as a plain-text transcript and asks a
  :class:`~ctxmem.clients.base.ModelClient` for a summary (sync, through ``request_sync``).
  Tool calls and results are rendered as text, never as tool blocks: a span cut out of a
  conversation would otherwise send orphan ``tool_use``/``tool_result`` blocks, which
  providers reject. An empty reply is a :class:`SummarizationError`; a reply longer than
  ``max_tokens`` (the model's tokenizer differs from ours) is clipped at a line.

:class:`FidelityGuard` runs after either: the must-keep facts of the span
(:mod:`ctxmem.context.facts`) that the summary dropped are appended under
``Facts kept verbatim:``, within a fact and token cap, and reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from ctxmem.context.facts import (
    DEFAULT_MAX_FACTS,
    KIND_PRIORITY,
    Fact,
    cap_facts,
    error_signature,
    extract_facts,
    missing_facts,
    normalize,
)
from ctxmem.context.profile import GENERIC, FactProfile
from ctxmem.errors import CtxmemError
from ctxmem.messages import (
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    canonical_json,
)
from ctxmem.tokens import Tokenizer

FACTS_HEADER = "Facts kept verbatim:"
#: first line of a message holding a summary that is itself summarized (hierarchical)
SUMMARY_MARKER = "[summary of messages"
_MAX_LINE_CHARS = 240


class SummarizationError(CtxmemError):
    """A summarizer failed (the model errored or replied with nothing).

    Strategies catch it and fall back; nothing of the history is lost.
    """


@runtime_checkable
class Summarizer(Protocol):
    """Summarizes a span of messages into at most ``max_tokens`` tokens of text."""

    @property
    def id(self) -> str:
        """Stable identity for cache keys and reports (changes when its behaviour does)."""
        ...

    def summarize(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        tokenizer: Tokenizer,
        prior: str | None = None,
    ) -> str: ...


# ----------------------------------------------------------------------------- fitting


def clip_line(text: str, limit: int = _MAX_LINE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# Pre-tokenizer patterns (tiktoken ``pat_str``) under which a text's token count is the sum
# of the counts of its "\n"-joined lines, each counted with its joining newline. Why: BPE
# merges only within a pre-token, and under these patterns the pre-token holding a joining
# "\n" ends right after it whenever the next line has no "\r"/"\n", is not all whitespace
# (Python's ``isspace`` covers Unicode White_Space, the regex's ``\s``) and does not start
# with "/" (o200k's punctuation run absorbs "[\r\n/]*"): the only alternatives that can
# consume "\n" are the whitespace ones, where the newline alternative (``\s*[\r\n]+`` /
# ``\s*[\r\n]``) comes first and, backtracking to the last newline of the whitespace run —
# which ends inside the next line — ends at it, and the punctuation run's newline suffix.
# A match ending before the "\n" looks at most one character past its end (``(?!\S)``),
# the same "\n" in both texts; ``\s++$`` (cl100k) ends at the same "\n" when the line
# stands alone. Other encodings (p50k/r50k's ``\s+(?!\S)`` splits " \n" differently) and
# other tokenizers are always counted whole. tests/context/test_joined_count.py fuzzes it.
_NEWLINE_ADDITIVE_PATTERNS = frozenset(
    {
        # o200k_base
        "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        # cl100k_base
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    }
)
_ADDITIVE: dict[str, bool] = {}


def newline_additive(tokenizer: Tokenizer) -> bool:
    """Whether counts of "\n"-joined lines add up exactly (see ``_NEWLINE_ADDITIVE_PATTERNS``):
    only for tiktoken encodings whose pre-tokenizer pattern is one of those checked."""
    tid = str(getattr(tokenizer, "id", ""))
    known = _ADDITIVE.get(tid)
    if known is None:
        inner = getattr(tokenizer, "inner", tokenizer)  # a memo around the tokenizer
        from ctxmem.tokens.quicktok_backend import QuicktokTokenizer
        from ctxmem.tokens.tiktoken_backend import TiktokenTokenizer

        pat = getattr(inner, "pre_tokenizer", None) if type(inner) in (TiktokenTokenizer, QuicktokTokenizer) else None
        known = _ADDITIVE[tid] = pat in _NEWLINE_ADDITIVE_PATTERNS
    return known


def joined_count(tokenizer: Tokenizer, lines: Sequence[str]) -> int:
    """The exact count of ``"\n".join(lines)``.

    From per-line counts (``line + "\n"``, the last line bare) when the tokenizer's
    pre-tokenizer provably splits after each joining newline (:func:`newline_additive`)
    and the lines allow it: no "\r" or "\n" inside, every line after the first with a
    non-whitespace character and not starting with "/". Pays off with a memoizing tokenizer
    (lines repeat from turn to turn, the joined text does not); otherwise the joined text
    is counted.
    """
    if len(lines) > 1 and newline_additive(tokenizer) and _joinable(lines):
        return sum(tokenizer.count_many([*(ln + "\n" for ln in lines[:-1]), lines[-1]]))
    return tokenizer.count("\n".join(lines))


def _joinable(lines: Sequence[str]) -> bool:
    if "\n" in lines[0] or "\r" in lines[0]:
        return False
    return all(ln and ln[0] != "/" and not ln.isspace() and "\n" not in ln and "\r" not in ln for ln in lines[1:])


def _count_text(tokenizer: Tokenizer, text: str, lines: Sequence[str]) -> int:
    """``tokenizer.count(text)`` where ``text == "\n".join(lines)``, through the tokenizer's
    own ``count_joined`` when it has one (the pipeline's memo: per-line counts, exact)."""
    fast = getattr(tokenizer, "count_joined", None)
    return int(fast(text, lines)) if fast is not None else tokenizer.count(text)


def fit_lines(
    candidates: Sequence[tuple[float, str]], tokenizer: Tokenizer, max_tokens: int, *, header: str = ""
) -> str:
    """Join the best lines that fit ``max_tokens`` (exact), in their original order.

    ``candidates`` are ``(score, line)`` in original order; higher scores are taken first,
    ties by position. ``header`` (if any) comes first and counts toward the limit.
    """
    if max_tokens <= 0:
        return ""
    lines = [ln for _, ln in candidates]
    counts = tokenizer.count_many([ln + "\n" for ln in lines]) if lines else []
    used = tokenizer.count(header + "\n") if header else 0
    if used > max_tokens:
        return clip_to_tokens(header, tokenizer, max_tokens)
    order = sorted(range(len(candidates)), key=lambda j: (-candidates[j][0], j))
    chosen: list[int] = []
    for j in order:
        if used + counts[j] <= max_tokens:
            chosen.append(j)
            used += counts[j]
    chosen.sort()

    def render(sel: list[int]) -> tuple[str, list[str]]:
        parts = ([header] if header else []) + [lines[j] for j in sel]
        return "\n".join(parts), parts

    text, parts = render(chosen)
    # Counts of lines are not additive in every BPE; drop the lowest-scored until exact.
    while chosen and _count_text(tokenizer, text, parts) > max_tokens:
        worst = min(chosen, key=lambda j: (candidates[j][0], -j))
        chosen.remove(worst)
        text, parts = render(chosen)
    return text


def clip_to_tokens(text: str, tokenizer: Tokenizer, max_tokens: int) -> str:
    """The longest prefix of whole lines (then characters) within ``max_tokens``."""
    if max_tokens <= 0:
        return ""
    lines = text.splitlines()
    if "\n".join(lines) == text:  # lines joined by "\n" only: countable line by line
        if _count_text(tokenizer, text, lines) <= max_tokens:
            return text
    elif tokenizer.count(text) <= max_tokens:
        return text
    lo, hi = 0, len(lines)
    while lo < hi:  # largest k with lines[:k] fitting
        mid = (lo + hi + 1) // 2
        if tokenizer.count("\n".join(lines[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    if lo > 0:
        return "\n".join(lines[:lo])
    first = lines[0] if lines else text
    a, b = 0, len(first)
    while a < b:
        mid = (a + b + 1) // 2
        if tokenizer.count(first[:mid]) <= max_tokens:
            a = mid
        else:
            b = mid - 1
    return first[:a]


# ----------------------------------------------------------------------------- extractive

_ERROR_HINT = re.compile(r"(error|exception|outofresources|traceback|fatal|panic)", re.I)
# Generic result markers: summary words and run ids (``eval#12``); a workload adds its own
# through FactProfile.result_words.
_RESULT = re.compile(r"(summary|total|overall|mean|best|passed|failed|result|\bPASS\b.*\d|\b[a-z]+#\d+)", re.I)
_RESULT_LOW = re.compile(r"(summary|total|overall|mean|best|passed|failed|result|\bpass\b.*\d|\b[a-z]+#\d+)")
#: a substring every match of ``_RESULT_LOW`` holds: most lines hold none, and checking them
#: in C costs a third of the search (whose last alternative has no literal to skip ahead by)
_RESULT_NEEDS = ("summary", "total", "overall", "mean", "best", "pass", "failed", "result", "#")


def _result_low(low: str) -> bool:
    """``_RESULT_LOW.search(low)`` for lower-cased ASCII ``low``, skipping lines it cannot match."""
    for needle in _RESULT_NEEDS:
        if needle in low:
            return _RESULT_LOW.search(low) is not None
    return False

_DECISION = re.compile(
    r"\b(decid\w*|will|plan|next|switch\w*|revert\w*|commit\w*|instead|because|conclud\w*|fix\w*|try\w*|use)\b",
    re.I,
)
_CONSTRAINT = re.compile(r"\b(must|never|always|keep|don'?t|do not|only|limit|at most|at least)\b", re.I)


def _summary_line_score(line: str) -> float:
    if _CONSTRAINT.search(line) and line.startswith("user:"):
        return 6.0
    if line.startswith("- "):  # a re-pinned fact
        return 5.5
    if _ERROR_HINT.search(line):
        return 5.0
    if _RESULT.search(line):
        return 4.5
    return 7.0 if "tool calls:" in line else 2.0


@dataclass(frozen=True)
class ExtractiveSummarizer:
    """Offline, deterministic: the most informative lines of the span within the budget."""

    name: ClassVar[str] = "extractive"
    #: most tool-output lines considered per result (errors and summaries come first anyway)
    max_lines_per_output: int = 400
    #: the workload's vocabulary: its ``result_words`` also mark result lines
    profile: FactProfile = GENERIC

    @property
    def id(self) -> str:
        return f"extractive:v1:{self.max_lines_per_output}:{self.profile.name}"

    def _is_result(self, line: str) -> bool:
        low = line.lower()
        # lower-cased ASCII matches the case-sensitive pattern exactly, without case folding
        if _result_low(low) if line.isascii() else _RESULT.search(line):
            return True
        words = self.profile.result_words
        return bool(words) and any(w in low for w in words)

    def candidates(self, messages: Sequence[Message], prior: str | None = None) -> list[tuple[float, str]]:
        """(score, line) in message order; duplicates and lines already in ``prior`` removed."""
        seen = {normalize(ln) for ln in (prior or "").splitlines() if ln.strip()}
        out: list[tuple[float, str]] = []
        tool_names: dict[str, str] = {}
        calls: dict[str, int] = {}

        def add(score: float, line: str) -> None:
            line = clip_line(line)
            key = normalize(line)
            if key and key not in seen:
                seen.add(key)
                out.append((score, line))

        for m in messages:
            for b in m.content:
                if isinstance(b, TextBlock) and b.text.startswith(SUMMARY_MARKER):
                    # A summary being summarized again (hierarchical): keep its lines as they are.
                    for ln in b.text.splitlines()[1:]:
                        if ln.strip() and ln.strip() != FACTS_HEADER:
                            add(_summary_line_score(ln), ln)
                elif isinstance(b, TextBlock):
                    for k, ln in enumerate(ln for ln in b.text.splitlines() if ln.strip()):
                        if m.role == "user":
                            add(6.0 if _CONSTRAINT.search(ln) else 4.0, f"user: {ln}")
                        elif _ERROR_HINT.search(ln) or self._is_result(ln):
                            add(3.5, f"assistant: {ln}")
                        else:
                            add(3.0 if _DECISION.search(ln) else (2.0 if k == 0 else 1.0), f"assistant: {ln}")
                elif isinstance(b, ToolUseBlock):
                    tool_names[b.id] = b.name
                    calls[b.name] = calls.get(b.name, 0) + 1
                    add(1.5, f"call {b.name} {clip_line(canonical_json(b.input), 120)}")
                elif isinstance(b, ToolResultBlock):
                    self._result_lines(b, tool_names.get(b.tool_use_id, "tool"), add)
        if calls:
            overview = f"{len(messages)} messages; tool calls: " + ", ".join(
                f"{name}×{n}" for name, n in sorted(calls.items())
            )
            if normalize(overview) not in seen:
                out.insert(0, (7.0, overview))
        return out

    def _result_lines(self, b: ToolResultBlock, tool: str, add: Any) -> None:
        lines = [ln for ln in b.text.splitlines() if ln.strip()][: self.max_lines_per_output]
        tag = f"{tool}{' (error)' if b.is_error else ''}"
        if not lines:
            add(0.5, f"{tag}: (empty output)")
            return
        add(2.5 if not b.is_error else 3.0, f"{tag}: {lines[0]}")
        for ln in lines[1:]:
            sig = error_signature(ln)
            if sig:
                add(5.0, f"{tag}: {sig}")
            elif self._is_result(ln):
                add(4.5, f"{tag}: {ln}")

    def summarize(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        tokenizer: Tokenizer,
        prior: str | None = None,
    ) -> str:
        return fit_lines(self.candidates(messages, prior), tokenizer, max_tokens)


# ----------------------------------------------------------------------------- LLM

DEFAULT_INSTRUCTIONS = (
    "You compress the transcript of an autonomous coding agent's work so the agent can continue "
    "without it. Write a dense summary in plain text (short lines or bullets, no preamble): the "
    "task state, decisions and why, what was tried and the outcome, errors with their exact "
    "messages, results with their exact numbers and run ids, files changed, and open next steps. "
    "Quote file paths, numbers, ids and error messages exactly. Never invent anything."
)


def render_transcript(messages: Sequence[Message], *, max_result_chars: int = 4000) -> str:
    """The span as plain text: tool calls and results become labelled lines, never tool blocks.

    Long tool outputs keep their head and tail (``max_result_chars`` in all).
    """
    names: dict[str, str] = {}
    parts: list[str] = []
    for m in messages:
        for b in m.content:
            if isinstance(b, TextBlock):
                parts.append(f"[{m.role}] {b.text}")
            elif isinstance(b, ThinkingBlock):
                parts.append(f"[assistant thinking] {b.thinking}")
            elif isinstance(b, RedactedThinkingBlock):
                parts.append("[assistant thinking redacted]")
            elif isinstance(b, ToolUseBlock):
                names[b.id] = b.name
                parts.append(f"[assistant calls {b.name} id={b.id}] {canonical_json(b.input)}")
            elif isinstance(b, ToolResultBlock):
                text = b.text
                if len(text) > max_result_chars:
                    half = max_result_chars // 2
                    text = f"{text[:half]}\n… [{len(text) - 2 * half} characters omitted] …\n{text[-half:]}"
                err = " (error)" if b.is_error else ""
                parts.append(f"[result of {names.get(b.tool_use_id, 'tool')} id={b.tool_use_id}{err}]\n{text}")
    return "\n\n".join(parts)


class LLMSummarizer:
    """Summarizes through any :class:`~ctxmem.clients.base.ModelClient` (sync call).

    ``model`` labels the summaries (reports, cache keys); it defaults to ``client.model``.
    The request is one user message: instructions, the prior summary (for context, not to
    be repeated) and the transcript. Failures raise :class:`SummarizationError`.
    """

    name: ClassVar[str] = "llm"

    def __init__(
        self,
        client: Any,
        *,
        model: str | None = None,
        instructions: str | None = None,
        max_result_chars: int = 4000,
        temperature: float | None = 0.0,
    ):
        self.client = client
        self.model = model or str(getattr(client, "model", "") or "model")
        self.instructions = instructions or DEFAULT_INSTRUCTIONS
        self.max_result_chars = max_result_chars
        self.temperature = temperature
        digest = hashlib.sha256(f"{self.instructions}\0{max_result_chars}\0{temperature}".encode()).hexdigest()[:10]
        self.id = f"llm:{self.model}:{digest}"

    def prompt(self, messages: Sequence[Message], *, max_tokens: int, prior: str | None = None) -> str:
        parts = [self.instructions, f"Keep the summary under {max_tokens} tokens."]
        if prior:
            parts.append(f"Summary of the conversation before this part (context only; do not repeat it):\n{prior}")
        parts.append("Transcript to summarize:\n" + render_transcript(messages, max_result_chars=self.max_result_chars))
        return "\n\n".join(parts)

    def summarize(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        tokenizer: Tokenizer,
        prior: str | None = None,
    ) -> str:
        from ctxmem.clients.base import request_sync

        prompt = [Message.user(self.prompt(messages, max_tokens=max_tokens, prior=prior))]
        call = getattr(self.client, "request_sync", None)
        try:
            if callable(call):
                response = call(prompt, max_tokens=max_tokens, temperature=self.temperature)
            else:
                response = request_sync(self.client, prompt, max_tokens=max_tokens, temperature=self.temperature)
        except CtxmemError as exc:
            raise SummarizationError(f"{self.id}: the model request failed: {exc}") from exc
        text = str(getattr(response, "text", "") or "").strip()
        if not text:
            raise SummarizationError(
                f"{self.id}: the model replied with no text (stop reason {getattr(response, 'stop_reason', None)!r})"
            )
        return clip_to_tokens(text, tokenizer, max_tokens)


# ----------------------------------------------------------------------------- guard


@dataclass(frozen=True)
class Guarded:
    """A summary after the fidelity guard."""

    text: str
    #: every must-keep fact of the span that was checked
    facts: tuple[Fact, ...]
    #: facts the summary itself did not contain
    missing: tuple[Fact, ...]
    #: the missing facts appended verbatim (``missing`` minus what the caps left out)
    repinned: tuple[Fact, ...]

    @property
    def left_out(self) -> tuple[Fact, ...]:
        kept = set(self.repinned)
        return tuple(f for f in self.missing if f not in kept)


@dataclass(frozen=True)
class FidelityGuard:
    """Re-pins must-keep facts a summary dropped, within ``max_facts`` and ``max_tokens``."""

    max_facts: int = 24
    #: tokens the appended list may use (header included)
    max_tokens: int = 400
    #: facts extracted per span before checking (higher kinds first)
    extract_cap: int = DEFAULT_MAX_FACTS
    #: the workload's vocabulary (its metric's best value is a must-keep fact)
    profile: FactProfile = GENERIC

    @property
    def id(self) -> str:
        return f"guard:{self.max_facts}:{self.max_tokens}:{self.extract_cap}:{self.profile.name}"

    def facts(self, messages: Sequence[Message], *, start: int = 0) -> tuple[Fact, ...]:
        return tuple(extract_facts(messages, start=start, max_facts=self.extract_cap, profile=self.profile))

    def apply(self, summary: str, facts: Iterable[Fact], tokenizer: Tokenizer) -> Guarded:
        facts = tuple(facts)
        missing = tuple(missing_facts(facts, summary))
        if not missing or self.max_facts <= 0 or self.max_tokens <= 0:
            return Guarded(summary, facts, missing, ())
        sep = "\n\n" if summary else ""
        rank = {k: r for r, k in enumerate(KIND_PRIORITY)}
        chosen = cap_facts(missing, self.max_facts)
        # Higher kinds win the token cap; the list stays in message order.
        candidates = [(-(rank[f.kind] * 10_000 + k), f"- {f.text}") for k, f in enumerate(chosen)]
        block = fit_lines(candidates, tokenizer, self.max_tokens, header=FACTS_HEADER)
        kept_lines = set(block.splitlines()[1:])
        repinned = tuple(f for f in chosen if f"- {f.text}" in kept_lines)
        if not repinned:
            return Guarded(summary, facts, missing, ())
        return Guarded(f"{summary}{sep}{block}", facts, missing, repinned)
