"""Rolling, hierarchical summarization with provenance, a fidelity guard and a safe fallback.

Once the history passes the budget's trigger, the messages between the pinned prefix and
a cut point ``s`` are replaced by a summary placed after the pinned content (appended as
a text block to the last pinned message, or prepended to the first kept message when
nothing is pinned); ``messages[s:]`` are kept verbatim. ``s`` is a safe cut
(:class:`~ctxmem.context.invariants.SafeCuts`) snapped to the boundary grid, so it moves
only at compactions: between them every build sends a byte-identical prefix and calls
no summarizer.

**Hierarchy.** The summarized span is split into chunks of about ``chunk_tokens`` on a
grid of absolute token positions, so a chunk, once complete, never changes. Each chunk
is summarized once (the last, partial chunk again at each compaction). When the joined
summaries exceed the summary budget, aligned groups of ``fanout`` summaries are
summarized together, level by level (like digits of a number: leaves 0–3 become one
level-1 summary, 0–15 one level-2 summary…), until they fit; a last resort merges
everything into one. Every summary is cached per (span start, span end, summarizer id,
limits) in the strategy instance, keyed by the span's content fingerprint, not by the
History object, so a history reloaded from the store hits the same cache.

**Fidelity.** After each summary, the must-keep facts of its span (paths, numbers, ids,
error signatures, user constraints, the best result; :mod:`ctxmem.context.facts`) that it
dropped are appended verbatim (:class:`~ctxmem.context.summarize.FidelityGuard`).

The fidelity guard also checks each chunk's most salient tool-output lines
(``salient_facts``, scored on the chunk alone so a chunk's summary never depends on what
came after it): an LLM summary that paraphrased a limit or a path away gets the line back.
Around the summary, the strategy carries the standing instructions of the summarized user
messages and, with ``facts_tokens``, a facts section of the span's most salient lines
(:mod:`ctxmem.context.memory`).

**Provenance.** ``Report.summarized`` holds the summarized message indices, and a note
lists their source event ids (``History.event_ids``); :attr:`Summarization.last_summary`
keeps them too. With ``request.session`` set, each new summary is recorded once as a
:class:`~ctxmem.events.CompactionEvent` (strategy, tokens before/after, source event ids,
summary), so any context sent can be rebuilt from the log.

**Failure.** A summarizer that raises or replies with nothing never costs history: the
failure is recorded (a report note, and a note event when a session is given) and the
strategy falls back — ``extractive`` summarizes the span offline instead, ``window`` and
``masking`` delegate the build to those strategies. A failed span is retried at the next
compaction, not on every build.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ctxmem.context._assembly import (
    ColdPasses,
    Output,
    PrefixTracker,
    chain_events_of_kind,
    finish,
    grid_step,
    id_ranges,
    snap_up,
)
from ctxmem.context.base import BuildRequest, BuiltContext, StrategyConfig, _cached_count
from ctxmem.context.builtins import Window, WindowConfig, _CutsCache
from ctxmem.context.derived import DAMAGED, derived_store, pack, store_derived, unpack
from ctxmem.context.facts import Fact, cap_facts
from ctxmem.context.history import History
from ctxmem.context.invariants import SafeCuts
from ctxmem.context.masking import RECALL_TOOL, Masking, MaskingConfig, recall_tool_cost
from ctxmem.context.memory import Carried, Carry, Settled, split_sections
from ctxmem.context.profile import FactProfile, get_profile
from ctxmem.context.salience import SalienceIndex
from ctxmem.context.summarize import (
    SUMMARY_MARKER,
    ExtractiveSummarizer,
    FidelityGuard,
    LLMSummarizer,
    SummarizationError,
    Summarizer,
    clip_to_tokens,
)
from ctxmem.errors import ConfigError, ContextOverflowError
from ctxmem.messages import Message, TextBlock
from ctxmem.tokens import Tokenizer
from ctxmem.tokens.counting import DEFAULT_OVERHEAD

#: tokens kept for the summary block's header line
HEADER_TOKENS = 40
#: below this, a summary node is not worth writing (the budget is too small)
MIN_NODE_TOKENS = 24


class SummarizationConfig(StrategyConfig):
    summarizer: Literal["extractive", "llm"] = Field(
        "extractive", description="Who writes summaries: offline extractive, or an LLM (pass client= to the strategy)."
    )
    fallback: Literal["extractive", "window", "masking"] = Field(
        "extractive", description="When the summarizer fails: summarize extractively, or build as window/masking."
    )
    chunk_tokens: int = Field(8000, ge=64, le=1_000_000, description="History tokens summarized per chunk.")
    chunk_summary_tokens: int = Field(
        400, ge=MIN_NODE_TOKENS, le=100_000, description="Most tokens of one summary, re-pinned facts included."
    )
    summary_tokens: int = Field(
        2000, ge=MIN_NODE_TOKENS + HEADER_TOKENS, le=200_000, description="Most tokens of the whole summary block."
    )
    summary_fraction: float = Field(
        0.25, gt=0, le=0.9, description="The summary block's cap as a fraction of the available budget."
    )
    fanout: int = Field(4, ge=2, le=64, description="Summaries merged into one at each level of the hierarchy.")
    fidelity_guard: bool = Field(True, description="Re-pin must-keep facts a summary dropped.")
    fact_tokens: int = Field(160, ge=0, le=100_000, description="Most tokens of re-pinned facts per summary.")
    max_facts: int = Field(16, ge=0, le=1000, description="Most facts re-pinned per summary.")
    compaction_step: float = Field(
        0.2, gt=0, le=1, description="Boundary grid as a fraction of the budget: larger means rarer compactions."
    )
    summarizer_model: str = Field(
        "agent", description="The LLM summarizer's client: 'agent' (the caller's own client) or a client spec."
    )
    carry_instructions: bool = Field(
        True, description="Carry the instructions of summarized user messages in a standing-instructions section."
    )
    facts_tokens: int = Field(
        0, ge=0, le=200_000, description="Cap of the facts section (salient lines of summarized outputs); 0: none."
    )
    facts_fraction: float = Field(0.1, gt=0, le=0.5, description="The facts section's cap as a fraction of the budget.")
    reversible: bool = Field(
        True, description="With a facts section: offer the recall tool its lines' recall handles name."
    )
    salient_facts: int = Field(
        8, ge=0, le=200, description="Salient lines per summarized chunk the fidelity guard checks and re-pins."
    )
    fact_profile: str = Field("generic", description="Fact profile (ctxmem.fact_profiles entry point).")
    instructions: str | None = Field(None, description="LLM summarizer instructions (default: a built-in prompt).")
    max_result_chars: int = Field(
        4000, ge=200, le=1_000_000, description="Characters of each tool output shown to the LLM summarizer."
    )

    def dependencies(self) -> dict[str, str]:
        return {"client": self.summarizer_model} if self.summarizer == "llm" else {}

    @model_validator(mode="after")
    def _consistent(self) -> SummarizationConfig:
        if self.chunk_summary_tokens + HEADER_TOKENS > self.summary_tokens:
            raise ValueError(
                f"summary_tokens ({self.summary_tokens}) must leave room for one summary "
                f"(chunk_summary_tokens {self.chunk_summary_tokens}) plus a {HEADER_TOKENS}-token header"
            )
        return self


@dataclass(frozen=True)
class SummaryNode:
    """One summary of ``messages[start:end]`` at a level of the hierarchy (0: a chunk)."""

    start: int
    end: int
    level: int
    text: str
    tokens: int
    facts: tuple[Fact, ...]
    repinned: tuple[Fact, ...]
    summarizer_id: str
    #: why the configured summarizer was not used (None: it was)
    failure: str | None = None
    #: the boundary at which it failed (retried at another boundary)
    failed_at: int | None = None
    #: the summaries it merged (empty for a chunk)
    children: tuple[SummaryNode, ...] = ()


#: chunk summaries are saved in the store once this many more exist than were saved
_SAVE_MIN_CHUNKS = 16
#: summary nodes kept in memory per strategy instance (cleared past it). A 30M-token session has
#: ~3,900 chunks of 8K tokens and ~1,300 merges: at 4,096 the cache was cleared during the cold
#: build and the next compaction re-merged (8.7 s at 30M); 65,536 nodes hold ~500M tokens' chunks
_NODES_KEPT = 1 << 16


@dataclass(frozen=True)
class SummaryBlock:
    """The summary placed in a context: its text, nodes and provenance."""

    start: int
    end: int
    text: str
    tokens: int
    nodes: tuple[SummaryNode, ...]
    level: int
    event_ids: tuple[int, ...]
    failures: tuple[str, ...] = ()

    @property
    def repinned(self) -> tuple[Fact, ...]:
        return tuple(f for n in self.nodes for f in n.repinned)


class _Fallback(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Limits:
    cap: int  # tokens of the whole block text
    node: int  # tokens of one node, facts included
    facts: int  # tokens of one node's re-pinned facts

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.cap, self.node, self.facts)


@dataclass
class _Placement:
    key: tuple[Any, ...] | None = None
    msgs: list[Message] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    extra_tokens: int = 0


class Summarization:
    """Rolling, hierarchical summaries of older history; recent messages verbatim."""

    name: ClassVar[str] = "summarization"
    Config = SummarizationConfig

    def __init__(
        self,
        config: SummarizationConfig | None = None,
        *,
        client: Any = None,
        summarizer: Summarizer | str | None = None,
        fact_profile: FactProfile | None = None,
        **params: object,
    ):
        if isinstance(summarizer, str):  # Summarization(summarizer="llm") means the config field
            params["summarizer"], summarizer = summarizer, None
        self.config = config or SummarizationConfig(**params)  # type: ignore[arg-type]
        cfg = self.config
        if summarizer is not None:
            self.summarizer: Summarizer = summarizer
        elif cfg.summarizer == "llm":
            if client is None:
                raise ConfigError(
                    "summarizer = 'llm' needs a model client: Summarization(config, client=...), or "
                    "preset.builder(client=...) / Agent(client, session, preset=...)", field="summarizer"
                )
            self.summarizer = LLMSummarizer(client, instructions=cfg.instructions, max_result_chars=cfg.max_result_chars)
        else:
            self.summarizer = ExtractiveSummarizer(profile=get_profile(fact_profile or cfg.fact_profile))
        self._extractive = ExtractiveSummarizer(profile=get_profile(fact_profile or cfg.fact_profile))
        self._carry = Carry(
            instructions=cfg.carry_instructions,
            facts_tokens=cfg.facts_tokens,
            facts_fraction=cfg.facts_fraction,
            profile=fact_profile if fact_profile is not None else cfg.fact_profile,
        )
        self._nodes: dict[tuple[Any, ...], SummaryNode] = {}
        self._blocks: dict[tuple[Any, ...], SummaryBlock] = {}
        #: chunk summaries saved in the session's store (``derived_state``) by this or an
        #: earlier process, by a key that holds across processes (see :meth:`_leaf_key`):
        #: (session id, {key: node}, how many were saved or loaded)
        self._stored: tuple[str, dict[str, SummaryNode], int] | None = None
        self._failed: dict[tuple[Any, ...], str] = {}
        self._recorded: set[tuple[str, int, str]] = set()
        #: (block, session id) last seen by :meth:`_record`: between compactions every turn
        #: hands it the same block, and hashing its source ids (a tuple as long as the
        #: summarized span) cost ~1.4 ms a turn at 10M tokens
        self._last_recorded: tuple[SummaryBlock, str] | None = None
        self._summary_count: tuple[SummaryBlock, str, int] | None = None
        #: per session: (summary, source ids) of this strategy's compactions in its log
        self._logged: dict[str, set[tuple[str | None, tuple[int, ...]]]] = {}
        # the last block's report notes: rendering its source ids is O(summarized span), once per block
        self._notes_of: tuple[SummaryBlock, tuple[str, ...]] | None = None
        self._noted: set[tuple[str, str]] = set()
        self._tracker = PrefixTracker()
        self._cold = ColdPasses()
        self._cuts = _CutsCache()
        self._placement = _Placement()
        self._window: Window | None = None
        self._masking: Masking | None = None
        #: the summary of the last build (None when it summarized nothing)
        self.last_summary: SummaryBlock | None = None
        #: summarizer calls made by this instance (the configured one and the fallback)
        self.calls = 0

    # -- limits and keys ---------------------------------------------------------------

    def _limits(self, request: BuildRequest) -> _Limits | None:
        cfg = self.config
        cap = min(cfg.summary_tokens, int(request.budget.available * cfg.summary_fraction))
        node = min(cfg.chunk_summary_tokens, cap - HEADER_TOKENS)
        if node < MIN_NODE_TOKENS:
            return None
        facts = min(cfg.fact_tokens, node // 2) if cfg.fidelity_guard else 0
        return _Limits(cap, node, facts)

    def _guard(self, limits: _Limits) -> FidelityGuard:
        return FidelityGuard(max_facts=self.config.max_facts, max_tokens=limits.facts, profile=self._carry.profile)

    @staticmethod
    def _fingerprint(h: History, a: int, b: int) -> tuple[Any, ...]:
        # Content identity of messages[a:b] without reading all of it: positions, total
        # tokens, and the first and last messages (their hashes are cached by Python).
        return (a, b, h.cum[b] - h.cum[a], hash(h.messages[a]), hash(h.messages[b - 1]), h.event_ids[a], h.event_ids[b - 1])

    # -- summarizing -------------------------------------------------------------------

    def _run(
        self, summarizer: Summarizer, msgs: Sequence[Message], max_tokens: int, tok: Tokenizer, prior: str | None
    ) -> str:
        self.calls += 1
        text = summarizer.summarize(msgs, max_tokens=max_tokens, tokenizer=tok, prior=prior)
        if not isinstance(text, str) or not text.strip():
            raise SummarizationError(f"{summarizer.id} returned an empty summary")
        return text

    def _node(
        self,
        key: tuple[Any, ...],
        h: History,
        start: int,
        end: int,
        level: int,
        msgs: Sequence[Message],
        facts: Sequence[Fact],
        prior: str | None,
        limits: _Limits,
        boundary: int,
        children: tuple[SummaryNode, ...] = (),
    ) -> SummaryNode:
        cached = self._nodes.get(key)
        if cached is not None and (cached.failure is None or cached.failed_at == boundary):
            return cached
        tok = h.tokenizer
        guard = self._guard(limits)
        max_summary = max(1, limits.node - limits.facts - (4 if limits.facts else 0))
        failure = None
        used = self.summarizer.id
        try:
            text = self._run(self.summarizer, msgs, max_summary, tok, prior)
        except Exception as exc:  # any summarizer failure: history must survive it
            failure = f"{self.summarizer.id} failed on messages {start}-{end - 1}: {type(exc).__name__}: {exc}"
            if self.config.fallback != "extractive" or isinstance(self.summarizer, ExtractiveSummarizer):
                raise _Fallback(failure) from exc
            used = self._extractive.id
            text = self._run(self._extractive, msgs, max_summary, tok, prior)
        text = clip_to_tokens(text.strip(), tok, max_summary)
        repinned: tuple[Fact, ...] = ()
        if limits.facts:
            g = guard.apply(text, facts, tok)
            text, repinned = g.text, g.repinned
        text = clip_to_tokens(text, tok, limits.node)
        node = SummaryNode(
            start, end, level, text, tok.count(text), tuple(facts), repinned, used, failure,
            boundary if failure else None, children,
        )
        self._remember(key, node)
        return node

    def _leaves(self, h: History, p: int, s: int) -> list[tuple[int, int, bool]]:
        """Chunks covering [p, s): (start, end, complete). Chunk ends are the first messages
        at or past multiples of ``chunk_tokens`` from the pinned prefix, a grid fixed by the
        append-only history, so a complete chunk never changes; the last one may be partial."""
        step = self.config.chunk_tokens
        base = h.cum[p]
        spans: list[tuple[int, int, bool]] = []
        a = p
        while a < s:
            k = (h.cum[a] - base) // step + 1
            b = bisect_left(h.cum, base + k * step, lo=a + 1)
            if b > s:
                spans.append((a, s, False))
                break
            spans.append((a, b, True))
            a = b
        return spans

    def _leaf(
        self, h: History, a: int, b: int, prior: str | None, limits: _Limits, boundary: int, *, keep: bool = False
    ) -> SummaryNode:
        """The summary of chunk [a, b); ``keep``: a complete chunk, whose summary is saved in the store."""
        extra = (self.summarizer.id, limits.key, self.config.max_facts, hash(prior))
        key = ("leaf", self._fingerprint(h, a, b), *extra)
        cached = self._nodes.get(key)
        if cached is not None and (cached.failure is None or cached.failed_at == boundary):
            return cached
        stored = self._stored[1] if self._stored is not None else None
        skey = self._leaf_key(h, a, b, prior, limits) if stored is not None else None
        hit = self._saved_node(key, skey)
        if hit is not None:
            return hit
        node = self._new_leaf(key, h, a, b, prior, limits, boundary)
        if keep and stored is not None and skey is not None and node.failure is None:
            stored[skey] = node
        return node

    def _saved_node(self, key: tuple[Any, ...], skey: str | None) -> SummaryNode | None:
        """The node saved in the store under ``skey`` (see :meth:`_load_leaves`), now also
        kept in memory under ``key``; None when there is none."""
        hit = self._stored[1].get(skey) if self._stored is not None and skey is not None else None
        if hit is not None:
            self._remember(key, hit)
        return hit

    def _remember(self, key: tuple[Any, ...], node: SummaryNode) -> None:
        if len(self._nodes) > _NODES_KEPT:
            self._nodes.clear()
        self._nodes[key] = node

    def _new_leaf(
        self, key: tuple[Any, ...], h: History, a: int, b: int, prior: str | None, limits: _Limits, boundary: int
    ) -> SummaryNode:
        msgs = h.messages[a:b]
        facts: tuple[Fact, ...] = ()
        if limits.facts:
            facts = self._guard(limits).facts(msgs, start=a)
            if self.config.salient_facts:
                # The span's most salient tool-output lines, scored on the span alone (so a
                # chunk's summary is the same whatever came after it): an LLM summary that
                # drops them gets them re-pinned.
                index = SalienceIndex.of_messages(msgs, start=a, profile=self._carry.profile)
                top = index.facts(a, b, limit=self.config.salient_facts)
                facts = (*(Fact(f.text, "salient", f.message_index) for f in top), *facts)
        return self._node(key, h, a, b, 0, msgs, facts, prior, limits, boundary)

    def _merge(
        self, h: History, children: Sequence[SummaryNode], level: int, limits: _Limits, boundary: int,
        *, keep: bool = False,
    ) -> SummaryNode:
        """The summary merging ``children``; ``keep``: a merge of complete chunks only (it never
        changes), saved in the store with the chunk summaries."""
        a, b = children[0].start, children[-1].end
        key = ("merge", level, self._fingerprint(h, a, b), tuple(c.text for c in children), self.summarizer.id, limits.key)
        cached = self._nodes.get(key)
        if cached is not None and (cached.failure is None or cached.failed_at == boundary):
            return cached
        stored = self._stored[1] if self._stored is not None and keep else None
        skey = self._merge_key(h, level, children, limits) if stored is not None else None
        hit = self._saved_node(key, skey)
        if hit is not None:
            return hit
        msgs = [Message.user(f"{SUMMARY_MARKER} {c.start}-{c.end - 1}]\n{c.text}") for c in children]
        facts = cap_facts([f for c in children for f in c.facts], self._guard(limits).extract_cap)
        node = self._node(key, h, a, b, level, msgs, facts, None, limits, boundary, tuple(children))
        if stored is not None and skey is not None and node.failure is None:
            stored[skey] = node
        return node

    def _block(self, request: BuildRequest, p: int, s: int, limits: _Limits) -> SummaryBlock:
        h = request.history
        key = ("block", self._fingerprint(h, p, s), self.summarizer.id, limits.key, self.config.fanout,
               self.config.chunk_tokens, self.config.max_facts)
        cached = self._blocks.get(key)
        if cached is not None:
            return cached
        self._load_leaves(request)
        block = self._new_block(request, p, s, limits, key)
        self._save_leaves(request)
        return block

    # -- chunk summaries kept in the session's store ------------------------------------
    #
    # A summary of a complete chunk never changes (the chunk grid is fixed by the append-only
    # history), and summarizing every chunk of a 1M-token session costs ~1.5 s (extractive) or
    # one model call per chunk (LLM), so they are saved in the store and a later process
    # that opens the session reuses them. The key holds across processes: the chunk's
    # positions and tokens, the event ids of its first and last message (an event id fixes
    # the chain up to it), the summary before it and the limits; the kind holds this
    # strategy's configuration, summarizer and tokenizer. tests/context/test_derived_state.py.

    _LEAVES_VERSION: ClassVar[int] = 2  # 2: merges of complete chunks are saved too

    def _leaves_kind(self, tok: Tokenizer) -> str:
        import hashlib

        ident = "\x00".join((self.config.model_dump_json(), self.summarizer.id, self._carry.profile.name, tok.id))
        return f"summary-chunks/v{self._LEAVES_VERSION}/{hashlib.sha256(ident.encode()).hexdigest()[:16]}"

    @staticmethod
    def _leaf_key(h: History, a: int, b: int, prior: str | None, limits: _Limits) -> str | None:
        import hashlib

        first, last = h.event_ids[a], h.event_ids[b - 1]
        if not first or not last:
            return None  # messages not from a store: no key that outlives this process
        before = hashlib.sha256(prior.encode()).hexdigest()[:16] if prior is not None else "-"
        return f"{a}:{b}:{h.cum[b] - h.cum[a]}:{first[0]}:{last[-1]}:{limits.key}:{before}"

    @staticmethod
    def _merge_key(h: History, level: int, children: Sequence[SummaryNode], limits: _Limits) -> str | None:
        import hashlib

        a, b = children[0].start, children[-1].end
        first, last = h.event_ids[a], h.event_ids[b - 1]
        if not first or not last:
            return None
        kids = hashlib.sha256("\x00".join(c.text for c in children).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"m{level}:{a}:{b}:{h.cum[b] - h.cum[a]}:{first[0]}:{last[-1]}:{limits.key}:{kids}"

    def _load_leaves(self, request: BuildRequest) -> None:
        at = derived_store(request)
        if at is None:
            self._stored = None
            return
        store, session_id = at
        if self._stored is not None and self._stored[0] == session_id:
            return
        nodes: dict[str, SummaryNode] = {}
        try:
            got = store.load_derived(session_id, self._leaves_kind(request.tokenizer))
            if got is not None:
                data = unpack(got[1])
                # chunks first, then merges level by level (a merge names its children's keys)
                for k, row in sorted(data.items(), key=lambda kv: len(kv[1]) > 7 and int(kv[1][7])):
                    start, end, text, tokens, facts, repinned, used = row[:7]
                    level, kids = (int(row[7]), [nodes.get(str(c)) for c in row[8]]) if len(row) > 7 else (0, [])
                    if any(c is None for c in kids):
                        continue  # a child that did not load: merged again if needed
                    nodes[str(k)] = SummaryNode(
                        int(start), int(end), level, str(text), int(tokens),
                        tuple(Fact(str(t), kind, int(i)) for t, kind, i in facts),
                        tuple(Fact(str(t), kind, int(i)) for t, kind, i in repinned), str(used),
                        children=tuple(c for c in kids if c is not None),
                    )
        except DAMAGED:
            nodes = {}  # a damaged row: summarize again
        self._stored = (session_id, nodes, len(nodes))

    def _save_leaves(self, request: BuildRequest) -> None:
        """Save the chunk summaries when at least :data:`_SAVE_MIN_CHUNKS` (and a quarter)
        more exist than were last saved or loaded."""
        if self._stored is None or not request.saves_derived:
            return
        session_id, nodes, saved = self._stored
        if len(nodes) - saved < max(_SAVE_MIN_CHUNKS, saved // 4):
            return
        at = derived_store(request)
        if at is None:
            return
        key_of = {id(n): k for k, n in nodes.items()}
        data: dict[str, list[Any]] = {}
        for k, n in nodes.items():
            # a Fact's three plain fields, as dataclasses.astuple gives them (which deep-copies
            # each field recursively: ~1.3 s of a 10M-token cold build)
            row: list[Any] = [n.start, n.end, n.text, n.tokens, [[f.text, f.kind, f.message_index] for f in n.facts],
                              [[f.text, f.kind, f.message_index] for f in n.repinned], n.summarizer_id]
            if n.level:  # a merge: its level and its children's keys
                kids = [key_of.get(id(c)) for c in n.children]
                if any(c is None for c in kids):
                    continue
                row += [n.level, kids]
            data[k] = row
        # a cache: a store that cannot take it (or a dry run's busy store) costs a re-summary
        store_derived(request, at[0], session_id, self._leaves_kind(request.tokenizer), "chunks", pack(data))
        self._stored = (session_id, nodes, len(nodes))

    def _new_block(
        self, request: BuildRequest, p: int, s: int, limits: _Limits, key: tuple[Any, ...]
    ) -> SummaryBlock:
        h = request.history
        tok = h.tokenizer
        spans = self._leaves(h, p, s)
        leaves: list[SummaryNode] = []
        prior: str | None = None
        for a, b, done in spans:
            leaf = self._leaf(h, a, b, prior, limits, s, keep=done)
            leaves.append(leaf)
            # the session's facts index reads the chunk's lines while they are in the memo
            self._carry.read_ahead(request, b)
            prior = leaf.text
        n_complete = sum(1 for *_, done in spans if done)
        complete, partial = leaves[:n_complete], leaves[n_complete:]
        fan = self.config.fanout
        memo: dict[tuple[int, int], SummaryNode] = {}

        def node(level: int, j: int) -> SummaryNode:
            # level-`level` node over complete leaves [j * fan**level, (j + 1) * fan**level)
            if level == 0:
                return complete[j]
            got = memo.get((level, j))
            if got is None:
                kids = [node(level - 1, j * fan + c) for c in range(fan)]
                got = memo[(level, j)] = self._merge(h, kids, level, limits, s, keep=True)
            return got

        def decompose(top: int) -> list[SummaryNode]:
            out: list[SummaryNode] = []
            pos = 0
            for level in range(top, -1, -1):
                size = fan**level
                while pos + size <= len(complete):
                    out.append(node(level, pos // size))
                    pos += size
            return out + partial

        def render(nodes: Sequence[SummaryNode]) -> str:
            who = ", ".join(sorted({n.summarizer_id.split(":", 1)[0] for n in nodes}))
            head = f"[Summary of earlier messages {p}-{s - 1} ({who}); the originals are in the session log]"
            return head + "\n\n" + "\n\n".join(n.text for n in nodes)

        top = 0
        while fan**top < max(1, len(complete)):
            top += 1
        chosen: list[SummaryNode] | None = None
        level = 0
        for level in range(top + 1):
            nodes = decompose(level)
            if sum(n.tokens for n in nodes) + HEADER_TOKENS <= limits.cap * 2 and tok.count(render(nodes)) <= limits.cap:
                chosen = nodes
                break
        if chosen is None:
            nodes = decompose(top)
            root = self._merge(h, nodes, top + 1, limits, s) if len(nodes) > 1 else nodes[0]
            chosen, level = [root], top + 1
        text = render(chosen)
        if tok.count(text) > limits.cap:
            text = clip_to_tokens(text, tok, limits.cap)
        event_ids = tuple(e for ids in h.event_ids[p:s] for e in ids)
        failures = tuple(n.failure for n in self._walk(chosen) if n.failure)
        block = SummaryBlock(p, s, text, tok.count(text), tuple(chosen), level, event_ids, tuple(dict.fromkeys(failures)))
        if len(self._blocks) > 256:
            self._blocks.clear()
        self._blocks[key] = block
        return block

    def _walk(self, nodes: Sequence[SummaryNode]) -> list[SummaryNode]:
        out: list[SummaryNode] = []
        for n in nodes:
            out.extend(self._walk(n.children))
            out.append(n)
        return out

    # -- cut point ---------------------------------------------------------------------

    def _cut(self, request: BuildRequest, cuts: SafeCuts, base: int) -> int:
        h = request.history
        p = request.pinned_count
        n = len(h)
        avail = request.budget.available

        def allowed(s: int | None) -> bool:
            if s is None or s <= p:
                return False
            if s == n and (p == 0 or h.flags[p - 1].role != "user"):
                return False  # the context would end without a user message
            return base + h.tokens(s, n) <= avail

        room = request.budget.trigger - base
        s_min = bisect_left(h.cum, h.cum[n] - room, lo=p) if room > 0 else n
        s_min = max(s_min, p + 1)
        s = cuts.at_or_after(snap_up(h, s_min, grid_step(request, self.config.compaction_step)))
        if allowed(s):
            assert s is not None
            return s
        for cand in (cuts.at_or_after(min(s_min, n)), cuts.at_or_before(n - 1)):
            if allowed(cand):
                assert cand is not None
                return cand
        last = cuts.at_or_before(n - 1 if p == 0 else n)
        needed = base + h.tokens(last if last is not None and last > p else p, n)
        raise ContextOverflowError(
            max(needed, avail + 1),
            avail,
            hint=(
                "summarization: no safe cut point leaves room for the summary and the recent messages (the last "
                "assistant turn and its tool loop must stay whole). Raise the budget, lower summary_tokens, "
                "or pin less."
            ),
        )

    # -- placement ---------------------------------------------------------------------

    def _place(self, request: BuildRequest, s: int, texts: tuple[str, ...]) -> _Placement:
        h = request.history
        p = request.pinned_count
        key = (h.uid, p, s if p == 0 else -1, texts)
        pl = self._placement
        if pl.key == key:
            return pl
        tok = request.tokenizer
        extra = sum(tok.count(t) for t in texts) + DEFAULT_OVERHEAD.per_block * len(texts)
        msgs = list(h.messages[:p])
        counts = list(h.counts[:p])
        if texts and p:
            last = msgs[-1]
            msgs[-1] = Message(last.role, last.content + tuple(TextBlock(t) for t in texts))
            counts[-1] += extra
        elif texts and s < len(h):
            # Nothing pinned: the summary opens the first kept message (a user text message).
            first = h.messages[s]
            msgs.append(Message(first.role, tuple(TextBlock(t) for t in texts) + first.content))
            counts.append(h.counts[s] + extra)
        else:
            extra = 0
        self._placement = _Placement(key, msgs, counts, extra)
        return self._placement

    # -- build -------------------------------------------------------------------------

    def build(self, request: BuildRequest) -> BuiltContext:
        with self._cold.over(request):
            return self._build(request)

    def _build(self, request: BuildRequest) -> BuiltContext:
        h = request.history
        request.check_end()
        p = request.pinned_count
        n = len(h)
        fixed = request.fixed_tokens
        tok = request.tokenizer
        facts = request.pinned_facts
        # the pinned facts repeat every turn: counted once per (tokenizer, facts)
        facts_cost = _cached_count(
            tok, ("pinned-facts", tuple(facts)), lambda: sum(tok.count(t) + DEFAULT_OVERHEAD.per_block for t in facts)
        ) if (p and facts) else 0
        recall_cost = self._recall_cost(request)
        base = fixed + recall_cost + h.tokens(0, p) + facts_cost
        avail = request.budget.available
        if base > avail:
            raise ContextOverflowError(base, avail, hint="the pinned content alone exceeds the budget.")
        notes: list[str] = []
        block: SummaryBlock | None = None
        settled: Settled | None = None
        s = p
        if base + h.tokens(p, n) > request.budget.trigger:
            limits0 = self._limits(request)
            reserve = limits0.cap + DEFAULT_OVERHEAD.per_block if limits0 else 0
            cuts = self._cuts.get(h, p)
            chosen: dict[int, tuple[int, _Limits | None]] = {}

            def choose(extra: int) -> tuple[int, int]:
                lim = limits0
                try:
                    cut = self._cut(request, cuts, base + extra + reserve)
                except ContextOverflowError:
                    # No room for a summary next to the mandatory tail: cut without one, or
                    # keep everything when it all fits the budget (past the trigger, under
                    # the limit, and no cut leaves the tail whole).
                    fits = base + extra + h.tokens(p, n) <= avail
                    if lim is None and not fits:
                        raise
                    lim = None
                    cut = p if fits else self._cut(request, cuts, base + extra)
                chosen[extra] = (cut, lim)
                return cut, cut

            # Standing instructions and facts of the summarized span are held back first.
            settled = self._carry.settle(request, choose)
            if settled.extra not in chosen:
                choose(settled.extra)
            s, limits = chosen[settled.extra]
            if limits is None and s > p:
                notes.append(f"budget too small for a summary: dropped messages {p}-{s - 1} at a safe cut")
            elif limits is None:
                notes.append("no safe cut leaves room for a summary: kept every message (they fit the budget)")
            else:
                fkey = (self._fingerprint(h, p, s), self.summarizer.id)
                if fkey in self._failed:
                    return self._fall_back(request, self._failed[fkey], new=False)
                try:
                    block = self._block(request, p, s, limits)
                except _Fallback as exc:
                    self._failed[fkey] = exc.reason
                    return self._fall_back(request, exc.reason, new=True)
        self.last_summary = block
        # Pinned facts live on the pinned prefix (as in the other strategies): none without one.
        carried = self._carry.carried(request, settled) if s > p and settled is not None else Carried()
        notes.extend(carried.notes())
        texts = (*(facts if p else ()), *carried.texts, *((block.text,) if block else ()))
        pl = self._place(request, s, texts)
        out = Output()
        out.add_extra("recall_tool", recall_cost)
        summary_cost = self._summary_cost(block, tok) if block else 0
        if p:
            out.add("pinned", pl.msgs, pl.counts)
            out.sections["pinned"] -= summary_cost
            out.add("recent", h.messages[s:], h.counts[s:])
        else:
            out.add("recent", pl.msgs, pl.counts)
            out.add("recent", h.messages[s + len(pl.msgs):], h.counts[s + len(pl.msgs):])
            out.sections["recent"] -= summary_cost
        split_sections(out.sections, carried, "pinned" if p else "recent")
        if block:
            out.sections["summary"] = summary_cost
        if block is not None:
            notes.extend(self._notes(block))
        kept = range(s, n)
        built = finish(
            self.name,
            request,
            out,
            self._tracker,
            tokens_in=fixed + h.total,
            kept=kept,
            summarized=range(p, s) if block else (),
            dropped=() if block else range(p, s),
            breakpoints=(p - 1 if p else 0, len(out.messages) - 1),
            notes=notes,
            # offered on every build, facts or not: a tool list that changed when the first
            # facts appear would invalidate the provider's cache of everything after it
            extra_tools=(RECALL_TOOL,) if recall_cost else (),
        )
        if block is not None and request.session is not None and request.record:
            self._record(request, block, built)
        return built

    def _recall_cost(self, request: BuildRequest) -> int:
        """Tokens of the recall tool's definition when this strategy offers it: it has a facts
        section, whose lines name ``recall <handle>`` (the masking strategy's tool, budgeted
        up front as masking does), and the caller does not offer one already."""
        cfg = self.config
        return recall_tool_cost(request) if cfg.reversible and cfg.facts_tokens else 0

    def _notes(self, block: SummaryBlock) -> list[str]:
        cached = self._notes_of
        if cached is not None and cached[0] is block:
            return list(cached[1])
        notes = [
            f"summarized messages {block.start}-{block.end - 1} into {len(block.nodes)} summaries "
            f"(level {block.level}, {block.tokens} tokens)",
            f"source_event_ids: {id_ranges(block.event_ids)}" if block.event_ids else "source_event_ids: (none)",
        ]
        repinned = block.repinned
        if repinned:
            kinds = sorted({f.kind for f in repinned})
            notes.append(f"fidelity guard re-pinned {len(repinned)} facts ({', '.join(kinds)})")
        notes.extend(f"summarizer failure, fell back to extractive: {f}" for f in block.failures)
        self._notes_of = (block, tuple(notes))
        return notes

    def _summary_cost(self, block: SummaryBlock, tok: Tokenizer) -> int:
        """Tokens of the summary block's text (plus its block overhead), counted once per
        block: between compactions every turn places the same block (a 128K budget's summary
        is thousands of tokens, ~0.8 ms to count)."""
        memo = self._summary_count
        if memo is None or memo[0] is not block or memo[1] != tok.id:
            memo = self._summary_count = (block, tok.id, tok.count(block.text) + DEFAULT_OVERHEAD.per_block)
        return memo[2]

    # -- recording and fallback --------------------------------------------------------

    def _record(self, request: BuildRequest, block: SummaryBlock, built: BuiltContext) -> None:
        from ctxmem.events import CompactionEvent

        session = request.session
        assert session is not None  # build() records only with a session
        last = self._last_recorded
        if last is not None and last[0] is block and last[1] == session.id:
            return  # this very block was recorded (or found logged) for this session already
        key = (session.id, hash(block.event_ids), block.text)
        self._last_recorded = (block, session.id)
        if key in self._recorded:
            return
        self._recorded.add(key)
        for f in block.failures:
            self._note(session, f)
        ev = CompactionEvent(
            strategy=self.name,
            tokens_before=built.report.tokens_in,
            tokens_after=built.report.tokens_out,
            source_event_ids=block.event_ids,
            summary=block.text,
            reason=(
                f"summarized messages {block.start}-{block.end - 1} with {self.summarizer.id} "
                f"({len(block.nodes)} summaries, level {block.level})"
            ),
        )
        # Another instance may have recorded this very compaction already (a rebuild, a
        # resumed run): the session's log is read for that once, on first sight of the
        # session, not at every compaction (a whole-chain read: ~0.4 s at 10M tokens).
        logged = self._logged.get(session.id)
        if logged is None:
            if len(self._logged) > 64:
                self._logged.clear()
            logged = self._logged[session.id] = {
                (e.summary, tuple(e.source_event_ids))
                for se in chain_events_of_kind(session, "compaction")  # SQLite: those rows alone
                if isinstance(e := se.event, CompactionEvent) and e.strategy == self.name
            }
        mark = (ev.summary, tuple(ev.source_event_ids))
        if mark in logged:
            return
        session.record_compaction(ev)
        logged.add(mark)

    def _note(self, session: Any, text: str) -> None:
        if session is None or (session.id, text) in self._noted:
            return
        key = (session.id, text)
        self._noted.add(key)
        session.note(text, "summarization", "failure")

    def _fall_back(self, request: BuildRequest, reason: str, *, new: bool) -> BuiltContext:
        cfg = self.config
        if new and request.session is not None and request.record:
            self._note(request.session, reason)
        strategy: Window | Masking
        if cfg.fallback == "masking":
            if self._masking is None:
                self._masking = Masking(MaskingConfig.model_validate({"compaction_step": cfg.compaction_step}))
            strategy = self._masking
        else:
            if self._window is None:
                self._window = Window(WindowConfig.model_validate({"compaction_step": cfg.compaction_step}))
            strategy = self._window
        built = strategy.build(request)
        self.last_summary = None
        report = dataclasses.replace(
            built.report,
            strategy=self.name,
            notes=(*built.report.notes, f"summarizer failure, fell back to {strategy.name}: {reason}"),
        )
        return dataclasses.replace(built, report=report)
