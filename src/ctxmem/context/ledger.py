"""A deterministic task ledger: what the agent has done, built from its tool events.

An agent deep into a long session loses track of the bookkeeping a summary rarely keeps
exactly: how often it compiled, which errors keep coming back, which files it touched,
which benchmark gave the best number. The ledger is that bookkeeping, computed from the
history's tool calls and results with no model:

* calls per tool, and the last status of each tool (ok / its error signature / its
  summary line);
* errors seen: unique signatures (numbers normalized, so ``Required: 204800`` and
  ``Required: 286720`` are one signature), with count, first and last message, and the
  latest wording verbatim (limits and sizes as the tool printed them). Errors come from
  tool outputs only: never from file contents read back (the profile's
  ``content_tools``), and never from a source line quoted in a traceback
  (``raise OutOfResources(...)``) — the line the tool printed as its error is used;
* files touched (paths in tool inputs and in edit results), in first-touch order;
* evaluation and benchmark ids (``eval#12``, ``bench#7``), in order;
* the best result so far, by the :class:`~ctxmem.context.profile.FactProfile`'s metric
  (none in the generic profile), with its run id and message;
* the candidates the profile recognizes (config, design, result, score), for a table of
  the best and the latest attempts.

:class:`LedgerBuilder` is incremental — :meth:`LedgerBuilder.update` reads only the
messages appended since its last call — so a pipeline can refresh the ledger every turn
for the cost of the new messages. :func:`render_ledger` writes it as compact text within
an exact token cap, most useful lines first (best result, recurring errors, last
statuses, counts, files, ids).
"""

from __future__ import annotations

import re
from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ctxmem.context.facts import _ID, _PATH, Best, better, error_signature, run_id
from ctxmem.context.history import History
from ctxmem.context.profile import GENERIC, Candidate, FactProfile
from ctxmem.context.reducers import summary_line
from ctxmem.context.salience import is_code
from ctxmem.context.summarize import clip_line, fit_lines
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.store.codec import gc_paused_over
from ctxmem.tokens import Tokenizer

_DIGITS = re.compile(r"\d+")
_PATH_KEYS = ("path", "file", "filename", "file_path", "target", "paths", "files")
_EDITED = re.compile(r"^(?:edited|wrote|created|modified|deleted|updated)\s+([^\s:]+)", re.I)


@dataclass(frozen=True, slots=True)
class ErrorSeen:
    """One error signature: how often, where first and last, and its latest wording."""

    signature: str
    example: str
    tool: str
    count: int
    first: int
    last: int


@dataclass(frozen=True)
class TaskLedger:
    """The ledger of ``messages[:upto]``; message indices refer to the history."""

    upto: int
    tool_calls: dict[str, int]
    errors: tuple[ErrorSeen, ...]
    files: tuple[str, ...]
    run_ids: tuple[str, ...]
    best: Best | None
    #: tool → (status text, message index)
    last_status: dict[str, tuple[str, int]]
    candidates: tuple[Candidate, ...] = ()
    metric: str | None = None
    #: the scored candidates, best first (score, then message): kept sorted by the builder
    #: as candidates arrive, so rendering does not sort them all each turn; None when not
    #: given (render_ledger sorts ``candidates`` then)
    ranked: tuple[Candidate, ...] | None = None

    @property
    def total_calls(self) -> int:
        return sum(self.tool_calls.values())


