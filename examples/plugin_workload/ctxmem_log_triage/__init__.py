"""An on-call agent triaging generated service logs: an example ctxmem workload plugin.

Written only against the documented protocol (:mod:`ctxmem.workloads.base`) and the public
API. The session: a user asks for a triage; the agent greps and reads logs of several
services, one incident at a time. Four facts are stated early and matter at the end (the
root cause, the first failing request id, the error code, the runbook's rule); the rest is
routine log noise. ``context`` mode replays the session turn by turn under a preset and
probes whether each fact stated so far is still in the built context.
"""

from __future__ import annotations

import random
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ctxmem.errors import ConfigError, ContextOverflowError
from ctxmem.messages import (
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    message_texts,
)
from ctxmem.workloads.base import NaturalNeedle, Progress, WorkloadRun

SERVICES = ("api-gateway", "billing", "ledger", "search", "auth", "notifier")
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN")


class Settings(BaseModel):
    """Settings: ``--set incidents=60 --set lines=40``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    incidents: int = Field(40, ge=6, le=5000, description="Tool calls the agent makes.")
    lines: int = Field(30, ge=5, le=400, description="Log lines per tool output.")


def _facts(rng: random.Random) -> dict[str, str]:
    return {
        "root_cause": f"ROOT CAUSE: connection pool exhausted on ledger-db-{rng.randrange(10, 99)} "
                      f"(max_connections={rng.choice((64, 128, 256))})",
        "first_request": f"first failing request: req-{rng.getrandbits(40):010x}",
        "error_code": f"error code LGR-{rng.randrange(1000, 9999)} returned to clients",
        "runbook": f"RUNBOOK rule {rng.randrange(10, 99)}: never restart billing before ledger drains",
    }


def _log(rng: random.Random, service: str, n: int) -> str:
    out = []
    for i in range(n):
        ms = rng.randrange(2, 900)
        out.append(f"2026-11-0{rng.randrange(1, 9)}T0{rng.randrange(0, 9)}:{rng.randrange(10, 59)}:"
                   f"{rng.randrange(10, 59)}Z {rng.choice(LEVELS)} {service} handled GET /v1/items/{i} "
                   f"in {ms} ms status=200")
    return "\n".join(out)


class LogTriage:
    """The ``log_triage`` workload (see the module docstring)."""

    name: ClassVar[str] = "log_triage"
    description: ClassVar[str] = "An on-call agent triaging generated service logs (example plugin)"
    Config: ClassVar[type[BaseModel]] = Settings
    modes: ClassVar[tuple[str, ...]] = ("record", "context")
    score_columns: ClassVar[tuple[tuple[str, str], ...]] = (("recall", "recall"), ("probes", "probes"),
                                                            ("history_tok", "history_tokens"))

    def __init__(self, config: BaseModel | None = None):
        self.config: Settings = config if isinstance(config, Settings) else Settings.model_validate({})

    def system_prompt(self) -> str | None:
        """The on-call agent's instructions."""
        return "You are the on-call engineer. Find the root cause of the outage from the logs."

    def tools(self) -> list[ToolSpec]:
        """grep_logs and read_log."""
        schema = {"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]}
        return [ToolSpec("grep_logs", "Grep a service's logs for errors", schema),
                ToolSpec("read_log", "Read a service's recent log", schema)]

    def check(self) -> None:
        """Nothing to install."""

    def needles(self) -> tuple[NaturalNeedle, ...]:
        """The facts the logs state early."""
        return (
            NaturalNeedle("root_cause", "Which database's connection pool was exhausted?",
                          re.compile(r"connection pool exhausted on (ledger-db-\d+)")),
            NaturalNeedle("error_code", "Which error code was returned to clients?",
                          re.compile(r"error code (LGR-\d+) returned")),
            NaturalNeedle("first_request", "What was the first failing request id?",
                          re.compile(r"first failing request: (req-[0-9a-f]+)")),
        )

    def fact_profile(self) -> Any | None:
        """The generic profile."""
        return None

    def messages(self, seed: int) -> tuple[list[Message], dict[str, tuple[int, str]]]:
        """The session, and where each fact is stated: (message index, the fact's line)."""
        rng = random.Random(f"log-triage-{seed}")
        facts = _facts(rng)
        c = self.config
        msgs = [Message.user("The ledger API is failing for some customers. Triage it and tell me the root cause.")]
        at = {name: max(1, int(c.incidents * frac)) for name, frac in
              (("root_cause", 0.08), ("first_request", 0.15), ("error_code", 0.22), ("runbook", 0.3))}
        where: dict[str, tuple[int, str]] = {}
        for i in range(c.incidents):
            service = rng.choice(SERVICES)
            tool = rng.choice(("grep_logs", "read_log"))
            tid = f"call_{seed}_{i}"
            msgs.append(Message("assistant", (TextBlock(f"Checking {service}."),
                                              ToolUseBlock(tid, tool, {"service": service}))))
            text = _log(rng, service, c.lines)
            for name, turn in at.items():
                if turn == i + 1:
                    text += "\n" + facts[name]
                    where[name] = (len(msgs), facts[name])
            msgs.append(Message("user", (ToolResultBlock(tid, text),)))
        msgs.append(Message.assistant("Summary: see the root cause above."))
        return msgs, where

    def run(self, store: Any, *, preset: str | None = None, window: int | None = None, seed: int = 0,
            mode: str | None = None, progress: Progress | None = None) -> WorkloadRun:
        """Record the triage session; in ``context`` mode, probe it under ``preset``."""
        from ctxmem import Session, load_preset
        from ctxmem.context import History
        from ctxmem.tokens import get_tokenizer

        mode = mode or "record"
        if mode not in self.modes:
            raise ConfigError(f"unknown mode {mode!r}; choose record or context", field="mode")
        msgs, where = self.messages(seed)
        session = Session.create(store, title=f"log triage, seed {seed}", tokenizers=["o200k_base"],
                                 metadata={"workload": self.name, "seed": seed})
        session.record_many(msgs)
        tokens = session.totals("o200k_base").content
        scores: dict[str, Any] = {"recall": None, "probes": 0, "history_tokens": tokens}
        if mode == "context":
            if not preset:
                raise ConfigError("context mode needs a preset", field="preset")
            builder = load_preset(preset).builder(context_window=window)
            history = History.from_messages(msgs[:1], get_tokenizer(builder.tokenizer))
            turns = [i for i, m in enumerate(msgs) if m.role == "assistant"]
            probe_at = {turns[max(0, round(f * len(turns)) - 1)] for f in (0.5, 0.75, 1.0)}
            hits: list[bool] = []
            try:
                for n, i in enumerate(turns, 1):
                    history.extend(msgs[len(history):i])
                    built = builder.build(history, record=False)
                    if i in probe_at:
                        text = "\n".join(t for m in built.messages for t in message_texts(m))
                        hits += [fact in text for idx, fact in where.values() if idx < i]
                    if progress:
                        progress(n, len(turns))
                scores.update(recall=sum(hits) / len(hits) if hits else None, probes=len(hits))
            except ContextOverflowError:
                pass  # the agent could not have sent a turn within the budget: unscored
        return WorkloadRun(self.name, session.id, mode, preset, seed, scores, scores["recall"],
                           history_tokens=tokens, system=self.system_prompt(), tools=tuple(self.tools()))
