"""The strategy contract: ``ContextStrategy.build(BuildRequest) -> BuiltContext``.

A strategy reads a :class:`~ctxmem.context.history.History` (never mutating it) and returns
the messages of the next request plus a :class:`Report` of what it did. Every output must:

(a) fit ``request.budget.available`` as counted by the request's tokenizer, system prompt
    and tool definitions included;
(b) be valid for the provider (no orphan ``tool_result``, no ``tool_use`` without its
    result, thinking kept with its tool loop, ends with a user message — or, when the
    caller says the next input is coming (``request.expect_input``), with the final
    assistant turn the caller will follow with that input);
(c) keep the pinned prefix (the first ``request.pinned`` messages: task, user rules) and
    the pinned facts verbatim;
(d) be deterministic for the same inputs;
(e) say in its report what was kept, masked, summarized, retrieved and dropped, with
    token counts per section.

Strategies cut only at points every invariant allows (:mod:`ctxmem.context.invariants`).

**Prompt-cache stability.** Providers cache a request's longest byte-identical prefix. A
strategy that moves its boundary every turn rewrites early bytes every turn and turns
every request into a cache miss. Built-in strategies therefore place boundaries on a
fixed grid of absolute token positions in the history (``compaction_step``): between
compactions the boundary does not move, so consecutive requests share their whole prefix
and differ only by the appended turns. The report says how many tokens stay cached, how
many a compaction invalidated, and how much headroom is left before the next one.

Configs are frozen pydantic models with ``extra="forbid"``: a typo in a preset is an
error naming the field, never a silent default.

**Dependencies.** What a strategy needs at run time beyond its config (an LLM client for
summaries) it *declares* through :meth:`StrategyConfig.dependencies`; the preset's
:class:`~ctxmem.config.ContextBuilder` resolves the declared names and passes them to the
constructor, so nothing outside the strategy matches on its parameters.

**Tools a context names.** A strategy whose output refers to something the model must
fetch (a masked output's recall handle) lists the tool in ``BuiltContext.extra_tools``;
whoever sends the context offers those tools and runs them with
:func:`ctxmem.context.run_context_tool`.

**The session.** ``BuildRequest.session`` is any :class:`SessionLike` (the
:class:`~ctxmem.session.Session` façade satisfies it): strategies read recall originals
and retrieval documents from it and record compactions and failure notes into it, keyed
by its ``id``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from ctxmem.context.history import History
from ctxmem.messages import Message, ToolSpec, tool_to_anthropic
from ctxmem.tokens import Budget, Tokenizer
from ctxmem.tokens.budget import token_size_field
from ctxmem.tokens.counting import DEFAULT_OVERHEAD

if TYPE_CHECKING:
    from ctxmem.events import CompactionEvent, StoredEvent
    from ctxmem.store.base import SessionStore


class StrategyConfig(BaseModel):
    """Base of every strategy config: frozen, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _token_sizes(cls, v: Any, info: ValidationInfo) -> Any:
        """A ``*_tokens`` field takes ``"6k"`` as ``--window 6k`` does (see :func:`token_size_field`)."""
        if isinstance(v, str) and info.field_name is not None and info.field_name.endswith("_tokens"):
            return token_size_field(v)
        return v

    def dependencies(self) -> dict[str, str]:
        """Run-time objects this configuration needs, by constructor keyword.

        The value says where the object comes from: ``"agent"`` for the caller's own
        (the Agent's client), or a spec the builder resolves (a client spec such as
        ``"anthropic:claude-haiku-4-5"``). Empty for strategies that need nothing.
        """
        return {}


