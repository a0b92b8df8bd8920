"""The OpenAI Responses API wire format (``POST /v1/responses``), as the loopback server speaks it.

:class:`~ctxmem.clients.loopback.LoopbackServer` answers the Responses API beside the
Messages and Chat Completions APIs; this module holds what is specific to it, so the
server's own module keeps the transport, validation, counting and caching:

* :func:`parse_request` reads a ``responses.create`` body: ``model``; ``input`` (a string,
  or input items — ``message``, ``function_call``, ``function_call_output``,
  ``reasoning`` — mapped by :func:`ctxmem.integrations.responses.from_responses`);
  ``instructions`` (the system prompt); flat ``function`` tools (``{"type": "function",
  "name", "description", "parameters"}``); ``max_output_tokens``; ``stream``;
  ``previous_response_id`` (the caller resolves it). Anything it cannot honour — a
  ``conversation`` id, a hosted tool such as ``web_search`` — is refused with an
  :class:`~ctxmem.errors.InputError` naming the field, which the server answers as a 400.
* :func:`output_items` turns the reply's blocks into output items with ids and
  ``status``: a ``reasoning`` item per thinking block (its signature is
  ``encrypted_content``, which must come back unchanged), one ``message`` item per run of
  text (``output_text`` parts), one ``function_call`` item per tool call.
* :func:`response_object` is the ``Response`` body (``status`` ``completed``, or
  ``incomplete`` with ``incomplete_details.reason = "max_output_tokens"``), with usage in
  the Responses shape: ``input_tokens`` is the whole prompt and
  ``input_tokens_details.cached_tokens`` the part read from the (simulated) cache.
* :func:`stream_events` is the server-sent event sequence the API emits for that response
  with ``stream=true``: ``response.created``, ``response.in_progress``, per item
  ``response.output_item.added`` … ``response.output_item.done`` with the content-part,
  text-delta, reasoning-summary and function-argument events in between, and
  ``response.completed`` (or ``response.incomplete``), each with a ``sequence_number``.
  The official SDK's stream accumulator (``client.responses.stream``) rebuilds the same
  response from them, which the tests check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctxmem.clients.base import Usage
from ctxmem.errors import InputError
from ctxmem.integrations.responses import from_responses, item_blocks, to_responses
from ctxmem.messages import ContentBlock, Message, ToolSpec, block_to_anthropic, canonical_json

#: how many pieces a streamed text or argument string is cut into (deltas, as the API sends)
_DELTAS = 3


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A parsed ``responses.create`` body (items not yet joined to a previous response)."""

    model: str
    items: list[dict[str, Any]]
    instructions: str | None
    tools: tuple[ToolSpec, ...]
    raw_tools: list[Any]
    max_output_tokens: int
    temperature: float | None
    stream: bool
    store: bool
    previous_response_id: str | None
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the Response repeats


def _tool(raw: Any, i: int) -> ToolSpec:
    if not isinstance(raw, Mapping):
        raise InputError(f"tools[{i}]: a tool must be a JSON object", field=f"tools[{i}]")
    if raw.get("type") != "function":
        raise InputError(
            f"tools[{i}]: tool type {raw.get('type')!r} is a hosted tool the loopback server does not run; "
            "use function tools",
            field=f"tools[{i}].type",
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"tools[{i}]: a function tool needs a string 'name' (the Responses shape is flat, "
                         "not nested under 'function')", field=f"tools[{i}].name")
    params = raw.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(params, Mapping):
        raise InputError(f"tools[{i}]: 'parameters' must be a JSON Schema object", field=f"tools[{i}].parameters")
    return ToolSpec(name, str(raw.get("description") or ""), dict(params))