@dataclass
class LedgerBuilder:
    """Builds a :class:`TaskLedger` incrementally from an append-only message list."""

    profile: FactProfile = GENERIC
    _seen: int = 0
    _names: dict[str, str] = field(default_factory=dict)
    _calls: dict[str, int] = field(default_factory=dict)
    _errors: dict[str, list[object]] = field(default_factory=dict)  # sig → [example, tool, count, first, last]
    _files: dict[str, None] = field(default_factory=dict)
    _ids: dict[str, None] = field(default_factory=dict)
    _best: Best | None = None
    _status: dict[str, tuple[str, int]] = field(default_factory=dict)
    _source: int | None = None
    _inputs: dict[str, dict[str, object]] = field(default_factory=dict)
    _cands: list[Candidate] = field(default_factory=list)
    #: (-score, message index, position in _cands) of the scored candidates, ascending
    _ranked: list[tuple[float, int, int]] = field(default_factory=list)
    #: bumped whenever ``_errors`` changes; the snapshot's tuples are kept while nothing changed
    _errors_version: int = 0
    _frozen: dict[str, tuple[int, tuple[object, ...]]] = field(default_factory=dict)

    def update(self, history: History | Sequence[Message]) -> TaskLedger:
        """Read the messages appended since the last call and return the ledger."""
        msgs = history.messages if isinstance(history, History) else history
        source = history.uid if isinstance(history, History) else id(history)
        if (self._source is not None and self._source != source) or len(msgs) < self._seen:
            fresh = LedgerBuilder(self.profile)  # another history: start over
            self.__dict__.update(fresh.__dict__)
        self._source = source
        with gc_paused_over(len(msgs) - self._seen):
            for i in range(self._seen, len(msgs)):
                self._read(i, msgs[i])
        self._seen = len(msgs)
        return self.ledger()

    def _read(self, i: int, m: Message) -> None:
        for b in m.content:
            if isinstance(b, ToolUseBlock):
                self._names[b.id] = b.name
                if self.profile.candidate is not None:
                    self._inputs[b.id] = dict(b.input)
                self._calls[b.name] = self._calls.get(b.name, 0) + 1
                self._paths_from_input(b.input)
            elif isinstance(b, ToolResultBlock):
                self._result(i, b)

    def _paths_from_input(self, value: object, key: str = "") -> None:
        if isinstance(value, str):
            if key in _PATH_KEYS or _PATH.fullmatch(value.strip()):
                for mt in _PATH.finditer(value):
                    self._files.setdefault(mt.group(0).rstrip("."), None)
        elif isinstance(value, dict):
            for k, v in value.items():
                self._paths_from_input(v, str(k).lower())
        elif isinstance(value, list | tuple):
            for v in value:
                self._paths_from_input(v, key)

    def _result(self, i: int, b: ToolResultBlock) -> None:
        tool = self._names.get(b.tool_use_id, "tool")
        text = b.text
        lines = text.splitlines()
        prof = self.profile
        if tool in prof.content_tools and not b.is_error:
            # file contents read back: a quoted "raise ValueError" is not an error the agent hit
            self._status[tool] = (f"read {len(lines)} lines", i)
            return
        sig = _first_error_signature(text)
        if sig is None and b.is_error:
            sig = clip_line(next((ln for ln in lines if ln.strip()), "(empty error output)"), 160)
        if sig is not None:
            key = _DIGITS.sub("#", sig)
            e = self._errors.get(key)
            if e is None:
                self._errors[key] = [sig, tool, 1, i, i]
            else:
                e[0], e[2], e[4] = sig, int(e[2]) + 1, i  # type: ignore[call-overload]
            self._errors_version += 1
            self._status[tool] = (f"error: {sig}", i)
        else:
            self._status[tool] = (clip_line(summary_line(text), 160) if text.strip() else "ok (empty output)", i)
        head = lines[0] if lines else ""
        for mt in _ID.finditer(head):
            self._ids.setdefault(mt.group(0), None)
        edited = _EDITED.match(head.strip())
        if edited and _PATH.fullmatch(edited.group(1)):
            self._files.setdefault(edited.group(1), None)
        for value, raw, geo, line in prof.best(text) if prof.best is not None else ():
            if better(self._best, value, geo):
                self._best = Best(value, raw, line, run_id(text), i, geo, prof.metric or "result")
        if prof.candidate is not None:
            cand = prof.candidate(tool, self._inputs.pop(b.tool_use_id, {}), text, i)
            if cand is not None:
                if cand.score is not None:
                    insort(self._ranked, (-cand.score, cand.message_index, len(self._cands)))
                self._cands.append(cand)

    def _tuple(self, name: str, version: int, make: Callable[[], tuple[object, ...]]) -> tuple[object, ...]:
        """``make()``, kept while ``version`` is unchanged: a turn's snapshot shares the
        tuples of the parts that did not change (the run ids grow by one now and then, the
        errors rarely), instead of copying every id and error each turn."""
        kept = self._frozen.get(name)
        if kept is None or kept[0] != version:
            kept = self._frozen[name] = (version, make())
        return kept[1]

    # -- snapshots (a cache in the session's store: see ctxmem.context.derived) ------------

    STATE_VERSION: ClassVar[int] = 1

    def state_kind(self) -> str:
        """What a snapshot is valid for: its layout and the profile (its name, the tools
        whose outputs are file contents, its metric)."""
        import hashlib

        p = self.profile
        ident = "\x00".join((p.name, *sorted(p.content_tools), p.metric or ""))
        return f"ledger/v{self.STATE_VERSION}/{hashlib.sha256(ident.encode()).hexdigest()[:16]}"

    def to_state(self) -> dict[str, Any]:
        """The builder's state after :meth:`update` (plain JSON types), for :meth:`from_state`."""
        b = self._best
        return {
            "seen": self._seen,
            "names": self._names,
            "calls": self._calls,
            "errors": self._errors,
            "files": list(self._files),
            "ids": list(self._ids),
            "best": None if b is None else [b.value, b.raw, b.text, b.run_id, b.message_index, b.geomean, b.metric],
            "status": {k: list(v) for k, v in self._status.items()},
            "inputs": self._inputs,
            "cands": [[c.config, c.design, c.result, c.score, c.run_id, c.message_index] for c in self._cands],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], profile: FactProfile, source: int) -> LedgerBuilder:
        """A builder as :meth:`to_state` left it, continuing with the history ``source``
        (its uid). Raises KeyError, TypeError or ValueError on a state of another layout."""
        lb = cls(profile)
        lb._seen = int(state["seen"])
        lb._source = source
        lb._names = {str(k): str(v) for k, v in state["names"].items()}
        lb._calls = {str(k): int(v) for k, v in state["calls"].items()}
        lb._errors = {str(k): [str(e[0]), str(e[1]), int(e[2]), int(e[3]), int(e[4])] for k, e in state["errors"].items()}
        lb._files = dict.fromkeys(str(f) for f in state["files"])
        lb._ids = dict.fromkeys(str(i) for i in state["ids"])
        b = state["best"]
        lb._best = None if b is None else Best(
            float(b[0]), str(b[1]), str(b[2]), None if b[3] is None else str(b[3]), int(b[4]), bool(b[5]), str(b[6])
        )
        lb._status = {str(k): (str(v[0]), int(v[1])) for k, v in state["status"].items()}
        lb._inputs = {str(k): dict(v) for k, v in state["inputs"].items()}
        for config, design, result, score, run, i in state["cands"]:
            c = Candidate(str(config), str(design), str(result), None if score is None else float(score),
                          None if run is None else str(run), int(i))
            if c.score is not None:
                insort(lb._ranked, (-c.score, c.message_index, len(lb._cands)))
            lb._cands.append(c)
        return lb

    def ledger(self) -> TaskLedger:
        errors = self._tuple("errors", self._errors_version, lambda: tuple(
            ErrorSeen(k, str(e[0]), str(e[1]), int(e[2]), int(e[3]), int(e[4]))  # type: ignore[call-overload]
            for k, e in self._errors.items()
        ))
        # files, run ids and candidates only ever grow: their length is their version
        return TaskLedger(
            upto=self._seen,
            tool_calls=dict(self._calls),
            errors=errors,  # type: ignore[arg-type]
            files=self._tuple("files", len(self._files), lambda: tuple(self._files)),  # type: ignore[arg-type]
            run_ids=self._tuple("ids", len(self._ids), lambda: tuple(self._ids)),  # type: ignore[arg-type]
            best=self._best,
            last_status=dict(self._status),
            candidates=self._tuple("cands", len(self._cands), lambda: tuple(self._cands)),  # type: ignore[arg-type]
            metric=self.profile.metric,
            ranked=self._tuple(  # type: ignore[arg-type]
                "ranked", len(self._ranked), lambda: tuple(self._cands[k] for _, _, k in self._ranked)
            ),
        )


