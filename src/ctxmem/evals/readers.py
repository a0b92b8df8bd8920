"""Readers: who answers a cell's question from its context.

Any :class:`~ctxmem.clients.ModelClient` is a reader. For runs without an API,
:class:`ExtractiveReader` is a ``ModelClient`` too (it answers ``request`` like a model),
so the runner, the response cache and the cost accounting treat it like any other. It
genuinely searches the context it is sent — it never sees the needle set:

1. find the question (the ``Question:`` line of the last user message);
2. split every other text in the request (documents, tool results, tool inputs) into
   sentences and lines;
3. rank them against the question — ``lexical``: IDF-weighted coverage of the question's
   content words; ``embedding``: cosine similarity with an
   :class:`~ctxmem.retrieval.Embedder` (``minilm`` when the bundled model is installed,
   else ``hashing``; vectors cached per text, so a haystack shared by many cells is
   embedded once);
4. answer from the best sentence (every sentence that qualifies, for a "list every"
   question): the value after the last question word it matched, or else the proper name
   it contains that the question does not; ``NOT FOUND`` when no sentence covers enough
   of the question (lexical) or is similar enough (embedding).

The lexical reader is strong on literal needles and near-miss distractors and, by
design, blind to non-literal ones; the embedding reader can bridge some associations and
is fooled by near misses. Both are baselines, not models.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from ctxmem.clients.base import BaseClient, CacheBreakpoints, Response, ThinkingConfig, Usage
from ctxmem.errors import InputError
from ctxmem.evals.needles import NOT_FOUND
from ctxmem.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    canonical_json,
)

QUESTION_PREFIX = "Question:"

_STOP = frozenset(
    ["a", "an", "the", "is", "are", "was", "were", "be", "been", "of", "to", "in", "on", "at", "for", "by", "with", "from", "and", "or", "what", "which", "who", "whom", "whose", "list", "every", "all", "any", "value", "values", "person", "someone", "answer", "only", "if", "it", "its", "this", "that", "document", "does", "not", "contain", "reply", "exactly", "found", "now", "do", "did", "has", "have", "had", "as", "into", "about"]
)
_WORD = re.compile(r"[a-z0-9]+")
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_LEAD_SKIP = frozenset({"is", "was", "are", "were", "=", ":", "-", "equals", "be"})


def question_block(question: str, *, multi: bool = False) -> str:
    """The question text a cell appends after the context (the reader looks for it)."""
    how = "every value, separated by commas" if multi else "the answer only"
    return (
        f"\n\n{QUESTION_PREFIX} {question}\n"
        f"Answer from the document above with {how}. If the document does not contain it, "
        f"reply exactly {NOT_FOUND}."
    )


def split_request(messages: Sequence[Message]) -> tuple[str, list[str]]:
    """(question, context texts) of a request; raises if there is no ``Question:`` line."""
    question = ""
    texts: list[str] = []
    for m in messages:
        for b in m.content:
            if isinstance(b, TextBlock):
                if QUESTION_PREFIX in b.text and m.role == "user":
                    head, _, tail = b.text.partition(QUESTION_PREFIX)
                    question = tail.strip().splitlines()[0] if tail.strip() else ""
                    if head.strip():
                        texts.append(head)
                else:
                    texts.append(b.text)
            elif isinstance(b, ToolResultBlock):
                texts.append(b.text)
            elif isinstance(b, ToolUseBlock):
                texts.append(canonical_json(b.input))
            elif isinstance(b, ThinkingBlock):
                texts.append(b.thinking)
    if not question:
        raise InputError(f"no '{QUESTION_PREFIX}' line in the request: the extractive reader answers questions only")
    return question, texts


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def _clean(token: str) -> str:
    return token.strip(".,;:!?\"'()[]{}")


def extract_answer(sentence: str, question: str) -> str:
    """The value a sentence gives for a question (see the module docstring)."""
    qterms = set(_terms(question))
    words = sentence.split()
    last = -1
    for i, w in enumerate(words):
        if any(t in qterms for t in _WORD.findall(w.lower())):
            last = i
    if last >= 0:
        tail = [_clean(w) for w in words[last + 1:]]
        tail = [w for w in tail if w and w.lower() not in _LEAD_SKIP]
        if tail:
            return tail[0]
    for w in words:
        c = _clean(w.split("'")[0])
        if c[:1].isupper() and c.lower() not in qterms and c.lower() not in _STOP and len(c) > 1:
            return c
    return ""


class ExtractiveReader(BaseClient):
    """An offline reader that searches the request's context (see the module docstring)."""

    def __init__(
        self,
        mode: Literal["lexical", "embedding"] = "lexical",
        *,
        embedder: Any = None,
        min_coverage: float = 0.85,
        min_similarity: float = 0.35,
        multi_ratio: float = 0.95,
    ):
        if mode not in ("lexical", "embedding"):
            raise InputError(f"unknown extractive mode {mode!r}; expected lexical or embedding", field="mode")
        self.mode = mode
        self.min_coverage = min_coverage
        self.min_similarity = min_similarity
        self.multi_ratio = multi_ratio
        if embedder is None and mode == "embedding":
            # chosen now (building one loads no model), so the reader's id — the response
            # cache's key — is the same for its first answer and its last
            from ctxmem.retrieval import CachedEmbedder, MemoryEmbeddingCache, get_embedder

            embedder = CachedEmbedder(get_embedder("auto"), MemoryEmbeddingCache())
        self._embedder = embedder
        self.model = f"extractive-{mode}" if embedder is None else f"extractive-{mode}:{embedder.id}"

    # ---------------------------------------------------------------- ranking

    def _sentences(self, texts: Sequence[str]) -> list[str]:
        out: list[str] = []
        for t in texts:
            out.extend(s.strip() for s in _SPLIT.split(t) if s and s.strip())
        return out

    def _lexical(self, question: str, sentences: Sequence[str]) -> list[float]:
        q = set(_terms(question))
        if not q:
            return [0.0] * len(sentences)
        hits = [q.intersection(_WORD.findall(s.lower())) for s in sentences]
        n = len(sentences)
        df = {t: sum(t in h for h in hits) for t in q}
        idf = {t: math.log(1 + (n + 1) / (df[t] + 0.5)) for t in q}
        total = sum(idf.values())
        return [sum(idf[t] for t in h) / total for h in hits]

    def embedder(self) -> Any:
        if self._embedder is None:  # a lexical reader asked for one: its id stays lexical
            from ctxmem.retrieval import CachedEmbedder, MemoryEmbeddingCache, get_embedder

            self._embedder = CachedEmbedder(get_embedder("auto"), MemoryEmbeddingCache())
        return self._embedder

    def _embedding(self, question: str, sentences: Sequence[str]) -> list[float]:
        emb = self.embedder()
        vecs = emb.embed(list(sentences))
        qv = emb.embed([question])[0]
        return [float(x) for x in vecs @ qv]

    def answer(self, messages: Sequence[Message]) -> str:
        """The answer to the request's question, from its context alone."""
        question, texts = split_request(messages)
        sentences = self._sentences(texts)
        if not sentences:
            return NOT_FOUND
        if self.mode == "lexical":
            scores, floor = self._lexical(question, sentences), self.min_coverage
        else:
            scores, floor = self._embedding(question, sentences), self.min_similarity
        best = max(range(len(sentences)), key=lambda i: (scores[i], -i))
        if scores[best] < floor:
            return NOT_FOUND
        multi = question.lower().startswith("list every")
        chosen = [i for i, s in enumerate(scores) if s >= max(floor, scores[best] * self.multi_ratio)] if multi else [best]
        answers: list[str] = []
        for i in chosen:
            a = extract_answer(sentences[i], question)
            if a and a not in answers:
                answers.append(a)
        return ", ".join(answers) if answers else NOT_FOUND

    async def request(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int,
        temperature: float | None = None,
        cache_breakpoints: CacheBreakpoints | None = None,
        thinking: ThinkingConfig | None = None,
    ) -> Response:
        text = await asyncio.to_thread(self.answer, messages)
        return Response(content=(TextBlock(text),), stop_reason="end_turn", usage=Usage(0, 0), model=self.model)


