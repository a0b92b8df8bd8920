"""Inspect AI tasks: ctxmem's needle evaluations, run by ``inspect eval``.

Registered through Inspect's ``inspect_ai`` entry point (``pyproject.toml``), so after
``pip install "ctxmem[inspect]"``::

    inspect eval ctxmem/niah --model anthropic/claude-sonnet-4-5 -T preset=masking-200k -T lengths=4k,32k
    inspect eval ctxmem/session_needles --model openai/gpt-4.1 -T preset=pipeline-200k
    inspect eval ctxmem/niah --model mockllm/model --limit 4          # offline smoke run

Tasks (every parameter is a ``-T name=value``):

``niah``
    The classic grid: haystack ``source`` (``prose``, ``code``, ``log``, ``folder:PATH``)
    × ``lengths`` × ``depths`` for one needle family (``literal``, ``multikey``,
    ``multivalue``, ``nonliteral``, ``absent``) and ``seeds`` seeds.
``session_needles``
    The session-needles sweep: needles written into tool results of an agent session
    (``source=agent``, a synthetic kernel-style session; or ``agent:FILE.jsonl`` /
    ``agent:DB#SESSION``), cut to each length; the preset decides what the model sees.

**The preset is a task parameter, applied by a solver.** Every sample carries the cell
and the preset in its metadata. :func:`ctxmem_context` builds the cell with
:func:`ctxmem.evals.cells.build_cell` under the preset — the exact context ctxmem's own
evaluator would send — and puts it in ``state.messages``, recording the needle's
*survival* (``verbatim``/``normalized``/``absent``) and its message's *fate*
(``kept``/``masked``/``summarized``/``dropped``) in the sample store; then ``generate()``
asks the model. The ``window`` parameter (default 200,000) is the model's window a cell
must fit; a cell that cannot fit is scored as refused, never silently cut.

**Scores.** :func:`needle_scorer` scores the answer with the family's deterministic rule
(:func:`ctxmem.evals.scoring.score_needles`) and attributes each miss
(:func:`ctxmem.evals.attribution.label`): metrics ``accuracy``, ``stderr``,
``survived`` (share of samples whose needle reached the model), ``dropped_by_strategy``
and ``missed_by_model`` (shares of samples missed for each reason).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageTool,
    ChatMessageUser,
    ContentText,
    GenerateConfig,
)
from inspect_ai.scorer import (
    CORRECT,
    INCORRECT,
    Metric,
    SampleScore,
    Score,
    Target,
    accuracy,
    metric,
    scorer,
    stderr,
)
from inspect_ai.solver import Generate, Solver, TaskState, generate, solver
from inspect_ai.tool import ToolCall

from ctxmem.evals.cells import Cell, CellRefusedError, build_cell
from ctxmem.evals.grid import expand, parse_depths, parse_lengths
from ctxmem.messages import (
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ctxmem.tokens import provision_tiktoken_cache

DEFAULT_WINDOW = 200_000


def to_inspect(messages: list[Message], system: str | None = None) -> list[ChatMessage]:
    """ctxmem messages → Inspect chat messages (tool results become ``tool`` messages, an
    error result carries a ``ToolCallError``; thinking becomes ``ContentReasoning``, with its
    signature, and redacted thinking a redacted one)."""
    from inspect_ai.model import ChatMessageSystem, ContentReasoning
    from inspect_ai.tool import ToolCallError

    out: list[ChatMessage] = [ChatMessageSystem(content=system)] if system else []
    names: dict[str, str] = {}
    for m in messages:
        texts = [b.text for b in m.content if isinstance(b, TextBlock)]
        if m.role == "assistant":
            calls = [ToolCall(id=b.id, function=b.name, arguments=dict(b.input))
                     for b in m.content if isinstance(b, ToolUseBlock)]
            names.update((c.id, c.function) for c in calls)
            reasoning = [
                ContentReasoning(reasoning=b.thinking, signature=b.signature or None) if isinstance(b, ThinkingBlock)
                else ContentReasoning(reasoning=b.data, redacted=True)
                for b in m.content if isinstance(b, ThinkingBlock | RedactedThinkingBlock)
            ]
            content: Any = "\n".join(texts)
            if reasoning:  # the reasoning first, as the model produced it, then the text
                content = [*reasoning, *([ContentText(text=content)] if content else [])]
            out.append(ChatMessageAssistant(content=content, tool_calls=calls or None))
            continue
        for b in m.content:
            if isinstance(b, ToolResultBlock):
                out.append(ChatMessageTool(
                    content=b.text, tool_call_id=b.tool_use_id, function=names.get(b.tool_use_id),
                    error=ToolCallError("unknown", b.text) if b.is_error else None))
        if texts:
            out.append(ChatMessageUser(content=[ContentText(text=t) for t in texts]))
    return out


def _samples(cells: list[Cell], preset: str) -> MemoryDataset:
    from ctxmem.evals.needles import make_needles

    samples = []
    for c in cells:
        needles = make_needles(c.needle, c.depth, c.seed)
        samples.append(Sample(
            id=f"{c.source}-{c.length}-d{c.depth:g}-{c.needle}-s{c.seed}",
            input=needles.question,
            target=list(needles.answers) or ["NOT FOUND"],
            metadata={"cell": c.to_json(), "preset": preset, "family": c.needle,
                      "length": c.length, "depth": c.depth},
        ))
    return MemoryDataset(samples, name="ctxmem")


@solver
def ctxmem_context(preset: str = "none") -> Solver:
    """Replace the messages with the cell's context as ``preset`` builds it (module docstring)."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        import asyncio

        cell = Cell(**{**state.metadata["cell"], "preset": preset})
        try:
            built = await asyncio.to_thread(build_cell, cell)
        except CellRefusedError as exc:
            state.store.set("ctxmem", {"preset": preset, "refused": str(exc)})
            state.completed = True
            return state
        state.messages = to_inspect(built.messages, built.system)
        report = built.strategy_report or {}
        state.store.set("ctxmem", {
            "preset": preset, "survival": built.survival, "fate": built.fate,
            "length_tokens": built.length_tokens, "request_tokens": built.request_tokens,
            "strategy_notes": list(report.get("notes", [])),
        })
        return state

    return solve


