"""Run the kernel workload: a policy against a fresh workspace, recorded in a Session.

:func:`run_scripted` drives :class:`~ctxmem.workloads.kernel.policy.ScriptedPolicy`; every
turn is one assistant message (a short reasoning note and one ``tool_use``) and one tool
result, appended to the store as they happen. Every turn it also builds the context the
chosen preset's strategy would send — from a :class:`~ctxmem.context.History` that is
extended with the two new messages (never reloaded from the session) — because in
``context`` mode that rendered context is all the policy may decide from, and in every
mode it gives the prompt tokens, the prefix-cache ratio and the probes (:mod:`.needles`)
that run at fixed turns against it, read-only. Whatever preset is chosen gets the kernel
fact profile (:data:`FACT_PROFILE`, via :meth:`~ctxmem.config.Preset.with_fact_profile`)
unless its file names one, so salience and summaries know the workload's vocabulary.

**Determinism.** Tool ids are ``toolu_<seed>_<turn>``, timestamps are
``1_700_000_000 + seed · 10⁶ + 60 · turn`` seconds, the session id derives from the run's
parameters, the workspace is fresh, and SIMX-1/git/ids are deterministic — so the same
seed and inputs give the same session, byte for byte (compare ``sessions export``).

:func:`run_llm` runs ``ctxmem.Agent`` with any client over the same tools and scores the
recorded session the same way (probes replayed afterwards on the history prefixes).

Scale: ``small`` (orientation + four short rounds, about 80 calls, for tests) and ``full``
(the whole ladder plus refinement: ≥ 1,000 calls, ~1M o200k tokens, ≥ 400 evaluations).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ctxmem.config import Preset, load_preset
from ctxmem.context import BuiltContext, History
from ctxmem.errors import ContextOverflowError, InputError
from ctxmem.events import ToolResultEvent, events_from_message
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store.base import SessionStore
from ctxmem.tokens import Budget
from ctxmem.workloads.kernel.kernel_tools import KernelTools, kernel_tool_specs
from ctxmem.workloads.kernel.needles import NeedleTracker, ProbeResult
from ctxmem.workloads.kernel.policy import Action, Scale, ScriptedPolicy
from ctxmem.workloads.kernel.sandbox import SandboxLimits
from ctxmem.workloads.kernel.scores import CallRecord, score_run
from ctxmem.workloads.kernel.workspace import Workspace

TOKENIZER = "o200k_base"
#: the kernel vocabulary (``ctxmem.fact_profiles``) handed to any preset whose file sets none
FACT_PROFILE = "kernel"
SYSTEM = ("You are an expert GPU kernel engineer. You optimize a Triton extend-attention kernel for an "
          "unfamiliar accelerator using the tools provided. Follow HARNESS.md. Keep the kernel correct.")
TASK = ("Optimize kernel.py (Triton extend attention) in this workspace for the target device. Read "
        "HARNESS.md first. Correctness is checked in the Triton interpreter against reference.py; speed "
        "comes from the target device. Commit progress with git, and submit your best kernel at the end.")
DEFAULT_MAX_CALLS: dict[str, int] = {"small": 120, "full": 1400}
PROBE_EVERY: dict[str, int] = {"small": 15, "full": 100}
# ``compare``'s window: the small session (~50k o200k tokens) fits any shipped preset's
# window whole, so every strategy would send the same context; 20k makes each one act
# (dump-truncate and window then still differ only in when they first cut, i.e. prompt
# tokens — both keep the newest suffix that fits). Full scale keeps the presets' own.
COMPARE_WINDOW: dict[str, int | None] = {"small": 20_000, "full": None}
Device = Literal["simx", "gpu"]
Progress = Callable[[int, int], None]


def kernel_preset(preset: str) -> Preset:
    """The preset a kernel run uses: ``preset`` (a shipped name or a file) with the kernel
    fact profile handed to its strategy, unless the file names its own."""
    return load_preset(preset).with_fact_profile(FACT_PROFILE)


@dataclass
class RunResult:
    session_id: str
    policy: str
    mode: str
    preset: str
    seed: int
    scale: str
    calls: list[CallRecord]
    probes: list[ProbeResult]
    builds: list[tuple[int, int]]
    submission: dict[str, Any] | None
    scores: dict[str, Any]
    history_tokens: int
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "policy": self.policy, "mode": self.mode, "preset": self.preset,
                "seed": self.seed, "scale": self.scale, "history_tokens": self.history_tokens,
                "wall_s": round(self.wall_s, 2), "submission": self.submission, "scores": self.scores,
                **self.extra}


def _clock(seed: int, turn: int) -> float:
    return 1_700_000_000.0 + seed * 1_000_000 + 60.0 * turn


def _session_id(store: SessionStore, parts: Sequence[object]) -> str:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:10]
    base = f"kernel-{digest}"
    taken = {s.id for s in store.list_sessions()}
    sid, n = base, 1
    while sid in taken:
        n += 1
        sid = f"{base}-{n}"
    return sid


class _Builder:
    """The preset's strategy over an incrementally extended History."""

    def __init__(self, preset: Preset, window: int | None):
        self.builder = preset.builder(context_window=window, tokenizer=TOKENIZER)
        self.strategy = self.builder.strategy
        self.budget: Budget = self.builder.budget
        self.tools = tuple(kernel_tool_specs())
        self.history = History.from_messages([], TOKENIZER)

    def build(self) -> BuiltContext | None:
        try:
            return self.builder.build(self.history, system=SYSTEM, tools=self.tools)
        except ContextOverflowError:
            return None


