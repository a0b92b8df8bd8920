"""Raw SDK loops: what to send, in each provider's wire shape, and how to record the reply.

For code that calls the ``anthropic`` or ``openai`` SDK itself instead of using
:class:`~ctxmem.agent.Agent`::

    import anthropic
    from ctxmem import Message, Session, SQLiteStore, wire

    client, session = anthropic.Anthropic(), Session.create(SQLiteStore("run.db"))
    session.record(Message.user("Make the kernel faster."))
    while True:
        params = wire.anthropic_request(session, "masking-200k", system=SYSTEM, tools=TOOLS)
        reply = wire.record_response(session, client.messages.create(
            model="claude-sonnet-4-6", max_tokens=4096, **params))
        if not reply.tool_uses:
            break
        for use in reply.tool_uses:
            out = wire.run_tool(session, use, MY_TOOLS)   # recall is ctxmem's, the rest yours
            session.record_tool_result(use.id, out, is_error=wire.is_error_output(out), tool_name=use.name)

* :func:`anthropic_request` / :func:`openai_request` build the next context of a session
  with a preset (by name, path, :class:`~ctxmem.config.Preset` or a ready
  :class:`~ctxmem.config.ContextBuilder`) and return the keyword arguments of
  ``messages.create`` / ``chat.completions.create``: messages, system prompt, tools —
  the caller's plus the ones the context names (``recall`` for masked outputs) — and, for
  Anthropic, the strategy's prompt-cache breakpoints as ``cache_control`` marks (OpenAI
  caches prefixes automatically). ``expect_input=True`` builds for a history that ends in
  the model's final answer when the caller is about to append the next user input.
* :func:`record_response` records a reply as it comes from the SDK (an
  ``anthropic.types.Message``, an ``openai`` ``ChatCompletion``, a dict of either, or a
  :class:`~ctxmem.clients.Response`): the assistant message and a ``model_call`` event
  with its usage, in one transaction, paired with ctxmem's estimate of that prompt for
  calibration. It returns the :class:`~ctxmem.clients.Response`.
* :func:`run_tool` runs one tool call: the tools a context named (``recall``) by ctxmem
  against the session, the rest from the caller's mapping; errors come back as text the
  model can read, flagged so the result is recorded with ``is_error``.

Presets given by name are turned into builders once per process and reused (their
strategies keep the state that records each compaction once).

**Incremental across calls.** The first call for a session loads its
:class:`~ctxmem.context.History` from the stored counts; later calls extend that same
History with only the events recorded since (read one by one from the new head back to
the one seen last, their messages counted once), so a turn costs what it appended, not the
session's length, and the strategy's per-history caches stay warm. The check is sound
against any writer: the session's head and depth are read each call, and unless the new
head's chain passes through the last one seen (``depth`` − ``k`` steps back), the new
events open a new message rather than continue the last one, and the store object is the
same, the history is reloaded in full — after a rewind or fork, or when another handle
added a tool result to the last message. Like the reused builders' strategies, the cached
History is not for concurrent use: call these helpers for one session from one thread at
a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctxmem.clients.base import CacheBreakpoints, Response, Usage
from ctxmem.context import CONTEXT_TOOLS, run_context_tool
from ctxmem.context.history import FollowedHistories
from ctxmem.errors import CtxmemError, InputError
from ctxmem.messages import (
    ToolSpec,
    ToolUseBlock,
    block_from_anthropic,
    reply_from_openai,
    to_openai,
    tool_from_anthropic,
    tool_from_openai,
    tool_to_openai,
)

if TYPE_CHECKING:
    from ctxmem.config import ContextBuilder
    from ctxmem.context import BuiltContext, History
    from ctxmem.session import Session



@dataclass
class _Last:
    """The estimate behind the last request built for a session (paired with usage later)."""

    tokens: int
    tokenizer: str


_BUILDERS: dict[tuple[object, ...], tuple[Any, Any, ContextBuilder]] = {}
_LAST: dict[str, _Last] = {}


_FOLLOWED = FollowedHistories()


def session_history(session: Session, builder: ContextBuilder) -> History:
    """``session``'s History in ``builder``'s tokenizer, extended since the last call (see
    "Incremental across calls" in the module docstring)."""
    return _FOLLOWED.get(session, builder.tokenizer)


def builder_for(preset: Any, *, tokenizer: str | None = None, client: Any = None) -> ContextBuilder:
    """A :class:`~ctxmem.config.ContextBuilder` for ``preset``, reused across calls.

    A preset given by name or path, or as a :class:`~ctxmem.config.Preset` object, gets one
    builder per process (per preset, tokenizer and summarizer client), so its strategy's
    per-history caches carry from one call to the next: a new builder each call would
    rebuild them from the whole session every turn."""
    from ctxmem.config import ContextBuilder, Preset, load_preset

    if isinstance(preset, ContextBuilder):
        return preset
    if isinstance(preset, str | os.PathLike):
        key: tuple[object, ...] = (os.fspath(preset), tokenizer, id(client))
    elif isinstance(preset, Preset):  # unhashable (its params are a dict): by identity, held below
        key = (id(preset), tokenizer, id(client))
    else:
        raise InputError(
            f"preset must be a preset name, a .toml path, a Preset or a ContextBuilder, got {type(preset).__name__}",
            field="preset",
        )
    found = _BUILDERS.get(key)
    # the entry holds the preset and client it was made for, so their ids are not reused meanwhile
    if found is not None and found[1] is client and (not isinstance(preset, Preset) or found[0] is preset):
        return found[2]
    if len(_BUILDERS) > 32:
        _BUILDERS.clear()
    loaded = preset if isinstance(preset, Preset) else load_preset(preset)
    built = loaded.builder(tokenizer=tokenizer, client=client)
    _BUILDERS[key] = (preset, client, built)
    return built


def _tool_specs(tools: Sequence[Any], kind: str) -> list[ToolSpec]:
    out: list[ToolSpec] = []
    for t in tools:
        if isinstance(t, ToolSpec):
            out.append(t)
        elif isinstance(t, Mapping) and t.get("type") == "function":
            out.append(tool_from_openai(t))
        else:
            out.append(tool_from_anthropic(t))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise InputError(f"{kind} tool names must be unique, got {names}", field="tools")
    return out


def build(
    session: Session,
    preset: Any,
    *,
    system: str | None = None,
    tools: Sequence[Any] = (),
    expect_input: bool = False,
    client: Any = None,
) -> tuple[BuiltContext, list[ToolSpec]]:
    """The built context of ``session``'s next request and the tools to offer with it."""
    builder = builder_for(preset, client=client)
    specs = _tool_specs(tools, "the caller's")
    history = session_history(session, builder)
    built = builder.build(history, session=session, system=system, tools=specs, expect_input=expect_input)
    offered = [*specs, *(t for t in built.extra_tools if t.name not in {s.name for s in specs})]
    _LAST[session.id] = _Last(built.report.tokens_out, builder.tokenizer)
    if len(_LAST) > 1024:
        _LAST.pop(next(iter(_LAST)))
    return built, offered


