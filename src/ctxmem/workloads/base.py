"""The Workload protocol: an agent task that drives ctxmem and produces long sessions.

A workload is how a session worth measuring comes to exist: the kernel-optimization agent,
the synthetic tool-heavy transcript, or whatever a user brings (a data-analysis agent, a
web agent, a repair agent). Everything above the workloads — ``tune sweep``, ``eval
session-needles``, ``workload run`` — talks to this protocol only and finds workloads by
name through the ``ctxmem.workloads`` entry-point group, exactly as strategies are found.
Nothing in ``context``, ``store``, ``tokens``, ``retrieval``, ``evals``, ``tune``,
``clients`` or ``agent`` imports a concrete workload (``tests/test_layering.py`` pins it).

A workload class (the class itself is what its entry point names) has:

``name``, ``description``
    Its registry name and one line for ``workload list``.
``Config``
    A frozen pydantic model (``extra="forbid"``) of its settings; ``workload run NAME
    --set key=value`` fills it, and a bad key or value names the field.
``__init__(self, config)`` and ``self.config``
    ctxmem constructs the workload with its ``Config`` instance and reads the settings back
    from ``self.config`` (a sweep records them with each cell).
``check()``
    Raise a :class:`~ctxmem.errors.CtxmemError` (e.g. ``MissingDependencyError``) when
    something the run needs is missing, before anything is recorded; return otherwise.
``system_prompt()``, ``tools()``
    What its agent is told and offered (:class:`~ctxmem.messages.ToolSpec`), so a replay
    prices the same request the agent sent.
``run(store, *, preset, window, seed, mode, progress)`` → :class:`WorkloadRun`
    Record one session into ``store`` and score it. Create it with
    ``metadata={"workload": <registry name>}``: that is how ``eval session-needles`` knows
    which workload's :meth:`needles` to ask about, and finds the run again to resume. ``mode`` is the workload's own word
    for how the agent remembers (``None``: its default recording mode, the one ``eval
    session-needles`` records once); ``"context"`` means "decide only from what
    ``preset`` builds at ``window``" — the mode ``tune sweep`` runs, so a strategy that
    forgets shows in the score. ``preset=None`` records without a strategy.
``modes``
    The modes ``run`` accepts (the first is the default).
``needles()``
    :class:`NaturalNeedle` specs: facts that occur in the session's own tool outputs and
    matter later. ``eval session-needles`` asks about them without planting anything.
``score_columns``
    ``(header, key)`` pairs of :attr:`WorkloadRun.scores` for a results table.
``fact_profile()``
    The vocabulary of facts that matter in this workload (limits, results, identifiers),
    for the ledger and the fidelity guard: a :class:`~ctxmem.context.profile.FactProfile`
    registered by name in the ``ctxmem.fact_profiles`` entry-point group, or ``None`` for
    the generic default. It is descriptive: ctxmem hands ``run`` a preset *name*, and
    ``run`` applies the profile itself, as the kernel workload does with
    ``load_preset(preset).with_fact_profile("kernel")`` (a preset file that names its own
    profile keeps it).

A class that is not a class, or lacks one of these, is refused with an error naming the
plugin and the member (``ctxmem.workloads.PROTOCOL_MEMBERS``); ``workload list`` warns about
a broken plugin on stderr and lists the others.

:class:`WorkloadRun.score` is the one number a sweep puts on its Pareto front: in [0, 1],
higher is better, ``None`` when the run could not be scored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from ctxmem.messages import ToolSpec
from ctxmem.store.base import SessionStore

#: progress callback: (done, total) in the workload's own unit (tool calls, turns)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class NaturalNeedle:
    """A fact a workload's tool outputs state, that an evaluator can ask about.

    ``pattern`` finds the fact in one tool output; its groups, joined with ``/``, are the
    answer. ``tools`` restricts the search to outputs of those tools (empty: any tool).
    """

    name: str
    question: str
    pattern: re.Pattern[str]
    tools: tuple[str, ...] = ()

    def answer(self, m: re.Match[str]) -> str:
        """The true answer from a match of :attr:`pattern`."""
        return "/".join(g for g in m.groups() if g is not None)


@dataclass
class WorkloadRun:
    """One recorded, scored run of a workload."""

    workload: str
    session_id: str
    mode: str
    preset: str | None
    seed: int
    #: the workload's own scores (keys named by its ``score_columns``)
    scores: dict[str, Any]
    #: the sweep's single score in [0, 1] (higher is better), None when unscored
    score: float | None
    #: o200k tokens (or the workload's tokenizer) of the recorded history
    history_tokens: int = 0
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    #: probe results (needle, turn, presence …), when the workload probes
    probes: list[dict[str, Any]] = field(default_factory=list)
    #: anything else worth keeping in a sweep cell (described in the workload's docs)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the run (probes left out: they can be long)."""
        return {"workload": self.workload, "session_id": self.session_id, "mode": self.mode, "preset": self.preset,
                "seed": self.seed, "score": self.score, "scores": self.scores,
                "history_tokens": self.history_tokens, "metrics": self.metrics}


@runtime_checkable
class Workload(Protocol):
    """An agent task that records scored sessions (see the module docstring)."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    modes: ClassVar[tuple[str, ...]]
    score_columns: ClassVar[tuple[tuple[str, str], ...]]
    config: BaseModel

    def system_prompt(self) -> str | None:
        """The system prompt its agent runs under (``None``: none)."""
        ...

    def tools(self) -> list[ToolSpec]:
        """The tools its agent is offered."""
        ...

    def check(self) -> None:
        """Raise :class:`~ctxmem.errors.MissingDependencyError` (with the install line) when
        the workload cannot run on this machine; called before any work starts."""
        ...

    def run(self, store: SessionStore, *, preset: str | None = None, window: int | None = None, seed: int = 0,
            mode: str | None = None, progress: Progress | None = None) -> WorkloadRun:
        """Record one session into ``store`` and score it.

        :param preset: a preset name or path the agent's context comes from (``None``: none).
        :param window: overrides the preset's context window (a sweep's budget).
        :param mode: one of :attr:`modes`; ``None`` is the first.
        :raises ~ctxmem.errors.ConfigError: a bad preset or mode, naming the field.
        """
        ...

    def needles(self) -> tuple[NaturalNeedle, ...]:
        """Facts of its tool outputs an evaluator may ask about (may be empty)."""
        ...

    def fact_profile(self) -> Any | None:
        """The facts that matter in this workload, for the ledger and fidelity guard (its
        ``run`` applies them to the preset it is given; see the module docstring)."""
        ...


__all__ = ["NaturalNeedle", "Progress", "Workload", "WorkloadRun"]
