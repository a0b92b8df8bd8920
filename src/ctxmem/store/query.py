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

#: the most distinct words a plain query may hold: FTS5's cost grows with the number of
#: phrases times their postings (a query repeating one common word 40 times took 1.4 s on a
#: 60-output session, 500 times over two minutes), and a search is a lookup, not a document
MAX_QUERY_WORDS = 64


def plain_query(text: str) -> str:
    """An FTS5 query matching every word of ``text`` (each word a quoted phrase).

    A word repeated (in any case: the index folds case) is asked for once, which changes no
    match. More than :data:`MAX_QUERY_WORDS` distinct words, or none, is an
    :class:`~ctxmem.errors.InputError` naming the ``query`` field."""
    from ctxmem.errors import InputError

    words = list({w.casefold(): w for w in reversed(text.split())}.values())[::-1]
    if not words:
        raise InputError("the search query is empty: give at least one word", field="query")
    if len(words) > MAX_QUERY_WORDS:
        raise InputError(f"the search query has {len(words)} distinct words; at most {MAX_QUERY_WORDS}: "
                         "keep the distinctive ones (an error message, an id, a file name)", field="query")
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


__all__ = ["MAX_QUERY_WORDS", "plain_query"]
