"""Context suite: every preset building the next context over a real SQLite session.

The path timed is the one an :class:`~ctxmem.Agent` runs: a 1M-token, ~2,400-message
tool-heavy session is imported into a SQLite file (``import_jsonl``, as ``ctxmem sessions
import`` does); each preset gets its own copy of that file, opens it
(:meth:`~ctxmem.config.Preset.builder` → ``builder.current_history(session)``, the stored
counts), builds once (the *cold* first build), then runs turns of "record one round
(assistant tool call + its result) into the session, ``builder.build(session)``" — the
documented one-liner: the builder follows the session (reads its head, the new events
since the last build, and extends the History it keeps; that is timed too), retrieval
searches the store's FTS5 index restricted to the session, compactions are recorded into
it, recall reads it.

Peers, in the same process, **alternating turn by turn** with the presets (load on a
shared machine hits every contender alike):

* **LangChain** ``trim_messages(strategy="last")`` with an exact tiktoken counter: it
  re-counts every message on every call (the issue's reference);
* the same with a **5-line memoized counter** (per message object), what a competent user
  writes — beating the first is easy, this one is the real bar;
* ctxmem's own **LangChain middleware** (masking-200k), the drop-in for ``trim_messages``,
  called as a graph calls it before each model call: the whole message list in, the new
  round recorded durably into a SQLite session, the context out as LangChain messages.

Every built context is checked outside the timing: it must fit the preset's budget as
recounted from scratch by its tokenizer (``count_messages``, not the strategy's own
report) and pass :func:`~ctxmem.messages.validate_conversation` (every ``tool_use`` with
its result). The notes give the violation counts, the cold first build and the session
load (``builder.current_history``) time.

Each preset's cold first build is timed twice: right after the import (it reads every tool
output of the session: the facts index), and in a **fresh process** that opens the same
session afterwards, as an agent resuming it does (the facts index the first build saved in
the store is restored: ``derived_state``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._harness import Row
from ctxmem.config import available_presets, load_preset
from ctxmem.context.salience import forget_line_features
from ctxmem.errors import ContextOverflowError
from ctxmem.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    validate_conversation,
)
from ctxmem.samples import synthetic_session
from ctxmem.tokens import count_messages, get_tokenizer

TOKENIZER = "o200k_base"


def _to_langchain(msgs: Sequence[Message]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    out: list[Any] = []
    for m in msgs:
        if m.role == "assistant":
            text = "".join(b.text for b in m.content if isinstance(b, TextBlock))
            thinking = "".join(b.thinking for b in m.content if isinstance(b, ThinkingBlock))
            calls = [{"name": b.name, "args": b.input, "id": b.id} for b in m.content if isinstance(b, ToolUseBlock)]
            out.append(AIMessage(content=(thinking + "\n" + text) if thinking else text, tool_calls=calls))
        else:
            for b in m.content:
                if isinstance(b, ToolResultBlock):
                    out.append(ToolMessage(content=b.text, tool_call_id=b.tool_use_id))
            text = "".join(b.text for b in m.content if isinstance(b, TextBlock))
            if text:
                out.append(HumanMessage(content=text))
    return out


@dataclass
class Contender:
    """One preset on its own copy of the session: builder, session, history, timings."""

    name: str
    builder: Any
    session: Any
    store: Any
    history: Any
    load_s: float
    cold_s: float
    turns: list[float] = field(default_factory=list)
    #: CPU seconds of each turn's build (this process): less sensitive than wall to a busy machine
    cpu: list[float] = field(default_factory=list)
    #: session load and cold first build of the same preset in a fresh process opening this
    #: session afterwards (what resuming it costs: the facts index is restored, not re-read)
    reopen_load_s: float = float("nan")
    reopen_cold_s: float = float("nan")
    over_budget: int = 0
    unpaired: int = 0
    checked: int = 0
    #: why the preset stopped taking turns (a dump outgrowing its window as the session grows)
    refused: str = ""

    def check(self, built: Any, tok: Any) -> None:
        self.checked += 1
        budget = self.builder.budget
        if sum(c.total for c in count_messages(built.messages, tok)) > budget.available:
            self.over_budget += 1
        try:
            validate_conversation(built.messages)
        except Exception:
            self.unpaired += 1

    def turn(self, pair: Sequence[Message]) -> Any:
        for m in pair:
            self.session.record(m)
        t0, c0 = time.perf_counter(), time.process_time()
        built = self.builder.build(self.session)
        self.turns.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        return built


def import_session(msgs: Sequence[Message], db: Path) -> str:
    """Import ``msgs`` as JSONL into a fresh SQLite file, the way ``sessions import`` does."""
    import json

    from ctxmem.jsonl import import_jsonl
    from ctxmem.messages import to_anthropic
    from ctxmem.store import SQLiteStore

    data = "\n".join(json.dumps(o, ensure_ascii=False) for o in to_anthropic(msgs)).encode()
    with SQLiteStore(db) as store:
        return import_jsonl(store, data, tokenizers=[TOKENIZER]).id


def open_contender(name: str, base_db: Path, session_id: str, tmp: Path) -> Contender | str:
    """A preset over its own copy of the imported session, loaded and built once (cold).
    Returns a one-line reason instead when the preset refuses the session."""
    from ctxmem.session import Session
    from ctxmem.store import SQLiteStore

    db = tmp / f"{name}.db"
    shutil.copy(base_db, db)
    preset = load_preset(name)
    builder = preset.builder()
    store = SQLiteStore(db)
    session = Session.open(store, session_id)
    get_tokenizer(builder.tokenizer).count("warm")  # the encoding's one-time load is start-up, not a build
    forget_line_features()  # cold as in a new process: no features another preset's build left in memory
    t0 = time.perf_counter()
    history = builder.current_history(session)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        built = builder.build(session)
    except ContextOverflowError as exc:
        store.close()
        return f"refuses a {history.total / 1e6:.2f}M-token session: ContextOverflowError({exc.needed}, {exc.available})"
    cold_s = time.perf_counter() - t0
    c = Contender(name, builder, session, store, history, load_s, cold_s)
    c.check(built, get_tokenizer(builder.tokenizer))
    c.reopen_load_s, c.reopen_cold_s = reopen_cold(db, session_id, name)
    return c


_REOPEN = """
import sys, time
from ctxmem.config import load_preset
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import get_tokenizer
builder = load_preset(sys.argv[3]).builder()
store = SQLiteStore(sys.argv[1])
session = Session.open(store, sys.argv[2])
get_tokenizer(builder.tokenizer).count("warm")
t0 = time.perf_counter()
history = builder.current_history(session)
t1 = time.perf_counter()
built = builder.build(session)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, built.report.tokens_out)
"""


def reopen_cold(db: Path, session_id: str, preset: str) -> tuple[float, float]:
    """``(session load, cold first build)`` of ``preset`` in a **fresh process** opening a
    session it (or another process) already built on: what an agent resuming the session
    pays. The facts index is restored from the store (``derived_state``), not re-read."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _REOPEN, str(db), session_id, preset],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def run_turns(
    contenders: Sequence[Contender],
    extra: Sequence[Message],
    peers: dict[str, Callable[[Sequence[Message]], None]],
) -> dict[str, list[float]]:
    """Alternate: for each round, every contender then every peer takes its turn."""
    peer_times: dict[str, list[float]] = {p: [] for p in peers}
    peer_cpu: dict[str, list[float]] = {p: [] for p in peers}
    toks = {c.name: get_tokenizer(c.builder.tokenizer) for c in contenders}
    for k in range(0, len(extra) - 1, 2):
        pair = extra[k : k + 2]
        for c in contenders:
            if c.refused:
                continue
            try:
                built = c.turn(pair)
            except ContextOverflowError as exc:
                # A preset that cannot shrink (dump-1m) refuses once the growing session
                # outgrows its window: reported, and it takes no further turns.
                c.refused = (f"refused at turn {len(c.turns) + 1} as the session grew to "
                             f"{c.history.total / 1e6:.2f}M tokens: ContextOverflowError({exc.needed}, {exc.available})")
                continue
            c.check(built, toks[c.name])
        for name, step in peers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step(pair)
            peer_times[name].append(time.perf_counter() - t0)
            peer_cpu[name].append(time.process_time() - c0)
    for name, cpu in peer_cpu.items():
        peer_times[f"{name} CPU"] = cpu
    return peer_times