def _share(key: str, wanted: str) -> Metric:
    def compute(scores: list[SampleScore]) -> float:
        vals = [(s.score.metadata or {}).get(key) for s in scores]
        return sum(v == wanted for v in vals) / len(vals) if vals else 0.0

    return compute


@metric
def survived() -> Metric:
    """Share of samples whose needle reached the model verbatim or normalized."""

    def compute(scores: list[SampleScore]) -> float:
        vals = [(s.score.metadata or {}).get("survival") for s in scores]
        return sum(v in ("verbatim", "normalized") for v in vals) / len(vals) if vals else 0.0

    return compute


@metric
def dropped_by_strategy() -> Metric:
    """Share of samples missed because the strategy left the needle out."""
    return _share("attribution", "dropped-by-strategy")


@metric
def missed_by_model() -> Metric:
    """Share of samples the model missed although the needle reached it."""
    return _share("attribution", "missed-by-model")


@scorer(metrics=[accuracy(), stderr(), survived(), dropped_by_strategy(), missed_by_model()])
def needle_scorer() -> Any:
    """The family's deterministic rule, plus survival attribution of every miss."""
    from ctxmem.evals.attribution import label
    from ctxmem.evals.needles import make_needles
    from ctxmem.evals.scoring import score_needles

    async def score(state: TaskState, target: Target) -> Score:
        info = state.store.get("ctxmem") or {}
        c = state.metadata["cell"]
        answer = state.output.completion if state.output else ""
        if "refused" in info:
            return Score(value=INCORRECT, answer="", explanation=info["refused"],
                         metadata={"attribution": "refused", "survival": "n/a", "preset": info.get("preset")})
        needles = make_needles(c["needle"], c["depth"], c["seed"])
        s = score_needles(needles, answer)
        lab = label(s.correct, info.get("survival", "n/a"), info.get("fate", "kept"))
        return Score(
            value=CORRECT if s.correct else INCORRECT,
            answer=answer,
            explanation=f"{lab}: needle {info.get('survival')} ({info.get('fate')}) under {info.get('preset')}",
            metadata={"attribution": lab, "survival": info.get("survival"), "fate": info.get("fate"),
                      "preset": info.get("preset"), "rules": s.rules,
                      "request_tokens": info.get("request_tokens")},
        )

    return score


