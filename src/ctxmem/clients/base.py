"""The model-client contract: :class:`ModelClient`, :class:`Response`, :class:`Usage`.

A client turns a list of :class:`~ctxmem.messages.Message` (plus a system prompt and tool
specs) into one :class:`Response`. The contract is provider-neutral:

* ``request`` is async (it does I/O); :func:`request_sync` and
  :meth:`BaseClient.request_sync` are the sync wrappers for scripts, notebooks and the CLI.
* :class:`Usage` uses *Anthropic semantics*: ``input_tokens`` counts only the uncached part
  of the prompt; ``cache_read_tokens`` and ``cache_write_tokens`` are separate. The whole
  prompt is :attr:`Usage.prompt_tokens`. Clients for APIs that report a total (OpenAI's
  ``prompt_tokens`` includes ``cached_tokens``) subtract, so the sum is the same everywhere.
* ``stop_reason`` uses Anthropic's vocabulary (``end_turn``, ``tool_use``, ``max_tokens``,
  ``stop_sequence``, ``pause_turn``, ``refusal``); other APIs' reasons are mapped onto it.
* Failures are :class:`~ctxmem.errors.ProviderError` and its subclasses
  (:class:`~ctxmem.errors.ProviderTimeoutError`, :class:`~ctxmem.errors.MalformedResponseError`,
  …), all in :mod:`ctxmem.errors`.

Retries (429, 5xx, overloaded, dropped connections, timeouts) are the client's job and use
:class:`RetryPolicy`: exponential backoff with jitter, honouring ``retry-after`` up to
``max_delay``. Provider SDKs' own retry loops are switched off so there is one policy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from ctxmem.errors import MalformedResponseError as MalformedResponseError  # re-exported
from ctxmem.errors import ProviderError
from ctxmem.errors import ProviderTimeoutError as ProviderTimeoutError  # re-exported
from ctxmem.messages import ContentBlock, Message, TextBlock, ToolSpec, ToolUseBlock

T = TypeVar("T")

StopReason = str
"""One of ``end_turn``, ``tool_use``, ``max_tokens``, ``stop_sequence``, ``pause_turn``,
``refusal``; a provider's unknown reason is passed through unchanged."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one request consumed. ``input_tokens`` excludes cache reads and writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt: uncached input plus cache reads plus cache writes."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        """The prompt (all of it, cached or not) plus the output."""
        return self.prompt_tokens + self.output_tokens

    def to_dict(self) -> dict[str, int]:
        """The four counts by their field names (JSON-ready)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass(frozen=True, slots=True)
class Response:
    """One model answer: assistant content blocks, why it stopped, and what it cost."""

    content: tuple[ContentBlock, ...]
    stop_reason: StopReason
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    id: str | None = None

    @property
    def message(self) -> Message:
        """The answer as an assistant :class:`Message`, ready to append to the history."""
        return Message("assistant", self.content)

    @property
    def text(self) -> str:
        """The text blocks joined (thinking and tool calls left out); ``""`` when there are none."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> tuple[ToolUseBlock, ...]:
        """The tool calls the model asked for, in order (empty unless ``stop_reason`` is ``tool_use``)."""
        return tuple(b for b in self.content if isinstance(b, ToolUseBlock))


@dataclass(frozen=True, slots=True)
class CacheBreakpoints:
    """Where to put prompt-cache breakpoints (Anthropic ``cache_control: ephemeral``).

    ``system``: after the system prompt; ``tools``: after the last tool definition;
    ``messages``: indices (negative counts from the end) of messages whose last cacheable
    block gets a breakpoint. Anthropic allows at most four in one request; extra message
    breakpoints are dropped from the front. APIs with automatic prefix caching ignore them.
    """

    system: bool = True
    tools: bool = True
    messages: tuple[int, ...] = (-1,)
    ttl: Literal["5m", "1h"] | None = None