@runtime_checkable
class SessionLike(Protocol):
    """What a strategy may use of a session (:class:`~ctxmem.session.Session` has it all)."""

    @property
    def id(self) -> str:
        """The session id: the key of every per-session cache in a strategy."""
        ...

    @property
    def store(self) -> SessionStore:
        """The store behind the session (full-text search for retrieval)."""
        ...

    def events(self) -> list[StoredEvent]:
        """The session's events, oldest first (recall reads originals no longer in memory)."""
        ...

    def record_compaction(self, event: CompactionEvent) -> int:
        """Append a compaction event; returns its id. Raises StoreError when the write fails."""
        ...

    def note(self, text: str, *tags: str) -> int:
        """Append a note event (a summarizer failure); returns its id."""
        ...


_FIXED_CACHE: dict[tuple[str, object], int] = {}
#: the same counts by the key object's identity (holding the object, so its id is not
#: reused): a tool list's hash serializes every tool's JSON schema, and a loop passes the
#: very same tuple turn after turn
_FIXED_BY_ID: dict[tuple[str, int], tuple[object, int]] = {}


def _cached_count(tokenizer: Tokenizer, key: object, compute: Any) -> int:
    # System prompts and tool lists repeat every turn: count each once per tokenizer.
    by_id = (tokenizer.id, id(key))
    hit = _FIXED_BY_ID.get(by_id)
    if hit is not None and hit[0] is key:
        return hit[1]
    k = (tokenizer.id, key)
    n = _FIXED_CACHE.get(k)
    if n is None:
        if len(_FIXED_CACHE) > 512:
            _FIXED_CACHE.clear()
        n = _FIXED_CACHE[k] = int(compute())
    if len(_FIXED_BY_ID) > 512:
        _FIXED_BY_ID.clear()
    _FIXED_BY_ID[by_id] = (key, n)
    return n