READERS = ("extractive", "extractive-lexical", "extractive-embedding")

#: needle families each offline reader cannot answer by design (see the module docstring)
_BLIND = {
    "lexical": frozenset({"nonliteral", "natural"}),
    "embedding": frozenset({"natural"}),
}


def reader_kind(spec: str) -> str:
    """``lexical`` or ``embedding`` for the offline extractive readers, else ``model``."""
    if spec in ("extractive", "extractive-lexical"):
        return "lexical"
    if spec == "extractive-embedding" or spec.startswith("extractive-embedding:"):
        return "embedding"
    return "model"


def blind_families(spec: str) -> frozenset[str]:
    """Needle families the reader ``spec`` cannot answer by design (empty for models).

    The lexical reader answers from sentences sharing the question's words, so a
    non-literal needle (no shared words) or a natural one (a fact phrased by a tool, asked
    in other words) is out of its reach; the embedding reader bridges some associations but
    not a natural fact's free-form question. A miss there is the reader's, not the
    strategy's — the report marks those cells instead of counting them as forgetting.
    """
    return _BLIND.get(reader_kind(spec), frozenset())


def reader_description(spec: str) -> str:
    """One line for a report: what the reader is and what its accuracy means."""
    kind = reader_kind(spec)
    if kind == "lexical":
        return ("offline lexical extractive reader (a baseline, not a model): answers a literal needle whenever "
                "it survives, so its accuracy measures the strategy's survival; blind to non-literal and natural "
                "needles")
    if kind == "embedding":
        return ("offline embedding extractive reader (a baseline, not a model): bridges some associations, is "
                "fooled by near misses; blind to natural needles")
    return "model reader (answers from the built context)"


def get_reader(spec: str, **kw: Any) -> Any:
    """A reader from a spec: ``extractive[-lexical|-embedding]`` or any client spec
    (``anthropic:MODEL``, ``openai:MODEL``, ``local:PATH``…, see :func:`ctxmem.clients.get_client`)."""
    if spec in ("extractive", "extractive-lexical"):
        return ExtractiveReader("lexical")
    if spec == "extractive-embedding":
        return ExtractiveReader("embedding")
    if spec.startswith("extractive-embedding:"):
        from ctxmem.retrieval import CachedEmbedder, MemoryEmbeddingCache, get_embedder

        emb = CachedEmbedder(get_embedder(spec.partition(":")[2]), MemoryEmbeddingCache())
        return ExtractiveReader("embedding", embedder=emb)
    from ctxmem.clients import get_client

    return get_client(spec, **kw)
