"""What every integration shares: opening a store, and building a preset's context for a loop.

**Stores.** An integration takes a store object (anything implementing
:class:`~ctxmem.store.SessionStore`), a path to a SQLite file, or a URL: ``sqlite:///path``
(``sqlite:////abs/path``), ``sqlite://:memory:`` or ``memory://`` for a throwaway store.

**Building for someone else's loop.** A host loop such as the Agents SDK asks for the
history *before* it appends the new user input, so the stored history usually ends with
the previous run's final assistant reply. :class:`LoopBuilder` builds through the preset's
:class:`~ctxmem.config.ContextBuilder` with ``expect_input=True``: the strategy builds a
context that ends with that reply, for the input the host will append. No synthetic
message is ever inserted. A trailing assistant turn with *unanswered* tool calls cannot be
sent to any provider and raises :class:`~ctxmem.errors.InvalidConversationError`.

The strategy and its per-history caches live as long as the builder; the History is
extended incrementally while the stored chain only grows, and rebuilt after a rewind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxmem.config import Preset, load_preset
from ctxmem.context import BuiltContext, History
from ctxmem.context.history import FollowedHistories
from ctxmem.errors import ConfigError, InvalidConversationError
from ctxmem.messages import Message, ToolSpec
from ctxmem.session import Session
from ctxmem.store.base import SessionStore


def open_store(store: SessionStore | str | os.PathLike[str]) -> SessionStore:
    """A store object as is; a path, a ``sqlite:///``/``memory://`` URL, or any store URL
    :func:`ctxmem.store.open_store` opens (``postgresql://…``)."""
    if not isinstance(store, str | os.PathLike):
        if not all(hasattr(store, m) for m in ("append", "chain", "create_session", "rewind")):
            raise ConfigError(
                f"store must be a SessionStore, a SQLite path or a store URL, got {type(store).__name__}",
                field="store",
            )
        return store
    text = os.fspath(store)
    from ctxmem.store import MemoryStore, SQLiteStore

    if text in ("memory://", "sqlite://:memory:", ":memory:"):
        return MemoryStore() if text == "memory://" else SQLiteStore(":memory:")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme != "sqlite":
            # postgresql://… and registered backends, as the CLI and the MCP server open them
            from ctxmem.store import open_store as open_url

            store_obj: SessionStore = open_url(text)
            return store_obj
        # sqlite:///rel.db → rel.db ; sqlite:////abs.db → /abs.db
        path = rest[1:] if rest.startswith("/") else rest
        text = path
    Path(text).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(str(Path(text).expanduser()))


def open_or_create(store: SessionStore, session_id: str, **create: Any) -> Session:
    """The session with this id, created (with ``create`` keyword arguments) when missing."""
    from ctxmem.errors import SessionNotFoundError

    try:
        return Session.open(store, session_id)
    except SessionNotFoundError:
        return Session.create(store, session_id=session_id, **create)


def resolve_preset(preset: Preset | str | os.PathLike[str] | None) -> Preset | None:
    if preset is None or isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str | os.PathLike):
        raise ConfigError(f"expected a preset name, a TOML path or a Preset, got {type(preset).__name__}",
                          field="preset")
    return load_preset(preset)


def required_preset(preset: Preset | str | os.PathLike[str] | None) -> Preset:
    """:func:`resolve_preset` where a preset is required (None is a ConfigError, not an assert)."""
    resolved = resolve_preset(preset)
    if resolved is None:
        raise ConfigError("a preset is needed: a name such as 'masking-200k' (ctxmem strategies list), "
                          "a TOML path or a Preset", field="preset")
    return resolved


@dataclass
class LoopBuild:
    """A build for a host loop: the built context and the History it was built from."""

    built: BuiltContext
    history: History

    @property
    def messages(self) -> list[Message]:
        return list(self.built.messages)


