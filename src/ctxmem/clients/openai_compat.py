"""OpenAI-compatible chat-completions client on the official ``openai`` SDK.

For vLLM, SGLang, Ollama, llama.cpp's server, hosted Qwen and OpenAI itself: anything that
serves ``POST {base_url}/chat/completions`` with ``tools``. The SDK is imported when the
client is constructed, never at ``import ctxmem``.

* Messages go through :func:`ctxmem.messages.to_openai` (thinking is not sent back: chat
  completions has no field for it; an error tool result is sent as its text). Replies come
  back through :func:`ctxmem.messages.reply_from_openai`: empty text makes no block, a tool
  call whose arguments are not JSON is kept (``_unparsed_arguments``) so the agent answers
  it with an error, and a ``reasoning_content`` field (vLLM, DeepSeek, Qwen servers) becomes
  a :class:`~ctxmem.messages.ThinkingBlock`.
* Usage: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``; ctxmem's
  :class:`~ctxmem.clients.base.Usage` counts them apart (``input_tokens = prompt_tokens -
  cached_tokens``, ``cache_read_tokens = cached_tokens``). These APIs cache automatically
  and report no cache writes, so ``cache_breakpoints`` is ignored.
* ``finish_reason`` maps onto ctxmem's stop reasons (``tool_calls`` → ``tool_use``,
  ``length`` → ``max_tokens``, ``stop`` → ``end_turn``, ``content_filter`` → ``refusal``);
  a reply with tool calls is ``tool_use`` whatever the server said.
* Errors: code ``context_length_exceeded``, or a message the common servers use for it
  ("maximum context length", "exceeds the available context size", …), or 413 →
  :class:`~ctxmem.errors.ContextLengthExceeded`; 429/503 after retries →
  :class:`~ctxmem.errors.RateLimitError`; others as in the Anthropic client.
* ``thinking`` is ignored (pass server-specific switches through ``extra_body``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

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
from ctxmem.messages import Message, ToolSpec, reply_from_openai, to_openai, tool_to_openai

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROVIDER = "openai"

FINISH_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}

# How the common servers word a context overflow when they send no code for it.
_CONTEXT_PATTERNS = re.compile(
    r"maximum context length|context length exceeded|context_length_exceeded|"
    r"exceeds the (available )?context (size|window)|prompt is too long|"
    r"too many tokens|input is too long|reduce the length of the messages",
    re.IGNORECASE,
)


def _import_sdk() -> Any:
    try:
        import openai
    except ImportError:
        raise MissingDependencyError("openai", "openai", "The OpenAI-compatible client") from None
    return openai


class OpenAICompatClient(BaseClient):
    """A :class:`~ctxmem.clients.base.ModelClient` for OpenAI-compatible chat completions.

    ``api_key`` defaults to ``$OPENAI_API_KEY`` (a dummy key for loopback servers and for
    local servers that need none); ``base_url`` to ``$OPENAI_BASE_URL`` or OpenAI's API.
    ``max_tokens_param`` is the request field for the output limit: ``max_tokens`` (what
    vLLM, Ollama and llama.cpp read) or ``max_completion_tokens`` (OpenAI's newer name).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 600.0,
        retry: RetryPolicy | None = None,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        extra_body: dict[str, Any] | None = None,
        default_headers: dict[str, str] | None = None,
    ):
        self._sdk_module = _import_sdk()
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if key is None and (is_loopback_url(self.base_url) or base_url is not None):
            key = "not-needed"  # local servers accept any key; the SDK insists on one
        self.api_key = key
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_tokens_param = max_tokens_param
        self.extra_body = dict(extra_body or {})
        self.default_headers = dict(default_headers or {})
        self._sdk: Any = None
        self._sdk_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAICompatClient(model={self.model!r}, base_url={self.safe_url!r})"

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
                raise ProviderError("no OpenAI API key: pass api_key= or set OPENAI_API_KEY", provider=PROVIDER)
            self._sdk = self._sdk_module.AsyncOpenAI(
                api_key=self.api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,
                default_headers=self.default_headers or None,
                # our own pool, not the SDK's wrapper (see the Anthropic client)
                http_client=self._sdk_module.DefaultAsyncHttpxClient(timeout=self.timeout),
            )
            self._sdk_loop = loop
        return self._sdk

    def build_params(
        self,
        messages: Sequence[Message],
        *,
        system: str | None,
        tools: Sequence[ToolSpec] | None,
        max_tokens: int,
        temperature: float | None,
    ) -> dict[str, Any]:
        """The ``chat.completions.create`` keyword arguments for this request (model, messages with
        the system prompt first, tools, the token limit under ``max_tokens_param``, temperature and
        ``extra_body``): what :meth:`request` sends, exposed for inspection and tests.
        """
        params: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai(messages, system),
            self.max_tokens_param: max_tokens,
        }
        if tools:
            params["tools"] = [tool_to_openai(t) for t in tools]
        if temperature is not None:
            params["temperature"] = temperature
        if self.extra_body:
            params["extra_body"] = dict(self.extra_body)
        return params

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
        """One Chat Completions request (the contract: :meth:`~ctxmem.clients.ModelClient.request`).

        ``cache_breakpoints`` are ignored (these servers cache prefixes automatically); usage is
        converted to Anthropic semantics (cached tokens subtracted from ``prompt_tokens``) and the
        finish reason mapped onto ctxmem's stop reasons. A context-length error is raised as
        :class:`~ctxmem.errors.ContextLengthExceeded`; transient errors are retried.
        """
        check_network_allowed(self.safe_url, PROVIDER)
        params = self.build_params(
            messages, system=system, tools=tools, max_tokens=max_tokens, temperature=temperature
        )

        async def attempt() -> Response:
            try:
                raw = await self._client().chat.completions.create(**params)
            except CtxmemError:
                raise
            except Exception as exc:
                raise self._translate(exc) from None
            return self._parse(raw)

        return await with_retries(attempt, self.retry)

    # ------------------------------------------------------------------ mapping

    def _parse(self, raw: Any) -> Response:
        where = f"reply from {self.safe_url} (model {self.model})"
        choices = getattr(raw, "choices", None)
        if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
            text = repr(raw)
            raise MalformedResponseError(
                self._redact(
                    f"malformed {where}: expected a chat completion with choices[0].message, got "
                    f"{text if len(text) <= 120 else text[:117] + '...'}"
                ),
                provider=PROVIDER,
            )
        choice = choices[0]
        message = choice.message
        wire = message.model_dump(mode="json") if hasattr(message, "model_dump") else dict(message)
        wire["role"] = "assistant"
        try:
            # lenient where the reply is paid for: no empty text block, and a call with
            # unparseable arguments kept (``_unparsed_arguments``) for an error result
            content = reply_from_openai(wire).content
        except CtxmemError as exc:
            raise MalformedResponseError(self._redact(f"malformed {where}: {exc}"), provider=PROVIDER) from None
        finish = getattr(choice, "finish_reason", None) or "stop"
        stop = FINISH_REASONS.get(finish, finish)
        if any(b.type == "tool_use" for b in content):
            stop = "tool_use"
        u = getattr(raw, "usage", None)
        prompt = int(getattr(u, "prompt_tokens", 0) or 0)
        details = getattr(u, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        usage = Usage(
            input_tokens=max(0, prompt - cached),
            output_tokens=int(getattr(u, "completion_tokens", 0) or 0),
            cache_read_tokens=cached,
        )
        return Response(
            content=content,
            stop_reason=stop,
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
                    f"OpenAI-compatible request to {where} timed out after {self.timeout:g}s; "
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
            code = getattr(exc, "code", None)
            body = exc.body if isinstance(exc.body, dict) else {}
            message = str(body.get("message") or getattr(exc, "message", "") or exc)
            text = f"OpenAI-compatible API error {status}{f' ({code})' if code else ''} from {where}: {message}"
            retry_after = parse_retry_after(getattr(exc.response, "headers", None))
            if code == "context_length_exceeded" or status == 413 or (
                status == 400 and _CONTEXT_PATTERNS.search(message)
            ):
                return ContextLengthExceeded(
                    text.rstrip(". ") + ". Compact the context or use a model with a larger window.",
                    status=status,
                    provider=PROVIDER,
                )
            if status in (429, 503):
                return Retryable(RateLimitError(text, status=status, provider=PROVIDER), retry_after)
            if status >= 500:
                return Retryable(ProviderError(text, status=status, provider=PROVIDER), retry_after)
            return ProviderError(text, status=status, provider=PROVIDER)
        if isinstance(exc, ValueError | TypeError | KeyError):
            return MalformedResponseError(
                f"malformed reply from {where}: {type(exc).__name__}: {exc}", provider=PROVIDER
            )
        if isinstance(exc, sdk.OpenAIError):
            return ProviderError(f"OpenAI SDK error for {where}: {exc}", provider=PROVIDER)
        return exc
