"""Cells: one (source, length, depth, needle family, strategy preset, model, seed) point.

:class:`Cell` is what a user asks for; :func:`resolve` turns it into the fully resolved
config — source id (generator version and seed, or a hash of the user's files), tokenizer
id, a hash of the preset file's bytes, the model's window — and :func:`cell_key` hashes
that config. Results are stored under the key, so changing anything that changes the
outcome (an edited preset, a different tokenizer file, new haystack files) makes a new
cell instead of reusing a stale result.

:func:`build_cell` turns a cell into the request the reader gets:

* **Haystack sources** (``prose``, ``code``, ``log``, ``folder:``, ``session:``): the
  document (:mod:`ctxmem.evals.haystack`) and the question as two text blocks of one user
  message. ``length`` is the content tokens of that message. With a preset other than
  ``none`` the strategy is applied to that one-message history — which can only keep it
  or refuse it; the strategy axis matters on agent sessions.
* **Agent sessions** (``agent`` = :func:`ctxmem.samples.synthetic_session`, or
  ``agent:FILE.jsonl`` / ``agent:DB#SESSION``): each needle sentence is written into the
  tool result of the tool call at index ``round(depth × (calls - 1))``, a question turn is
  appended, the history is cut to ``length`` tokens (its last tool results trimmed to
  fit), and the preset's strategy builds the context the reader sees. ``length`` is the
  history's tokens (content + modelled overhead) before the strategy.

In both cases a request that would not fit the model's window (context + ``max_tokens``)
raises :class:`CellRefusedError`: the runner records the cell as refused with the numbers,
never truncating it silently. A cell whose needles cannot be placed (a length too short
for them, a session shorter than the length, no tool results, no natural fact) raises
:class:`~ctxmem.evals.haystack.NeedleUnplaceableError`; it is refused as well — the same
config can never succeed, so a rerun does not retry it.

The ``natural`` needle family (agent sources) plants nothing: the cell asks about a fact
already in the session's tool results, chosen by tool-call index (:func:`_natural_cell`).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from typing import Any

from ctxmem.errors import ContextOverflowError, InputError
from ctxmem.evals.attribution import fate, render, survival, worst
from ctxmem.evals.haystack import NeedleUnplaceableError, build_document, encoded_haystack
from ctxmem.evals.needles import REVISIONS, Insert, NeedleSet, extract_values, make_needles
from ctxmem.evals.readers import question_block
from ctxmem.evals.sources import get_source
from ctxmem.messages import (
    ContentBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    canonical_json,
)
from ctxmem.tokens import Tokenizer, get_tokenizer
from ctxmem.tokens.counting import DEFAULT_OVERHEAD, count_messages

EVAL_VERSION = "niah-v1"

#: Context windows of common models (tokens). ``--window`` overrides; unknown models need it.
KNOWN_WINDOWS: dict[str, int] = {
    "extractive": 1_048_576,
    "claude": 200_000,
    "gpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "scripted": 1_048_576,
}


class CellRefusedError(ContextOverflowError):
    """A cell's request would not fit the model's window; it is refused, not truncated."""

    def __init__(self, needed: int, available: int, *, what: str):
        self.what = what
        super().__init__(
            needed, available,
            hint=f"{what}: the cell is refused rather than truncated. Use a shorter length, "
                 "a strategy with a smaller budget, or a model with a larger window (--window).",
        )


def model_window(model: str, override: int | None = None) -> int:
    if override:
        return override
    name = model.partition(":")[2] or model
    for prefix in sorted(KNOWN_WINDOWS, key=len, reverse=True):
        if name.startswith(prefix) or model.startswith(prefix):
            return KNOWN_WINDOWS[prefix]
    from ctxmem.errors import ConfigError

    raise ConfigError(f"unknown context window for model {model!r}; pass --window TOKENS", field="window")


@dataclass(frozen=True)
class Cell:
    """One evaluation point (see the module docstring)."""

    source: str
    length: int
    depth: float
    needle: str
    preset: str = "none"
    model: str = "extractive"
    seed: int = 0
    tokenizer: str = "o200k_base"
    window: int | None = None
    max_tokens: int = 64

    @property
    def is_agent(self) -> bool:
        return self.source == "agent" or self.source.startswith("agent:")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=64)
def _preset_digest(preset: str) -> str:
    if preset == "none":
        return "none"
    from ctxmem.config import load_preset

    p = load_preset(preset)
    data = p.path.read_bytes() if p.path else canonical_json(p.model.model_dump(mode="json")).encode()
    return f"{p.name}:{hashlib.sha256(data).hexdigest()[:16]}"


_SOURCE_IDS: dict[str, str] = {}


def _source_id(spec: str) -> str:
    if spec not in _SOURCE_IDS:
        if spec == "agent":
            _SOURCE_IDS[spec] = "agent:synthetic_session:v1"
        elif spec.startswith("agent:"):
            _SOURCE_IDS[spec] = "agent:" + hashlib.sha256(canonical_json(
                [m.role + "|" + "|".join(str(b) for b in m.content) for m in _agent_messages(spec, 0)]
            ).encode()).hexdigest()[:16]
        else:
            _SOURCE_IDS[spec] = get_source(spec).id
    return _SOURCE_IDS[spec]


def resolve(cell: Cell) -> dict[str, Any]:
    """The fully resolved config of a cell: everything its result depends on."""
    resolved = {
        "version": EVAL_VERSION,
        "source": cell.source,
        "source_id": _source_id(cell.source),
        "length": cell.length,
        "depth": round(cell.depth, 6),
        "needle": cell.needle,
        "preset": _preset_digest(cell.preset),
        "model": cell.model,
        "window": model_window(cell.model, cell.window),
        "seed": cell.seed,
        "tokenizer": get_tokenizer(cell.tokenizer).id,
        "max_tokens": cell.max_tokens,
    }
    if cell.needle in REVISIONS:  # only revised families change key, so other stored results stay valid
        resolved["needle_revision"] = REVISIONS[cell.needle]
    return resolved


def cell_key(resolved: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(resolved).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- built cells


@dataclass
class BuiltCell:
    """The request a reader gets for one cell, and what is known before it answers."""

    cell: Cell
    needles: NeedleSet
    messages: list[Message]
    system: str | None
    #: tokens of the input the cell was asked to have (content tokens for haystack
    #: sources, history tokens for agent sessions) — what ``length`` targets
    length_tokens: int
    #: tokens of the request the reader is sent (after the strategy), overhead included
    request_tokens: int
    survival: str
    fate: str
    placed: list[dict[str, Any]] = field(default_factory=list)
    strategy_report: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "length_tokens": self.length_tokens,
            "request_tokens": self.request_tokens,
            "survival": self.survival,
            "fate": self.fate,
            "placed": self.placed,
            "strategy": self.strategy_report,
            "notes": self.notes,
        }


def _check_window(cell: Cell, request_tokens: int, what: str) -> None:
    window = model_window(cell.model, cell.window)
    if request_tokens + cell.max_tokens > window:
        raise CellRefusedError(request_tokens + cell.max_tokens, window, what=what)


def _apply_strategy(
    cell: Cell, tok: Tokenizer, messages: list[Message], counts: list[int], pinned: int | None = None
) -> tuple[list[Message], Any, Any]:
    """Run the cell's preset over a history; returns (messages, report, history)."""
    from ctxmem.config import load_preset
    from ctxmem.context import History

    history = History(tok)
    # History.extend would re-count every message; the counts are already known
    # (unchanged messages reuse the base session's counts), so append them directly.
    history._append(list(messages), list(counts), [() for _ in messages])
    if cell.preset == "none":
        return list(messages), None, history
    preset = load_preset(cell.preset)
    window = model_window(cell.model, cell.window)
    builder = preset.builder(
        context_window=min(preset.model.budget.context_window, window), tokenizer=tok.name, pinned=pinned
    )
    try:
        built = builder.build(history)
    except ContextOverflowError as exc:
        raise CellRefusedError(exc.needed, exc.available, what=f"preset {preset.name!r} cannot fit the input") from None
    return list(built.messages), built.report, history