def langchain_peers(base: Sequence[Message], max_tokens: int) -> dict[str, Callable[[Sequence[Message]], None]]:
    """``trim_messages`` with an exact tiktoken counter, and with that counter memoized."""
    import tiktoken
    from langchain_core.messages import BaseMessage, trim_messages

    enc = tiktoken.get_encoding(TOKENIZER)

    def exact(batch: Sequence[BaseMessage]) -> int:
        n = 0
        for m in batch:
            content = m.content if isinstance(m.content, str) else str(m.content)
            n += 3 + len(enc.encode_ordinary(content))
            for call in getattr(m, "tool_calls", None) or ():
                n += len(enc.encode_ordinary(str(call["args"]))) + len(enc.encode_ordinary(call["name"]))
        return n

    # The 5-line memoized counter a competent user writes (messages are never mutated).
    memo: dict[int, int] = {}

    def memoized(batch: Sequence[BaseMessage]) -> int:
        for m in batch:
            if id(m) not in memo:
                memo[id(m)] = exact([m])
        return sum(memo[id(m)] for m in batch)

    def peer(counter: Callable[[Sequence[BaseMessage]], int]) -> Callable[[Sequence[Message]], None]:
        msgs = _to_langchain(base)

        def step(pair: Sequence[Message]) -> None:
            msgs.extend(_to_langchain(pair))  # the loop appends the new round, then trims
            trim_messages(msgs, max_tokens=max_tokens, token_counter=counter, strategy="last", start_on="human",
                          include_system=False, allow_partial=False)

        return step

    return {"trim_messages (exact counter)": peer(exact), "trim_messages (memoized counter)": peer(memoized)}


