"""The ``synthetic`` workload: a deterministic tool-heavy transcript with planted needles.

The session comes from :func:`~ctxmem.workloads.synthetic.generator.synthetic_session` (a
kernel-tuning-shaped transcript generated from a seed; no extras needed), and five
unguessable needle lines (``needle-3: the calibration key is 5f0c…``) are planted in tool
results at fixed depths (2%, 10%, 25%, 40%, 60% of the messages).

Modes:

``record``   record the session only (score ``None``): what ``eval session-needles``
             records once and then asks about.
``context``  also replay it turn by turn under ``preset`` at ``window`` (a fresh
             :class:`~ctxmem.config.ContextBuilder`, one build per assistant turn, as an agent
             would) and probe at half-way, three quarters and the last turn: each needle
             planted before the probe either appears in the built context's text (kept,
             or kept by a rewrite) or not. Score = recall over (needle, probe) pairs;
             ``recall_by_depth`` gives each needle's fate at the last turn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ctxmem.errors import ConfigError, ContextOverflowError
from ctxmem.messages import Message, ToolResultBlock, ToolSpec, message_texts
from ctxmem.store.base import SessionStore
from ctxmem.workloads.base import NaturalNeedle, Progress, WorkloadRun
from ctxmem.workloads.synthetic.generator import synthetic_session

NEEDLE_DEPTHS: tuple[float, ...] = (0.02, 0.1, 0.25, 0.4, 0.6)
PROBE_POINTS: tuple[float, ...] = (0.5, 0.75, 1.0)
_NEEDLE = "needle-{k}: the calibration key is {key}"


@dataclass(frozen=True)
class Fact:
    """A planted fact: where it is and its exact text."""

    message_index: int
    text: str
    label: str
    depth: float = 0.0


def plant_needles(
    messages: Sequence[Message], *, seed: int = 0, depths: Sequence[float] = NEEDLE_DEPTHS
) -> tuple[list[Message], list[Fact]]:
    """Append one unguessable needle line to the first tool result at or after each depth."""
    rng = random.Random(f"needles-{seed}")
    out = list(messages)
    facts: list[Fact] = []
    n = len(out)
    used: set[int] = set()
    for k, d in enumerate(depths):
        start = min(n - 1, max(1, int(d * n)))
        idx = next((i for i in range(start, n) if i not in used and any(
            isinstance(b, ToolResultBlock) for b in out[i].content)), None)
        if idx is None:
            continue
        used.add(idx)
        needle = _NEEDLE.format(k=k, key=f"{rng.getrandbits(64):016x}")
        blocks = list(out[idx].content)
        j = next(j for j, b in enumerate(blocks) if isinstance(b, ToolResultBlock))
        b = blocks[j]
        assert isinstance(b, ToolResultBlock)
        blocks[j] = ToolResultBlock(b.tool_use_id, b.text + "\n" + needle, b.is_error)
        out[idx] = Message(out[idx].role, tuple(blocks))
        facts.append(Fact(idx, needle, f"needle-{k}", depth=d))
    return out, facts


class SyntheticConfig(BaseModel):
    """Settings of the synthetic workload (``workload run synthetic --set turns=600``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    turns: int = Field(300, ge=4, le=200_000, description="Assistant turns (each a tool call and its result).")
    output_scale: float = Field(1.0, gt=0, le=20, description="Scale of tool-output sizes (1.16: 1M tokens at 1200).")
    tokenizer: str = Field("o200k_base", description="Tokenizer the session is counted with.")
    plant: bool = Field(True, description="Plant the five needle lines.")


class SyntheticWorkload:
    """The ``synthetic`` workload (see the module docstring)."""

    name: ClassVar[str] = "synthetic"
    description: ClassVar[str] = ("A deterministic tool-heavy transcript with 5 planted needles; "
                                  "scored by needle recall under a preset (no extras needed)")
    Config: ClassVar[type[BaseModel]] = SyntheticConfig
    modes: ClassVar[tuple[str, ...]] = ("record", "context")
    score_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("recall", "recall"), ("probes", "probes"), ("needles", "needles"), ("history_tok", "history_tokens"))

    def __init__(self, config: BaseModel | None = None):
        self.config: SyntheticConfig = config if isinstance(config, SyntheticConfig) else SyntheticConfig.model_validate({})

    def system_prompt(self) -> str | None:
        """None: the synthetic transcript carries its task in the first user message."""
        return None

    def tools(self) -> list[ToolSpec]:
        """None offered: the transcript is replayed, not run, so no tool definitions are priced."""
        return []

    def check(self) -> None:
        """Nothing to check: the synthetic workload needs no extras."""

    def messages(self, seed: int = 0) -> tuple[list[Message], list[Fact]]:
        """The session's messages and its planted facts for ``seed``."""
        c = self.config
        msgs = synthetic_session(c.turns, seed, output_scale=c.output_scale)
        return plant_needles(msgs, seed=seed) if c.plant else (msgs, [])

    def needles(self) -> tuple[NaturalNeedle, ...]:
        """One spec per planted needle: the calibration key of ``needle-k``."""
        return tuple(
            NaturalNeedle(f"needle-{k}", f"What is the calibration key of needle-{k}?",
                          re.compile(rf"needle-{k}: the calibration key is ([0-9a-f]{{16}})"))
            for k in range(len(NEEDLE_DEPTHS)))

    def fact_profile(self) -> Any | None:
        """None: the generic default profile."""
        return None

    def run(self, store: SessionStore, *, preset: str | None = None, window: int | None = None, seed: int = 0,
            mode: str | None = None, progress: Progress | None = None) -> WorkloadRun:
        """Record the session; in ``context`` mode also probe it under ``preset`` (module docstring)."""
        from ctxmem.session import Session

        mode = mode or self.modes[0]
        if mode not in self.modes:
            raise ConfigError(f"unknown mode {mode!r} for the synthetic workload; choose {', '.join(self.modes)}",
                              field="mode")
        if mode == "context" and not preset:
            raise ConfigError("context mode needs a preset", field="preset")
        msgs, facts = self.messages(seed)
        c = self.config
        session = Session.create(store, title=f"synthetic workload, seed {seed}", tokenizers=[c.tokenizer],
                                 metadata={"workload": self.name, "seed": seed, "settings": c.model_dump(),
                                           "needles": [f.label for f in facts]})
        session.record_many(msgs)
        history_tokens = session.totals(c.tokenizer).content
        scores: dict[str, Any] = {"recall": None, "probes": 0, "needles": len(facts),
                                  "history_tokens": history_tokens}
        metrics: dict[str, Any] = {}
        probes: list[dict[str, Any]] = []
        if mode == "context":
            assert preset is not None
            probes, final = _probe(msgs, facts, preset, window, c.tokenizer, progress)
            hits = [p["visible"] for p in probes]
            if "overflow" in final:
                metrics["overflow"] = final["overflow"]
            else:
                scores.update(recall=sum(hits) / len(hits) if hits else None, probes=len(hits))
                metrics["recall_by_depth"] = {f"{f.depth:g}": final.get(f.label) for f in facts}
        return WorkloadRun(self.name, session.id, mode, preset, seed, scores, scores["recall"],
                           history_tokens=history_tokens, system=None, tools=tuple(self.tools()), probes=probes,
                           metrics=metrics)


