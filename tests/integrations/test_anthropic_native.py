"""Masking preset → Anthropic context_management edits, and pricing server-side clearing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxmem.cli import cli
from ctxmem.context import BuildRequest, History
from ctxmem.errors import ConfigError, ContextOverflowError
from ctxmem.integrations.anthropic_native import (
    BETA,
    PLACEHOLDER,
    ServerClearConfig,
    ServerClearToolUses,
    context_management,
)
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.tokens import Budget


def test_masking_preset_maps_onto_clear_tool_uses(tmp_path: Path) -> None:
    edits = context_management("masking-200k")
    assert edits.betas == (BETA,)
    assert edits.edit == {
        "type": "clear_tool_uses_20250919",
        "trigger": {"type": "input_tokens", "value": int((200_000 - 8_000) * 0.9)},
        "keep": {"type": "tool_uses", "value": 4},
        "clear_at_least": {"type": "input_tokens", "value": int(0.1 * (200_000 - 8_000))},
        "clear_tool_inputs": False,
    }
    assert any("reducers" in n for n in edits.notes) and any("recall" in n for n in edits.notes)
    custom = tmp_path / "m.toml"
    custom.write_text('type = "masking"\n[budget]\ncontext_window = 50000\n[params]\nmode = "turns"\n'
                      'keep_last = 2\nreversible = false\n[params.tools.read_file]\nmask = "never"\n', encoding="utf-8")
    e = context_management(str(custom)).edit
    assert e["trigger"] == {"type": "tool_uses", "value": 3} and e["keep"] == {"type": "tool_uses", "value": 2}
    assert e["exclude_tools"] == ["read_file"]
    with pytest.raises(ConfigError, match="only masking presets"):
        context_management("window-32k")


def history(n_calls: int, tool: str = "compile") -> History:
    msgs = [Message.user("task")]
    for k in range(n_calls):
        msgs.append(Message.assistant(ToolUseBlock(f"t{k}", "read_file" if k == 0 else tool, {"k": k})))
        msgs.append(Message("user", (ToolResultBlock(f"t{k}", f"output {k} " + "word " * 300),)))
    msgs.append(Message.assistant("ok"))
    msgs.append(Message.user("next"))
    return History.from_messages(msgs, "o200k_base")


def build(cfg: ServerClearConfig, h: History, window: int = 100_000) -> list[Message]:
    return list(ServerClearToolUses(cfg).build(BuildRequest(h, Budget(window))).messages)


def cleared(messages: list[Message]) -> list[str]:
    return [r.tool_use_id for m in messages for r in m.tool_results if r.content == PLACEHOLDER]


def test_server_clearing_follows_the_documented_behaviour() -> None:
    h = history(8)
    # under the trigger: the full history, untouched
    assert build(ServerClearConfig(trigger_tokens=h.total + 100, keep=2), h) == h.messages
    # over it: every result but the two most recent tool uses', oldest first
    out = build(ServerClearConfig(trigger_tokens=1000, keep=2), h)
    assert cleared(out) == [f"t{k}" for k in range(6)]
    assert [u.id for m in out for u in m.tool_uses] == [f"t{k}" for k in range(8)]  # inputs kept
    # excluded tools are never cleared
    out = build(ServerClearConfig(trigger_tokens=1000, keep=2, exclude_tools=("read_file",)), h)
    assert cleared(out) == [f"t{k}" for k in range(1, 6)]
    # nothing is cleared when it would free less than clear_at_least
    assert build(ServerClearConfig(trigger_tokens=1000, keep=2, clear_at_least=10**6), h) == h.messages
    # a tool_uses trigger counts tool uses
    assert cleared(build(ServerClearConfig(trigger_tool_uses=8, keep=1), h)) == []
    assert len(cleared(build(ServerClearConfig(trigger_tool_uses=7, keep=1), h))) == 7
    # the server refuses what does not fit, it never truncates
    with pytest.raises(ContextOverflowError):
        build(ServerClearConfig(trigger_tokens=10**6, keep=2), h, window=2000)


def test_tune_cost_prices_server_side_clearing_beside_local_masking() -> None:
    result = CliRunner().invoke(cli, ["tune", "cost", "--synthetic", "120", "--presets", "masking-200k,window-200k",
                                      "--budget", "40k", "--caching", "on", "--anthropic-native", "--json"])
    assert result.exit_code == 0, result.output
    reports = {r["label"]: r for r in json.loads(result.output)["reports"]}
    assert set(reports) == {"masking-200k", "window-200k", "masking-200k → anthropic server"}
    server, local = reports["masking-200k → anthropic server"], reports["masking-200k"]
    assert server["strategy"] == "anthropic_clear_tool_uses" and server["dollars"] > 0
    # the server rewrites the prompt whenever a result leaves 'keep': more compactions than local masking
    assert server["compactions"] > local["compactions"]