@dataclass(frozen=True, slots=True)
class ThinkingConfig:
    """Extended thinking: a token budget for the model's reasoning (Anthropic ``thinking``)."""

    budget_tokens: int = 2048


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything one ``request`` call was given; what doubles record and policies receive."""

    messages: tuple[Message, ...]
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 1024
    temperature: float | None = None
    cache_breakpoints: CacheBreakpoints | None = None
    thinking: ThinkingConfig | None = None
    model: str = ""


@runtime_checkable
class ModelClient(Protocol):
    """What ctxmem needs from a model: one async request → one :class:`Response`."""

    model: str

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
        """Send one request and return the model's answer.

        Args:
            messages: the conversation, user first, alternating roles; every ``tool_use``
                answered by a ``tool_result`` in the next user message (see
                :func:`~ctxmem.messages.validate_conversation`). Not modified.
            system: the system prompt, or ``None``.
            tools: the tools the model may call this turn (``None`` or empty: none).
            max_tokens: the most tokens the reply may have.
            temperature: sampling temperature; ``None`` leaves the provider's default.
            cache_breakpoints: where to mark prompt-cache breakpoints (providers with
                automatic prefix caching ignore them); ``None``: none.
            thinking: extended-thinking budget, for models that support it.

        Returns:
            A :class:`Response`: the assistant's blocks, the stop reason in Anthropic's
            vocabulary, and :class:`Usage` with Anthropic semantics (see the module docstring).

        Raises:
            ContextLengthExceeded: the provider says the prompt is longer than its window.
            RateLimitError, ProviderTimeoutError: still failing after the retry policy.
            MalformedResponseError: an answer that is not a valid response.
            ProviderError: any other provider failure (status and provider attached).
        """
        ...


@runtime_checkable
class TokenCountingClient(ModelClient, Protocol):
    """A client that can count a prompt's tokens exactly (the provider's own count)."""

    async def count_tokens(
        self,
        messages: Sequence[Message],
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
    ) -> int:
        """The prompt's size in the provider's tokens (``Usage.prompt_tokens`` of the same request).

        Raises:
            ProviderError: the count endpoint failed (after retries).
        """
        ...


_sync_loop: asyncio.AbstractEventLoop | None = None
_sync_thread: threading.Thread | None = None
_sync_lock = threading.Lock()

#: how long an interrupted :func:`run_sync` waits for its cancelled coroutine to stop
CANCEL_WAIT_S = 5.0
#: how often a waiting :func:`run_sync` checks that the loop's thread is still alive
_POLL_S = 1.0


def _background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started (again) when there is none, it was closed, or its thread died
    (an exception that escaped ``run_forever``): a dead loop would leave every later call
    waiting forever."""
    global _sync_loop, _sync_thread
    with _sync_lock:
        if (
            _sync_loop is None
            or _sync_loop.is_closed()
            or _sync_thread is None
            or not _sync_thread.is_alive()
        ):
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="ctxmem-sync-loop", daemon=True)
            thread.start()
            _sync_loop, _sync_thread = loop, thread
        return _sync_loop


@dataclass(frozen=True, slots=True)
class _Escaped:
    """A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``,
    ``SystemExit``) raised by the coroutine, carried out as a value: raised inside a task it
    would escape ``run_forever`` and kill the shared loop's thread."""

    exc: BaseException


