"""Anthropic's server-side context management, from a ctxmem masking preset — and its price.

The Messages API can clear old tool results on the server (beta
``context-management-2025-06-27``, edit type ``clear_tool_uses_20250919``). The client
keeps sending the full history; before the model sees it, the server replaces the oldest
tool results with a placeholder. :func:`context_management` turns a masking preset into
those edits::

    edits = context_management("masking-200k")
    client.beta.messages.create(model=..., messages=..., max_tokens=...,
                                betas=edits.betas, context_management=edits.context_management)

**Mapping** (masking config → edit):

==========================  =================================================================
``budget`` (tokens mode)    ``trigger``: ``input_tokens`` = the budget's compaction trigger
                            (window − reserved output) × threshold
``mode = "turns"``          ``trigger``: ``tool_uses`` = ``keep_last + 1`` (mask by age)
``keep_last``               ``keep``: ``tool_uses`` = ``keep_last``
``compaction_step``         ``clear_at_least``: ``input_tokens`` = step × available budget —
                            both exist so that a cache invalidation clears enough to pay off
``tools.X.mask = "never"``  ``exclude_tools``
==========================  =================================================================

What has no server-side equivalent is listed in :attr:`NativeEdits.notes`: per-tool
reducers (the server's placeholder carries no gist of the output), the ``recall`` tool
(cleared outputs are gone for the model unless the client offers its own recall), the
facts section, and ``on_overflow = "truncate"`` (the server refuses an over-long prompt).

**Pricing it.** :class:`ServerClearToolUses` is a ctxmem strategy that reproduces what the
server does, following Anthropic's documented behaviour, so ``tune cost`` can replay a
session under it beside the local strategies (``ctxmem tune cost --anthropic-native``):
the request is the full history; when its input tokens exceed the trigger, every tool
result except those of the ``keep`` most recent tool uses (and excluded tools) is
replaced by a placeholder, oldest first — and nothing is cleared if that would free fewer
than ``clear_at_least`` tokens. The server is stateless, so the cleared set is recomputed
every request: each new tool call pushes one more result out of ``keep`` and rewrites
the prompt from there, which the replay bills as a cache write from that point on.
Token counts are ctxmem's (the preset's tokenizer) and the placeholder text is ctxmem's
stand-in for the server's; calibrate against reported usage where exact figures matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from ctxmem.config import Preset
from ctxmem.context import BuildRequest, BuiltContext, Report
from ctxmem.context.base import StrategyConfig
from ctxmem.errors import ConfigError, ContextOverflowError
from ctxmem.integrations._common import required_preset
from ctxmem.messages import Message, ToolResultBlock
from ctxmem.tokens import count_messages

BETA = "context-management-2025-06-27"
EDIT_TYPE = "clear_tool_uses_20250919"
#: what ctxmem puts where the server clears a result (the server's own wording may differ)
PLACEHOLDER = "[tool result cleared]"


@dataclass(frozen=True)
class NativeEdits:
    """The Messages API parameters for server-side clearing, and what the mapping left out."""

    context_management: dict[str, Any]
    betas: tuple[str, ...] = (BETA,)
    notes: tuple[str, ...] = ()

    @property
    def edit(self) -> dict[str, Any]:
        """The ``clear_tool_uses_20250919`` edit itself (the first of ``context_management``'s edits)."""
        edit: dict[str, Any] = self.context_management["edits"][0]
        return edit


def context_management(preset: Preset | str, *, context_window: int | None = None) -> NativeEdits:
    """A masking preset → ``context_management`` edits (see the module docstring)."""
    p = required_preset(preset)
    if p.type != "masking":
        raise ConfigError(
            f"preset {p.name!r} is a {p.type!r} strategy; only masking presets map onto server-side "
            "tool-result clearing", field="type")
    params = p.strategy().config
    budget = p.budget(context_window)
    edit: dict[str, Any] = {"type": EDIT_TYPE}
    if params.mode == "turns":
        edit["trigger"] = {"type": "tool_uses", "value": params.keep_last + 1}
    else:
        edit["trigger"] = {"type": "input_tokens", "value": budget.trigger}
    edit["keep"] = {"type": "tool_uses", "value": params.keep_last}
    edit["clear_at_least"] = {"type": "input_tokens", "value": int(params.compaction_step * budget.available)}
    never = sorted(name for name, pol in params.tools.items() if pol.mask == "never")
    if never:
        edit["exclude_tools"] = never
    edit["clear_tool_inputs"] = False
    notes = []
    reducers = sorted({*(n for n, pol in params.tools.items() if pol.reducer), *([params.reducer] if params.reducer else [])})
    if reducers:
        notes.append("per-tool reducers have no server-side equivalent: cleared results keep no gist "
                     f"({', '.join(reducers)})")
    if params.reversible:
        notes.append("the recall tool is client-side: offer it yourself, the server's clearing is final for the model")
    if params.on_overflow == "truncate":
        notes.append("on_overflow='truncate' has no server-side equivalent: an over-long prompt is refused")
    always = sorted(n for n, pol in params.tools.items() if pol.mask == "always")
    if always:
        notes.append(f"mask='always' for {', '.join(always)} is treated like 'auto'")
    return NativeEdits({"edits": [edit]}, (BETA,), tuple(notes))


class ServerClearConfig(StrategyConfig):
    trigger_tokens: int | None = Field(None, ge=1, description="Clear when input tokens exceed this (None: tool_uses).")
    trigger_tool_uses: int | None = Field(None, ge=1, description="Clear when tool uses exceed this.")
    keep: int = Field(3, ge=0, description="Most recent tool uses whose results are kept.")
    clear_at_least: int = Field(0, ge=0, description="Clear nothing unless this many tokens would be freed.")
    exclude_tools: tuple[str, ...] = Field((), description="Tools whose results are never cleared.")


@dataclass
class ServerClearToolUses:
    """What Anthropic's ``clear_tool_uses_20250919`` edit does to a request (module docstring)."""

    name: ClassVar[str] = "anthropic_clear_tool_uses"
    cfg: ServerClearConfig
    _cleared: dict[int, tuple[Message, frozenset[str], Message, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_edits(cls, edits: NativeEdits) -> ServerClearToolUses:
        """The local simulation of the server-side clearing ``edits`` describe (trigger, keep,
        clear_at_least, exclude_tools), so ``tune cost`` can price it beside local strategies."""
        e = edits.edit
        trig = e.get("trigger", {"type": "input_tokens", "value": 100_000})
        return cls(ServerClearConfig(
            trigger_tokens=trig["value"] if trig["type"] == "input_tokens" else None,
            trigger_tool_uses=trig["value"] if trig["type"] == "tool_uses" else None,
            keep=e.get("keep", {"value": 3})["value"],
            clear_at_least=e.get("clear_at_least", {"value": 0})["value"],
            exclude_tools=tuple(e.get("exclude_tools", ())),
        ))

    @property
    def config(self) -> ServerClearConfig:
        """The simulated edit's settings."""
        return self.cfg

    def _cleared_message(self, request: BuildRequest, i: int, ids: frozenset[str]) -> tuple[Message, int]:
        # memoized: the same results are cleared turn after turn; counted once
        m = request.history.messages[i]
        hit = self._cleared.get(i)
        if hit is not None and hit[0] is m and hit[1] == ids:
            return hit[2], hit[3]
        new = Message(m.role, tuple(
            ToolResultBlock(b.tool_use_id, PLACEHOLDER, b.is_error)
            if isinstance(b, ToolResultBlock) and b.tool_use_id in ids else b for b in m.content))
        n = count_messages([new], request.tokenizer)[0].total
        self._cleared[i] = (m, ids, new, n)
        return new, n

    def build(self, request: BuildRequest) -> BuiltContext:
        """What the server would send the model: once the trigger is passed, older tool
        results cleared to a placeholder (keeping the newest ``keep`` and excluded tools)."""
        h = request.history
        available = request.budget.available
        tokens_in = request.fixed_tokens + h.total
        calls = [(i, tid) for i, f in enumerate(h.flags) for tid in f.tool_results]
        c = self.cfg
        triggered = (tokens_in > c.trigger_tokens) if c.trigger_tokens is not None else (
            c.trigger_tool_uses is not None and len(calls) > c.trigger_tool_uses)
        messages = list(h.messages)
        tokens_out = tokens_in
        cleared: list[int] = []
        if triggered:
            keep_from = max(0, len(calls) - c.keep)
            by_msg: dict[int, set[str]] = {}
            for i, tid in calls[:keep_from]:
                if (h.tool_name(tid) or "") not in c.exclude_tools:
                    by_msg.setdefault(i, set()).add(tid)
            saved = 0
            edited: dict[int, tuple[Message, int]] = {}
            for i, ids in by_msg.items():
                new, n = self._cleared_message(request, i, frozenset(ids))
                edited[i] = (new, n)
                saved += h.counts[i] - n
            if saved >= max(1, c.clear_at_least):
                for i, (new, _) in edited.items():
                    messages[i] = new
                cleared = sorted(edited)
                tokens_out = tokens_in - saved
        if tokens_out > available:
            raise ContextOverflowError(tokens_out, available)
        report = Report(
            strategy=self.name, available=available, tokens_in=tokens_in, tokens_out=tokens_out,
            sections={"system_and_tools": request.fixed_tokens, "messages": tokens_out - request.fixed_tokens},
            kept=[i for i in range(len(messages)) if i not in set(cleared)], masked=cleared,
            notes=(f"server cleared the results in {len(cleared)} messages" if cleared else "no clearing",),
        )
        return BuiltContext(messages, report, request.system, request.tools)


def server_strategy(preset: Preset | str, *, context_window: int | None = None) -> ServerClearToolUses:
    """The server-side equivalent of a masking preset, as a strategy ``tune cost`` can replay."""
    return ServerClearToolUses.from_edits(context_management(preset, context_window=context_window))


def native_reports(recording: Any, presets: Sequence[str], price: Any, *, caching: str = "on",
                   budget: int | None = None, **kwargs: Any) -> list[Any]:
    """``tune cost`` rows: each masking preset among ``presets`` replayed as server-side clearing.

    The request is the full history, so the limit is the preset's window (``budget``
    overrides it); the trigger, keep and clear_at_least come from :func:`context_management`.
    Non-masking presets are skipped (they have no server-side equivalent).
    """
    from ctxmem.tune.replay import replay_cost

    modes = {"on": (True,), "off": (False,), "both": (False, True)}[caching]
    out = []
    for name in presets:
        p = required_preset(name)
        if p.type != "masking":
            continue
        for c in modes:
            out.append(replay_cost(
                recording, server_strategy(p, context_window=budget), price, budget=p.budget(budget),
                tokenizer=p.model.tokenizer, caching=c, label=f"{p.name} → anthropic server" + ("" if c else " (no cache)"),
                **kwargs))
    return out


__all__ = ["BETA", "NativeEdits", "ServerClearToolUses", "context_management", "native_reports", "server_strategy"]