#: the ctxmem contender that runs through LangChain, timed beside the peers it replaces
MIDDLEWARE = "ctxmem LangChain middleware (masking-200k)"


def middleware_step(base: Sequence[Message], db: Path) -> tuple[Callable[[Sequence[Message]], None], float]:
    """:class:`~ctxmem.integrations.langchain.CtxmemMiddleware` as a LangChain loop calls it
    before every model call: the graph's whole message list goes in (the round just appended
    at its end), the new messages are recorded durably into a SQLite session and the preset's
    context comes back as LangChain messages. Returns the step and the first call's seconds
    (it records the whole 1M-token list, then builds cold)."""
    from ctxmem.integrations.langchain import CtxmemMiddleware

    memory = CtxmemMiddleware("masking-200k", str(db), session_id="bench")
    msgs = _to_langchain(base)
    forget_line_features()  # its first build as cold as in a new process
    t0 = time.perf_counter()
    memory.context(msgs)
    first = time.perf_counter() - t0

    def step(pair: Sequence[Message]) -> None:
        msgs.extend(_to_langchain(pair))  # the graph appends the new round (as in the peers' steps)
        memory.context(msgs)

    return step, first


SDK_SESSION = "ctxmem Agents SDK session (masking-200k)"
SDK_PEER = "agents SQLiteSession (the SDK's own)"


def agents_sdk_steps(base: Sequence[Message], tmp: Path) -> tuple[dict[str, Callable[[Sequence[Message]], None]], float]:
    """The OpenAI Agents SDK's session protocol as ``Runner`` drives it each turn: the new
    round's items added (``add_items``), then the history for the next model call
    (``get_items``). ctxmem's :class:`~ctxmem.integrations.agents_sdk.CtxmemSession` with a
    preset hands back the preset's context; the SDK's own ``SQLiteSession`` hands back every
    stored item (no budget: the whole session). Both hold the 1M-token session in a SQLite
    file, both run on one event loop. Returns the steps (empty without the SDK installed)
    and ctxmem's first ``get_items`` (a cold build) in seconds."""
    import asyncio

    try:
        from agents import SQLiteSession
    except ImportError:
        return {}, float("nan")
    from ctxmem.integrations.agents_sdk import CtxmemSession
    from ctxmem.integrations.responses import to_responses

    loop = asyncio.new_event_loop()
    ours = CtxmemSession("bench", str(tmp / "sdk.db"), preset="masking-200k")
    theirs = SQLiteSession("bench", str(tmp / "sdk-peer.db"))
    items: list[Any] = to_responses(list(base))
    for s in (ours, theirs):
        loop.run_until_complete(s.add_items(items))
    loop.run_until_complete(theirs.get_items())
    forget_line_features()  # its first build as cold as in a new process
    t0 = time.perf_counter()
    loop.run_until_complete(ours.get_items())
    first = time.perf_counter() - t0

    def step_of(session: Any) -> Callable[[Sequence[Message]], None]:
        def step(pair: Sequence[Message]) -> None:
            loop.run_until_complete(session.add_items(to_responses(list(pair))))
            loop.run_until_complete(session.get_items())

        return step

    return {SDK_SESSION: step_of(ours), SDK_PEER: step_of(theirs)}, first


