"""Does a piece of text survive in a built context? (``ctxmem context build --probe``)."""

from __future__ import annotations

import re

from ctxmem.context.base import BuiltContext
from ctxmem.context.history import History
from ctxmem.messages import ToolResultBlock, message_texts


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def probe_status(needle: str, built: BuiltContext, history: History) -> str:
    """``verbatim`` | ``normalized`` | ``masked (handle <id>)`` | ``absent``.

    ``masked`` means the text is no longer in the context but sits in a tool output that
    masking replaced by a placeholder whose handle the agent can recall.
    """
    rendered = "\n".join(t for m in built.messages for t in message_texts(m))
    if needle in rendered:
        return "verbatim"
    norm = _norm(needle)
    if norm and norm in _norm(rendered):
        return "normalized"
    for i in built.report.masked:
        for block in history.messages[i].content:
            if isinstance(block, ToolResultBlock) and needle in block.text and f"handle {block.tool_use_id}" in rendered:
                return f"masked (handle {block.tool_use_id})"
    return "absent"