def run_scripted(
    store: SessionStore,
    *,
    seed: int = 0,
    mode: str = "oracle",
    preset: str = "pipeline-200k",
    scale: Scale = "small",
    max_calls: int | None = None,
    device: Device = "simx",
    window: int | None = None,
    workspace: str | Path | None = None,
    limits: SandboxLimits | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run the scripted policy and record it; see the module docstring."""
    started = time.monotonic()
    max_calls = max_calls or DEFAULT_MAX_CALLS[scale]
    loaded = kernel_preset(preset)
    policy = ScriptedPolicy(seed, mode, scale=scale)
    builder = _Builder(loaded, window)
    sid = _session_id(store, ("scripted", seed, mode, loaded.name, scale, max_calls, device, window))
    session = Session.create(store, session_id=sid, title=f"kernel · scripted {mode} · {loaded.name} · seed {seed}",
                             metadata={"system": SYSTEM, "workload": "kernel", "policy": "scripted", "seed": seed,
                                       "mode": mode, "preset": loaded.name, "scale": scale, "device": device},
                             tokenizers=[TOKENIZER])
    tmp = None
    if workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="ctxmem-kernel-")
        workspace = Path(tmp.name) / "ws"
    tools = KernelTools(Workspace.create(workspace), seed=seed, device=device, limits=limits)
    tracker = NeedleTracker()
    calls: list[CallRecord] = []
    probes: list[ProbeResult] = []
    builds: list[tuple[int, int]] = []
    task = Message.user(TASK)
    store.append(sid, events_from_message(task), created_at=_clock(seed, 0))
    builder.history.extend([task])
    every = PROBE_EVERY[scale]
    try:
        turn = 0
        while turn < max_calls:
            built = builder.build()
            if built is not None:
                builds.append((built.report.tokens_out, built.report.stable_prefix_tokens))
            if turn and turn % every == 0 and built is not None:
                probes += tracker.probe(built.messages, turn=turn, history_tokens=builder.history.total)
            if turn == max_calls - 3:
                policy.finish_now()
            view = (built.messages if built is not None else []) if policy.needs_view else None
            action = policy.step(view)
            if action is None:
                if built is not None:
                    probes += tracker.probe(built.messages, turn=turn, history_tokens=builder.history.total)
                break
            turn += 1
            _turn(store, session, builder, tools, tracker, policy, calls, action, seed, turn)
            if progress is not None:
                progress(turn, max_calls)
    finally:
        if tmp is not None:
            tmp.cleanup()
    scores = score_run(calls, probes, builds, tools.last_submission)
    return RunResult(sid, "scripted", mode, loaded.name, seed, scale, calls, probes, builds, tools.last_submission,
                     scores, builder.history.total, time.monotonic() - started,
                     extra={"rounds": policy.rounds, "bugs_introduced": policy.bugs_introduced})


def _turn(store: SessionStore, session: Session, builder: _Builder, tools: KernelTools, tracker: NeedleTracker,
          policy: ScriptedPolicy, calls: list[CallRecord], action: Action, seed: int, turn: int) -> None:
    use_id = f"toolu_{seed:04d}_{turn:05d}"
    assistant = Message("assistant", (TextBlock(action.text), ToolUseBlock(use_id, action.tool, dict(action.input))))
    store.append(session.id, events_from_message(assistant), created_at=_clock(seed, turn))
    text, is_error = tools.call(action.tool, action.input)
    result = ToolResultBlock(use_id, text, is_error)
    store.append(session.id, [ToolResultEvent(result, action.tool)], created_at=_clock(seed, turn) + 30.0)
    h = builder.history
    at = len(h)
    tracker.observe(turn=turn, message_index=at, token_position=h.total, tool=action.tool, text=action.text,
                    source="assistant")
    h.extend([assistant, Message("user", (result,))])
    tracker.observe(turn=turn, message_index=at + 1, token_position=h.cum[at + 1], tool=action.tool, text=text,
                    source="tool")
    policy.observe(action, text, is_error)
    calls.append(CallRecord(turn, action.tool, dict(action.input), text, is_error, action.text))


# -- the LLM policy ----------------------------------------------------------------------


def run_llm(
    store: SessionStore,
    client: Any,
    *,
    seed: int = 0,
    preset: str = "pipeline-200k",
    max_calls: int = 50,
    device: Device = "simx",
    window: int | None = None,
    workspace: str | Path | None = None,
    limits: SandboxLimits | None = None,
    probe_every: int = 10,
    allow_unsandboxed_gpu: bool = False,
) -> RunResult:
    """``ctxmem.Agent`` with ``client`` over the kernel tools; scored like a scripted run.

    ``device="gpu"`` runs the model's kernels on the GPU outside the OS sandbox (behind the
    static screen and a scrubbed environment only), so it must be asked for with
    ``allow_unsandboxed_gpu=True``; SIMX runs every kernel inside the sandbox."""
    from ctxmem.agent import Agent, Tool

    if device == "gpu" and not allow_unsandboxed_gpu:
        raise InputError(
            "device='gpu' would run the model's kernels outside the sandbox (CUDA needs the device): "
            "pass allow_unsandboxed_gpu=True (CLI: --allow-unsandboxed-gpu) on a machine you are "
            "willing to expose to them, or use device='simx'", field="device")
    started = time.monotonic()
    loaded = kernel_preset(preset)
    budget = loaded.budget(window)
    sid = _session_id(store, ("llm", seed, getattr(client, "model", ""), loaded.name, max_calls, device, window))
    session = Session.create(store, session_id=sid, title=f"kernel · llm · {loaded.name} · seed {seed}",
                             metadata={"system": SYSTEM, "workload": "kernel", "policy": "llm", "seed": seed,
                                       "preset": loaded.name, "device": device}, tokenizers=[TOKENIZER])
    tmp = None
    if workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="ctxmem-kernel-")
        workspace = Path(tmp.name) / "ws"
    tools = KernelTools(Workspace.create(workspace), seed=seed, device=device, limits=limits)

    class ToolError(Exception):
        """The tool could not do its job; the text is the tool's output."""

    def wrap(name: str) -> Callable[[dict[str, Any]], str]:
        def fn(arguments: dict[str, Any]) -> str:
            text, is_error = tools.call(name, arguments)
            if is_error:
                raise ToolError(text)
            return text
        return fn

    agent_tools = [Tool(s.name, wrap(s.name), s.description, s.input_schema) for s in kernel_tool_specs()]
    agent = Agent(client, session, tools=agent_tools, system=SYSTEM, preset=loaded,
                  context_window=budget.context_window, max_turns=max_calls, tokenizer=TOKENIZER)
    try:
        outcome = agent.run_sync(TASK)
    finally:
        if tmp is not None:
            tmp.cleanup()
    calls, probes, builds, total = score_inputs_from_session(session, loaded, window, probe_every)
    scores = score_run(calls, probes, builds, tools.last_submission)
    return RunResult(sid, "llm", "llm", loaded.name, seed, "llm", calls, probes, builds, tools.last_submission,
                     scores, total, time.monotonic() - started,
                     extra={"stop_reason": outcome.stop_reason, "turns": outcome.turns})


