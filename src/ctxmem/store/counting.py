"""Overhead of one stored event, consistent with :mod:`ctxmem.tokens.counting`.

A message's overhead is ``per_message`` plus the overhead of each block; the view splits a
message across events, so the ``per_message`` share is charged to the event that starts
the message and each block's share to the event that holds the block. Summed over a
chain, this equals :func:`ctxmem.tokens.count_messages` over the rebuilt messages.
"""

from __future__ import annotations

from collections.abc import Iterable

from ctxmem.events import Event, MessageEvent, ToolCallEvent, ToolResultEvent
from ctxmem.store.parallel_count import threaded
from ctxmem.tokens import Tokenizer
from ctxmem.tokens.counting import DEFAULT_OVERHEAD, Overhead

#: Below this many characters of new text, an append counts with a C++ engine (quicktok)
#: rather than look the counts up in ``token_counts`` first: the lookup is a query (~20 µs
#: on SQLite, a network round trip on PostgreSQL), counting 16K characters ~100 µs, and an
#: agent's new text is almost always new (a lookup that misses is pure cost). Larger texts,
#: and slower engines (tiktoken, HF), still consult the memo.
COUNT_NOT_LOOKUP_CHARS = 16_384


def cheaper_to_count(texts: Iterable[tuple[str, ...]], tok: Tokenizer) -> bool:
    """Whether counting these texts (each event's) costs less than looking their counts up
    in the memo: a few thousand characters, for an engine that counts in C++ with the GIL
    released. Counts are deterministic, so either way gives the same numbers."""
    if not threaded(tok):
        return False
    left = COUNT_NOT_LOOKUP_CHARS
    for ts in texts:
        for t in ts:
            left -= len(t)
            if left < 0:
                return False
    return True


def event_overhead(event: Event, starts_message: bool, overhead: Overhead = DEFAULT_OVERHEAD) -> int:
    if isinstance(event, MessageEvent):
        n = sum(overhead.block(b) for b in event.blocks)
    elif isinstance(event, ToolCallEvent):
        n = overhead.block(event.tool_use)
    elif isinstance(event, ToolResultEvent):
        n = overhead.block(event.result)
    else:
        return 0
    return n + (overhead.per_message if starts_message else 0)