class LoopBuilder:
    """Builds a preset's context over a session for a host loop (see the module docstring).

    A thin owner of one :class:`~ctxmem.config.ContextBuilder` (``Preset.builder()``) plus
    an incrementally extended History; every build has ``expect_input=True``.
    """

    def __init__(
        self,
        preset: Preset,
        *,
        context_window: int | None = None,
        tokenizer: str | None = None,
        system: str | None = None,
        tools: Sequence[ToolSpec] = (),
        record: bool = True,
        **deps: Any,
    ):
        self.preset = preset
        self.builder = preset.builder(context_window=context_window, tokenizer=tokenizer, **deps)
        self.strategy = self.builder.strategy
        self.budget = self.builder.budget
        self.tokenizer = self.builder.tokenizer
        self.system = system
        self.tools = tuple(tools)
        self.record = record
        self._history: History | None = None
        self._followed: FollowedHistories | None = None

    def _history_for(self, messages: list[Message], ids: list[tuple[int, ...]]) -> History:
        h = self._history
        n = len(h) if h is not None else 0
        # the stored chain only grew since the last build: count just the new messages (the
        # last messages' event ids match; a rewind or a grown last message changes them)
        if h is not None and n <= len(messages) and all(
            h.event_ids[i] == ids[i] and h.messages[i] == messages[i] for i in range(max(0, n - 3), n)
        ):
            h.extend(messages[n:], event_ids=ids[n:])
            return h
        h = History.from_messages(messages, self.tokenizer, event_ids=ids)
        self._history = h
        return h

    def build(self, session: Session | None, messages: Sequence[Message],
              event_ids: Sequence[Sequence[int]] | None = None, *, system: str | None = None) -> LoopBuild:
        """The context for the next request over ``messages`` (the session's, with their event ids).

        A history ending in a final assistant reply is built for the input that will follow
        it (``expect_input``); one ending in unanswered tool calls raises
        :class:`~ctxmem.errors.InvalidConversationError`.
        """
        msgs = list(messages)
        ids: list[tuple[int, ...]] = [tuple(e) for e in event_ids] if event_ids is not None else [() for _ in msgs]
        _refuse_unanswered(msgs)
        return self._build(session, self._history_for(msgs, ids), system)

    def build_session(self, session: Session, *, system: str | None = None) -> LoopBuild:
        """:meth:`build` over the session's own messages, read incrementally: the History is
        kept across calls and extended with the events recorded since the last one
        (:class:`~ctxmem.context.history.FollowedHistories`), so a turn of a long session
        costs what it appended, not a read of the whole chain."""
        if self._followed is None:
            self._followed = FollowedHistories(limit=4)
        history = self._followed.get(session, self.tokenizer)
        _refuse_unanswered(history.messages)
        return self._build(session, history, system)

    def _build(self, session: Session | None, history: History, system: str | None) -> LoopBuild:
        request = self.builder.request(
            history,
            system=system if system is not None else self.system,
            tools=self.tools,
            session=session,
            record=self.record and session is not None,
            expect_input=True,
        )
        from ctxmem.integrations.otel import record_build

        built = record_build(self.preset.name, request, lambda: self.strategy.build(request))
        return LoopBuild(built, history)


def _refuse_unanswered(msgs: Sequence[Message]) -> None:
    if msgs and msgs[-1].role == "assistant" and msgs[-1].tool_uses:
        raise InvalidConversationError(
            f"the history ends with unanswered tool calls ({', '.join(u.id for u in msgs[-1].tool_uses)}); "
            "record their results before asking for the next context",
            line=len(msgs),
        )


__all__ = ["LoopBuild", "LoopBuilder", "open_or_create", "open_store", "resolve_preset"]


def recall_function(session: Callable[[], Session]) -> Callable[..., str]:
    """The ``recall`` tool a masking preset's placeholders name, as a plain function a
    framework wraps into its own tool type (its signature is the tool's schema); it answers
    from the log of the session ``session()`` returns, and a bad handle or range is its
    text answer, as a tool error would be."""
    from ctxmem.context import run_context_tool
    from ctxmem.errors import CtxmemError

    def recall(handle: str, lines: str | None = None, grep: str | None = None, max_chars: int | None = None) -> str:
        args = {k: v for k, v in {"handle": handle, "lines": lines, "grep": grep,
                                  "max_chars": max_chars}.items() if v is not None}
        try:
            return run_context_tool("recall", args, session=session())
        except CtxmemError as exc:
            return f"recall failed: {exc}"

    return recall