def score_inputs_from_session(session: Session, preset: Preset, window: int | None, probe_every: int
                              ) -> tuple[list[CallRecord], list[ProbeResult], list[tuple[int, int]], int]:
    """Calls, probes and builds of a recorded session (builds replayed turn by turn)."""
    messages = session.messages()
    builder = _Builder(preset, window)
    tracker = NeedleTracker()
    calls: list[CallRecord] = []
    probes: list[ProbeResult] = []
    builds: list[tuple[int, int]] = []
    pending: dict[str, tuple[int, str, dict[str, Any], str]] = {}
    turn = 0
    for m in messages:
        h = builder.history
        if m.role == "assistant":
            built = builder.build()
            if built is not None:
                builds.append((built.report.tokens_out, built.report.stable_prefix_tokens))
                if turn and turn % probe_every == 0:
                    probes += tracker.probe(built.messages, turn=turn, history_tokens=h.total)
            note = " ".join(b.text for b in m.content if isinstance(b, TextBlock))
            for b in m.content:
                if isinstance(b, ToolUseBlock):
                    turn += 1
                    pending[b.id] = (turn, b.name, dict(b.input), note)
            tracker.observe(turn=turn, message_index=len(h), token_position=h.total, tool="", text=note,
                            source="assistant")
        h.extend([m])
        for b in m.content:
            if isinstance(b, ToolResultBlock) and b.tool_use_id in pending:
                t, name, args, note = pending.pop(b.tool_use_id)
                text = b.text
                prefix = f"{name} failed: ToolError: "
                if b.is_error and text.startswith(prefix):
                    text = text[len(prefix):]
                calls.append(CallRecord(t, name, args, text, b.is_error, note))
                tracker.observe(turn=t, message_index=len(h) - 1, token_position=h.cum[len(h) - 1], tool=name,
                                text=text, source="tool")
    if messages and messages[-1].role == "user":
        built = builder.build()
        if built is not None:
            probes += tracker.probe(built.messages, turn=turn, history_tokens=builder.history.total)
    return calls, probes, builds, builder.history.total


__all__ = ["COMPARE_WINDOW", "SYSTEM", "TASK", "RunResult", "run_llm", "run_scripted", "score_inputs_from_session"]
