"""Anthropic Messages API client on the official ``anthropic`` SDK.

Works with Claude and with any server speaking the Messages protocol (set ``base_url``).
The SDK is imported when the client is constructed, never at ``import ctxmem``.

* Messages go through :func:`request_messages` (:func:`ctxmem.messages.to_anthropic`, less
  the blank text blocks the API refuses); replies come back through
  :func:`ctxmem.messages.block_from_anthropic`, so thinking blocks (with their signatures)
  and redacted thinking survive unchanged and can be sent back.
* ``cache_breakpoints`` put ``cache_control: {"type": "ephemeral"}`` on the system prompt,
  the last tool, and chosen messages (their last non-thinking block), at most four in all.
* Retries (429, 5xx, 529 overloaded, connection errors, timeouts) follow
  :class:`~ctxmem.clients.base.RetryPolicy`; the SDK's own retries are off.
* Errors: "prompt is too long" (400) and 413 → :class:`~ctxmem.errors.ContextLengthExceeded`;
  429/overloaded after retries → :class:`~ctxmem.errors.RateLimitError`; a timeout →
  :class:`~ctxmem.clients.base.ProviderTimeoutError`; a reply that is not a valid message →
  :class:`~ctxmem.clients.base.MalformedResponseError`; anything else →
  :class:`~ctxmem.errors.ProviderError` with the status and the provider's message.
* The network guard (:mod:`ctxmem.clients.testing`) is checked before every request.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from ctxmem._redact import redact, redact_error, redact_url, url_secrets
from ctxmem.clients.base import (
    BaseClient,
    CacheBreakpoints,
    MalformedResponseError,
    ProviderTimeoutError,
    Response,
    Retryable,
    RetryPolicy,
    ThinkingConfig,
    Usage,
    parse_retry_after,
    with_retries,
)
from ctxmem.clients.testing import check_network_allowed, is_loopback_url
from ctxmem.errors import (
    ContextLengthExceeded,
    CtxmemError,
    MissingDependencyError,
    ProviderError,
    RateLimitError,
)
from ctxmem.messages import (
    ContentBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    block_from_anthropic,
    block_to_anthropic,
    tool_to_anthropic,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
MAX_BREAKPOINTS = 4
PROVIDER = "anthropic"


def _import_sdk() -> Any:
    try:
        import anthropic
    except ImportError:
        raise MissingDependencyError("anthropic", "anthropic", "The Anthropic client") from None
    return anthropic


#: what a message that held only blank text is sent as (the API refuses blank text and empty content)
EMPTY_TEXT = "(empty)"


def _blank(b: ContentBlock) -> bool:
    return isinstance(b, TextBlock) and not b.text.strip()


def request_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``messages`` of a request: :func:`~ctxmem.messages.to_anthropic` of the history,
    less the text blocks the API refuses (``""`` or whitespace, which other providers'
    replies leave beside tool calls), at the top level and inside tool results. Messages are
    never dropped (cache breakpoint indices and role alternation stay as they are): one that
    held only blank text is sent as one :data:`EMPTY_TEXT` block, and a tool result with only
    blank text parts as an empty string."""
    out: list[dict[str, Any]] = []
    for m in messages:
        blocks: list[dict[str, Any]] = []
        for b in m.content:
            if _blank(b):
                continue
            if isinstance(b, ToolResultBlock) and not isinstance(b.content, str) and any(map(_blank, b.content)):
                kept = tuple(t for t in b.content if not _blank(t))
                b = ToolResultBlock(b.tool_use_id, kept or "", b.is_error)
            blocks.append(block_to_anthropic(b))
        out.append({"role": m.role, "content": blocks or [{"type": "text", "text": EMPTY_TEXT}]})
    return out