def _haystack_cell(cell: Cell, tok: Tokenizer, needles: NeedleSet) -> BuiltCell:
    qblock = question_block(needles.question, multi=needles.multi)
    q_tokens = tok.count(qblock)
    if not needles.with_context:
        messages = [Message.user(qblock.strip())]
        content = tok.count(qblock.strip())
        req = DEFAULT_OVERHEAD.per_request + count_messages(messages, tok)[0].total
        _check_window(cell, req, "the question")
        return BuiltCell(cell, needles, messages, None, content, req, "n/a", "kept")
    source = get_source(cell.source)
    hay = encoded_haystack(source, tok)
    doc = build_document(hay, cell.length, [(i.text, i.depth, i.role) for i in needles.inserts], reserved=q_tokens)
    msg = Message("user", (TextBlock(doc.text), TextBlock(qblock)))
    content = doc.tokens + q_tokens
    total = content + DEFAULT_OVERHEAD.message(msg)
    _check_window(cell, DEFAULT_OVERHEAD.per_request + total, f"a {cell.length}-token {cell.source} cell")
    out, report, _ = _apply_strategy(cell, tok, [msg], [total], pinned=0)
    notes = []
    if doc.haystack_tokens and hay.exhausted and doc.haystack_tokens > hay.total:
        notes.append("the haystack source was shorter than the length and was repeated")
    placed = [
        {"role": p.role, "requested_depth": p.requested_depth, "depth": round(p.depth, 6), "token_offset": p.token_offset}
        for p in doc.placed
    ]
    rendered = render(out)
    stat = worst([survival(i.text, rendered, value=_value(i.text)) for i in needles.needles])
    f = "kept"
    if report is not None:
        f = fate(0, dropped=report.dropped, masked=report.masked, summarized=report.summarized)
    req = report.tokens_out if report is not None else DEFAULT_OVERHEAD.per_request + total
    return BuiltCell(cell, needles, out, None, content, req, stat, f, placed,
                     report.to_json() if report is not None else None, notes)


