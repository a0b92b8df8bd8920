"""LangChain v1 / LangGraph: record the graph's messages, hand the model a preset's context.

A drop-in for ``trim_messages``: the graph state keeps every message, ctxmem keeps them in
a durable session, and the model sees what the preset builds within its budget::

    from langchain.agents import create_agent
    from ctxmem.integrations.langchain import CtxmemMiddleware

    memory = CtxmemMiddleware("masking-200k", store="agent.db", session_id="run-7")
    agent = create_agent(model, tools=tools, middleware=[memory])

    # LangGraph's prebuilt agent, where trim_messages went: bind the recall tool too, and
    # give the hook the agent's tools and prompt so that they are counted in the budget
    tools = [*tools, *memory.tools]
    agent = create_react_agent(model, tools, prompt=prompt,
                               pre_model_hook=memory.react_hook(tools, prompt=prompt))

**Middleware** (``wrap_model_call``/``awrap_model_call``): before each model call, the
request's messages are converted (:func:`from_langchain`) and whatever is new is recorded
into the session; the preset builds the context over the session (system prompt and tool
schemas counted in the budget), and the model is called with that context
(:func:`to_langchain`) — the graph state is never edited. ``after_agent`` records the
final answer. **react_hook** (``memory.react_hook(tools, prompt=prompt)``) does the same
for ``create_react_agent`` as its ``pre_model_hook``, returning ``{"llm_input_messages":
...}`` (the state is untouched, as with ``trim_messages``): a hook cannot see the agent's
tools and prompt, so it is given them, to count them in the budget; the agent puts the
prompt first itself. (``memory.pre_model_hook`` counts neither: only for an agent without
a prompt whose tool schemas are small.)

**Recall.** With a preset whose placeholders point at a ``recall`` handle (masking, the
pipeline), the middleware registers a ``recall`` tool with the agent (``middleware.tools``):
the model gets the original output from the session's log, a line range or the lines
matching a pattern. With ``create_react_agent``, bind it yourself: ``tools=[*tools,
*memory.tools]`` (and the same list to ``react_hook``).

**Reused tool-call ids.** A server that numbers its calls ``call_0`` every turn reuses ids
the session already holds: as :class:`ctxmem.Agent` does, the session stores such a call
under a fresh id (``call_0_2``) and its result with it; the model is handed the ids the
graph holds.

**Session per thread.** With ``session_id=None`` the session is the LangGraph
``thread_id`` of the run (``config={"configurable": {"thread_id": ...}}``), else
``"default"``. If the graph's messages stop being an extension of what was recorded (a
``RemoveMessage``, a rewritten state), the session is rewound to the common prefix —
later events stay stored — and recording continues from there.

**Conversion.** ``HumanMessage`` ↔ user text; ``AIMessage`` ↔ assistant text, ``tool_calls``
↔ ``tool_use`` blocks (content parts repeating the calls — ``tool_use``, ``tool_call``, the
Responses API's ``function_call`` — are skipped; its ``reasoning`` parts are refused),
Anthropic-style ``thinking`` content parts ↔ thinking blocks;
``ToolMessage`` ↔ ``tool_result`` (``status="error"`` ↔ ``is_error``); ``SystemMessage``
↔ the system prompt. Tool messages and the human text after them form one user message
(results first). ``from_langchain(to_langchain(messages, system)) == (system, messages)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from itertools import compress, count
from operator import is_not
from typing import Any

from ctxmem.config import Preset
from ctxmem.errors import InputError, MissingDependencyError
from ctxmem.integrations._common import (
    LoopBuilder,
    open_or_create,
    open_store,
    recall_function,
    required_preset,
)
from ctxmem.messages import (
    ContentBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from ctxmem.session import Session
from ctxmem.store.base import SessionStore

try:
    from langchain.agents.middleware import AgentMiddleware
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("langchain", "langchain", "ctxmem.integrations.langchain") from exc


# --------------------------------------------------------------------------- conversion


def _texts(content: Any, where: str, i: int) -> list[ContentBlock]:
    if isinstance(content, str):
        return [TextBlock(content)] if content else []
    out: list[ContentBlock] = []
    for part in content or ():
        if isinstance(part, str):
            out.append(TextBlock(part))
        elif isinstance(part, dict) and part.get("type") == "text":
            out.append(TextBlock(str(part.get("text", ""))))
        elif isinstance(part, dict) and part.get("type") == "thinking":
            out.append(ThinkingBlock(str(part.get("thinking", "")), str(part.get("signature") or "")))
        elif isinstance(part, dict) and part.get("type") == "redacted_thinking":
            out.append(RedactedThinkingBlock(str(part.get("data", ""))))
        elif isinstance(part, dict) and part.get("type") in ("tool_use", "tool_call", "function_call"):
            continue  # the same calls are in AIMessage.tool_calls (function_call: the Responses API's)
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InputError(f"message {i}: {where} content part {kind!r} has no ctxmem equivalent (text only)",
                             field="content")
    return out


def from_langchain(messages: Sequence[Any], *, start: int = 0) -> tuple[str | None, list[Message]]:
    """LangChain messages → (system prompt, ctxmem Messages). See the module docstring.
    ``start``: the index of ``messages[0]`` in the whole list (errors name message ``start + i``)."""
    system: list[str] = []
    out: list[Message] = []
    role: str | None = None
    blocks: list[ContentBlock] = []

    def flush() -> None:
        if role is not None:
            out.append(Message(role, tuple(blocks)))  # type: ignore[arg-type]

    for i, m in enumerate(messages, start):
        if isinstance(m, SystemMessage):
            system.append("".join(b.text for b in _texts(m.content, "system", i) if isinstance(b, TextBlock)))
            continue
        if isinstance(m, AIMessage):
            new_role = "assistant"
            bs = _texts(m.content, "ai", i)
            bs.extend(ToolUseBlock(str(c["id"]), c["name"], dict(c.get("args") or {})) for c in m.tool_calls)
            # a call whose arguments did not parse: the agent answers it with an error
            # ToolMessage, so it is a call of the conversation (its raw arguments kept as text)
            bs.extend(
                ToolUseBlock(str(c["id"]), c.get("name") or "invalid_tool_call",
                             {"_unparsed_arguments": c["args"]} if isinstance(c.get("args"), str) else {})
                for c in getattr(m, "invalid_tool_calls", None) or () if c.get("id")
            )
        elif isinstance(m, ToolMessage):
            new_role = "user"
            content = m.content if isinstance(m.content, str) else tuple(
                b for b in _texts(m.content, "tool", i) if isinstance(b, TextBlock))
            bs = [ToolResultBlock(str(m.tool_call_id), content, m.status == "error")]
        elif isinstance(m, HumanMessage):
            new_role = "user"
            bs = _texts(m.content, "human", i)
        else:
            raise InputError(f"message {i}: unsupported message type {type(m).__name__}", field="type")
        # an AI message always starts a new assistant turn; tool results and human text
        # after them share one user turn
        if new_role != role or new_role == "assistant":
            flush()
            role, blocks = new_role, []
        blocks.extend(bs)
    flush()
    return ("\n\n".join(system) if system else None), out


class ConversionMemo:
    """What :func:`to_langchain` converted last time, for a loop that converts mostly the same
    messages turn after turn (the kept part of a context, the same objects).

    The output is reused as far as the new list starts with the same message objects as the
    last one (one C-speed comparison, no step per message); past that point a message seen
    before is not converted again (its LangChain messages are reused, a tool result's only
    while it takes the same tool names). The outputs are the ones a call without a memo
    gives, message for message (a test holds them equal).
    """

    def __init__(self) -> None:
        self.system: str | None = None
        self.messages: list[Message] = []
        self.out: list[BaseMessage] = []
        #: where each message's LangChain messages start in ``out`` (and where ``out`` ends)
        self.starts: list[int] = [0]
        #: tool call id -> (position of its assistant message, tool name); None: an id came twice
        self.calls: dict[str, tuple[int, str]] | None = {}
        #: id(message) -> (message, its results' call ids, the names they took, its LangChain messages)
        self.converted: dict[int, tuple[Message, tuple[str, ...], tuple[Any, ...], list[BaseMessage]]] = {}


def to_langchain(messages: Sequence[Message], system: str | None = None, *,
                 memo: ConversionMemo | None = None) -> list[BaseMessage]:
    """ctxmem Messages (+ system prompt) → LangChain messages.

    ``memo``: a :class:`ConversionMemo` kept across calls (see there); the result is the same."""
    messages = list(messages)
    keep = 0  # messages whose conversion is reused as it stands (the same objects, in order)
    if memo is not None and memo.calls is not None and memo.system == system and memo.messages:
        before = memo.messages
        n = min(len(before), len(messages))
        keep = next(compress(count(), map(is_not, before[:n], messages[:n])), n)
    if keep:
        assert memo is not None and memo.calls is not None
        out = memo.out[: memo.starts[keep]]
        starts = memo.starts[: keep + 1]
        calls = memo.calls
        for k in range(keep, len(memo.messages)):  # the calls of the messages not kept
            for b in memo.messages[k].tool_uses:
                calls.pop(b.id, None)
    else:
        out = [SystemMessage(content=system)] if system else []
        starts = [len(out)]
        calls = {}
    unique = True

    def name_of(tool_use_id: str) -> str | None:
        got = calls.get(tool_use_id)
        return got[1] if got is not None else None

    converted = memo.converted if memo is not None else {}
    for i in range(keep, len(messages)):
        m = messages[i]
        hit = converted.get(id(m))
        if hit is not None and hit[0] is m:
            if m.role == "assistant" or tuple(map(name_of, hit[1])) == hit[2]:
                out.extend(hit[3])
            else:
                hit = None
        if hit is None:
            mark = len(out)
            _convert(m, out, name_of)
            ids = tuple(b.tool_use_id for b in m.tool_results)
            hit = (m, ids, tuple(map(name_of, ids)), out[mark:])
            if memo is not None:
                converted[id(m)] = hit
        for b in m.tool_uses:
            if b.id in calls:
                unique = False  # which of two calls a result names depends on order: no shortcuts
            calls[b.id] = (i, b.name)
        starts.append(len(out))
    if memo is not None:
        memo.system, memo.messages, memo.out, memo.starts = system, messages, out, starts
        memo.calls = calls if unique else None
        if len(converted) > 4 * len(messages) + 64:  # drop conversions of messages long gone
            live = {id(m) for m in messages}
            memo.converted = {k: v for k, v in converted.items() if k in live}
    return list(out)


def _convert(m: Message, out: list[BaseMessage], name_of: Callable[[str], str | None]) -> None:
    """Append the LangChain messages of one ctxmem message to ``out``."""
    if m.role == "assistant":
        parts: list[Any] = []
        for b in m.content:
            if isinstance(b, TextBlock):
                parts.append({"type": "text", "text": b.text})
            elif isinstance(b, ThinkingBlock):
                parts.append({"type": "thinking", "thinking": b.thinking, "signature": b.signature})
            elif isinstance(b, RedactedThinkingBlock):
                parts.append({"type": "redacted_thinking", "data": b.data})
        calls = [{"id": b.id, "name": b.name, "args": b.input, "type": "tool_call"} for b in m.tool_uses]
        content: Any = parts[0]["text"] if len(parts) == 1 and parts[0]["type"] == "text" else parts
        out.append(AIMessage(content=content if parts else "", tool_calls=calls))
        return
    texts: list[TextBlock] = []
    for b in m.content:
        if isinstance(b, ToolResultBlock):
            c: Any = b.content if isinstance(b.content, str) else [
                {"type": "text", "text": t.text} for t in b.content]
            out.append(ToolMessage(content=c, tool_call_id=b.tool_use_id, name=name_of(b.tool_use_id),
                                   status="error" if b.is_error else "success"))
        elif isinstance(b, TextBlock):
            texts.append(b)
    if texts or not m.tool_results:
        out.append(HumanMessage(content=texts[0].text if len(texts) == 1 else [
            {"type": "text", "text": t.text} for t in texts]))


def _tool_specs(tools: Sequence[Any]) -> tuple[ToolSpec, ...]:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    specs = []
    for t in tools:
        try:
            fn = convert_to_openai_tool(t)["function"]
        except Exception:  # provider-native tool dicts: counted by the provider, not here
            continue
        specs.append(ToolSpec(fn["name"], fn.get("description", ""), fn.get("parameters") or {}))
    return tuple(specs)


# --------------------------------------------------------------------------- middleware


class _CallIds:
    """The graph's tool-call ids → the session's. A server that numbers its calls ``call_0``
    every turn reuses ids the session already holds (it would refuse them): a reused id gets
    a fresh one, ``call_0_2``, as :class:`ctxmem.Agent` does, and a tool result takes the id
    of the call it answers (the same id among the last assistant message's calls, in order,
    else the latest call with it). The renaming depends only on the messages, in order:
    converting the same list again gives the same session messages. ``back`` maps each
    renamed id to the graph's, so the model is handed the ids the graph holds."""

    def __init__(self) -> None:
        self.taken: set[str] = set()  # the session ids of every call so far
        self.open: dict[str, list[str]] = {}  # graph id -> the last assistant message's calls not yet answered
        self.last: dict[str, str] = {}  # graph id -> its latest call's session id, where it was renamed
        self.back: dict[str, str] = {}  # session id -> graph id, renamed calls only
        #: id(LangChain message) -> (it, its copy with the graph's ids), see :meth:`restore`
        self.restored: dict[int, tuple[BaseMessage, BaseMessage]] = {}

    def apply(self, messages: list[Message]) -> list[Message]:
        """``messages`` (the next ones of the graph's list) with the session's ids."""
        out: list[Message] = []
        for m in messages:
            blocks: list[ContentBlock] | None = None
            if m.role == "assistant":
                self.open = {}
                for k, b in enumerate(m.content):
                    if not isinstance(b, ToolUseBlock):
                        continue
                    uid, n = b.id, 1
                    while uid in self.taken:
                        n += 1
                        uid = f"{b.id}_{n}"
                    self.taken.add(uid)
                    self.open.setdefault(b.id, []).append(uid)
                    if uid != b.id:
                        self.last[b.id] = uid
                        self.back[uid] = b.id
                        blocks = blocks if blocks is not None else list(m.content)
                        blocks[k] = ToolUseBlock(uid, b.name, b.input)
            else:
                for k, b in enumerate(m.content):
                    if not isinstance(b, ToolResultBlock):
                        continue
                    pending = self.open.get(b.tool_use_id)
                    uid = pending.pop(0) if pending else self.last.get(b.tool_use_id, b.tool_use_id)
                    if uid != b.tool_use_id:
                        blocks = blocks if blocks is not None else list(m.content)
                        blocks[k] = ToolResultBlock(uid, b.content, b.is_error)
            out.append(m if blocks is None else Message(m.role, tuple(blocks)))
        return out

    def restore(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        """A context's LangChain messages with the graph's ids where the session renamed them."""
        back = self.back
        if not back:
            return messages
        cache = self.restored
        out = []
        for m in messages:
            hit = cache.get(id(m))
            if hit is not None and hit[0] is m:
                out.append(hit[1])
                continue
            new = m
            if isinstance(m, AIMessage) and any(c["id"] in back for c in m.tool_calls):
                new = AIMessage(content=m.content, tool_calls=[
                    {**c, "id": back.get(str(c["id"]), c["id"])} for c in m.tool_calls])
            elif isinstance(m, ToolMessage) and m.tool_call_id in back:
                new = ToolMessage(content=m.content, tool_call_id=back[m.tool_call_id], name=m.name,
                                  status=m.status)
            if new is not m:
                cache[id(m)] = (m, new)
            out.append(new)
        if len(cache) > 2 * len(messages) + 64:  # drop copies of messages long gone
            live = {id(m) for m in messages}
            self.restored = {k: v for k, v in cache.items() if k in live}
        return out


def _equal(a: Any, b: Any) -> bool:
    """The same message type with every field equal (a field that cannot be compared: not equal)."""
    try:
        return type(a) is type(b) and bool(a.__dict__ == b.__dict__)
    except Exception:  # a value whose == raises or is not a truth value (an array in a kwarg)
        return False


def _prompt_text(prompt: str | SystemMessage | None) -> str | None:
    """The text of a system prompt given as a string or a SystemMessage."""
    if prompt is None or isinstance(prompt, str):
        return prompt or None
    if isinstance(prompt, SystemMessage):
        return from_langchain([prompt])[0] or None
    raise InputError(f"prompt: expected a string or a SystemMessage, got {type(prompt).__name__}", field="prompt")


def _leading_systems(messages: Sequence[Any]) -> int:
    """How many system messages lead the list."""
    k = 0
    while k < len(messages) and isinstance(messages[k], SystemMessage):
        k += 1
    return k


def _offers_recall(preset: Preset) -> bool:
    """Whether the preset's contexts can hold masked outputs behind recall handles."""
    params = preset.model.params
    if preset.type == "masking":
        return bool(params.get("reversible", True))
    if preset.type == "summarization":  # its facts section's lines name recall handles
        return bool(params.get("reversible", True)) and bool(params.get("facts_tokens", 0))
    if preset.type == "pipeline":
        core = params.get("core_params") or {}
        return (params.get("core", "masking") == "masking" and bool(core.get("reversible", True))) or (
            params.get("retrieval_tokens", 1) > 0)
    return False


class CtxmemMiddleware(AgentMiddleware):
    """Records the graph's messages into ctxmem and gives the model the preset's context."""

    def __init__(
        self,
        preset: Preset | str,
        store: SessionStore | str | os.PathLike[str] = "memory://",
        *,
        session_id: str | None = None,
        context_window: int | None = None,
        record_compactions: bool = True,
    ):
        super().__init__()
        self.preset: Preset = required_preset(preset)
        self.store = open_store(store)
        self.session_id = session_id
        self.context_window = context_window
        self.record_compactions = record_compactions
        self._builders: dict[str, LoopBuilder] = {}
        self._recorded: dict[str, list[Message]] = {}
        # per session: the Session handle (its tool ledger stays read), the graph's message
        # objects last recorded and the system prompt they gave (the next call's list starts
        # with the same objects: only the rest is converted), and the last context's
        # LangChain messages (the kept ones are handed out again, not rebuilt)
        self._sessions: dict[str, Session] = {}
        self._seen: dict[str, tuple[list[Any], str | None]] = {}
        self._out_memo: dict[str, ConversionMemo] = {}
        # per session: the graph's tool-call ids → the session's (a server reusing call ids)
        self._ids: dict[str, _CallIds] = {}
        # record → build is one step: concurrent runs (agent.batch, threads) on one session
        # would otherwise build from each other's half-recorded conversations
        self._lock = threading.RLock()
        #: the last build's report (what was kept, masked, dropped), for inspection
        self.last_report: Any = None
        #: tools this middleware registers with the agent: ``recall`` when the preset masks
        #: outputs behind handles (its placeholders tell the model to call it)
        self.tools = [self._recall_tool()] if _offers_recall(self.preset) else []

    def _recall_tool(self) -> Any:
        from langchain_core.tools import StructuredTool

        from ctxmem.context.masking import RECALL_TOOL

        recall = recall_function(self.session)  # the original output, from this run's session log
        return StructuredTool.from_function(recall, name=RECALL_TOOL.name, description=RECALL_TOOL.description)

    # ------------------------------------------------------------------ core

    def _sid(self) -> str:
        if self.session_id is not None:
            return self.session_id
        try:
            from langgraph.config import get_config

            thread = get_config().get("configurable", {}).get("thread_id")
        except Exception:
            thread = None
        return str(thread) if thread is not None else "default"

    def session(self, session_id: str | None = None) -> Session:
        """The ctxmem session of ``session_id`` (default: this run's, see the module docstring)."""
        sid = session_id or self._sid()
        found = self._sessions.get(sid)
        if found is None:
            found = open_or_create(self.store, sid, metadata={"source": "langchain", "strategy": self.preset.name})
            if len(self._sessions) >= 64:
                self._forget(next(iter(self._sessions)))
            self._sessions[sid] = found
        return found

    def _forget(self, sid: str) -> None:
        for d in (self._sessions, self._seen, self._out_memo, self._builders, self._recorded, self._ids):
            d.pop(sid, None)

    def record(self, messages: Sequence[Any], session_id: str | None = None) -> tuple[Session, str | None]:
        """Record what is new in ``messages`` (LangChain messages); returns (session, system)."""
        with self._lock:
            return self._record(messages, session_id)

    def _record(self, messages: Sequence[Any], session_id: str | None) -> tuple[Session, str | None]:
        session = self.session(session_id)
        messages = list(messages)
        applied, system = self._record_suffix(session, messages)
        if applied:
            return session, system
        system, msgs = from_langchain(messages)
        self._seen.pop(session.id, None)
        ids = _CallIds()  # the renaming follows the list: the whole list gives the whole map
        msgs = ids.apply(msgs)
        self._ids[session.id] = ids
        done = self._recorded.get(session.id)
        if done is None:
            done = self._recorded[session.id] = session.messages()
        k = 0
        while k < min(len(done), len(msgs)) and done[k] == msgs[k]:
            k += 1
        if k < len(done):
            # the graph's messages diverged from the record: rewind to the common prefix
            spans = session.messages_with_ids()
            session.rewind(spans[k - 1][1][-1] if k else None)
            session.note(f"langchain: state diverged after message {k}; rewound and re-recorded", "langchain")
            del done[k:]
        if msgs[k:]:
            session.record_many(msgs[k:])
            done.extend(msgs[k:])
        body = messages[_leading_systems(messages):]
        self._seen[session.id] = (body, from_langchain([m for m in body if isinstance(m, SystemMessage)])[0])
        return session, system

    def _record_suffix(self, session: Session, messages: list[Any]) -> tuple[bool, str | None]:
        """Record only what follows the message objects recorded last time, when the graph's
        list, past its leading system messages, still starts with those very objects (a graph
        appends to its state; the system message a model call leads with may be a new object
        each call, and the state at the end of a run has none). Returns (whether this
        applied, the system prompt); when it does not apply, the whole list is converted and
        compared instead. It applies unless the new part holds a system message or would
        join the last recorded message (text after a user turn)."""
        seen = self._seen.get(session.id)
        done = self._recorded.get(session.id)
        if seen is None or done is None:
            return False, None
        before, inner = seen  # the body recorded last, and the system text inside it
        lead = _leading_systems(messages)
        body = messages[lead:]
        n = len(before)
        if n > len(body):
            return False, None
        if any(map(is_not, before, body)):
            # A checkpointer hands each run equal copies of the state's messages, and equal
            # messages (the same type, every field equal) convert to the same ones; the
            # fields compared as one dict (pydantic's own == costs ~4x more per message).
            if not all(a is b or _equal(a, b) for a, b in zip(before, body[:n], strict=True)):
                return False, None
            self._seen[session.id] = (body[:n], inner)  # the new objects, for the next call
        if n < len(body):
            if any(isinstance(m, SystemMessage) for m in body[n:]):
                return False, None
            _, new = from_langchain(body[n:], start=lead + n)
            if new and done and new[0].role == "user" and done[-1].role == "user":
                return False, None
            if new:
                ids = self._ids.get(session.id)
                if ids is None:
                    return False, None
                new = ids.apply(new)
                try:
                    session.record_many(new)
                except BaseException:
                    self._seen.pop(session.id, None)  # the id map went ahead: the next call redoes it all
                    raise
                done.extend(new)
            self._seen[session.id] = (body, inner)
        # the system prompt as a whole conversion joins it: the leading ones, then any inside
        parts = [t for t in (from_langchain(messages[:lead])[0] if lead else None, inner) if t is not None]
        return True, "\n\n".join(parts) if parts else None

    def context(self, messages: Sequence[Any], *, tools: Sequence[Any] = (), session_id: str | None = None,
                prompt: str | SystemMessage | None = None) -> list[BaseMessage]:
        """Record ``messages`` and return the preset's context for the next model call.

        ``tools``: the tools bound to the model, counted in the budget. ``prompt``: a system
        prompt the caller puts before the returned messages itself (``create_react_agent``'s
        ``prompt``): counted in the budget, not returned."""
        with self._lock:
            return self._context(messages, tools, session_id, _prompt_text(prompt))

    def _context(self, messages: Sequence[Any], tools: Sequence[Any], session_id: str | None,
                 prompt: str | None = None) -> list[BaseMessage]:
        session, system = self.record(messages, session_id)
        builder = self._builders.get(session.id)
        if builder is None:
            builder = self._builders[session.id] = LoopBuilder(
                self.preset, context_window=self.context_window, record=self.record_compactions)
        builder.tools = _tool_specs(tools)
        counted = "\n\n".join(t for t in (prompt, system) if t) if prompt else system
        lb = builder.build_session(session, system=counted)
        self.last_report = lb.built.report
        # the system prompt leads (a SystemMessage in the graph state was counted, then dropped)
        out = to_langchain(lb.built.messages, system, memo=self._out_memo.setdefault(session.id, ConversionMemo()))
        ids = self._ids.get(session.id)
        return ids.restore(out) if ids is not None else out

    # ------------------------------------------------------------------ LangChain v1 hooks

    def _request(self, request: Any) -> Any:
        system = getattr(request, "system_message", None)
        msgs = ([system] if system is not None else []) + list(request.messages)
        built = self.context(msgs, tools=list(request.tools or ()))
        if built and isinstance(built[0], SystemMessage):
            # the request's own system message and any in the graph state, joined as counted
            return request.override(messages=built[1:], system_message=built[0])
        return request.override(messages=built)

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return handler(self._request(request))

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        import asyncio

        return await handler(await asyncio.to_thread(self._request, request))

    def after_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        self.record(state["messages"])
        return None

    async def aafter_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        import asyncio

        await asyncio.to_thread(self.record, state["messages"])
        return None

    # ------------------------------------------------------------------ LangGraph prebuilt

    def react_hook(self, tools: Sequence[Any] = (),
                   prompt: str | SystemMessage | None = None) -> Callable[[Any], dict[str, Any]]:
        """A ``pre_model_hook`` for ``create_react_agent(model, tools, prompt=prompt, ...)`` that
        counts the agent's tools and system prompt in the budget: give it the same ``tools``
        and ``prompt`` as the agent. Bind ``[*your_tools, *middleware.tools]``: with a masking
        preset the placeholders name the ``recall`` tool in :attr:`tools`. The model is handed
        the context without ``prompt``, which the agent puts first itself."""
        tools = list(tools)
        text = _prompt_text(prompt)

        def pre_model_hook(state: Any) -> dict[str, Any]:
            messages = state["messages"] if isinstance(state, dict) else state.messages
            with self._lock:
                return {"llm_input_messages": self._context(messages, tools, None, text)}

        return pre_model_hook

    def pre_model_hook(self, state: Any) -> dict[str, Any]:
        """``create_react_agent(..., pre_model_hook=middleware.pre_model_hook)`` for an agent
        with no system prompt whose tools are not counted; see :meth:`react_hook`."""
        messages = state["messages"] if isinstance(state, dict) else state.messages
        return {"llm_input_messages": self.context(messages)}


__all__ = ["ConversionMemo", "CtxmemMiddleware", "from_langchain", "to_langchain"]
