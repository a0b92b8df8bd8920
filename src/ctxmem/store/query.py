"""Plain search text → a full-text query that cannot be a syntax error.

Users type what they saw in a tool output — ``kernel.py``, ``Required: 304128``,
``"OutOfResources"`` — and FTS5 reads ``.``, ``:``, ``-``, ``*``, ``AND`` and quotes as
syntax, so a plain query fails or means something else. :func:`plain_query` quotes each
whitespace-separated word as an FTS5 string (inner double quotes doubled), so every word
must occur, and a word the tokenizer splits (``kernel.py`` → ``kernel``, ``py``) matches as
a phrase: adjacent, in order. Raw FTS5 syntax stays available to whoever asks for it
(``ctxmem sessions search --fts``).
"""

from __future__ import annotations


def plain_query(text: str) -> str:
    """An FTS5 query matching every word of ``text`` (each word a quoted phrase)."""
    words = text.split()
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


__all__ = ["plain_query"]