def anthropic_request(
    session: Session,
    preset: Any,
    *,
    system: str | None = None,
    tools: Sequence[Any] = (),
    model: str | None = None,
    max_tokens: int | None = None,
    cache_breakpoints: CacheBreakpoints | None = CacheBreakpoints(),  # noqa: B008 (frozen)
    expect_input: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Keyword arguments for ``anthropic.Anthropic().messages.create(**params)``.

    ``tools`` are :class:`~ctxmem.messages.ToolSpec` or Anthropic tool dicts; the tools
    the context names are appended. ``cache_breakpoints`` marks the system prompt, the
    tool list and the strategy's own breakpoints (``None``: no ``cache_control``).
    ``model`` and ``max_tokens`` are included when given. ``client`` is the LLM client a
    preset's ``summarizer_model = "agent"`` summarizes with.
    """
    from dataclasses import replace

    from ctxmem.clients.anthropic import build_params

    built, offered = build(session, preset, system=system, tools=tools, expect_input=expect_input, client=client)
    bp = cache_breakpoints
    if bp is not None and built.cache_breakpoints:
        bp = replace(bp, messages=tuple(built.cache_breakpoints))
    params = build_params(
        model or "", built.messages, system=system, tools=offered, max_tokens=max_tokens, temperature=None,
        cache_breakpoints=bp, thinking=None,
    )
    if not model:
        params.pop("model")
    return params


def openai_request(
    session: Session,
    preset: Any,
    *,
    system: str | None = None,
    tools: Sequence[Any] = (),
    model: str | None = None,
    max_tokens: int | None = None,
    expect_input: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Keyword arguments for ``openai.OpenAI().chat.completions.create(**params)``:
    chat-completions messages (system first), ``function`` tools with the context's own.
    OpenAI-compatible servers cache prefixes themselves; the strategy keeps the prefix
    byte-stable between compactions so they can."""
    built, offered = build(session, preset, system=system, tools=tools, expect_input=expect_input, client=client)
    params: dict[str, Any] = {"messages": to_openai(built.messages, system)}
    if offered:
        params["tools"] = [tool_to_openai(t) for t in offered]
    if model:
        params["model"] = model
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return params


def response_from_sdk(raw: Any) -> Response:
    """A reply as ctxmem's :class:`~ctxmem.clients.Response`, from an Anthropic ``Message``,
    an OpenAI ``ChatCompletion`` (objects or their dicts), or a Response as is."""
    if isinstance(raw, Response):
        return raw
    dump = getattr(raw, "model_dump", None)
    data: Any = dump(mode="json", exclude_none=True) if callable(dump) else raw
    if not isinstance(data, Mapping):
        raise InputError(
            f"expected an Anthropic Message, an OpenAI ChatCompletion or a ctxmem Response, got {type(raw).__name__}",
            field="response",
        )
    usage = data.get("usage") or {}
    if "choices" in data:  # OpenAI chat completion
        choices = data["choices"]
        if not choices or not isinstance(choices[0], Mapping) or "message" not in choices[0]:
            raise InputError("a chat completion needs choices[0].message", field="choices")
        # read as the Agent's client reads a live reply: a paid-for answer with truncated tool
        # arguments is kept (``{"_unparsed_arguments": raw}``) to be answered with an error
        content = reply_from_openai({**choices[0]["message"], "role": "assistant"}).content
        finish = str(choices[0].get("finish_reason") or "stop")
        stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "refusal"}.get(finish, finish)
        if any(isinstance(b, ToolUseBlock) for b in content):
            stop = "tool_use"
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        u = Usage(max(0, prompt - cached), int(usage.get("completion_tokens") or 0), cached)
    else:  # Anthropic message
        if data.get("role") != "assistant" or not isinstance(data.get("content"), list):
            raise InputError("an Anthropic reply must be an assistant message with a content list", field="content")
        content = tuple(block_from_anthropic(b) for b in data["content"])
        stop = str(data.get("stop_reason") or "end_turn")
        u = Usage(
            int(usage.get("input_tokens") or 0),
            int(usage.get("output_tokens") or 0),
            int(usage.get("cache_read_input_tokens") or 0),
            int(usage.get("cache_creation_input_tokens") or 0),
        )
    return Response(content=tuple(content), stop_reason=stop, usage=u, model=str(data.get("model") or ""),
                    id=data.get("id"))


