"""The Agent keeps what a preset and a built context promise, on a real SQLite session.

* The held-out preset probe: an Agent given only a preset file (window 60,000; no
  ``context_window``, no tokenizer) sends a first request that fills 70–100% of that
  window counted independently with o200k, and the recall tool it is offered returns the
  original of a masked output.
* For every shipped preset, and for pipelines whose core (window, summarization) shows no
  handles of its own but whose retrieved lines do: the tools a built context names are
  offered with the request, every handle the context shows can be recalled, and the recall
  returns the original.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ctxmem.agent import Agent
from ctxmem.clients import ModelRequest, ScriptedClient
from ctxmem.config import available_presets
from ctxmem.context import CONTEXT_TOOLS
from ctxmem.events import ModelCallEvent, ToolResultEvent
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import (
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    to_anthropic,
    tool_to_anthropic,
)
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import count_request, get_tokenizer

#: a handle as contexts show it: in a masked placeholder or a retrieved line
HANDLE = re.compile(r"handle ([A-Za-z0-9_\-]+)(?: \(recall it|\])")


@pytest.fixture(scope="module")
def long_session_jsonl() -> bytes:
    """~250K o200k tokens of the kernel workload's shape (1 task + 300 tool turns)."""
    msgs = synthetic_session(300, 7)
    return "\n".join(json.dumps(m, ensure_ascii=False) for m in to_anthropic(msgs)).encode()


def _session(tmp_path: Path, data: bytes) -> tuple[SQLiteStore, Session]:
    store = SQLiteStore(str(tmp_path / "s.db"))
    session = import_jsonl(store, data, source="synthetic(300, 7)", tokenizers=["o200k_base"])
    return store, session


def _texts(messages: Any) -> str:
    out: list[str] = []
    for m in messages:
        for b in m.content:
            if isinstance(b, TextBlock | ToolResultBlock):
                out.append(b.text)
    return "\n".join(out)


class Recaller:
    """A policy that recalls every handle its first context shows (one tool call each), then stops."""

    def __init__(self) -> None:
        self.handles: list[str] = []
        self.calls = 0

    def __call__(self, req: ModelRequest) -> list[TextBlock | ToolUseBlock] | str:
        self.calls += 1
        if self.calls > 1:
            return "done"
        self.handles = sorted(set(HANDLE.findall(_texts(req.messages))))
        offered = {t.name for t in req.tools}
        if not self.handles or "recall" not in offered:
            return "done"
        # first, last and one retrieved handle are enough to show every kind works
        picks = sorted({self.handles[0], self.handles[-1], *self._retrieved(req)})
        return [ToolUseBlock(f"recall_{i}", "recall", {"handle": h}) for i, h in enumerate(picks)]

    @staticmethod
    def _retrieved(req: ModelRequest) -> list[str]:
        text = _texts(req.messages[-1:])
        return re.findall(r"· handle ([A-Za-z0-9_\-]+)\]", text)[:1]


def _originals(session: Session) -> dict[str, str]:
    return {
        se.event.result.tool_use_id: se.event.result.text
        for se in session.events()
        if isinstance(se.event, ToolResultEvent)
    }


def _recalls(session: Session) -> dict[str, ToolResultBlock]:
    return {
        se.event.result.tool_use_id: se.event.result
        for se in session.events()
        if isinstance(se.event, ToolResultEvent) and se.event.result.tool_use_id.startswith("recall_")
    }


