"""Test doubles shipped with the library, and the network guard.

* :class:`ScriptedClient` answers from a queue (or a policy callable) and records every
  request it was sent; an exception in the queue is raised instead of answered, so a test
  can script ``ContextLengthExceeded`` on the third turn.
* :class:`FunctionClient` wraps a function ``(ModelRequest) -> reply`` (sync or async).
* The **network guard**: :data:`ALLOW_MODEL_REQUESTS` (default from the environment
  variable ``CTXMEM_ALLOW_MODEL_REQUESTS``, on unless set to ``0``/``false``/``no``/``off``).
  When it is off, the real clients (Anthropic, OpenAI-compatible) refuse any base URL whose
  host is not loopback with :class:`~ctxmem.errors.NetworkBlockedError` — before they open a
  socket or even resolve a name. Test suites switch it off::

      @pytest.fixture(autouse=True)
      def _no_network():
          with override_allow_model_requests(False):
              yield

A reply (what a policy returns, what the queue holds) may be a :class:`Response`, a string,
an assistant :class:`Message`, a sequence of content blocks, or an exception to raise.
"""

from __future__ import annotations

import inspect
import ipaddress
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeAlias
from urllib.parse import urlsplit

from ctxmem.clients.base import (
    BaseClient,
    CacheBreakpoints,
    ModelRequest,
    Response,
    ThinkingConfig,
    Usage,
)
from ctxmem.errors import InputError, NetworkBlockedError, ProviderError
from ctxmem.messages import (
    ContentBlock,
    Message,
    TextBlock,
    ToolSpec,
    ToolUseBlock,
    canonical_json,
    message_texts,
    to_anthropic,
)

Reply: TypeAlias = Response | str | Message | Sequence[ContentBlock] | BaseException
Policy: TypeAlias = Callable[[ModelRequest], "Reply | Awaitable[Reply]"]

_FALSE = {"0", "false", "no", "off"}

ALLOW_MODEL_REQUESTS: bool = os.environ.get("CTXMEM_ALLOW_MODEL_REQUESTS", "1").strip().lower() not in _FALSE
"""When False, real clients may only talk to loopback hosts (tests set this)."""


@contextmanager
def override_allow_model_requests(allow: bool) -> Iterator[None]:
    """Temporarily set :data:`ALLOW_MODEL_REQUESTS`."""
    global ALLOW_MODEL_REQUESTS
    old = ALLOW_MODEL_REQUESTS
    ALLOW_MODEL_REQUESTS = allow
    try:
        yield
    finally:
        ALLOW_MODEL_REQUESTS = old


def is_loopback_url(url: str) -> bool:
    """True if ``url``'s host is ``localhost`` or a loopback IP. Never resolves names."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_network_allowed(url: str, provider: str) -> None:
    """Raise :class:`NetworkBlockedError` if the guard is on and ``url`` is not loopback."""
    if not ALLOW_MODEL_REQUESTS and not is_loopback_url(url):
        raise NetworkBlockedError(
            f"{provider} request to {url} blocked: model requests are disabled "
            "(ctxmem.clients.testing.ALLOW_MODEL_REQUESTS is False, or "
            "CTXMEM_ALLOW_MODEL_REQUESTS=0). Point the client at a loopback server "
            "(ctxmem.clients.loopback.LoopbackServer) or enable requests.",
            provider=provider,
        )


# --------------------------------------------------------------------------- replies


def estimate_tokens(text: str) -> int:
    """The doubles' token estimate: UTF-8 bytes / 4, rounded up. Deterministic, not exact."""
    return (len(text.encode("utf-8")) + 3) // 4


def estimate_request_tokens(request: ModelRequest) -> int:
    parts = [request.system or "", canonical_json(to_anthropic(request.messages))]
    parts.extend(canonical_json([t.name, t.description, t.input_schema]) for t in request.tools)
    return estimate_tokens("".join(parts))


def as_response(reply: Reply, request: ModelRequest, *, model: str = "scripted") -> Response:
    """Turn a policy's reply into a :class:`Response` (raises it if it is an exception).

    A reply without usage gets an estimated one (:func:`estimate_tokens`); a reply without
    a stop reason gets ``tool_use`` if it calls a tool, else ``end_turn``.
    """
    if isinstance(reply, BaseException):
        raise reply
    if isinstance(reply, Response):
        return reply
    if isinstance(reply, str):
        blocks: tuple[ContentBlock, ...] = (TextBlock(reply),)
    elif isinstance(reply, Message):
        if reply.role != "assistant":
            raise InputError("a scripted reply must be an assistant message", field="role")
        blocks = reply.content
    else:
        blocks = tuple(reply)
    stop = "tool_use" if any(isinstance(b, ToolUseBlock) for b in blocks) else "end_turn"
    output = sum(estimate_tokens(t) for t in message_texts(Message("assistant", blocks)))
    usage = Usage(input_tokens=estimate_request_tokens(request), output_tokens=max(1, output))
    return Response(content=blocks, stop_reason=stop, usage=usage, model=request.model or model)


# --------------------------------------------------------------------------- doubles


class ScriptedClient(BaseClient):
    """Answers from a queue of replies, then from ``policy`` (if given); records requests.

    ``requests`` holds every :class:`ModelRequest` received, in order, including those
    answered with a scripted exception.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        policy: Policy | None = None,
        model: str = "scripted",
    ):
        self.model = model
        self._queue: deque[Reply] = deque(replies)
        self._policy = policy
        self.requests: list[ModelRequest] = []

    def enqueue(self, *replies: Reply) -> ScriptedClient:
        """Add replies to the end of the queue; returns the client, for chaining."""
        self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        """How many queued replies are left."""
        return len(self._queue)

    async def request(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int,
        temperature: float | None = None,
        cache_breakpoints: CacheBreakpoints | None = None,
        thinking: ThinkingConfig | None = None,
    ) -> Response:
        """Record the request, then answer with the next queued reply, else the policy's.

        Raises:
            ProviderError: the queue is empty and there is no policy.
            Exception: a queued or returned exception is raised, as a provider's would be.
        """
        req = self._model_request(messages, system, tools, max_tokens, temperature, cache_breakpoints, thinking)
        self.requests.append(req)
        if self._queue:
            reply: Reply = self._queue.popleft()
        elif self._policy is not None:
            got = self._policy(req)
            reply = await got if inspect.isawaitable(got) else got
        else:
            raise ProviderError(
                f"ScriptedClient has no reply for request {len(self.requests)}: the queue is "
                "empty and there is no policy. Enqueue more replies or pass policy=.",
                provider="scripted",
            )
        return as_response(reply, req, model=self.model)


class FunctionClient(ScriptedClient):
    """A client whose every answer comes from ``fn(request)`` (sync or async)."""

    def __init__(self, fn: Policy, *, model: str = "function"):
        super().__init__(policy=fn, model=model)