def run(quick: bool = False) -> list[Row]:
    turns = 150 if quick else 1200
    grow = 10 if quick else 50
    # CTXMEM_BENCH_SEED: another session of the same shape (the default is the README's run)
    msgs = synthetic_session(turns + grow, seed=int(os.environ.get("CTXMEM_BENCH_SEED", "11")), output_scale=1.16)
    base, extra = msgs[: len(msgs) - 2 * grow], msgs[len(msgs) - 2 * grow :]
    presets = sorted(available_presets())
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base_db = tmp / "base.db"
        sid = import_session(base, base_db)
        contenders: list[Contender] = []
        refused: dict[str, str] = {}
        for name in presets:
            got = open_contender(name, base_db, sid, tmp)
            if isinstance(got, str):
                refused[name] = got
            else:
                contenders.append(got)
        window = load_preset("window-200k").builder().budget.available
        peers = langchain_peers(base, window)
        peers[MIDDLEWARE], mw_first = middleware_step(base, tmp / "middleware.db")
        sdk_steps, sdk_first = agents_sdk_steps(base, tmp)
        peers.update(sdk_steps)
        peer_times = run_turns(contenders, extra, peers)
        lc_exact = statistics.median(peer_times["trim_messages (exact counter)"])
        lc_memo = statistics.median(peer_times["trim_messages (memoized counter)"])
        lc_memo_cpu = statistics.median(peer_times["trim_messages (memoized counter) CPU"])
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        # the session as it ended (a preset that refused mid-run stopped growing its history)
        total = max((c.history.total for c in contenders), default=0)
        for c in contenders:
            if c.refused and len(c.turns) < 2:
                refused[c.name] = c.refused
                c.store.close()
                continue
            per_turn = statistics.median(c.turns)
            note = (f"vs memoized trim_messages {per_turn / lc_memo:.2g}× ({lc_memo * 1000:.2f} ms); "
                    f"cold first build {c.cold_s * 1000:.0f} ms, session load {c.load_s * 1000:.0f} ms; "
                    f"{c.over_budget} over budget, {c.unpaired} unpaired in {c.checked} builds; "
                    f"max {max(c.turns) * 1000:.1f} ms; CPU median {statistics.median(c.cpu) * 1000:.2f} ms "
                    f"vs memoized trim_messages CPU {lc_memo_cpu * 1000:.2f} ms "
                    f"({statistics.median(c.cpu) / lc_memo_cpu:.2g}×); "
                    f"{total / 1e6:.2f}M tokens, load avg {load:.1f}" + (f"; {c.refused}" if c.refused else ""))
            # a preset that refused part of the way is not scored on the turns it took
            rows.append(Row("context", f"{c.name}: session-backed per-turn build"
                            + (f" (first {len(c.turns)} turns, then refused)" if c.refused else ""), per_turn,
                            "trim_messages (exact counter)", lc_exact, "s", "" if c.refused else "≤ 2 ms", note=note))
            rows.append(Row("context", f"{c.name}: cold first build", c.cold_s, "trim_messages (exact counter)",
                            lc_exact, "s", "≤ 150 ms", note=f"session load {c.load_s * 1000:.0f} ms before it; "
                            "right after the import (a preset that carries facts reads every tool output once)"))
            rows.append(Row("context", f"{c.name}: cold first build, reopened (fresh process)", c.reopen_cold_s,
                            "trim_messages (exact counter)", lc_exact, "s", "≤ 150 ms",
                            note=f"a new process resuming the session: session load {c.reopen_load_s * 1000:.0f} ms "
                                 "before it; the facts index restored from the store"))
            c.store.close()
        for name, why in refused.items():
            rows.append(Row("context", f"{name}: session-backed", float("nan"), "—", float("nan"), "s", note=why))
        mw = statistics.median(peer_times[MIDDLEWARE])
        rows.append(Row("context", f"{MIDDLEWARE} per model call", mw, "trim_messages (memoized counter)", lc_memo,
                        "s", note=f"the graph's list in, the new round recorded durably (a commit), the context out "
                                  f"as LangChain messages; CPU median {statistics.median(peer_times[MIDDLEWARE + ' CPU']) * 1000:.2f} ms; "
                                  f"its first call recorded the {total / 1e6:.2f}M-token list and built cold in "
                                  f"{mw_first:.2f} s; vs trim_messages exact {mw / lc_exact:.2g}×"))
        if sdk_steps:
            sdk, peer = statistics.median(peer_times[SDK_SESSION]), statistics.median(peer_times[SDK_PEER])
            rows.append(Row("context", f"{SDK_SESSION} per turn", sdk, SDK_PEER, peer, "s",
                            note=f"add_items of the new round, then get_items: the preset's context (≤ 200K tokens) "
                                 f"against every stored item ({total / 1e6:.2f}M tokens, no budget); CPU median "
                                 f"{statistics.median(peer_times[SDK_SESSION + ' CPU']) * 1000:.2f} ms vs "
                                 f"{statistics.median(peer_times[SDK_PEER + ' CPU']) * 1000:.2f} ms; ctxmem's first "
                                 f"get_items built cold in {sdk_first:.2f} s"))
        else:
            rows.append(Row("context", f"{SDK_SESSION} per turn", float("nan"), SDK_PEER, float("nan"), "s",
                            note="openai-agents is not installed (pip install 'ctxmem[agents]')"))
        rows.append(Row("context", "trim_messages (memoized counter) per turn", lc_memo,
                        "trim_messages (exact counter)", lc_exact, "s",
                        note="the peer's own best: a 5-line per-message memo"))
    return rows