@dataclass(frozen=True)
class BuildRequest:
    """Everything a strategy needs to build the next request's context."""

    history: History
    budget: Budget
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    #: leading messages kept verbatim (the task, user rules)
    pinned: int = 1
    #: facts kept verbatim at the head and restated at the tail (user constraints, limits)
    pinned_facts: tuple[str, ...] = ()
    #: where recall handles and retrieval read from (optional), and where compactions,
    #: summaries and summarizer failures are recorded
    session: SessionLike | None = None
    #: record compactions in ``session`` (False for a dry run: read it, never write it)
    record: bool = True
    #: save what the build derived (the facts index, chunk summaries, the pipeline's ledger
    #: and postings) in the session's store, where a later build, in any process, restores
    #: it instead of reading every message again: a cache, never the session's events.
    #: ``None``: as ``record`` (a dry run saves nothing unless it asks to).
    cache_derived: bool | None = None
    #: the caller will append the next user input itself: a history ending in a final
    #: assistant turn (no pending tool calls) is built as is instead of refused
    expect_input: bool = False

    @property
    def saves_derived(self) -> bool:
        """Whether derived-state snapshots may be saved (see ``cache_derived``)."""
        return self.record if self.cache_derived is None else self.cache_derived

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the history is counted with; the budget is in its tokens."""
        return self.history.tokenizer

    @functools.cached_property
    def fixed_tokens(self) -> int:
        """Tokens every request pays before any message: per-request overhead, system, tools."""
        from ctxmem.tokens import count_tools

        tok = self.tokenizer
        n = DEFAULT_OVERHEAD.per_request
        if self.system:
            system = self.system
            n += _cached_count(tok, system, lambda: tok.count(system)) + DEFAULT_OVERHEAD.per_message
        if self.tools:
            tools = self.tools
            n += _cached_count(tok, tools, lambda: count_tools([tool_to_anthropic(t) for t in tools], tok).total)
        return n

    @property
    def pinned_count(self) -> int:
        """The pinned prefix, bounded by the history length."""
        return min(self.pinned, len(self.history))

    def check_end(self) -> None:
        """Raise InvalidConversationError when the history cannot end a request.

        A trailing assistant message is refused unless ``expect_input`` is set and it has
        no pending tool calls (those need their results, whatever comes next).
        """
        from ctxmem.context.invariants import NoTrailingAssistant, check_last_turn_answers

        h = self.history
        check_last_turn_answers(h)
        if self.expect_input and h.messages and not h.flags[-1].tool_uses:
            return
        NoTrailingAssistant().check(h)


@dataclass(frozen=True)
class Report:
    """What a build did. Index ranges refer to ``request.history.messages``."""

    strategy: str
    available: int
    tokens_in: int
    tokens_out: int
    sections: Mapping[str, int]
    kept: Sequence[int] = ()
    masked: Sequence[int] = ()
    summarized: Sequence[int] = ()
    dropped: Sequence[int] = ()
    retrieved_event_ids: Sequence[int] = ()
    #: tokens of the output prefix identical to this strategy's previous build (prompt cache)
    stable_prefix_tokens: int = 0
    #: True when this build rewrote bytes a previous request had sent (a compaction)
    cache_invalidated: bool = False
    #: tokens the provider must re-process because of that rewrite
    invalidated_tokens: int = 0
    #: tokens that can still be appended before the next compaction
    headroom_tokens: int = 0
    notes: Sequence[str] = ()

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data; an index range is written as ``{start, stop, count}``."""

        def rng(xs: Sequence[int]) -> Any:
            if isinstance(xs, range):
                return {"start": xs.start, "stop": xs.stop, "count": len(xs)} if len(xs) else []
            return list(xs)

        return {
            "strategy": self.strategy,
            "available": self.available,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "sections": dict(self.sections),
            "kept": rng(self.kept),
            "masked": rng(self.masked),
            "summarized": rng(self.summarized),
            "dropped": rng(self.dropped),
            "retrieved_event_ids": list(self.retrieved_event_ids),
            "stable_prefix_tokens": self.stable_prefix_tokens,
            "cache_invalidated": self.cache_invalidated,
            "invalidated_tokens": self.invalidated_tokens,
            "headroom_tokens": self.headroom_tokens,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class BuiltContext:
    """A strategy's output: the next request's messages and the :class:`Report` of how.

    ``messages`` fit the request's budget, pass
    :func:`~ctxmem.messages.validate_conversation`, and share unchanged messages with the
    history (never copies of them). ``system`` and ``tools`` are what the strategy sends
    with them; ``extra_tools`` are tools its output refers to (``recall`` for masked
    outputs), which the caller must offer and run with :func:`~ctxmem.context.run_context_tool`.
    """

    messages: Sequence[Message]
    report: Report
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    #: message indices after which a provider cache breakpoint belongs (at most 3; the
    #: system/tools breakpoint is implied)
    cache_breakpoints: tuple[int, ...] = ()
    #: tools the strategy adds (e.g. ``recall`` for reversible masking)
    extra_tools: tuple[ToolSpec, ...] = field(default=())

    @property
    def tokens(self) -> int:
        """The request's size as the strategy counted it (``report.tokens_out``)."""
        return self.report.tokens_out


@runtime_checkable
class ContextStrategy(Protocol):
    """Builds the context of the next request from the untouched history."""

    name: ClassVar[str]

    @property
    def config(self) -> StrategyConfig:
        """The validated configuration the strategy was made with (its preset's ``[params]``)."""
        ...

    def build(self, request: BuildRequest) -> BuiltContext:
        """The context of the next request, under points (a)–(e) of the module docstring.

        Args:
            request: the history (never mutated), budget, system prompt, tools, pinned
                prefix and facts, and optionally the session to read recall originals from
                and record compactions into.

        Returns:
            A :class:`BuiltContext` whose messages fit ``request.budget`` in
            ``request.tokenizer``'s tokens and are valid for the provider.

        Raises:
            ContextOverflowError: the pinned content alone does not fit (or, for a strategy
                configured never to cut, the history does not), carrying needed/available.
            InvalidConversationError: the history cannot end a request (see
                :meth:`BuildRequest.check_end`).
        """
        ...