def build_params(
    model: str,
    messages: Sequence[Message],
    *,
    system: str | None,
    tools: Sequence[ToolSpec] | None,
    max_tokens: int | None,
    temperature: float | None,
    cache_breakpoints: CacheBreakpoints | None,
    thinking: ThinkingConfig | None,
) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` (``max_tokens=None`` for ``count_tokens``)."""
    bp = cache_breakpoints
    control: dict[str, Any] = {"type": "ephemeral"}
    if bp is not None and bp.ttl is not None:
        control["ttl"] = bp.ttl
    used = 0
    params: dict[str, Any] = {"model": model, "messages": request_messages(messages)}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if system:
        block: dict[str, Any] = {"type": "text", "text": system}
        if bp is not None and bp.system:
            block["cache_control"] = dict(control)
            used += 1
        params["system"] = [block]
    if tools:
        wire = [tool_to_anthropic(t) for t in tools]
        if bp is not None and bp.tools:
            wire[-1] = {**wire[-1], "cache_control": dict(control)}
            used += 1
        params["tools"] = wire
    if bp is not None and bp.messages:
        n = len(messages)
        indices = sorted({i % n for i in bp.messages if -n <= i < n})
        indices = indices[max(0, len(indices) - (MAX_BREAKPOINTS - used)) :]
        for i in indices:
            blocks = params["messages"][i]["content"]
            # thinking blocks cannot carry cache_control; mark the last block that can
            for j in range(len(blocks) - 1, -1, -1):
                if blocks[j]["type"] not in ("thinking", "redacted_thinking"):
                    blocks[j] = {**blocks[j], "cache_control": dict(control)}
                    break
    if thinking is not None:
        params["thinking"] = {"type": "enabled", "budget_tokens": thinking.budget_tokens}
    elif temperature is not None:
        params["temperature"] = temperature  # the API rejects temperature with thinking on
    return params


class AnthropicClient(BaseClient):
    """A :class:`~ctxmem.clients.base.ModelClient` for the Anthropic Messages API.

    ``api_key`` defaults to ``$ANTHROPIC_API_KEY``; against a loopback server a dummy key
    is used. ``base_url`` defaults to ``$ANTHROPIC_BASE_URL`` or the public API.
    ``timeout`` is seconds per attempt.
    """

    def __init__(
        self,
        model: str = "claude-sonnet-4-6",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 600.0,
        retry: RetryPolicy | None = None,
        default_headers: dict[str, str] | None = None,
    ):
        self._sdk_module = _import_sdk()
        self.model = model
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if key is None and is_loopback_url(self.base_url):
            key = "loopback"
        self.api_key = key
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.default_headers = dict(default_headers or {})
        # The SDK's async HTTP pool is bound to the event loop it was first used on;
        # request_sync runs each call on a fresh loop, so keep one SDK client per loop.
        self._sdk: Any = None
        self._sdk_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"AnthropicClient(model={self.model!r}, base_url={self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """``base_url`` without its ``user:password@`` (what error texts show)."""
        return redact_url(self.base_url)

    def _secrets(self) -> list[str | None]:
        return [self.api_key, *url_secrets(self.base_url), *self.default_headers.values()]

    def _redact(self, text: object) -> str:
        """Every error text of this client passes here (see :mod:`ctxmem._redact`)."""
        return redact(text, self._secrets())

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._sdk is None or self._sdk_loop is not loop:
            if self.api_key is None:
                raise ProviderError(
                    "no Anthropic API key: pass api_key= or set ANTHROPIC_API_KEY", provider=PROVIDER
                )
            self._sdk = self._sdk_module.AsyncAnthropic(
                api_key=self.api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,
                default_headers=self.default_headers or None,
                # our own pool, not the SDK's wrapper: the wrapper's __del__ schedules a
                # close on whatever loop is running, which fails if that is not its loop
                http_client=self._sdk_module.DefaultAsyncHttpxClient(timeout=self.timeout),
            )
            self._sdk_loop = loop
        return self._sdk

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
        """One Messages API request (the contract: :meth:`~ctxmem.clients.ModelClient.request`).

        Cache breakpoints become ``cache_control`` marks; a "prompt is too long" 400 is raised as
        :class:`~ctxmem.errors.ContextLengthExceeded`; 429/5xx/overloaded and timeouts are retried
        under the client's :class:`~ctxmem.clients.RetryPolicy`.
        """
        check_network_allowed(self.safe_url, PROVIDER)
        params = build_params(
            self.model,
            messages,
            system=system,
            tools=tools,
            max_tokens=max_tokens,
            temperature=temperature,
            cache_breakpoints=cache_breakpoints,
            thinking=thinking,
        )

        async def attempt() -> Response:
            try:
                raw = await self._client().messages.create(**params)
            except CtxmemError:
                raise
            except Exception as exc:
                raise self._translate(exc) from None
            return self._parse(raw)

        return await with_retries(attempt, self.retry)

    async def count_tokens(
        self,
        messages: Sequence[Message],
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
    ) -> int:
        """The provider's exact input-token count for this prompt (``/v1/messages/count_tokens``)."""
        check_network_allowed(self.safe_url, PROVIDER)
        params = build_params(
            self.model,
            messages,
            system=system,
            tools=tools,
            max_tokens=None,
            temperature=None,
            cache_breakpoints=None,
            thinking=None,
        )

        async def attempt() -> int:
            try:
                raw = await self._client().messages.count_tokens(**params)
            except CtxmemError:
                raise
            except Exception as exc:
                raise self._translate(exc) from None
            tokens = getattr(raw, "input_tokens", None)
            if not isinstance(tokens, int):
                raise MalformedResponseError(
                    f"count_tokens reply from {self.safe_url} has no integer input_tokens", provider=PROVIDER
                )
            return tokens

        return await with_retries(attempt, self.retry)

    # ------------------------------------------------------------------ mapping

    def _parse(self, raw: Any) -> Response:
        where = f"reply from {self.safe_url} (model {self.model})"
        content = getattr(raw, "content", None)
        if not isinstance(content, list):
            raise MalformedResponseError(
                self._redact(f"malformed {where}: expected a message with a 'content' list, got {_describe(raw)}"),
                provider=PROVIDER,
            )
        try:
            blocks: tuple[ContentBlock, ...] = tuple(
                block_from_anthropic(b.model_dump(mode="json") if hasattr(b, "model_dump") else b) for b in content
            )
        except CtxmemError as exc:
            raise MalformedResponseError(self._redact(f"malformed {where}: {exc}"), provider=PROVIDER) from None
        u = getattr(raw, "usage", None)
        usage = Usage(
            input_tokens=int(getattr(u, "input_tokens", 0) or 0),
            output_tokens=int(getattr(u, "output_tokens", 0) or 0),
            cache_read_tokens=int(getattr(u, "cache_read_input_tokens", 0) or 0),
            cache_write_tokens=int(getattr(u, "cache_creation_input_tokens", 0) or 0),
        )
        return Response(
            content=blocks,
            stop_reason=str(getattr(raw, "stop_reason", None) or "end_turn"),
            usage=usage,
            model=str(getattr(raw, "model", None) or self.model),
            id=getattr(raw, "id", None),
        )

    def _translate(self, exc: Exception) -> Exception:
        """An SDK exception → a ctxmem error (or :class:`Retryable` wrapping one) whose text
        carries no credential. The SDK exception itself is not chained (``from None``): its
        text and its request object hold the URL and the auth headers."""
        err = self._translate_sdk(exc)
        if err is exc:  # not an SDK error: re-raised as is, with a redacted message
            return redact_error(exc, self._secrets())  # type: ignore[return-value]
        return redact_error(err, self._secrets())  # type: ignore[return-value]

    def _translate_sdk(self, exc: Exception) -> Exception:
        sdk = self._sdk_module
        where = f"{self.safe_url} (model {self.model})"
        if isinstance(exc, sdk.APITimeoutError):
            return Retryable(
                ProviderTimeoutError(
                    f"Anthropic request to {where} timed out after {self.timeout:g}s; "
                    "raise timeout= or check the server",
                    provider=PROVIDER,
                )
            )
        if isinstance(exc, sdk.APIConnectionError):
            return Retryable(ProviderError(f"could not connect to {where}: {exc}", provider=PROVIDER))
        if isinstance(exc, sdk.APIResponseValidationError):
            return MalformedResponseError(
                f"malformed reply from {where}: {exc.message}", status=exc.status_code, provider=PROVIDER
            )
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            etype = getattr(exc, "type", None) or _error_field(exc.body, "type")
            message = getattr(exc, "api_message", None) or _error_field(exc.body, "message") or str(exc)
            text = f"Anthropic API error {status} ({etype or 'unknown'}) from {where}: {message}"
            retry_after = parse_retry_after(getattr(exc.response, "headers", None))
            if status == 429:
                return Retryable(RateLimitError(text, status=status, provider=PROVIDER), retry_after)
            if status == 529 or etype == "overloaded_error":
                return Retryable(RateLimitError(text, status=status, provider=PROVIDER), retry_after)
            if status == 413 or (status == 400 and "prompt is too long" in message.lower()):
                return ContextLengthExceeded(
                    text.rstrip(". ") + ". Compact the context or use a model with a larger window.",
                    status=status,
                    provider=PROVIDER,
                )
            if status >= 500:
                return Retryable(ProviderError(text, status=status, provider=PROVIDER), retry_after)
            return ProviderError(text, status=status, provider=PROVIDER)
        if isinstance(exc, ValueError | TypeError | KeyError):  # JSON decoding inside the SDK
            return MalformedResponseError(
                f"malformed reply from {where}: {type(exc).__name__}: {exc}", provider=PROVIDER
            )
        if isinstance(exc, sdk.AnthropicError):
            return ProviderError(f"Anthropic SDK error for {where}: {exc}", provider=PROVIDER)
        return exc


def _error_field(body: Any, key: str) -> str | None:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get(key), str):
            return str(err[key])
    return None


def _describe(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 120 else text[:117] + "..."

