"""Per-message counting: content tokens plus modelled overhead.

Content tokens are the exact count of each block's texts (see
:func:`ctxmem.messages.block_texts`). Overhead is what a provider adds around them: role
markers, block delimiters, tool-call ids and JSON wrappers, the tool schemas of a request.
It is not observable exactly (providers do not publish their templates), so it is a small
per-provider model whose constants come from OpenAI's published chat-format accounting
(3 tokens per message, 3 to prime the reply) and from measurements against usage; the
per-model :class:`~ctxmem.tokens.calibration.Calibration` corrects what remains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxmem.messages import (
    ContentBlock,
    Message,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    block_texts,
    canonical_json,
)
from ctxmem.tokens.base import Tokenizer


@dataclass(frozen=True, slots=True)
class Overhead:
    """Tokens a provider adds around content. All fields are non-negative token counts."""

    per_request: int = 3  # reply priming
    per_message: int = 3  # role + message delimiters
    per_block: int = 1  # block delimiter inside a message
    per_tool_use: int = 12  # id, type, name/arguments wrappers
    per_tool_result: int = 8  # tool_use_id, wrappers
    per_thinking: int = 4
    per_tool_schema: int = 8  # wrapper around each tool definition (its JSON is counted)

    def block(self, block: ContentBlock) -> int:
        """Framing tokens one content block adds beyond its text (by block type)."""
        if isinstance(block, ToolUseBlock):
            return self.per_block + self.per_tool_use
        if isinstance(block, ToolResultBlock):
            return self.per_block + self.per_tool_result + (1 if block.is_error else 0)
        if isinstance(block, ThinkingBlock):
            return self.per_block + self.per_thinking
        return self.per_block

    def message(self, message: Message) -> int:
        """Framing tokens one message adds beyond its blocks' texts (``per_message`` plus each block's)."""
        return self.per_message + sum(self.block(b) for b in message.content)


ANTHROPIC_OVERHEAD = Overhead(per_request=3, per_message=4, per_tool_use=14, per_tool_result=9)
OPENAI_OVERHEAD = Overhead()
DEFAULT_OVERHEAD = OPENAI_OVERHEAD


@dataclass(frozen=True, slots=True)
class Count:
    """A token count split into content and overhead."""

    content: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        """Content plus overhead: what the item adds to a request."""
        return self.content + self.overhead

    def __add__(self, other: Count) -> Count:
        return Count(self.content + other.content, self.overhead + other.overhead)


def count_messages(
    messages: Sequence[Message], tokenizer: Tokenizer, overhead: Overhead = DEFAULT_OVERHEAD
) -> list[Count]:
    """Count each message, batching every text of every message in one tokenizer call."""
    texts: list[str] = []
    spans: list[int] = []
    for m in messages:
        n = 0
        for b in m.content:
            bt = block_texts(b)
            texts.extend(bt)
            n += len(bt)
        spans.append(n)
    counts = tokenizer.count_many(texts) if texts else []
    out: list[Count] = []
    i = 0
    for m, n in zip(messages, spans, strict=True):
        out.append(Count(sum(counts[i : i + n]), overhead.message(m)))
        i += n
    return out


def count_tools(
    tools: Iterable[Mapping[str, Any]], tokenizer: Tokenizer, overhead: Overhead = DEFAULT_OVERHEAD
) -> Count:
    """Tokens taken by tool definitions: their canonical JSON plus a wrapper each."""
    tools = list(tools)
    content = sum(tokenizer.count_many([canonical_json(dict(t)) for t in tools])) if tools else 0
    return Count(content, overhead.per_tool_schema * len(tools))


def count_request(
    messages: Sequence[Message],
    tokenizer: Tokenizer,
    *,
    system: str | None = None,
    tools: Iterable[Mapping[str, Any]] = (),
    overhead: Overhead = DEFAULT_OVERHEAD,
) -> Count:
    """Tokens of a whole request: system + tools + messages + per-request overhead."""
    total = Count(0, overhead.per_request)
    if system:
        total += Count(tokenizer.count(system), overhead.per_message)
    total += count_tools(tools, tokenizer, overhead)
    for c in count_messages(messages, tokenizer, overhead):
        total += c
    return total
