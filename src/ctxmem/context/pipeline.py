"""The pipeline: a core strategy plus a ledger, retrieved outputs and restated facts, under
one hierarchical budget.

Sections, in request order, and who pays for them::

    system + tools                 fixed; counted first
    pinned prefix + pinned facts   verbatim (facts appended to the last pinned message)
    summary / masked history       the core strategy: masking, summarization or window
    recent messages                the core strategy's verbatim tail
    tail: ledger                   ≤ ledger_tokens   — what happened so far, from tool events
    tail: retrieved                ≤ retrieval_tokens — earlier outputs the core left out
    tail: facts restated           the pinned facts again, next to the question
    reserved output                the budget's reserve_output

The tail blocks are reserved from the budget up front (the core builds under what is
left) and appended to the last user message, so the head of the request — pinned
content, summaries, masked history — keeps the core's prompt-cache stability: only the
last message changes from turn to turn, which it does anyway.

Retrieval asks for earlier tool outputs relevant to the pending task (the pinned
messages), the user's latest request and the current step (the last assistant text and
tool calls), among those the core masked or dropped; each retrieved piece names its tool,
event id, message and recall handle; outputs still verbatim in
the context are excluded. Whatever the core, a pipeline with retrieval offers the
``recall`` tool (``extra_tools``) on every build, budgeted as part of the fixed tools: the
retrieved lines name handles, and a tool list that changed when retrieval first found
something would invalidate the provider's cache of everything after it. With a session in a SQLite store it searches FTS5 over the
store; without one, BM25 over the history's tool outputs. ``retriever = "hybrid"`` adds
dense embeddings (:mod:`ctxmem.retrieval`; ``embedder`` picks hashing, MiniLM or the
best installed), cached by content hash.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError

from ctxmem.context._assembly import ColdPasses, PrefixTracker
from ctxmem.context.base import BuildRequest, BuiltContext, StrategyConfig
from ctxmem.context.derived import PrefixSnapshots
from ctxmem.context.history import History, block_events
from ctxmem.context.ledger import LedgerBuilder, render_ledger
from ctxmem.context.masking import RECALL_TOOL
from ctxmem.context.profile import FactProfile, get_profile
from ctxmem.context.summarize import clip_to_tokens, joined_count
from ctxmem.errors import ConfigError, ContextOverflowError
from ctxmem.events import StoredEvent, ToolCallEvent, ToolResultEvent
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.tokens import Budget, Tokenizer
from ctxmem.tokens.counting import DEFAULT_OVERHEAD


class _MemoTokenizer:
    """Counts of the short texts the tail repeats turn after turn (ledger lines, retrieved
    snippets, restated facts), memoized by text; everything else goes to the tokenizer."""

    def __init__(self, inner: Tokenizer):
        self.inner = inner
        self.id = inner.id
        self._counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        n = self._counts.get(text)
        if n is None:
            if len(self._counts) > 4096:
                self._counts.clear()
            n = self._counts[text] = self.inner.count(text)
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if len(self._counts) > 4096:  # bound the memo before looking up, never between
            self._counts.clear()
        missing = [t for t in dict.fromkeys(texts) if t not in self._counts]
        if missing:
            self._counts.update(zip(missing, self.inner.count_many(missing), strict=True))
        return [self._counts[t] for t in texts]

    def count_joined(self, text: str, lines: Sequence[str]) -> int:
        """The count of ``text == "\n".join(lines)``, exact, from the memoized line counts
        where the tokenizer allows (:func:`~ctxmem.context.summarize.joined_count`)."""
        n = self._counts.get(text)
        if n is None:
            n = joined_count(self, lines)
            if len(self._counts) > 4096:
                self._counts.clear()
            self._counts[text] = n
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PipelineConfig(StrategyConfig):
    core: Literal["masking", "summarization", "window"] = Field(
        "masking", description="The strategy that shapes the history: masking, summarization or window."
    )
    core_params: dict[str, Any] = Field(default_factory=dict, description="The core strategy's own Config fields.")
    ledger_tokens: int = Field(400, ge=0, le=100_000, description="Tail budget for the task ledger (0: no ledger).")
    retrieval_tokens: int = Field(
        1200, ge=0, le=200_000, description="Tail budget for retrieved earlier outputs (0: no retrieval)."
    )
    retrieval_k: int = Field(3, ge=1, le=50, description="Earlier outputs retrieved per turn.")
    retriever: Literal["lexical", "hybrid"] = Field(
        "lexical", description="lexical: FTS5/BM25 only; hybrid: plus dense embeddings (slower, cached)."
    )
    embedder: Literal["hashing", "minilm", "auto"] = Field(
        "hashing",
        description=(
            "Dense embedder of the hybrid retriever: hashing (numpy, fast), minilm (all-MiniLM-L6-v2, "
            "needs its packages), auto (minilm when installed, else hashing)."
        ),
    )
    restate_facts: bool = Field(True, description="Restate the pinned facts at the tail, next to the question.")
    tail_fraction: float = Field(
        0.25, gt=0, le=0.5, description="Most of the budget the tail (ledger + retrieval) may take on small budgets."
    )
    fact_profile: str = Field(
        "generic", description="Fact profile (ctxmem.fact_profiles) for the ledger and, unless core_params set one, the core."
    )

    def dependencies(self) -> dict[str, str]:
        from ctxmem.context import STRATEGIES

        deps: dict[str, str] = STRATEGIES.get(self.core).Config(**self.core_params).dependencies()
        return deps


class Pipeline:
    """A core strategy with a ledger, retrieved outputs and restated facts at the tail."""

    name: ClassVar[str] = "pipeline"
    Config = PipelineConfig

    def __init__(
        self, config: PipelineConfig | None = None, *, client: Any = None, fact_profile: FactProfile | None = None,
        **params: object,
    ):
        self.config = config or PipelineConfig(**params)  # type: ignore[arg-type]
        self.profile = get_profile(fact_profile if fact_profile is not None else self.config.fact_profile)
        from ctxmem.context import STRATEGIES, config_error

        cls = STRATEGIES.get(self.config.core)
        try:
            core_config = cls.Config(**self.config.core_params)
        except ValidationError as exc:
            raise config_error(exc, None, prefix="core_params") from None
        except ConfigError as exc:  # a validator's own error (an unknown reducer name)
            raise ConfigError(str(exc), field="core_params") from None
        deps: dict[str, Any] = {"client": client} if self.config.core == "summarization" else {}
        if self.config.core != "window" and "fact_profile" not in self.config.core_params:
            deps["fact_profile"] = self.profile
        self.core = cls(core_config, **deps)
        if self.config.retrieval_tokens > 0:
            # Loaded with the strategy that uses it, not inside its first build (eleven
            # modules: ~15 ms where no bytecode is cached, as under PYTHONDONTWRITEBYTECODE).
            import ctxmem.retrieval.hybrid  # noqa: F401
        self._ledgers: dict[int, LedgerBuilder] = {}
        self._retrievers: dict[int, tuple[Any, int]] = {}
        self._tracker = PrefixTracker()
        self._cold = ColdPasses()
        self._exclude: tuple[tuple[int, int, int, int], int, set[int]] | None = None
        self._counts: _MemoTokenizer | None = None
        #: snapshots of the task ledger and of the retriever's kept postings (derived state)
        self._ledger_snapshots = PrefixSnapshots(LedgerBuilder(self.profile).state_kind())
        self._postings_snapshots = PrefixSnapshots(_POSTINGS_KIND)
        self._last_user: dict[int, tuple[int, int]] = {}
        #: the last retrieved block: ((history, hit ids, cap, tokenizer), text) — a hit's
        #: text and its message index never change in an append-only history
        self._block: tuple[tuple[int, tuple[int, ...], int, str], str] | None = None
        #: (the caller's tools, the same with the recall tool)
        self._with_recall: tuple[object, tuple[Any, ...]] = (None, ())

    # ------------------------------------------------------------------ tail pieces

    def _ledger_text(self, history: History, tokens: int, request: BuildRequest) -> str:
        if tokens <= 0:
            return ""
        lb = self._ledgers.get(history.uid)
        if lb is None:
            if len(self._ledgers) > 8:
                self._ledgers.clear()
                self._ledger_snapshots.clear()
            lb = self._ledgers[history.uid] = self._restore_ledger(request) or LedgerBuilder(self.profile)
        ledger = lb.update(history)
        # a resuming process restores it instead of reading every message (~70 ms at 1M)
        self._ledger_snapshots.save_if_due(request, lb._seen, lb.to_state)
        return render_ledger(ledger, self._memo(request.tokenizer), tokens)

    def _restore_ledger(self, request: BuildRequest) -> LedgerBuilder | None:
        """The ledger builder a previous process saved for this session, when it covers a
        prefix of this history (see :func:`~ctxmem.context.derived.load_prefix`)."""

        def rebuild(n: int, state: Any) -> LedgerBuilder | None:
            lb = LedgerBuilder.from_state(state, self.profile, request.history.uid)
            return lb if lb._seen == n else None

        return self._ledger_snapshots.restore(request, rebuild)

    def _retriever(self, request: BuildRequest) -> Any:
        from ctxmem.retrieval import HybridRetriever

        h = request.history
        entry = self._retrievers.get(h.uid)
        if entry is None:
            if len(self._retrievers) > 4:
                self._retrievers.clear()
                self._postings_snapshots.clear()
            embedder = self.config.embedder if self.config.retriever == "hybrid" else None
            session = request.session
            if session is not None and all(h.event_ids):
                retriever = HybridRetriever.for_session(session, embedder=embedder)
                self._restore_postings(request, retriever)
            else:
                retriever = HybridRetriever(embedder, lexical="bm25")
            entry = (retriever, 0)
        retriever, seen = entry
        if seen < len(h):
            retriever.update(_history_events(h, seen), append_only=True)
            entry = (retriever, len(h))
        self._retrievers[h.uid] = entry
        return retriever

    def _retrieved_text(self, request: BuildRequest, core: BuiltContext, tokens: int) -> tuple[str, tuple[int, ...]]:
        if tokens <= 0:
            return "", ()
        h = request.history
        r = core.report
        if not r.masked and not r.dropped and not r.summarized:
            return "", ()  # everything is still in the context verbatim
        query = self._query(request)
        if not query.strip():
            return "", ()
        retriever = self._retriever(request)
        exclude = self._excluded(h, r)
        found = retriever.search(query, k=self.config.retrieval_k * 3, exclude=exclude)
        # the postings of this search's terms, for a process that resumes the session
        self._postings_snapshots.save_if_due(request, self._retrievers[h.uid][1], retriever.postings_state)
        hits, seen_events = [], set()
        for hit in found:  # one chunk per tool output: k distinct outputs
            if hit.event_id not in seen_events:
                seen_events.add(hit.event_id)
                hits.append(hit)
        hits = hits[: self.config.retrieval_k]
        if not hits:
            return "", ()
        ids = tuple(hit.event_id for hit in hits)
        key = (h.uid, ids, tokens, request.tokenizer.id)
        if self._block is not None and self._block[0] == key:
            return self._block[1], ids  # the same outputs as last turn: the same block
        lines = [
            "Earlier tool outputs retrieved for the task and the latest request "
            "(source: tool, event id, message; recall a handle for the full text):"
        ]
        for hit in hits:
            d = hit.document
            snippet = " ".join(d.text.split())[:600]
            found = h.tool_result(d.tool_use_id)
            where = f" · message {found[0]}" if found is not None else ""
            lines.append(f"- [{d.tool_name} · event {hit.event_id}{where} · handle {d.tool_use_id}] {snippet}")
        text = clip_to_tokens("\n".join(lines), self._memo(request.tokenizer), tokens)
        self._block = (key, text)
        return text, ids

    def _restore_postings(self, request: BuildRequest, retriever: Any) -> None:
        """Retrieval postings a previous process saved for this session (the first search's
        terms are then not looked up and counted again), when they cover a prefix of this
        history; anything that does not fit is ignored."""
        self._postings_snapshots.restore(request, lambda n, state: retriever.restore_postings(state) or None)

    def _excluded(self, h: History, r: Any) -> set[int]:
        """Retrieval ids of the tool results still verbatim in the context (kept, not masked).

        Kept incrementally: between compactions the core keeps ``range(s, n)`` with the same
        masked messages before the new ones, so only the appended messages are read.
        """
        masked: tuple[int, ...] = tuple(r.masked)
        kept = r.kept
        if not (isinstance(kept, range) and kept.step == 1 and kept.stop == len(h)):
            gone = set(masked)
            return {eid for i in kept if i not in gone and h.flags[i].tool_results for eid in _result_ids(h, i)}
        key = (h.uid, kept.start, hash(masked), len(masked))
        ex = self._exclude
        if ex is None or ex[0] != key or ex[1] > kept.stop:
            ex = (key, kept.start, set())
        upto, ids = ex[1], ex[2]
        if upto < kept.stop:
            gone = set(masked[bisect_left(masked, upto) :]) if masked else set()
            for i in range(upto, kept.stop):
                if i not in gone and h.flags[i].tool_results:  # ids the retriever indexes
                    ids.update(_result_ids(h, i))
        self._exclude = (key, kept.stop, ids)
        return ids

    def _query(self, request: BuildRequest) -> str:
        """What retrieval looks for: the pending task (the pinned messages), the user's latest
        request, and what the agent is doing now (the last assistant turn)."""
        h = request.history
        seen, last = self._last_user.get(h.uid, (0, -1))
        if seen > len(h):
            seen, last = 0, -1
        for i in range(max(seen, request.pinned_count), len(h)):
            if h.flags[i].role == "user" and any(isinstance(b, TextBlock) for b in h.messages[i].content):
                last = i
        if len(self._last_user) > 8:
            self._last_user.clear()
        self._last_user[h.uid] = (len(h), last)
        parts = [_text(h.messages[i])[:_QUERY_CHARS] for i in range(request.pinned_count)]
        if last >= 0:
            parts.append(_text(h.messages[last])[:_QUERY_CHARS])
        parts.append(_query(h))
        return " ".join(p for p in parts if p)

    def _memo(self, tok: Tokenizer) -> _MemoTokenizer:
        if self._counts is None or self._counts.id != tok.id:
            self._counts = _MemoTokenizer(tok)
        return self._counts

    # ------------------------------------------------------------------ build

    def _core_build(
        self, request: BuildRequest, facts_tokens: int, ledger_cap: int, retrieval_cap: int
    ) -> tuple[BuiltContext, int]:
        """The core's build under the budget minus the tail reserved for the given caps."""
        per_block = DEFAULT_OVERHEAD.per_block
        b = request.budget
        reserve = facts_tokens + (ledger_cap + per_block if ledger_cap else 0) + (
            retrieval_cap + per_block if retrieval_cap else 0
        )
        if reserve + request.fixed_tokens > b.available:
            raise ContextOverflowError(reserve + request.fixed_tokens, b.available, hint="the pipeline's tail does not fit.")
        inner = dataclasses.replace(request, budget=Budget(b.context_window - reserve, b.reserve_output, b.threshold))
        try:
            return self.core.build(inner), reserve
        except ContextOverflowError as exc:
            raise ContextOverflowError(
                exc.needed + reserve, b.available, hint=f"pipeline core {self.config.core}: {exc}"
            ) from None

    def build(self, request: BuildRequest) -> BuiltContext:
        offered = request.tools
        recall = self.config.retrieval_tokens > 0 and all(t.name != RECALL_TOOL.name for t in offered)
        if recall:  # the core builds as if recall were the caller's tool: budgeted, not re-added
            if self._with_recall[0] is not offered:  # the same tuple turn after turn: counted once
                self._with_recall = (offered, (*offered, RECALL_TOOL))
            request = dataclasses.replace(request, tools=self._with_recall[1])
        with self._cold.over(request):
            built = self._build(request)
        if not recall:
            return built
        extra = (*(t for t in built.extra_tools if t.name != RECALL_TOOL.name), RECALL_TOOL)
        return dataclasses.replace(built, tools=offered, extra_tools=extra)

    def _build(self, request: BuildRequest) -> BuiltContext:
        cfg = self.config
        tok = request.tokenizer
        facts = request.pinned_facts if cfg.restate_facts else ()
        facts_text = "Keep in mind: " + " · ".join(facts) if facts else ""
        memo = self._memo(tok)
        facts_tokens = (memo.count(facts_text) + DEFAULT_OVERHEAD.per_block) if facts_text else 0
        per_block = DEFAULT_OVERHEAD.per_block
        b = request.budget
        # Hierarchical budget: the tail's caps shrink with small budgets so the core keeps most.
        cap = int(b.available * cfg.tail_fraction)
        total_cfg = cfg.ledger_tokens + cfg.retrieval_tokens
        scale = min(1.0, cap / total_cfg) if total_cfg else 1.0
        ledger_cap = int(cfg.ledger_tokens * scale)
        retrieval_cap = int(cfg.retrieval_tokens * scale)
        fixed = request.fixed_tokens
        if fixed + facts_tokens > b.available:
            parts = f"the system prompt and tools ({fixed} tokens)"
            if facts_tokens:
                parts += f" with the restated facts ({facts_tokens})"
            raise ContextOverflowError(fixed + facts_tokens, b.available, hint=f"{parts} alone exceed the budget.")
        try:
            core, _ = self._core_build(request, facts_tokens, ledger_cap, retrieval_cap)
        except ContextOverflowError:
            if not (ledger_cap or retrieval_cap):
                raise
            # The ledger and retrieved outputs are optional: when the core's mandatory
            # content does not fit next to them, build without them.
            ledger_cap = retrieval_cap = 0
            core, _ = self._core_build(request, facts_tokens, 0, 0)
        msgs = list(core.messages)
        # The tail goes on the last user message: the last message, or, when the caller will
        # append the next input (``expect_input``) after the model's final answer, the user
        # message before that answer (the core ended with it; returning the bare core there
        # built the flagship preset as plain masking under the pipeline's shrunk budget).
        at = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), -1)
        if at < 0:
            return core  # no user message to carry the tail (cannot happen for valid histories)
        ledger = self._ledger_text(request.history, ledger_cap, request)
        retrieved, retrieved_ids = self._retrieved_text(request, core, retrieval_cap)
        tail = [t for t in (ledger, retrieved, facts_text) if t]
        sections = dict(core.report.sections)
        added = 0
        for name, text in (("ledger", ledger), ("retrieved", retrieved), ("facts_restated", facts_text)):
            if text:
                n = memo.count(text) + per_block
                sections[name] = n
                added += n
        if tail:
            carrier = msgs[at]
            msgs[at] = Message(carrier.role, carrier.content + tuple(TextBlock(t) for t in tail))
        report = dataclasses.replace(
            core.report,
            strategy=self.name,
            available=b.available,
            tokens_out=core.report.tokens_out + added,
            sections=sections,
            retrieved_event_ids=retrieved_ids,
            headroom_tokens=max(0, b.trigger - core.report.tokens_out - added),
            notes=(*core.report.notes, f"core: {cfg.core}"),
        )
        breakpoints = core.cache_breakpoints
        if tail and at >= 1:
            # The message carrying this turn's tail will be rewritten next turn: a cache
            # breakpoint on it (or after it) would never be read. Put it on the message before,
            # the end of what the next request shares with this one.
            breakpoints = tuple(sorted({b if b < at else at - 1 for b in breakpoints} | {at - 1}))[-3:]
        return dataclasses.replace(core, messages=msgs, report=report, cache_breakpoints=breakpoints)


