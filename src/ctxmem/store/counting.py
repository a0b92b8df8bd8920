"""Overhead of one stored event, consistent with :mod:`ctxmem.tokens.counting`.

A message's overhead is ``per_message`` plus the overhead of each block; the view splits a
message across events, so the ``per_message`` share is charged to the event that starts
the message and each block's share to the event that holds the block. Summed over a
chain, this equals :func:`ctxmem.tokens.count_messages` over the rebuilt messages.
"""

from __future__ import annotations

from ctxmem.events import Event, MessageEvent, ToolCallEvent, ToolResultEvent
from ctxmem.tokens.counting import DEFAULT_OVERHEAD, Overhead


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
