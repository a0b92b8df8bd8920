"""A loopback HTTP server speaking the Anthropic Messages and OpenAI Chat Completions/Responses APIs.

It exists so tests run the *real* SDKs end to end without the network::

    with LoopbackServer(policy=my_policy, window=8000) as server:
        client = AnthropicClient("claude-test", base_url=server.url)
        ...
        assert not server.rejected

Endpoints: ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` (Anthropic),
``POST /v1/chat/completions`` and ``POST /v1/responses`` (OpenAI; also without the ``/v1``
prefix). OpenAI clients use ``server.openai_base_url`` (``…/v1``), Anthropic clients
``server.url``.

**The Responses API** (what the OpenAI Agents SDK uses by default): input items
(``message``, ``function_call``, ``function_call_output``, ``reasoning``), ``instructions``,
flat function tools and ``max_output_tokens``; the answer's blocks come back as output
items (``reasoning`` with its signature as ``encrypted_content``, ``message``,
``function_call``), as one JSON ``Response`` or, with ``stream: true``, as the API's
server-sent events. ``previous_response_id`` chains onto a stored response (input and
output items; ``instructions`` are not carried over, as documented by OpenAI; nothing is
stored with ``store: false``). A call without its output, or an output without its call,
is refused with the API's wording. The wire details live in
:mod:`ctxmem.clients.responses_wire`; validation, counting, caching, faults and recording
are shared with the other two protocols.

**Validation, as the providers do it.** A request is rejected with the provider's own error
shape (400 ``invalid_request_error``) when: the body is not a JSON object or misses
``model``/``messages``/``max_tokens``; a message or block is malformed; a ``tool_result``
has no ``tool_use`` in the assistant message right before it; a ``tool_use`` is not
answered in the next message; a tool id repeats; a thinking block's signature is not the
one this server issued (thinking must come back byte-for-byte); with thinking enabled, the
assistant turn being answered with tool results does not start with its thinking block;
or the prompt exceeds ``window`` tokens (Anthropic: ``prompt is too long: N tokens > W
maximum``; OpenAI: code ``context_length_exceeded``).

**Token counts.** ``counter`` (``str -> int``, e.g. a real tokenizer's ``count``) is applied
to the canonical JSON of each prompt segment (each tool, the system prompt, each message).
Without one the server uses a *conservative byte estimate*: ``ceil(utf8_bytes / 3)``, which
over-counts English BPE tokens (about 4 bytes each), so the window check errs towards
"too long". The same count answers ``count_tokens`` and fills ``usage``.

**Prompt caching, simulated.** Anthropic: a prefix is written to the cache at each
``cache_control`` breakpoint; a later request reads the longest cached prefix ending at or
before its last breakpoint (``cache_read_input_tokens``), and writes the rest up to its last
breakpoint (``cache_creation_input_tokens``). OpenAI (both APIs): automatic — every message
(or item) prefix is cached, ``cached_tokens`` is the longest one seen before. Prefixes
shorter than ``min_cache_tokens`` are not cached.

**Answers.** ``policy(request: ModelRequest)`` returns a reply: a string, an assistant
:class:`~ctxmem.messages.Message`, content blocks, a :class:`~ctxmem.clients.base.Response`
(its usage is sent verbatim instead of the computed one), or a :class:`Fault`. A list of
replies is also accepted and consumed in order. ``fail_next(*faults)`` queues faults that
pre-empt the policy: 429 (with ``retry-after``), 529 overloaded, 500, "prompt is too long",
malformed JSON, a well-formed body of the wrong shape, and a hang (for timeout tests).

Every request is recorded in :attr:`LoopbackServer.requests` with its body, the status it
got and, if rejected, why. The server is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 with
an OS-assigned port, in a daemon thread; it serves sync and async clients alike.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeAlias

from ctxmem.clients import responses_wire
from ctxmem.clients.base import ModelRequest, Response, ThinkingConfig, Usage
from ctxmem.errors import CtxmemError
from ctxmem.messages import (
    ContentBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolSpec,
    ToolUseBlock,
    block_to_anthropic,
    canonical_json,
    from_anthropic,
    from_openai,
    message_to_openai,
    tool_from_anthropic,
    tool_from_openai,
    validate_conversation,
)

Protocol_: TypeAlias = Literal["anthropic", "openai", "responses"]
FaultKind: TypeAlias = Literal[
    "rate_limit", "overloaded", "server_error", "prompt_too_long", "malformed_json", "malformed_shape", "hang"
]


@dataclass(frozen=True, slots=True)
class Fault:
    """An error the server should answer with instead of a reply."""

    kind: FaultKind
    retry_after: float | None = None
    seconds: float = 30.0

    @classmethod
    def rate_limit(cls, retry_after: float | None = 0.0) -> Fault:
        """A 429 answer, with a ``retry-after`` header when ``retry_after`` is not ``None``."""
        return cls("rate_limit", retry_after=retry_after)

    @classmethod
    def overloaded(cls) -> Fault:
        """An overloaded answer (Anthropic's 529 ``overloaded_error``)."""
        return cls("overloaded")

    @classmethod
    def server_error(cls) -> Fault:
        """A 500 answer."""
        return cls("server_error")

    @classmethod
    def prompt_too_long(cls) -> Fault:
        """A 400 "prompt is too long" answer, as each API words it (a context-length error)."""
        return cls("prompt_too_long")

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 answer whose body is not JSON."""
        return cls("malformed_json")

    @classmethod
    def malformed_shape(cls) -> Fault:
        """A 200 answer that is JSON but not a valid response."""
        return cls("malformed_shape")

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Fault:
        """No answer for ``seconds`` (to exercise client timeouts)."""
        return cls("hang", seconds=seconds)


ServerReply: TypeAlias = Response | str | Message | Sequence[ContentBlock] | Fault
ServerPolicy: TypeAlias = Callable[[ModelRequest], ServerReply]


@dataclass(slots=True)
class RecordedRequest:
    """One HTTP request the server received and what it answered."""

    protocol: Protocol_
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    error: str | None = None
    parsed: ModelRequest | None = None
    usage: Usage | None = None


class _Rejected(Exception):
    def __init__(self, status: int, etype: str, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.etype = etype
        self.message = message
        self.code = code


def byte_estimate(text: str) -> int:
    """Conservative token estimate: ``ceil(utf8_bytes / 3)`` (over-counts English BPE)."""
    return (len(text.encode("utf-8")) + 2) // 3


@dataclass(slots=True)
class _Prompt:
    """A parsed request reduced to what counting and caching need."""

    request: ModelRequest
    segments: list[str]  # canonical JSON per segment, cache_control stripped
    breakpoints: list[int]  # segment indices carrying cache_control
    thinking_enabled: bool = False
    # Responses API only: the parsed body and its input items, earlier responses' included
    responses: tuple[responses_wire.ResponsesRequest, list[dict[str, Any]]] | None = None


def _strip_cache_control(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_cache_control(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [_strip_cache_control(v) for v in obj]
    return obj


def _has_cache_control(obj: Any) -> bool:
    if isinstance(obj, dict):
        return "cache_control" in obj or any(_has_cache_control(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_cache_control(v) for v in obj)
    return False


class LoopbackServer:
    """A local HTTP server speaking the Anthropic Messages and OpenAI Chat Completions protocols.

    The real SDKs talk to it (``url`` for Anthropic, ``openai_base_url`` for OpenAI); it
    validates each request as the providers would, answers from ``policy`` (a function of
    the :class:`~ctxmem.clients.ModelRequest`, or a list of replies), counts the prompt
    with ``counter``, refuses prompts over ``window`` tokens, simulates prompt caching
    (prefixes of at least ``min_cache_tokens``) and records every request in ``requests``.
    Scripted :class:`Fault` answers (``fail_next``) exercise retries and error mapping. Use
    it as a context manager, or call :meth:`start` / :meth:`stop`. The module docstring
    details the caching and validation rules.
    """

    def __init__(
        self,
        policy: ServerPolicy | Iterable[ServerReply] | None = None,
        *,
        window: int | None = None,
        counter: Callable[[str], int] | None = None,
        min_cache_tokens: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if policy is None or callable(policy):
            self._policy: ServerPolicy | None = policy
            self._replies: deque[ServerReply] = deque()
        else:
            self._policy = None
            self._replies = deque(policy)
        self.window = window
        self.counter = counter or byte_estimate
        self.min_cache_tokens = min_cache_tokens
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._cache: dict[str, int] = {}
        self._stored: dict[str, list[dict[str, Any]]] = {}  # Responses API: id -> input + output items
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._secret = b"ctxmem-loopback"
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> LoopbackServer:
        """Start serving on a background thread; returns the server (its URL is then known)."""
        server = self

        class Handler(_Handler):
            loopback = server

        self._httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="ctxmem-loopback", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread (idempotent)."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for Anthropic clients (``http://127.0.0.1:PORT``)."""
        if self._httpd is None:
            raise CtxmemError("the loopback server is not running; call start() or use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for OpenAI clients (``http://127.0.0.1:PORT/v1``)."""
        return self.url + "/v1"

    # ----------------------------------------------------------------- scripting

    def fail_next(self, *faults: Fault) -> None:
        """Answer the next message requests with these faults, in order, before the policy."""
        with self._lock:
            self._faults.extend(faults)

    def enqueue(self, *replies: ServerReply) -> None:
        """Queue replies to answer the next message requests with, before the policy."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def rejected(self) -> list[RecordedRequest]:
        """Requests that failed validation (status 400 not caused by a scripted fault)."""
        return [r for r in self.requests if r.status == 400 and r.error and not r.error.startswith("fault:")]

    @property
    def accepted(self) -> list[RecordedRequest]:
        """Requests answered with a reply (status 200)."""
        return [r for r in self.requests if r.status == 200]

    def sign(self, thinking: str) -> str:
        """The signature this server issues for (and demands back with) a thinking text."""
        return hmac.new(self._secret, thinking.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    # ----------------------------------------------------------------- parsing

    def _parse_anthropic(self, body: Any) -> _Prompt:
        if not isinstance(body, dict):
            raise _Rejected(400, "invalid_request_error", "request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Rejected(400, "invalid_request_error", "model: Field required")
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise _Rejected(400, "invalid_request_error", "messages: at least one message is required")
        segments: list[str] = []
        breakpoints: list[int] = []
        tools: list[ToolSpec] = []
        for i, raw in enumerate(body.get("tools") or ()):
            try:
                tools.append(tool_from_anthropic(raw))
            except CtxmemError as exc:
                raise _Rejected(400, "invalid_request_error", f"tools.{i}: {exc}") from None
            segments.append(canonical_json(_strip_cache_control(raw)))
            if isinstance(raw, dict) and "cache_control" in raw:
                breakpoints.append(len(segments) - 1)
        system = body.get("system")
        system_text: str | None = None
        if isinstance(system, str):
            system_text = system
        elif isinstance(system, list):
            if not all(isinstance(b, dict) and b.get("type") == "text" for b in system):
                raise _Rejected(400, "invalid_request_error", "system: only text blocks are supported")
            system_text = "".join(str(b.get("text", "")) for b in system)
        elif system is not None:
            raise _Rejected(400, "invalid_request_error", "system: must be a string or a list of text blocks")
        if system is not None:
            segments.append(canonical_json(_strip_cache_control(system)))
            if _has_cache_control(system):
                breakpoints.append(len(segments) - 1)
        try:
            messages = from_anthropic(raw_messages)
        except CtxmemError as exc:
            raise _Rejected(400, "invalid_request_error", f"messages: {exc}") from None
        for raw in raw_messages:
            segments.append(canonical_json(_strip_cache_control(raw)))
            if _has_cache_control(raw):
                breakpoints.append(len(segments) - 1)
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _Rejected(400, "invalid_request_error", "max_tokens: Field required (a positive integer)")
        if body.get("stream"):
            raise _Rejected(400, "invalid_request_error", "stream: the loopback server does not stream")
        thinking = body.get("thinking")
        enabled = isinstance(thinking, dict) and thinking.get("type") == "enabled"
        request = ModelRequest(
            messages=tuple(messages),
            system=system_text,
            tools=tuple(tools),
            max_tokens=max_tokens,
            temperature=body.get("temperature"),
            thinking=ThinkingConfig(int(thinking.get("budget_tokens", 0))) if enabled and isinstance(thinking, dict) else None,
            model=model,
        )
        return _Prompt(request, segments, breakpoints, thinking_enabled=enabled)

    def _parse_openai(self, body: Any) -> _Prompt:
        if not isinstance(body, dict):
            raise _Rejected(400, "invalid_request_error", "request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Rejected(400, "invalid_request_error", "you must provide a model parameter")
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise _Rejected(400, "invalid_request_error", "'messages' must be a non-empty array")
        tools: list[ToolSpec] = []
        segments: list[str] = []
        for i, raw in enumerate(body.get("tools") or ()):
            try:
                tools.append(tool_from_openai(raw))
            except CtxmemError as exc:
                raise _Rejected(400, "invalid_request_error", f"tools[{i}]: {exc}") from None
            segments.append(canonical_json(raw))
        try:
            system, messages = from_openai(raw_messages)
        except CtxmemError as exc:
            raise _Rejected(400, "invalid_request_error", f"messages: {exc}") from None
        segments.extend(canonical_json(m) for m in raw_messages)
        if body.get("stream"):
            raise _Rejected(400, "invalid_request_error", "stream: the loopback server does not stream")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 1024))
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise _Rejected(400, "invalid_request_error", "max_tokens must be a positive integer")
        request = ModelRequest(
            messages=tuple(messages),
            system=system,
            tools=tuple(tools),
            max_tokens=max_tokens,
            temperature=body.get("temperature"),
            model=model,
        )
        return _Prompt(request, segments, [])

    def _parse_responses(self, body: Any) -> _Prompt:
        try:
            req = responses_wire.parse_request(body)
            items = req.items
            if req.previous_response_id is not None:
                with self._lock:
                    earlier = self._stored.get(req.previous_response_id)
                if earlier is None:
                    raise _Rejected(
                        400, "invalid_request_error", f"Previous response with id '{req.previous_response_id}' not found."
                    )
                items = [*earlier, *items]
            system, messages = responses_wire.to_messages(items, req.instructions)
        except CtxmemError as exc:
            raise _Rejected(400, "invalid_request_error", str(exc)) from None
        if not messages:
            raise _Rejected(400, "invalid_request_error", "Invalid 'input': no user, assistant or tool item to answer.")
        request = ModelRequest(
            messages=tuple(messages),
            system=system,
            tools=req.tools,
            max_tokens=req.max_output_tokens,
            temperature=req.temperature,
            model=req.model,
        )
        return _Prompt(request, responses_wire.segments(req, items), [], responses=(req, items))

    def _validate(self, prompt: _Prompt, protocol: Protocol_) -> list[int]:
        """Provider-style checks; returns cumulative token counts per segment."""
        messages = prompt.request.messages
        try:
            validate_conversation(messages)
        except CtxmemError as exc:
            raise _Rejected(400, "invalid_request_error", f"messages: {exc}") from None
        for i, m in enumerate(messages):
            for j, b in enumerate(m.content):
                if isinstance(b, ThinkingBlock) and not hmac.compare_digest(b.signature, self.sign(b.thinking)):
                    raise _Rejected(
                        400,
                        "invalid_request_error",
                        f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block "
                        "(thinking blocks must be passed back unmodified)",
                    )
        if prompt.thinking_enabled and messages and messages[-1].tool_results and len(messages) >= 2:
            last_assistant = messages[-2]
            if last_assistant.tool_uses and not isinstance(last_assistant.content[0], ThinkingBlock):
                raise _Rejected(
                    400,
                    "invalid_request_error",
                    f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or "
                    "`redacted_thinking`, but found `"
                    f"{last_assistant.content[0].type}`. When thinking is enabled, a final assistant "
                    "message with tool_use must start with its thinking block.",
                )
        cumulative = list(itertools.accumulate(self.counter(s) for s in prompt.segments))
        total = cumulative[-1] if cumulative else 0
        if self.window is not None and total > self.window:
            if protocol == "anthropic":
                raise _Rejected(
                    400, "invalid_request_error", f"prompt is too long: {total} tokens > {self.window} maximum"
                )
            if protocol == "responses":
                raise _Rejected(
                    400,
                    "invalid_request_error",
                    f"Your input exceeds the context window of this model ({total} tokens > {self.window}). "
                    "Please adjust your input and try again.",
                    code="context_length_exceeded",
                )
            raise _Rejected(
                400,
                "invalid_request_error",
                f"This model's maximum context length is {self.window} tokens. However, your "
                f"messages resulted in {total} tokens. Please reduce the length of the messages.",
                code="context_length_exceeded",
            )
        return cumulative

    def _cache_usage(self, prompt: _Prompt, cumulative: list[int], protocol: Protocol_) -> tuple[int, int]:
        """(cache_read, cache_write) for this prompt; updates the simulated cache."""
        hashes = []
        h = hashlib.sha256()
        for seg in prompt.segments:
            h.update(seg.encode("utf-8"))
            h.update(b"\x00")
            hashes.append(h.hexdigest())
        with self._lock:
            if protocol != "anthropic":  # OpenAI caches every prefix automatically
                read = max((cumulative[i] for i, x in enumerate(hashes) if x in self._cache), default=0)
                for i, x in enumerate(hashes):
                    if cumulative[i] >= self.min_cache_tokens:
                        self._cache[x] = cumulative[i]
                return read, 0
            if not prompt.breakpoints:
                return 0, 0
            last = max(prompt.breakpoints)
            read = max((cumulative[i] for i in range(last + 1) if hashes[i] in self._cache), default=0)
            write = 0
            for bp in prompt.breakpoints:
                if cumulative[bp] >= self.min_cache_tokens and hashes[bp] not in self._cache:
                    self._cache[hashes[bp]] = cumulative[bp]
            if cumulative[last] >= self.min_cache_tokens:
                write = max(0, cumulative[last] - read)
            return read, write

    def _next_reply(self, request: ModelRequest) -> ServerReply:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._replies:
                return self._replies.popleft()
        if self._policy is not None:
            return self._policy(request)
        return f"loopback: received {len(request.messages)} messages"

    def _reply_blocks(self, reply: str | Message | Sequence[ContentBlock]) -> tuple[ContentBlock, ...]:
        if isinstance(reply, str):
            blocks: tuple[ContentBlock, ...] = (TextBlock(reply),)
        elif isinstance(reply, Message):
            blocks = reply.content
        else:
            blocks = tuple(reply)
        return tuple(
            ThinkingBlock(b.thinking, self.sign(b.thinking)) if isinstance(b, ThinkingBlock) and not b.signature else b
            for b in blocks
        )

    # ----------------------------------------------------------------- handling

    def handle(self, protocol: Protocol_, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes | Fault]:
        """Answer one request. Returns (status, extra headers, body or a hang fault)."""
        try:
            body: Any = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = raw.decode("utf-8", "replace")
        record = RecordedRequest(protocol, path, headers, body)
        with self._lock:
            self.requests.append(record)
        count_only = path.endswith("/count_tokens")
        try:
            if isinstance(body, str):
                raise _Rejected(400, "invalid_request_error", "request body is not valid JSON")
            if count_only and isinstance(body, dict):
                body = {**body, "max_tokens": body.get("max_tokens", 1)}
            if protocol == "anthropic":
                prompt = self._parse_anthropic(body)
            elif protocol == "openai":
                prompt = self._parse_openai(body)
            else:
                prompt = self._parse_responses(body)
            record.parsed = prompt.request
            cumulative = self._validate(prompt, protocol)
            total = cumulative[-1] if cumulative else 0
            if count_only:
                record.status = 200
                return 200, {}, json.dumps({"input_tokens": total}).encode()
            reply = self._next_reply(prompt.request)
            if isinstance(reply, Fault):
                return self._fault(record, reply, protocol, total)
            if isinstance(reply, Response):
                blocks = self._reply_blocks(reply.content)
                usage = reply.usage
                stop = reply.stop_reason
            else:
                blocks = self._reply_blocks(reply)
                read, write = self._cache_usage(prompt, cumulative, protocol)
                out = self.counter(canonical_json([block_to_anthropic(b) for b in blocks])) if blocks else 0
                usage = Usage(total - read - write, out, read, write)
                stop = "tool_use" if any(isinstance(b, ToolUseBlock) for b in blocks) else "end_turn"
            record.usage = usage
            record.status = 200
            n = next(self._ids)
            if prompt.responses is not None:
                return self._render_responses(prompt.responses, n, blocks, stop, usage)
            return 200, {}, json.dumps(self._render(protocol, n, prompt.request.model, blocks, stop, usage)).encode()
        except _Rejected as exc:
            record.status = exc.status
            record.error = exc.message
            return exc.status, {}, self._error_body(protocol, exc.etype, exc.message, exc.code)
        except Exception as exc:  # a bug in a test policy: answer 500 and keep serving
            record.status = 500
            record.error = f"policy raised {type(exc).__name__}: {exc}"
            return 500, {}, self._error_body(protocol, "api_error", record.error, None)

    def _render(
        self, protocol: Protocol_, n: int, model: str, blocks: tuple[ContentBlock, ...], stop: str, usage: Usage
    ) -> dict[str, Any]:
        if protocol == "anthropic":
            return {
                "id": f"msg_loopback_{n:06d}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block_to_anthropic(b) for b in blocks],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_input_tokens": usage.cache_read_tokens,
                    "cache_creation_input_tokens": usage.cache_write_tokens,
                },
            }
        message = message_to_openai(Message("assistant", blocks), extensions=True)[0]
        message.pop("reasoning_signature", None)
        message.pop("reasoning_parts", None)
        finish = {"tool_use": "tool_calls", "max_tokens": "length", "end_turn": "stop", "refusal": "content_filter"}.get(stop, "stop")
        prompt_tokens = usage.prompt_tokens
        return {
            "id": f"chatcmpl-loopback-{n:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": prompt_tokens + usage.output_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            },
        }

    def _render_responses(
        self,
        parsed: tuple[responses_wire.ResponsesRequest, list[dict[str, Any]]],
        n: int,
        blocks: tuple[ContentBlock, ...],
        stop: str,
        usage: Usage,
    ) -> tuple[int, dict[str, str], bytes]:
        req, items = parsed
        output = responses_wire.output_items(blocks, n)
        response = responses_wire.response_object(req, n, output, usage, stop)
        if req.store:  # what previous_response_id chains onto: input and output, not instructions
            with self._lock:
                self._stored[response["id"]] = [*items, *output]
        if req.stream:
            return 200, {"content-type": "text/event-stream"}, responses_wire.encode_sse(
                responses_wire.stream_events(response)
            )
        return 200, {}, json.dumps(response).encode()

    def _error_body(self, protocol: Protocol_, etype: str, message: str, code: str | None) -> bytes:
        if protocol == "anthropic":
            return json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()
        return json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}).encode()

    def _fault(
        self, record: RecordedRequest, fault: Fault, protocol: Protocol_, total: int
    ) -> tuple[int, dict[str, str], bytes | Fault]:
        record.error = f"fault: {fault.kind}"
        if fault.kind == "hang":
            record.status = 0
            return 0, {}, fault
        if fault.kind == "malformed_json":
            record.status = 200
            return 200, {}, b'{"id": "msg_broken", "type": "message", "content": [{"type": "te'
        if fault.kind == "malformed_shape":
            record.status = 200
            return 200, {}, b'{"id": "msg_broken", "unexpected": true}'
        headers: dict[str, str] = {}
        if fault.kind == "rate_limit":
            status, etype, message, code = 429, "rate_limit_error", "rate limit exceeded (loopback fault)", "rate_limit_exceeded"
            if fault.retry_after is not None:
                headers["retry-after"] = str(fault.retry_after)
        elif fault.kind == "overloaded":
            status = 529 if protocol == "anthropic" else 503
            etype, message, code = "overloaded_error", "Overloaded (loopback fault)", None
        elif fault.kind == "server_error":
            status, etype, message, code = 500, "api_error", "Internal server error (loopback fault)", None
        else:
            window = self.window or total
            status, etype = 400, "invalid_request_error"
            if protocol == "anthropic":
                message, code = f"prompt is too long: {max(total, window + 1)} tokens > {window} maximum", None
            else:
                message = (
                    f"This model's maximum context length is {window} tokens. However, your messages "
                    f"resulted in {max(total, window + 1)} tokens."
                )
                code = "context_length_exceeded"
        record.status = status
        return status, headers, self._error_body(protocol, etype, message, code)


class _Handler(BaseHTTPRequestHandler):
    loopback: LoopbackServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections are closed after this

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        return

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", headers.get("content-type", "application/json"))
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", f"req_loopback_{id(body):x}")
        for k, v in headers.items():
            if k != "content-type":
                self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path in ("/v1/messages", "/v1/messages/count_tokens"):
            protocol: Protocol_ = "anthropic"
        elif path in ("/v1/chat/completions", "/chat/completions"):
            protocol = "openai"
        elif path in ("/v1/responses", "/responses"):
            protocol = "responses"
        else:
            self._send(404, {}, json.dumps({"error": {"message": f"no route {path}", "type": "not_found_error"}}).encode())
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, body = self.loopback.handle(protocol, path, headers, raw)
        if isinstance(body, Fault):  # hang: hold the connection, then drop it unanswered
            self.loopback._stop.wait(body.seconds)
            self.close_connection = True
            return
        try:
            self._send(status, extra, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._send(404, {}, json.dumps({"error": {"message": f"no route {self.path}", "type": "not_found_error"}}).encode())