def _axis(value: Any) -> str:
    # ``-T lengths=1k,4k`` reaches the task as a list (Inspect parses values as YAML)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _whole(value: Any, field: str, *, tokens: bool = False, least: int = 1) -> int:
    """A task parameter as a whole number (``-T window=128k`` reads as the CLI's ``--window 128k``)."""
    from ctxmem.errors import InputError
    from ctxmem.tokens.budget import parse_token_size

    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and tokens:
        try:
            n = parse_token_size(value)
        except ValueError as exc:
            raise InputError(str(exc), field=field) from None
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        n = int(value)
    else:
        raise InputError(f"expected a whole number, got {value!r}", field=field)
    if n < least:
        raise InputError(f"must be at least {least}, got {n}", field=field)
    return n


def _task(source: str, lengths: Any, depths: Any, needle: str, preset: str, seeds: int,
          window: int, tokenizer: str, max_tokens: int) -> Task:
    if preset != "none":
        from ctxmem.config import load_preset

        load_preset(preset)  # an unknown preset fails here, once, not in every sample's solver
    reply = _whole(max_tokens, "max_tokens", tokens=True)
    cells = expand(
        sources=[source], lengths=parse_lengths(_axis(lengths)), depths=parse_depths(_axis(depths)),
        needles=[needle], presets=["none"], models=["inspect"], seeds=range(_whole(seeds, "seeds")),
        tokenizer=tokenizer, window=_whole(window, "window", tokens=True), max_tokens=reply,
    )
    cells = [replace(c, preset="none") for c in cells]
    # Inspect counts tokens with tiktoken's o200k_base (its mockllm reports usage that way),
    # which downloads its file on first use: written from quicktok's vocabulary instead, so a
    # run works offline (the same bytes, checked against tiktoken's own hash)
    provision_tiktoken_cache(("o200k_base",))
    return Task(
        dataset=_samples(cells, preset),
        solver=[ctxmem_context(preset), generate()],
        scorer=needle_scorer(),
        # the reply limit each cell was sized for (its request + max_tokens fits the window):
        # without it the model answered at the provider's own default limit
        config=GenerateConfig(max_tokens=reply),
        metadata={"ctxmem_preset": preset, "source": source},
    )


@task
def niah(source: str = "prose", lengths: str = "1k,4k", depths: str = "0,0.5,1", needle: str = "literal",
         preset: str = "none", seeds: int = 1, window: int = DEFAULT_WINDOW, tokenizer: str = "o200k_base",
         max_tokens: int = 64) -> Task:
    """Needle in a haystack: length × depth for one needle family, context built by ``preset``."""
    return _task(source, lengths, depths, needle, preset, seeds, window, tokenizer, max_tokens)


@task
def session_needles(source: str = "agent", lengths: str = "8k,32k", depths: str = "0,0.5,1",
                    needle: str = "literal", preset: str = "masking-200k", seeds: int = 1,
                    window: int = DEFAULT_WINDOW, tokenizer: str = "o200k_base", max_tokens: int = 64) -> Task:
    """Needles inside tool results of an agent session; ``preset`` decides what the model sees."""
    return _task(source, lengths, depths, needle, preset, seeds, window, tokenizer, max_tokens)


__all__ = ["ctxmem_context", "needle_scorer", "niah", "session_needles", "to_inspect"]