def parse_request(body: Any) -> ResponsesRequest:
    """Read a ``responses.create`` body; :class:`InputError` names the offending field."""
    if not isinstance(body, Mapping):
        raise InputError("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InputError("Missing required parameter: 'model'.", field="model")
    if body.get("conversation") is not None:
        raise InputError("the loopback server keeps no conversations; send the items as 'input' "
                         "(or chain with 'previous_response_id')", field="conversation")
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": raw_input}]
    elif isinstance(raw_input, list) and all(isinstance(x, Mapping) for x in raw_input):
        items = [dict(x) for x in raw_input]
    elif raw_input is None and body.get("previous_response_id"):
        items = []
    else:
        raise InputError("Invalid 'input': expected a string or an array of input items.", field="input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InputError("'instructions' must be a string", field="instructions")
    raw_tools = list(body.get("tools") or ())
    tools = tuple(_tool(t, i) for i, t in enumerate(raw_tools))
    max_out = body.get("max_output_tokens")
    if max_out is None:
        max_out = 1024
    if not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 16:
        raise InputError("Invalid 'max_output_tokens': integer below minimum value 16.", field="max_output_tokens")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise InputError("'previous_response_id' must be a string", field="previous_response_id")
    echo = {k: body.get(k) for k in ("tool_choice", "parallel_tool_calls", "top_p", "metadata", "text", "truncation")}
    return ResponsesRequest(
        model=model,
        items=items,
        instructions=instructions,
        tools=tools,
        raw_tools=raw_tools,
        max_output_tokens=max_out,
        temperature=body.get("temperature"),
        stream=bool(body.get("stream")),
        store=body.get("store") is not False,
        previous_response_id=previous,
        echo=echo,
    )


def check_calls(items: Sequence[Mapping[str, Any]]) -> None:
    """Every ``function_call`` has its output and every output its earlier call, as the API demands.

    Raises :class:`InputError` with the API's own wording and the item's index.
    """
    calls: dict[str, int] = {}
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind, call_id = item.get("type"), item.get("call_id")
        if kind == "function_call" and isinstance(call_id, str):
            calls[call_id] = i
        elif kind == "function_call_output":
            if call_id not in calls:
                raise InputError(f"No tool call found for function call output with call_id {call_id}.",
                                 field=f"input[{i}].call_id")
            answered.add(str(call_id))
    for call_id, i in calls.items():
        if call_id not in answered:
            raise InputError(f"No tool output found for function call {call_id}.",
                             field=f"input[{i}].call_id")


def to_messages(items: Sequence[Mapping[str, Any]], instructions: str | None) -> tuple[str | None, list[Message]]:
    """Input items (+ instructions) → (system prompt, messages); developer/system items join the system.

    Raises :class:`InputError` for a malformed item or a call without its output (or the reverse).
    """
    check_calls(items)
    system, messages = from_responses(items)
    parts = [p for p in (instructions, system) if p]
    return ("\n\n".join(parts) if parts else None), messages


def segments(request: ResponsesRequest, items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The prompt's counted and cached segments: each tool, the instructions, each input item.

    An item counts as what the model reads from it (its role and mapped blocks), so the
    same turn written by hand (``{"role": "user", "content": "…"}``) or sent back as an
    output item (with the ``id`` and ``status`` the server gave it) is the same prefix.
    """
    out = [canonical_json(t) for t in request.raw_tools]
    if request.instructions:
        out.append(canonical_json(request.instructions))
    for i, item in enumerate(items):
        role, blocks = item_blocks(item, i)
        out.append(canonical_json([role, [block_to_anthropic(b) for b in blocks]]))
    return out


def output_items(blocks: Sequence[ContentBlock], n: int) -> list[dict[str, Any]]:
    """The reply's blocks as output items with ids (``rs_``/``msg_``/``fc_`` + response number)."""
    out: list[dict[str, Any]] = []
    for j, item in enumerate(to_responses([Message("assistant", tuple(blocks))])):
        prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}[item["type"]]
        item = {"id": f"{prefix}_loopback_{n:06d}_{j}", **item}
        if item["type"] != "reasoning":
            item["status"] = "completed"
        out.append(item)
    return out


def response_object(
    request: ResponsesRequest, n: int, output: list[dict[str, Any]], usage: Usage, stop: str
) -> dict[str, Any]:
    """The ``Response`` body for a reply; ``stop == "max_tokens"`` makes it ``incomplete``."""
    incomplete = stop == "max_tokens"
    now = int(time.time())
    echo = request.echo
    return {
        "id": f"resp_loopback_{n:06d}",
        "object": "response",
        "created_at": now,
        "completed_at": None if incomplete else now,
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": request.instructions,
        "model": request.model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls") is not False,
        "temperature": request.temperature,
        "top_p": echo.get("top_p"),
        "tool_choice": echo.get("tool_choice") or "auto",
        "tools": request.raw_tools,
        "max_output_tokens": request.max_output_tokens,
        "previous_response_id": request.previous_response_id,
        "metadata": echo.get("metadata") or {},
        "text": echo.get("text") or {"format": {"type": "text"}},
        "truncation": echo.get("truncation") or "disabled",
        "store": request.store,
        "usage": {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cache_read_tokens,
                                     "cache_write_tokens": usage.cache_write_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.output_tokens,
        },
    }


def _pieces(text: str) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // _DELTAS))
    return [text[i:i + size] for i in range(0, len(text), size)]


def _item_events(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The events that stream one output item, from ``output_item.added`` to ``output_item.done``."""
    iid, kind = item["id"], item["type"]
    where = {"item_id": iid, "output_index": index}
    if kind == "message":
        opening = {**item, "status": "in_progress", "content": []}
    elif kind == "function_call":
        opening = {**item, "status": "in_progress", "arguments": ""}
    else:
        opening = {**item, "summary": []}
    events: list[dict[str, Any]] = [{"type": "response.output_item.added", "output_index": index, "item": opening}]
    if kind == "message":
        for c, part in enumerate(item["content"]):
            at = {**where, "content_index": c}
            events.append({"type": "response.content_part.added", **at, "part": {**part, "text": ""}})
            events += [{"type": "response.output_text.delta", **at, "delta": d, "logprobs": []}
                       for d in _pieces(part["text"])]
            events.append({"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []})
            events.append({"type": "response.content_part.done", **at, "part": part})
    elif kind == "function_call":
        events += [{"type": "response.function_call_arguments.delta", **where, "delta": d}
                   for d in _pieces(item["arguments"])]
        events.append({"type": "response.function_call_arguments.done", **where,
                       "name": item["name"], "arguments": item["arguments"]})
    else:
        for s, part in enumerate(item.get("summary") or ()):
            at = {**where, "summary_index": s}
            events.append({"type": "response.reasoning_summary_part.added", **at,
                           "part": {"type": "summary_text", "text": ""}})
            events += [{"type": "response.reasoning_summary_text.delta", **at, "delta": d}
                       for d in _pieces(part["text"])]
            events.append({"type": "response.reasoning_summary_text.done", **at, "text": part["text"]})
            events.append({"type": "response.reasoning_summary_part.done", **at, "part": part})
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


def stream_events(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The server-sent events for ``response`` with ``stream=true``, numbered in order."""
    opening = {**response, "status": "in_progress", "output": [], "usage": None,
               "completed_at": None, "incomplete_details": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": opening},
        {"type": "response.in_progress", "response": opening},
    ]
    for index, item in enumerate(response["output"]):
        events += _item_events(item, index)
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    events.append({"type": final, "response": dict(response)})
    return [{**e, "sequence_number": k} for k, e in enumerate(events)]


def encode_sse(events: Sequence[Mapping[str, Any]]) -> bytes:
    """Events as a ``text/event-stream`` body (``event:`` + ``data:`` lines, blank-line separated)."""
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n".encode() for e in events
    )


__all__ = [
    "ResponsesRequest",
    "check_calls",
    "encode_sse",
    "output_items",
    "parse_request",
    "response_object",
    "segments",
    "stream_events",
    "to_messages",
]