_QUERY_CHARS = 600
#: the kind of the retriever's saved postings (ctxmem.context.derived)
_POSTINGS_KIND = "retrieval-postings/v1"


def _text(m: Message) -> str:
    return " ".join(b.text for b in m.content if isinstance(b, TextBlock))


def _query(h: History) -> str:
    """What the agent is doing now: the last assistant turn's text and tool calls."""
    for i in range(len(h) - 1, max(-1, len(h) - 6), -1):
        m = h.messages[i]
        if m.role == "assistant":
            parts = [b.text for b in m.content if isinstance(b, TextBlock)]
            parts += [f"{b.name} {' '.join(str(v) for v in b.input.values())}" for b in m.content if isinstance(b, ToolUseBlock)]
            return " ".join(parts)
    return h.messages[-1].text if h.messages else ""


def _result_ids(h: History, i: int) -> list[int]:
    """Retrieval ids of the tool results in message i (see :func:`_history_events`)."""
    ids = h.event_ids[i]
    if ids:
        return list(ids)
    return [_synthetic_id(i, j) for j in range(len(h.messages[i].content))]


def _synthetic_id(i: int, j: int) -> int:
    return (i + 1) * 1024 + j


def _history_events(h: History, start: int) -> Iterator[StoredEvent]:
    """Tool calls and results of messages[start:] as stored events (ids from the store when
    the history came from one, else synthetic ids unique per message and block)."""
    for i in range(start, len(h)):
        m = h.messages[i]
        ids = h.event_ids[i]
        where = block_events(m) if ids else []
        for j, block in enumerate(m.content):
            eid = ids[where[j]] if ids and where[j] < len(ids) else _synthetic_id(i, j)
            if isinstance(block, ToolUseBlock):
                yield StoredEvent(eid, "", None, 0.0, ToolCallEvent(block))
            elif isinstance(block, ToolResultBlock):
                yield StoredEvent(eid, "", None, 0.0, ToolResultEvent(block, h.tool_name(block.tool_use_id)))


__all__ = ["Pipeline", "PipelineConfig"]