def record_response(session: Session, raw: Any, *, latency_s: float | None = None) -> Response:
    """Record an SDK reply as it comes: the assistant message and its ``model_call`` event
    (usage, stop reason, request id, ctxmem's estimate of the prompt) in one transaction.

    The estimate is the one of the last request :func:`anthropic_request` or
    :func:`openai_request` built for this session; it is stored as a calibration
    observation for (model, tokenizer), which an Agent on the same store reads back.
    """
    from ctxmem.events import ModelCallEvent, events_from_message

    response = response_from_sdk(raw)
    last = _LAST.pop(session.id, None)
    u = response.usage
    call = ModelCallEvent(
        model=response.model or "unknown",
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        stop_reason=response.stop_reason,
        latency_s=latency_s,
        estimated_input_tokens=last.tokens if last else None,
        request_id=response.id,
    )
    session.record_events([call, *events_from_message(response.message)])
    if last is not None and u.prompt_tokens > 0 and response.model:
        session.store.record_calibration(response.model, last.tokenizer, last.tokens, u.prompt_tokens)
    return response


def run_tool(
    session: Session, use: ToolUseBlock | Any, tools: Mapping[str, Callable[..., Any]] | None = None
) -> str:
    """Run one tool call and return its output as text.

    The tools a context names (``recall``) run through
    :func:`~ctxmem.context.run_context_tool` against the session; others are looked up in
    ``tools`` (name → ``fn(**input)``). A failure returns ``"<name> failed: …"`` text (check
    :func:`is_error_output`, or catch nothing: the model reads the error).
    """
    if not isinstance(use, ToolUseBlock):
        block = block_from_anthropic(use)
        if not isinstance(block, ToolUseBlock):
            raise InputError(f"expected a tool_use block, got {block.type!r}", field="type")
        use = block
    try:
        if use.name in CONTEXT_TOOLS and (tools is None or use.name not in tools):
            return run_context_tool(use.name, use.input, session=session)
        fn = (tools or {}).get(use.name)
        if fn is None:
            known = ", ".join(sorted({*(tools or {}), *CONTEXT_TOOLS}))
            return f"{_ERROR}unknown tool {use.name!r}; available tools: {known}"
        out = fn(**use.input)
        if isinstance(out, str):
            return out
        import json

        return json.dumps(out, ensure_ascii=False, default=str)
    except CtxmemError as exc:
        return f"{_ERROR}{use.name} failed: {exc}"
    except Exception as exc:
        return f"{_ERROR}{use.name} failed: {type(exc).__name__}: {exc}"


_ERROR = "[tool error] "


def is_error_output(text: str) -> bool:
    """True for the error text :func:`run_tool` returns (record it with ``is_error=True``)."""
    return text.startswith(_ERROR)


__all__ = [
    "CONTEXT_TOOLS",
    "anthropic_request",
    "build",
    "builder_for",
    "is_error_output",
    "openai_request",
    "record_response",
    "response_from_sdk",
    "run_tool",
    "session_history",
]