def test_held_out_preset_probe(tmp_path: Path, long_session_jsonl: bytes) -> None:
    preset = tmp_path / "pipeline-60k.toml"
    preset.write_text(
        'type = "pipeline"\n[budget]\ncontext_window = 60000\n', encoding="utf-8"
    )
    store, session = _session(tmp_path, long_session_jsonl)
    with store:
        o200k = get_tokenizer("o200k_base")
        assert store.totals(session.id, "o200k_base").total > 200_000  # far over the window
        policy = Recaller()
        client = ScriptedClient(policy=policy, model="some-unknown-model")
        agent = Agent(client, session, preset=str(preset))
        result = agent.run_sync()
        assert result.stop_reason == "end_turn"
        first = client.requests[0]
        tools = [tool_to_anthropic(t) for t in first.tools]
        sent = count_request(first.messages, o200k, system=first.system, tools=tools).total
        assert 0.70 * 60_000 <= sent <= 60_000, sent
        # what the agent estimated is what o200k counts (exact, incremental, no recount)
        assert agent.tokenizer_name == "o200k_base"
        call = next(se.event for se in session.events() if isinstance(se.event, ModelCallEvent))
        assert call.estimated_input_tokens is not None
        assert abs(call.estimated_input_tokens - sent) <= 0.01 * sent, (call.estimated_input_tokens, sent)
        # the recall tool is offered, and returns the original of a masked output
        assert "recall" in {t.name for t in first.tools}
        assert any(h in _texts(first.messages) for h in policy.handles)
        recalls, originals = _recalls(session), _originals(session)
        assert recalls, "the policy saw handles and called recall"
        calls = [u for m in session.messages() for u in m.tool_uses if u.id.startswith("recall_")]
        for use in calls:
            result_block = recalls[use.id]
            assert not result_block.is_error
            assert result_block.text == originals[use.input["handle"]]
            assert len(result_block.text) > 200  # a real output came back, not a placeholder
        # the masked output really was masked in the context the model saw
        masked = [h for h in policy.handles if f"handle {h} (recall it" in _texts(first.messages)]
        assert masked and originals[masked[0]] not in _texts(first.messages)


#: pipelines whose core shows no handles itself: the retrieved lines do
CORE_PIPELINES = {
    "pipeline-window-core": 'type = "pipeline"\n[params]\ncore = "window"\n[budget]\ncontext_window = 60000\n',
    "pipeline-summarization-core": (
        'type = "pipeline"\n[params]\ncore = "summarization"\n[budget]\ncontext_window = 60000\n'
    ),
}


@pytest.mark.parametrize("name", [*sorted(available_presets()), *CORE_PIPELINES])
def test_every_shipped_preset_offers_and_runs_the_tools_its_context_names(
    name: str, tmp_path: Path, long_session_jsonl: bytes
) -> None:
    if name in CORE_PIPELINES:
        (tmp_path / f"{name}.toml").write_text(CORE_PIPELINES[name], encoding="utf-8")
        name = str(tmp_path / f"{name}.toml")
    store, session = _session(tmp_path, long_session_jsonl)
    with store:
        policy = Recaller()
        client = ScriptedClient(policy=policy)
        agent = Agent(client, session, preset=name)
        agent.run_sync()
        first = client.requests[0]
        offered = {t.name for t in first.tools}
        assert offered <= set(CONTEXT_TOOLS)  # the agent itself has no tools here
        text = _texts(first.messages)
        if policy.handles:
            # a context that shows handles promises the tool that expands them
            assert "recall" in offered, f"{name}: handles without a recall tool"
            recalls, originals = _recalls(session), _originals(session)
            assert recalls
            for use in (u for m in session.messages() for u in m.tool_uses if u.id.startswith("recall_")):
                assert not recalls[use.id].is_error, recalls[use.id].text
                assert recalls[use.id].text == originals[use.input["handle"]]
        if "recall" not in offered:
            assert not HANDLE.search(text), f"{name}: a handle is shown but nothing can expand it"
        if name.endswith("-core.toml"):  # retrieval shows handles of outputs the core left out
            assert "recall" in offered and HANDLE.search(text) and _recalls(session), name
        if name in ("masking-200k", "masking-turns-128k", "pipeline-200k"):
            assert policy.handles and _recalls(session), f"{name} masks on this session: its handles were recalled"


def test_an_unknown_recall_handle_is_an_error_the_model_reads(tmp_path: Path, long_session_jsonl: bytes) -> None:
    store, session = _session(tmp_path, long_session_jsonl)
    with store:
        client = ScriptedClient(
            [[ToolUseBlock("recall_x", "recall", {"handle": "nope"})], "done"]
        )
        Agent(client, session, preset="masking-200k").run_sync()
        result = _recalls(session)["recall_x"]
        assert result.is_error and "no tool output with handle 'nope'" in result.text
