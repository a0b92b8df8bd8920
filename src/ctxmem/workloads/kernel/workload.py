"""The kernel-optimization workload as a :class:`~ctxmem.workloads.Workload`.

An agent optimizes an original Triton extend-attention kernel through read / edit /
compile / check / benchmark / profile / git tools (:mod:`ctxmem.workloads.kernel.run`).
Settings (``workload run kernel --set scale=full --set policy=llm --set model=…``):
``scale`` (small ≈ 80 calls, full ≥ 1,000 calls and ~1M tokens), ``max_calls``,
``device`` (``simx``: the simulated accelerator; ``gpu``: ``do_bench`` on CUDA),
``policy`` (``scripted`` or ``llm``) and ``model`` (the LLM policy's client spec).

Modes (the scripted policy's memory): ``oracle`` (remembers everything; the recording
mode), ``context`` (decides only from what the preset builds — what ``tune sweep`` runs),
``amnesic-K`` (remembers its last K turns), ``quitter``.

The sweep score is ``recall × (1 − regret) × (1 − wasted_per_100 / 100)``: the fraction
of the run's facts still answerable, discounted by what forgetting cost the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ctxmem.errors import ConfigError, MissingDependencyError
from ctxmem.messages import ToolSpec
from ctxmem.store.base import SessionStore
from ctxmem.workloads.base import NaturalNeedle, Progress, WorkloadRun


class KernelConfig(BaseModel):
    """Settings of the kernel workload."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scale: Literal["small", "full"] = Field("small", description="small (~80 calls) or full (>=1,000 calls, ~1M tokens).")
    max_calls: int | None = Field(None, ge=8, description="Stop (and submit) within this many tool calls.")
    device: Literal["simx", "gpu"] = Field("simx", description="simx (simulated accelerator) or gpu (CUDA do_bench).")
    policy: Literal["scripted", "llm"] = Field("scripted", description="The deterministic scripted policy or an LLM.")
    model: str | None = Field(None, description="The LLM policy's client spec, e.g. anthropic:claude-sonnet-4-5.")
    allow_unsandboxed_gpu: bool = Field(
        False, description="policy llm with device gpu: run the model's kernels on the GPU outside the OS sandbox.")


def kernel_score(scores: Mapping[str, Any]) -> float | None:
    """The sweep score of a kernel run: recall × (1 − regret) × (1 − wasted_per_100 / 100)."""
    recall = scores.get("recall")
    if recall is None:
        return None
    return float(recall) * (1.0 - float(scores.get("regret") or 0.0)) * (
        1.0 - float(scores.get("wasted_per_100") or 0.0) / 100.0)


class KernelWorkload:
    """The ``kernel`` workload (see the module docstring)."""

    name: ClassVar[str] = "kernel"
    description: ClassVar[str] = ("An agent optimizing an original Triton extend-attention kernel on a simulated "
                                  "accelerator (needs ctxmem[kernels])")
    Config: ClassVar[type[BaseModel]] = KernelConfig
    modes: ClassVar[tuple[str, ...]] = ("oracle", "context", "amnesic-8", "quitter")
    score_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("speedup", "final_speedup"), ("regret", "regret"), ("calls", "tool_calls"), ("evals", "evaluations"),
        ("waste/100", "wasted_per_100"), ("viol", "limit_violations"), ("recall", "recall"),
        ("answered", "answered"), ("prompt_tok", "prompt_tokens"), ("cache_hit", "cache_hit_ratio"))

    def __init__(self, config: BaseModel | None = None):
        self.config: KernelConfig = config if isinstance(config, KernelConfig) else KernelConfig.model_validate({})

    def system_prompt(self) -> str | None:
        """The kernel engineer's system prompt."""
        from ctxmem.workloads.kernel.run import SYSTEM

        return SYSTEM

    def tools(self) -> list[ToolSpec]:
        """The kernel tools (files, compile, check, benchmark, autotune, profile, git, submit)."""
        from ctxmem.workloads.kernel.kernel_tools import kernel_tool_specs

        return list(kernel_tool_specs())

    def check(self) -> None:
        """torch, triton and numpy must be installed: every check runs the Triton interpreter."""
        import importlib.util

        for package in ("torch", "triton", "numpy"):
            if importlib.util.find_spec(package) is None:
                raise MissingDependencyError(package, "kernels", "The kernel workload (its checks run the Triton "
                                             "interpreter)")
        if self.config.policy == "llm" and not self.config.model:
            raise ConfigError("the llm policy needs a model, e.g. --set model=anthropic:claude-sonnet-4-5",
                              field="model")
        if self.config.policy == "llm" and self.config.device == "gpu" and not self.config.allow_unsandboxed_gpu:
            raise ConfigError("device gpu would run the model's kernels outside the sandbox (CUDA needs the device): "
                              "add --set allow_unsandboxed_gpu=true to accept that, or keep device simx",
                              field="device")

    def needles(self) -> tuple[NaturalNeedle, ...]:
        """The kernel facts found in tool outputs (limits, device, tolerances, …), not the moving best commit."""
        from ctxmem.workloads.kernel.needles import NEEDLES

        return tuple(NaturalNeedle(s.name, s.question, s.pattern, tuple(s.tools)) for s in NEEDLES
                     if s.source == "tool" and s.name != "best_commit")

    def fact_profile(self) -> Any | None:
        """The kernel vocabulary (speedups, geomeans, eval/bench ids, hardware limits)."""
        import importlib

        try:
            module = importlib.import_module("ctxmem.workloads.kernel.fact_profile")
        except ImportError:
            return None
        return getattr(module, "PROFILE", None) or getattr(module, "KERNEL_PROFILE", None)

    def run(self, store: SessionStore, *, preset: str | None = None, window: int | None = None, seed: int = 0,
            mode: str | None = None, progress: Progress | None = None) -> WorkloadRun:
        """One run of the scripted (or LLM) policy, recorded in ``store`` and scored."""
        from ctxmem.workloads.kernel.policy import parse_mode

        self.check()
        c = self.config
        mode = mode or self.modes[0]
        try:
            parse_mode(mode)
        except ValueError as exc:
            raise ConfigError(str(exc), field="mode") from None
        kwargs: dict[str, Any] = {"seed": seed, "device": c.device, "window": window}
        if preset is not None:
            kwargs["preset"] = preset
        if c.policy == "llm":
            from ctxmem.clients import get_client
            from ctxmem.workloads.kernel.run import run_llm

            assert c.model is not None
            result = run_llm(store, get_client(c.model), max_calls=c.max_calls or 50,
                             allow_unsandboxed_gpu=c.allow_unsandboxed_gpu, **kwargs)
        else:
            from ctxmem.workloads.kernel.run import run_scripted

            result = run_scripted(store, mode=mode, scale=c.scale, max_calls=c.max_calls, progress=progress,
                                  **kwargs)
        probes = [p.to_json() if hasattr(p, "to_json") else dict(vars(p)) for p in result.probes]
        return WorkloadRun(self.name, result.session_id, result.mode, preset, seed, dict(result.scores),
                           kernel_score(result.scores), history_tokens=result.history_tokens,
                           system=self.system_prompt(), tools=tuple(self.tools()), probes=probes,
                           metrics={"wall_s": round(result.wall_s, 2), "scale": c.scale, "policy": c.policy,
                                    "submission": result.submission})


__all__ = ["KernelConfig", "KernelWorkload", "kernel_score"]
