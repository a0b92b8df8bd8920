"""Agent suite: what counting costs per turn in a long agent loop, incremental vs recount.

The path timed is the user's: a real :class:`~ctxmem.Agent` with the ``pipeline-200k``
preset resumes a 1M-token, ~2,400-message kernel-shaped session in a SQLite file and runs
1,000 more turns (``--quick``: a small session, 100 turns). Each turn the scripted model
calls one of the session's tools; the tool returns an output taken in turn from the
session's own outputs, so the appended turns look like the history.

* **ctxmem** — everything the agent's tokenizer encodes during the loop (the new blocks
  as the history extends, the pipeline tail's memoized lines), timed through a wrapper
  around that tokenizer and divided by the turns. The per-turn estimate itself is the
  built context's ``tokens_out``, summed from memoized counts: it encodes nothing.
* **peer: recount** — what the Agent did before this change in ``_estimate``: count the
  whole request (``count_request`` over the sent messages, system and tools) with the
  same tokenizer, every turn. Timed on the very requests the agent sent, every tenth
  turn (the cost depends only on the request's size, which is stable under the
  preset's budget).

The note gives the tokens each side encodes per turn, and how many of ctxmem's are the
turn's own new messages (the rest is text the strategy writes: placeholders of newly
masked outputs, the tail's new ledger and retrieval lines, carried facts).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._harness import Row
from ctxmem.agent import Agent, Tool
from ctxmem.clients import ModelRequest, Response, ScriptedClient, Usage
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import ToolResultBlock, ToolUseBlock, to_anthropic, tool_to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import count_request

TOKENIZER = "o200k_base"
PRESET = "pipeline-200k"


class TimedTokenizer:
    """A tokenizer wrapper that adds up the time and tokens of every call."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.id, self.name, self.exact = inner.id, inner.name, inner.exact
        self.seconds = 0.0
        self.tokens = 0

    def count(self, text: str) -> int:
        t0 = time.perf_counter()
        n = int(self.inner.count(text))
        self.seconds += time.perf_counter() - t0
        self.tokens += n
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        t0 = time.perf_counter()
        out = list(self.inner.count_many(texts))
        self.seconds += time.perf_counter() - t0
        self.tokens += sum(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def run(quick: bool = False) -> list[Row]:
    session_turns, loop_turns = (150, 100) if quick else (1200, 1000)
    msgs = synthetic_session(session_turns, seed=11, output_scale=1.16)
    calls = [b for m in msgs for b in m.content if isinstance(b, ToolUseBlock)]
    outputs = {b.tool_use_id: b.text for m in msgs for b in m.content if isinstance(b, ToolResultBlock)}
    script = [(c, outputs[c.id]) for c in calls if c.id in outputs]
    data = "\n".join(json.dumps(m, ensure_ascii=False) for m in to_anthropic(msgs)).encode()
    tmp = tempfile.mkdtemp(prefix="ctxmem-bench-agent-")
    turn = {"n": 0}

    def policy(req: ModelRequest) -> Response:
        use, _ = script[turn["n"] % len(script)]
        return Response(
            (ToolUseBlock(f"bench_{turn['n']:05d}", use.name, dict(use.input)),), "tool_use", Usage(0, 24)
        )

    def tool(name: str) -> Tool:
        def fn(args: dict[str, Any]) -> str:
            out = script[turn["n"] % len(script)][1]
            turn["n"] += 1
            return out

        return Tool(name, fn, f"the session's {name} tool")

    try:
        with SQLiteStore(os.path.join(tmp, "agent.db")) as store:
            session = import_jsonl(store, data, tokenizers=[TOKENIZER])
            total = store.totals(session.id, TOKENIZER).total
            client = ScriptedClient(policy=policy)
            names = sorted({c.name for c, _ in script})
            agent = Agent(client, Session.open(store, session.id), preset=PRESET, tools=[tool(n) for n in names],
                          system="You optimize a Triton kernel.", max_turns=loop_turns)
            history = agent._sync_history()  # load once (stored counts), then time every encode
            timed = TimedTokenizer(history.tokenizer)
            try:
                history.tokenizer = timed  # type: ignore[misc]
            except AttributeError:  # a History that loads its tokenizer lazily
                history._tok = timed  # type: ignore[assignment,attr-defined]
            before = history.total
            t0 = time.perf_counter()
            result = agent.run_sync()
            loop_s = time.perf_counter() - t0
            assert result.turns == loop_turns, result
            ours = timed.seconds / loop_turns
            ours_tokens = timed.tokens / loop_turns
            appended = (agent._sync_history().total - before) / loop_turns
            # the recount the Agent did before: the whole request, every turn
            inner = timed.inner
            recount_s: list[float] = []
            recount_tokens: list[int] = []
            for req in client.requests[::10]:
                tools = [tool_to_anthropic(t) for t in req.tools]
                t1 = time.perf_counter()
                n = count_request(req.messages, inner, system=req.system, tools=tools).total
                recount_s.append(time.perf_counter() - t1)
                recount_tokens.append(n)
            peer = statistics.mean(recount_s)
    finally:
        import shutil

        shutil.rmtree(Path(tmp), ignore_errors=True)
    load = os.getloadavg()[0]
    return [
        Row(
            "agent",
            f"counting per turn ({loop_turns}-turn Agent loop, {PRESET}, {total / 1e6:.2f}M-token session)",
            ours,
            "recount per turn (Agent before)",
            peer,
            "s",
            target="≥ 10× faster",
            note=(
                f"encodes {ours_tokens:,.0f} tokens/turn ({appended:,.0f} appended to the history, the rest the "
                f"strategy's own new text) vs {statistics.mean(recount_tokens):,.0f}; "
                f"whole loop {loop_s:.1f} s ({loop_s / loop_turns * 1000:.1f} ms/turn incl. store writes); "
                f"load avg {load:.1f}"
            ),
        )
    ]


if __name__ == "__main__":
    for row in run(quick=True):
        print(row, f"ratio {row.ratio:.3g}")