def _probe(msgs: list[Message], facts: list[Fact], preset: str, window: int | None, tokenizer: str,
           progress: Progress | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build every assistant turn's context as an agent would; probe at the probe points.

    Returns the probes and each needle's fate at the last turn; ``{"overflow": why}`` when
    a turn's context could not be built within the budget (the run is then unscored).
    """
    from ctxmem.config import load_preset
    from ctxmem.context import History
    from ctxmem.tokens import get_tokenizer

    builder = load_preset(preset).builder(context_window=window)
    tok = get_tokenizer(builder.tokenizer or tokenizer)
    turns = [i for i, m in enumerate(msgs) if m.role == "assistant" and i > 0]
    probe_turns = {turns[max(0, round(f * len(turns)) - 1)] for f in PROBE_POINTS} if turns else set()
    last = turns[-1] if turns else -1
    history = History.from_messages(msgs[:1], tok)
    probes: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for n, i in enumerate(turns, 1):
        history.extend(msgs[len(history):i])
        try:
            built = builder.build(history, record=False)
        except ContextOverflowError as exc:  # the agent could not have sent this turn: stop, unscored
            return probes, {"overflow": f"turn {n}: {exc}"}
        if i in probe_turns:
            text = "\n".join(t for m in built.messages for t in message_texts(m))
            for f in facts:
                if f.message_index < i:
                    seen = f.text in text
                    probes.append({"needle": f.label, "turn": n, "message": i, "visible": seen})
                    if i == last:
                        final[f.label] = seen
        if progress is not None:
            progress(n, len(turns))
    return probes, final


__all__ = ["NEEDLE_DEPTHS", "PROBE_POINTS", "Fact", "SyntheticConfig", "SyntheticWorkload", "plant_needles"]