def run_sync(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, and return its result.

    Every sync call runs on one long-lived event loop in a daemon thread. Async HTTP
    connection pools are bound to the loop they were opened on, so one loop lets
    successive sync calls reuse connections (``asyncio.run`` per call would strand them),
    and calling from inside a running loop (a notebook) cannot deadlock it.

    An interruption while waiting (``KeyboardInterrupt`` from Ctrl-C, or any other
    ``BaseException``) cancels the coroutine, waits up to :data:`CANCEL_WAIT_S` seconds for
    the cancellation to land (so nothing of it runs on after the caller sees the error),
    and is re-raised. A ``KeyboardInterrupt`` or ``SystemExit`` raised by the coroutine
    itself is re-raised here, in the caller, and the shared loop keeps running.

    Raises:
        RuntimeError: called from the shared loop's own thread (it would wait for itself):
            ``await`` the coroutine there instead.
    """
    loop = _background_loop()
    thread = _sync_thread
    if threading.current_thread() is thread:
        raise RuntimeError(
            "run_sync was called from ctxmem's event-loop thread (from async code, or a callback it runs), "
            "where it would wait for itself; await the coroutine instead"
        )
    ended = threading.Event()
    outcome: concurrent.futures.Future[T | _Escaped] = concurrent.futures.Future()
    tasks: list[asyncio.Task[T | _Escaped]] = []

    async def guarded() -> T | _Escaped:
        try:
            return await coro_fn()
        except (KeyboardInterrupt, SystemExit) as exc:
            return _Escaped(exc)

    def settle(task: asyncio.Task[T | _Escaped]) -> None:
        if task.cancelled():
            outcome.cancel()
        elif (exc := task.exception()) is not None:
            outcome.set_exception(exc)
        else:
            outcome.set_result(task.result())
        ended.set()  # the coroutine has stopped: finished, failed or cancelled

    def start() -> None:
        task = loop.create_task(guarded())
        tasks.append(task)
        task.add_done_callback(settle)

    # scheduled from this thread in order: start() always runs before a cancel below
    loop.call_soon_threadsafe(start)
    try:
        while not outcome.done():
            try:
                outcome.result(timeout=_POLL_S)
            except TimeoutError:
                if not outcome.done() and thread is not None and not thread.is_alive():
                    raise RuntimeError(
                        "ctxmem's event-loop thread stopped while this call was waiting; "
                        "the call's outcome is unknown"
                    ) from None
            except BaseException:
                if not outcome.done():  # an interruption of the wait, not the coroutine's error
                    raise
        result = outcome.result()  # the coroutine's value, or its exception raised
    except BaseException:
        if not outcome.done() and (thread is None or thread.is_alive()):
            loop.call_soon_threadsafe(lambda: tasks[0].cancel() if tasks else None)
            ended.wait(CANCEL_WAIT_S)
        raise
    if isinstance(result, _Escaped):
        raise result.exc
    return result


def request_sync(
    client: ModelClient,
    messages: Sequence[Message],
    *,
    max_tokens: int,
    system: str | None = None,
    tools: Sequence[ToolSpec] | None = None,
    temperature: float | None = None,
    cache_breakpoints: CacheBreakpoints | None = None,
    thinking: ThinkingConfig | None = None,
) -> Response:
    """Sync wrapper around ``client.request`` for any :class:`ModelClient`."""
    return run_sync(
        lambda: client.request(
            messages,
            system=system,
            tools=tools,
            max_tokens=max_tokens,
            temperature=temperature,
            cache_breakpoints=cache_breakpoints,
            thinking=thinking,
        )
    )


class BaseClient:
    """Shared plumbing for the built-in clients: the sync wrapper and request recording."""

    model: str = ""

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
        """Implemented by each client; the contract is :meth:`ModelClient.request`."""
        raise NotImplementedError

    def request_sync(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
        temperature: float | None = None,
        cache_breakpoints: CacheBreakpoints | None = None,
        thinking: ThinkingConfig | None = None,
    ) -> Response:
        """:meth:`request` from synchronous code (one shared background loop; see :func:`run_sync`)."""
        return request_sync(
            self,
            messages,
            system=system,
            tools=tools,
            max_tokens=max_tokens,
            temperature=temperature,
            cache_breakpoints=cache_breakpoints,
            thinking=thinking,
        )

    def _model_request(
        self,
        messages: Sequence[Message],
        system: str | None,
        tools: Sequence[ToolSpec] | None,
        max_tokens: int,
        temperature: float | None,
        cache_breakpoints: CacheBreakpoints | None,
        thinking: ThinkingConfig | None,
    ) -> ModelRequest:
        return ModelRequest(
            messages=tuple(messages),
            system=system,
            tools=tuple(tools or ()),
            max_tokens=max_tokens,
            temperature=temperature,
            cache_breakpoints=cache_breakpoints,
            thinking=thinking,
            model=self.model,
        )


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``initial_delay * multiplier**attempt``, capped, with jitter.

    ``max_retries`` counts retries after the first attempt. A server's ``retry-after``
    replaces the computed delay (still capped at ``max_delay``).
    """

    max_retries: int = 4
    initial_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        The server's ``retry_after`` when given (capped at ``max_delay``), else exponential
        backoff capped at ``max_delay``, with ± ``jitter`` spread so clients do not retry in step.
        """
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_delay)
        base = min(self.initial_delay * self.multiplier**attempt, self.max_delay)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


class Retryable(Exception):
    """Internal signal: the attempt failed in a way worth retrying.

    ``final`` is the ctxmem error to raise when retries run out.
    """

    def __init__(self, final: ProviderError, retry_after: float | None = None):
        super().__init__(str(final))
        self.final = final
        self.retry_after = retry_after


async def with_retries(
    attempt_fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call ``attempt_fn`` until it succeeds, raises a non-retryable error, or retries run out."""
    attempt = 0
    while True:
        try:
            return await attempt_fn()
        except Retryable as exc:
            if attempt >= policy.max_retries:
                final = exc.final
                if policy.max_retries:
                    final.args = (f"{final.args[0]} (gave up after {attempt + 1} attempts)",)
                raise final from exc.__cause__
            await sleep(policy.delay(attempt, exc.retry_after))
            attempt += 1


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (numeric form only), else None."""
    if headers is None:
        return None
    for key, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(key)
        if value is not None:
            try:
                return float(value) / scale
            except ValueError:
                return None
    return None
