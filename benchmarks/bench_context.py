"""Context suite: building a 200K context from a 1M-token, ~2,400-message tool-heavy history.

Peers, in the same run:

* **LangChain** ``trim_messages(strategy="last")`` with a tiktoken per-message counter
  (the issue's reference: about 1.6 s per call here) — it re-counts every message on
  every call.
* **naive** — what a loop without ctxmem does: recount the whole history with tiktoken
  every turn and drop the oldest messages until it fits.

ctxmem's figure is the median per-turn build while the history grows one turn at a time
(the steady state of an agent loop: counts are cached, boundaries move only at
compactions), plus a whole-session replay: one build at every turn from the first.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks._harness import Row, timed
from ctxmem.config import load_preset
from ctxmem.context import BuildRequest, History
from ctxmem.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    message_texts,
)
from ctxmem.samples import synthetic_session
from ctxmem.tokens import Budget, get_tokenizer

PRESETS = ("window-200k", "masking-200k", "pipeline-200k", "summarize-128k")


def _to_langchain(msgs: list[Message]) -> list[Any]:
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


def run(quick: bool = False) -> list[Row]:
    import tiktoken
    from langchain_core.messages import BaseMessage, trim_messages

    turns = 150 if quick else 1200
    msgs = synthetic_session(turns, seed=11, output_scale=1.16)
    tok = get_tokenizer("o200k_base")
    enc = tiktoken.get_encoding("o200k_base")
    window = 25_000 if quick else 200_000
    rows: list[Row] = []

    # LangChain peer: trim_messages with a tiktoken per-message counter.
    lc_msgs = _to_langchain(msgs)

    def lc_count(batch: list[BaseMessage]) -> int:
        n = 0
        for m in batch:
            content = m.content if isinstance(m.content, str) else str(m.content)
            n += 3 + len(enc.encode_ordinary(content))
            for call in getattr(m, "tool_calls", None) or ():
                n += len(enc.encode_ordinary(str(call["args"]))) + len(enc.encode_ordinary(call["name"]))
        return n

    def lc_trim() -> None:
        trim_messages(lc_msgs, max_tokens=int(window * 0.9), token_counter=lc_count, strategy="last", start_on="human",
                      include_system=False, allow_partial=False)

    lc_s = timed(lc_trim, repeat=1 if not quick else 2)

    # Naive peer: recount everything, drop oldest until it fits.
    def naive() -> None:
        counts = [3 + sum(len(enc.encode_ordinary(t)) for t in message_texts(m)) for m in msgs]
        total, i = sum(counts), 1
        while total > window * 0.9 and i < len(counts):
            total -= counts[i]
            i += 1

    naive_s = timed(naive, repeat=2)

    # ctxmem: per-turn builds as the history grows (steady state), and a whole replay.
    grow = 40 if quick else 100
    for preset_name in PRESETS:
        preset = load_preset(preset_name)
        budget = Budget(window, preset.budget().reserve_output if not quick else 2000, preset.budget().threshold)
        strategy = preset.strategy()
        history = History.from_messages(msgs[: len(msgs) - 2 * grow], tok)
        strategy.build(BuildRequest(history, budget))  # first build fills per-history caches
        times = []
        for k in range(grow):
            start = len(msgs) - 2 * grow + 2 * k
            history.extend(msgs[start : start + 2])
            t0 = time.perf_counter()
            strategy.build(BuildRequest(history, budget))
            times.append(time.perf_counter() - t0)
        per_turn = statistics.median(times)
        rows.append(Row("context", f"{preset_name}: per-turn build", per_turn, "LangChain trim_messages", lc_s, "s",
                        "≤ 1 ms, ≥ 1000× faster", note=f"naive recount {naive_s * 1000:.0f} ms"))

        # Whole-session replay: a build at every turn, counting each message once.
        fresh = load_preset(preset_name).strategy()
        replay_history = History.from_messages(msgs[:1], tok)
        t0 = time.perf_counter()
        for i in range(1, len(msgs), 2):
            replay_history.extend(msgs[i : i + 2])
            fresh.build(BuildRequest(replay_history, budget))
        replay_s = time.perf_counter() - t0
        rows.append(Row("context", f"{preset_name}: replay {len(msgs) // 2} turns", replay_s, "naive × turns",
                        naive_s * (len(msgs) // 2), "s", "≤ 3 s", note="includes counting each message once"))
    return rows
