"""The one exception tree of ctxmem.

Every error ctxmem raises on purpose derives from :class:`CtxmemError`. Each carries the
data a caller needs (as attributes) and a message that says how to fix the problem.

::

    CtxmemError
    ├── ConfigError                      bad preset, unknown field, out-of-range value
    │   └── UnknownNameError             unknown tokenizer / strategy / client name ("did you mean")
    ├── MissingDependencyError           an optional extra is not installed (names the pip line)
    ├── InputError                       bad input data; names the source, line and field
    │   └── InvalidConversationError     a message list the providers would reject (orphan tool blocks, …)
    ├── StoreError                       the session store failed
    │   ├── SessionNotFoundError         no session with that id
    │   ├── EventNotFoundError           no event with that id in the session
    │   ├── StoreBusyError               the database stayed locked through every retry
    │   └── HeadMovedError               a checked append found the chain moved (Session retries)
    ├── TokenizerError                   a tokenizer could not be loaded (offline, missing file, …)
    ├── ContextOverflowError             a context needs more tokens than the budget has
    └── ProviderError                    a model provider answered with an error
        ├── ContextLengthExceeded        the provider said the prompt is too long
        ├── RateLimitError               429 / overloaded, after retries
        ├── ProviderTimeoutError         no answer within the timeout, after retries
        ├── MalformedResponseError       an answer that is not a valid response
        └── NetworkBlockedError          a test tried to reach the network

Messages are written for the person reading a one-line CLI error: what went wrong, where,
and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class CtxmemError(Exception):
    """Root of every error ctxmem raises on purpose."""


class ConfigError(CtxmemError):
    """A configuration (preset file, strategy config, CLI option) is invalid.

    Attributes: ``source`` (the file or option), ``line`` (1-based, in ``source``, when
    known), ``field`` (dotted, e.g. ``params.keep_last``) and ``detail`` (the message
    without the location). The message reads ``source:line: field 'x': detail``.
    """

    def __init__(
        self, message: str, *, source: str | None = None, field: str | None = None, line: int | None = None
    ):
        self.source = source
        self.field = field
        self.line = line
        self.detail = message
        super().__init__(self._where() + message)

    def _where(self) -> str:
        where = ""
        if self.source:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        if self.field:
            where += f"field {self.field!r}: "
        return where

    def at_line(self, line: int | None) -> ConfigError:
        """This error, located at ``line`` of its source (returned for ``raise … from None``)."""
        if line is not None:
            self.line = line
            self.args = (self._where() + self.detail,)
        return self


class UnknownNameError(ConfigError):
    """A name (tokenizer, strategy, client, …) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        close = get_close_matches(name, self.known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(self.known) if self.known else "(none registered)"
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        super().__init__(f"unknown {kind} {name!r}.{hint} Known {plural}: {listing}.")


class MissingDependencyError(CtxmemError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the {package!r} package, which is not installed. "
            f'Install it with: pip install "ctxmem[{extra}]"'
        )


class InputError(CtxmemError, ValueError):
    """Input data is malformed. Names the source, line and field when known."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.source = source
        self.line = line
        self.field = field
        self.reason = message
        # "src:line 5 field 'x'", "line 5 field 'x'", "src field 'x'", ...
        where = ":".join(p for p in (str(source) if source else "", f"line {line}" if line is not None else "") if p)
        prefix = " ".join(p for p in (where, f"field {field!r}" if field else "") if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class InvalidConversationError(InputError):
    """A message sequence a provider would reject (orphan tool_result, unanswered tool_use, …)."""


class StoreError(CtxmemError):
    """The session store failed."""


class SessionNotFoundError(StoreError, KeyError):
    """No session with that id in the store (``session_id`` attribute; the message says how to list them)."""

    def __init__(self, session_id: str):
        self.session_id = session_id
        super().__init__(
            f"no session {session_id!r} in this store. List sessions with: ctxmem sessions list"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class EventNotFoundError(StoreError, KeyError):
    def __init__(self, event_id: int, session_id: str | None = None):
        self.event_id = event_id
        self.session_id = session_id
        where = f" in session {session_id!r}" if session_id else ""
        super().__init__(f"no event {event_id}{where}")

    def __str__(self) -> str:
        return str(self.args[0])


class StoreBusyError(StoreError):
    def __init__(self, path: str, attempts: int):
        self.path = path
        self.attempts = attempts
        super().__init__(
            f"database {path} stayed locked through {attempts} attempts. Another process holds "
            "a long write transaction; retry later or raise busy_timeout."
        )


class HeadMovedError(StoreError):
    """An append made with ``expect_head`` found the session's head elsewhere: another
    writer appended (or rewound) after the caller last read it. Nothing was written;
    re-read the session and retry. :class:`~ctxmem.session.Session` does this itself."""

    def __init__(self, session_id: str, expected: int | None, actual: int | None):
        self.session_id = session_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"session {session_id!r} moved from event {expected} to {actual} while this write was checked; "
            "nothing was written: re-read the session and retry"
        )


class TokenizerError(CtxmemError):
    """A tokenizer could not be loaded or used."""


class ContextOverflowError(CtxmemError):
    """A context needs more tokens than the budget allows."""

    def __init__(self, needed: int, available: int, *, hint: str | None = None):
        self.needed = needed
        self.available = available
        super().__init__(
            f"context needs {needed} tokens but only {available} {'is' if available == 1 else 'are'} available. "
            + (hint or "Use a strategy that masks, summarizes or truncates, or raise the budget.")
        )


class ProviderError(CtxmemError):
    """A model provider answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, provider: str | None = None):
        self.status = status
        self.provider = provider
        super().__init__(message)


class ContextLengthExceeded(ProviderError):
    """The provider rejected the request because the prompt is too long."""


class RateLimitError(ProviderError):
    """Rate limited or overloaded, after all retries."""


class ProviderTimeoutError(ProviderError):
    """The provider did not answer within the client's timeout (after retries)."""


class MalformedResponseError(ProviderError):
    """The provider answered with something that is not a valid response (bad JSON, wrong shape)."""


class NetworkBlockedError(ProviderError):
    """A request tried to reach a real provider while requests are disallowed (tests)."""


__all__ = [
    "ConfigError",
    "ContextLengthExceeded",
    "ContextOverflowError",
    "CtxmemError",
    "EventNotFoundError",
    "InputError",
    "InvalidConversationError",
    "MalformedResponseError",
    "MissingDependencyError",
    "NetworkBlockedError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "SessionNotFoundError",
    "StoreBusyError",
    "StoreError",
    "TokenizerError",
    "UnknownNameError",
]