def _value(sentence: str) -> str | None:
    v = extract_values(sentence)
    return v[0] if v else None


# --------------------------------------------------------------------------- agent sessions

_AGENT: dict[tuple[str, str], tuple[list[Message], list[int], list[int]]] = {}
_AGENT_LOCK = threading.Lock()


def _agent_messages(spec: str, turns: int) -> list[Message]:
    if spec == "agent":  # the synthetic workload's transcript, through the Workload protocol
        from ctxmem.session import Session
        from ctxmem.store import MemoryStore
        from ctxmem.workloads import get_workload

        memory = MemoryStore()
        run = get_workload("synthetic", {"turns": turns, "plant": False}).run(memory, seed=0)
        return list(Session.open(memory, run.session_id).messages())
    ref = spec.partition(":")[2]
    if "#" in ref:
        from ctxmem.session import Session
        from ctxmem.store import open_existing

        db, _, sid = ref.partition("#")
        with open_existing(db) as store:
            return list(Session.open(store, sid).messages())
    from pathlib import Path

    from ctxmem.jsonl import nothing_to_import, parse_jsonl

    path = Path(ref).expanduser()
    if not path.is_file():
        raise InputError(f"no session transcript {path} (expected a JSONL file or DB#SESSION_ID)", field="source")
    data = path.read_bytes()
    system, messages = parse_jsonl(data, source=str(path))
    if not messages:  # an empty transcript: refused as `sessions import` refuses it, not a failure per cell
        raise nothing_to_import(data, system, str(path))
    return list(messages)