#: every alternative of the error pattern contains one of these: a line without any cannot match
_ERROR_HINT = re.compile(r"Error|Exception|Exceeded|Failure|Interrupt|OutOfResources|Traceback|panic|error")


def _first_error_signature(text: str) -> str | None:
    """The signature of the first error line (as a per-line scan would find it), reading only
    the lines that hold an error word."""
    pos, end = 0, len(text)
    while pos < end:
        m = _ERROR_HINT.search(text, pos)
        if m is None:
            return None
        start = max(text.rfind("\n", 0, m.start()), text.rfind("\r", 0, m.start())) + 1
        stop = len(text)
        for sep in ("\n", "\r"):
            k = text.find(sep, m.start())
            if k != -1:
                stop = min(stop, k)
        for line in text[start:stop].splitlines():  # other line breaks (\v, \f, \u2028…) split it too
            if is_code(line):
                continue  # a source line quoted in a traceback: the error line comes after it
            sig = error_signature(line)
            if sig:
                return sig
        pos = stop + 1
    return None


def build_ledger(messages: History | Sequence[Message], profile: FactProfile = GENERIC) -> TaskLedger:
    """The ledger of a whole history (or message list), from scratch."""
    return LedgerBuilder(profile).update(messages)


def render_ledger(ledger: TaskLedger, tokenizer: Tokenizer, max_tokens: int, *, max_items: int = 12) -> str:
    """The ledger as compact text, at most ``max_tokens`` (exact), most useful lines first.

    Lines are kept in a fixed section order; when the cap bites, lower-priority lines go
    first (ids, then files, then counts, then older statuses and rarer errors).
    """
    header = f"Task ledger (messages 0-{ledger.upto - 1}, {ledger.total_calls} tool calls):"
    cands: list[tuple[float, str]] = []
    if ledger.best is not None:
        cands.append((100.0, ledger.best.describe()))
    errors = sorted(ledger.errors, key=lambda e: (-e.count, -e.last))[:max_items]
    rank = {id(e): r for r, e in enumerate(errors)}
    for e in sorted(errors, key=lambda e: e.first):
        # recurring errors rank above the last statuses, one-off errors below them
        score = (80.0 if e.count > 1 else 55.0) - rank[id(e)] * 0.1
        times = f" ×{e.count}" if e.count > 1 else ""
        cands.append((score, f"error{times} ({e.tool}, messages {e.first}-{e.last}): {e.example}"))
    statuses = sorted(ledger.last_status.items(), key=lambda kv: kv[1][1])
    for k, (tool, (status, i)) in enumerate(statuses):
        cands.append((60.0 + k * 0.01, f"last {tool} (message {i}): {status}"))
    if ledger.tool_calls:
        counts = ", ".join(f"{t}×{n}" for t, n in sorted(ledger.tool_calls.items(), key=lambda kv: (-kv[1], kv[0])))
        cands.append((50.0, f"calls: {counts}"))
    if ledger.files:
        cands.append((40.0, "files: " + ", ".join(ledger.files[:max_items * 2])))
    if ledger.candidates:
        scored = ledger.ranked
        if scored is None:
            scored = tuple(sorted((c for c in ledger.candidates if c.score is not None),
                                  key=lambda c: (-(c.score or 0), c.message_index)))
        top = scored[: max(1, max_items // 2)]
        latest = [c for c in ledger.candidates[-max_items // 2 :] if c not in top]
        label = ledger.metric or "score"
        cands.append((95.0, f"candidates ({len(ledger.candidates)}; config · design · result · {label}), best first:"))
        for k, c in enumerate(top):
            cands.append((94.0 - k * 0.5, "  " + _candidate_line(c)))
        for k, c in enumerate(reversed(latest)):
            cands.append((58.0 - k * 0.5, "  latest: " + _candidate_line(c)))
    if ledger.run_ids:
        recent = ledger.run_ids[-max_items:]
        more = f" (+{len(ledger.run_ids) - len(recent)} earlier)" if len(ledger.run_ids) > len(recent) else ""
        cands.append((30.0, "runs: " + ", ".join(recent) + more))
    return fit_lines(cands, tokenizer, max_tokens, header=header)


def _candidate_line(c: Candidate) -> str:
    score = f"{c.score:.2f}" if c.score is not None else "—"
    where = f"{c.run_id}, message {c.message_index}" if c.run_id else f"message {c.message_index}"
    return clip_line(f"{c.config} · {c.design} · {c.result} · {score} ({where})", 200)