def _agent_base(spec: str, tok: Tokenizer, tokens: int) -> tuple[list[Message], list[int], list[int]]:
    """(messages, per-message counts, prefix sums) of an agent session holding ≥ ``tokens``.

    Counted once per (session, tokenizer); the synthetic session is regenerated larger
    (it is prefix-stable in ``turns``) only when a longer cell needs it.
    """
    key = (spec, tok.id)
    with _AGENT_LOCK:
        base = _AGENT.get(key)
        if base is not None and (base[2][-1] >= tokens or spec != "agent"):
            return base
        turns = max(16, tokens // 600 + 8)
        while True:
            msgs = _agent_messages(spec, turns)
            counts = [c.total for c in count_messages(msgs, tok)]
            cum = [0]
            for c in counts:
                cum.append(cum[-1] + c)
            if cum[-1] >= tokens or spec != "agent":
                break
            turns *= 2
        _AGENT[key] = (msgs, counts, cum)
        return _AGENT[key]


def _with_lines(block: ToolResultBlock, lines: list[str], where: float) -> ToolResultBlock:
    text = block.text
    rows = text.split("\n")
    at = min(len(rows), max(0, round(where * len(rows))))
    rows[at:at] = lines
    return ToolResultBlock(block.tool_use_id, "\n".join(rows), block.is_error)


def _trim_results(msg: Message, frac: float) -> Message:
    blocks: list[ContentBlock] = []
    for b in msg.content:
        if isinstance(b, ToolResultBlock):
            t = b.text
            blocks.append(ToolResultBlock(b.tool_use_id, t[: int(len(t) * frac)], b.is_error))
        else:
            blocks.append(b)
    return Message(msg.role, tuple(blocks))


def _agent_prefix(cell: Cell, tok: Tokenizer, reserve: int) -> tuple[list[Message], list[int]]:
    """The session cut to ``cell.length - reserve`` tokens, ending with tool results.

    The smallest prefix ending with a tool-results message that reaches the budget, with
    that message's results trimmed (binary search on a character fraction) to fit.
    """
    budget = cell.length - reserve
    msgs, counts, cum = _agent_base(cell.source, tok, cell.length)
    if budget <= counts[0]:
        raise NeedleUnplaceableError(f"length {cell.length} is too short for an agent session cell "
                                     f"(the first message alone is {counts[0]} tokens)", field="length")
    if cum[-1] < budget:
        raise NeedleUnplaceableError(
            f"the session {cell.source!r} holds {cum[-1]} tokens in {tok.name}; the length {cell.length} needs more",
            field="length",
        )
    n = bisect_left(cum, budget)
    while n < len(msgs) and not msgs[n - 1].tool_results:
        n += 1
    prefix = list(msgs[:n])
    pc = list(counts[:n])
    if cum[n] > budget:
        last = prefix[-1]
        lo, hi, best = 0.0, 1.0, None
        for _ in range(14):
            mid = (lo + hi) / 2
            cand = _trim_results(last, mid)
            c = count_messages([cand], tok)[0].total
            if cum[n - 1] + c <= budget:
                best, lo = (cand, c), mid
            else:
                hi = mid
        if best is None:  # not even an empty result fits: drop the whole last turn
            prefix, pc = prefix[:-2], pc[:-2]
        else:
            prefix[-1], pc[-1] = best
    return prefix, pc


def _tool_calls(prefix: list[Message]) -> list[tuple[int, int]]:
    calls = [(mi, bi) for mi, m in enumerate(prefix) for bi, b in enumerate(m.content) if isinstance(b, ToolResultBlock)]
    if not calls:
        raise NeedleUnplaceableError("the session has no tool results to place a needle in", field="source")
    return calls


def _question_tail(tok: Tokenizer, needles: NeedleSet) -> tuple[list[Message], list[int]]:
    qblock = question_block(needles.question, multi=needles.multi)
    tail = [Message.assistant("Before continuing, I will answer the question about earlier tool output."),
            Message.user(qblock.strip())]
    return tail, [c.total for c in count_messages(tail, tok)]


def _finish_agent_cell(cell: Cell, tok: Tokenizer, needles: NeedleSet, history_msgs: list[Message],
                       history_counts: list[int], needle_msgs: list[int], placed: list[dict[str, Any]],
                       notes: list[str] | None = None) -> BuiltCell:
    length_tokens = sum(history_counts)
    out, report, _ = _apply_strategy(cell, tok, history_msgs, history_counts)
    request_tokens = report.tokens_out if report is not None else DEFAULT_OVERHEAD.per_request + length_tokens
    _check_window(cell, request_tokens, f"a {cell.length}-token agent-session cell after preset {cell.preset!r}")
    rendered = render(out)
    folded = " ".join(rendered.split()).lower()
    natural = needles.family == "natural"
    stat = worst([survival(i.text, rendered, value=needles.answers[0] if natural else _value(i.text), folded=folded)
                  for i in needles.needles])
    fates = [
        fate(mi, dropped=report.dropped, masked=report.masked, summarized=report.summarized) if report else "kept"
        for mi in needle_msgs
    ]
    order = {"dropped": 0, "summarized": 1, "masked": 2, "kept": 3}
    f = min(fates, key=lambda x: order[x]) if fates else "kept"
    return BuiltCell(cell, needles, out, None, length_tokens, request_tokens, stat, f, placed,
                     report.to_json() if report is not None else None, list(notes or []))


def _natural_specs(spec: str) -> list[Any]:
    """The natural-needle specs for an agent source: those of the workload that recorded the
    session (``metadata["workload"]`` of ``agent:DB#SESSION``), else every registered
    workload's (a transcript's origin is unknown), through the Workload protocol."""
    from ctxmem.workloads import WORKLOADS, get_workload

    names: list[str] = []
    ref = spec.partition(":")[2]
    if "#" in ref:
        from ctxmem.session import Session
        from ctxmem.store import open_existing

        db, _, sid = ref.partition("#")
        with open_existing(db) as store:
            recorded = Session.open(store, sid).info.metadata.get("workload")
        if isinstance(recorded, str) and recorded in WORKLOADS:
            names = [recorded]
    out: dict[str, Any] = {}
    for name in names or WORKLOADS.names():
        try:
            needles = get_workload(name).needles()
        except Exception:  # a plugin that cannot load here offers no needles
            continue
        for n in needles:
            out.setdefault(n.name, n)
    return list(out.values())


def _natural_cell(cell: Cell, tok: Tokenizer) -> BuiltCell:
    """A natural needle: a fact already in the session's tool results, chosen by tool-call index.

    Candidates are the first appearance of each fact the workload's natural-needle specs
    recognise (:meth:`ctxmem.workloads.Workload.needles`, see :func:`_natural_specs`) within
    the cut session; the cell asks about the one whose tool call is nearest to
    ``round(depth × (calls - 1))``. Nothing is planted; a fact the session repeats later
    is noted (a strategy may drop the first appearance and keep a repeat).
    """
    specs = _natural_specs(cell.source)
    tails = {s.name: _question_tail(tok, NeedleSet("natural", s.question, ("",), (), "contains")) for s in specs}
    prefix, pc = _agent_prefix(cell, tok, max(sum(c) for _, c in tails.values()))
    calls = _tool_calls(prefix)
    names = {b.id: b.name for m in prefix for b in m.content if isinstance(b, ToolUseBlock)}
    first: dict[str, tuple[int, str, str]] = {}  # spec → (call index, evidence line, truth)
    parts: dict[str, tuple[str, ...]] = {}  # spec → the truth's values (the pattern's groups)
    repeats: dict[str, int] = {}
    for ci, (mi, bi) in enumerate(calls):
        b = prefix[mi].content[bi]
        assert isinstance(b, ToolResultBlock)
        for spec in specs:
            if spec.tools and names.get(b.tool_use_id) not in spec.tools:
                continue
            m = spec.pattern.search(b.text)
            if m is None:
                continue
            if spec.name in first:
                repeats[spec.name] = repeats.get(spec.name, 0) + int(spec.answer(m) == first[spec.name][2])
                continue
            start = b.text.rfind("\n", 0, m.start()) + 1
            end = b.text.find("\n", m.end())
            first[spec.name] = (ci, b.text[start: end if end >= 0 else len(b.text)].strip(), spec.answer(m))
            parts[spec.name] = tuple(g for g in m.groups() if g is not None)
    if not first:
        raise NeedleUnplaceableError(
            f"no natural needle (a workload's fact) in the tool results of the first {cell.length} tokens of "
            f"{cell.source!r}", field="needle")
    target = round(cell.depth * (len(calls) - 1))
    name = min(first, key=lambda k: (abs(first[k][0] - target), first[k][0], k))
    ci, evidence, truth = first[name]
    spec = next(s for s in specs if s.name == name)
    mi = calls[ci][0]
    achieved = round(ci / max(1, len(calls) - 1), 6)
    needles = NeedleSet("natural", spec.question, (truth,), (Insert(evidence, achieved, "needle"),), "contains",
                        parts=parts[name] if len(parts[name]) > 1 else ())
    tail, tail_counts = tails[name]
    placed = [{"role": "needle", "fact": name, "requested_depth": cell.depth, "tool_call": ci, "calls": len(calls),
               "message": mi, "depth": achieved, "repeats_later": repeats.get(name, 0)}]
    notes = [f"natural needle {name!r} at tool call {ci} of {len(calls)}"]
    if repeats.get(name):
        notes.append(f"the session repeats this fact in {repeats[name]} later tool result(s)")
    return _finish_agent_cell(cell, tok, needles, prefix + tail, pc + tail_counts, [mi], placed, notes)


def _agent_cell(cell: Cell, tok: Tokenizer, needles: NeedleSet) -> BuiltCell:
    import random

    tail, tail_counts = _question_tail(tok, needles)
    needle_max = sum(tok.count("\n" + i.text) + 1 for i in needles.inserts)
    prefix, pc = _agent_prefix(cell, tok, sum(tail_counts) + needle_max)
    calls = _tool_calls(prefix)
    rng = random.Random(f"agent-place:{cell.seed}")
    by_msg: dict[int, list[tuple[int, str, float]]] = {}
    needle_msgs: list[int] = []
    placed = []
    for ins in needles.inserts:
        ci = round(ins.depth * (len(calls) - 1))
        mi, bi = calls[ci]
        by_msg.setdefault(mi, []).append((bi, ins.text, rng.random()))
        if ins.role == "needle":
            needle_msgs.append(mi)
        placed.append({"role": ins.role, "requested_depth": ins.depth, "tool_call": ci, "calls": len(calls),
                       "message": mi, "depth": round(ci / max(1, len(calls) - 1), 6)})
    for mi, items in by_msg.items():
        blocks = list(prefix[mi].content)
        for bi, text, where in items:
            b = blocks[bi]
            assert isinstance(b, ToolResultBlock)
            blocks[bi] = _with_lines(b, [text], where)
        prefix[mi] = Message(prefix[mi].role, tuple(blocks))
    changed = sorted(by_msg)
    for mi, cnt in zip(changed, count_messages([prefix[mi] for mi in changed], tok), strict=True):
        pc[mi] = cnt.total
    return _finish_agent_cell(cell, tok, needles, prefix + tail, pc + tail_counts, needle_msgs, placed)


def build_cell(cell: Cell) -> BuiltCell:
    """The reader's request for ``cell`` (raises :class:`CellRefusedError` if it cannot fit)."""
    if cell.length <= 0:
        raise InputError("length must be a positive number of tokens", field="length")
    tok = get_tokenizer(cell.tokenizer)
    if cell.needle == "natural":
        if not cell.is_agent:
            raise InputError("natural needles are facts of an agent session's tool results; use an agent source "
                             "(agent:FILE.jsonl, agent:DB#SESSION, or eval session-needles --workload kernel)",
                             field="needle")
        return _natural_cell(cell, tok)
    needles = make_needles(cell.needle, cell.depth, cell.seed)
    if cell.is_agent:
        if not needles.with_context:
            return _haystack_cell(cell, tok, needles)
        return _agent_cell(cell, tok, needles)
    return _haystack_cell(cell, tok, needles)
