"""The public API used wrongly gets a ctxmem error that says what to pass, never a foreign
exception from deep inside, and never a silent wrong result (a hostile-input probe found
each of these)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctxmem.errors import ContextOverflowError, InputError, StoreError, TokenizerError
from ctxmem.messages import Message, TextBlock
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore
from ctxmem.tokens import get_tokenizer


@pytest.mark.parametrize("bad", [None, 5, b"x.db"])
def test_a_store_path_that_is_not_a_path_is_refused_and_no_file_is_made(tmp_path: Path, bad: object) -> None:
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(StoreError, match="needs a file path"):
            SQLiteStore(bad)  # type: ignore[arg-type]
        assert list(tmp_path.iterdir()) == []  # was: files named "None" and "5", with -wal and -shm
    finally:
        os.chdir(here)


def test_message_content_given_as_one_string_is_one_text_block_and_none_is_an_error() -> None:
    assert Message("user", "hello") == Message.user("hello")  # type: ignore[arg-type]  # was: 5 one-letter blocks
    assert Message("user", [TextBlock("a")]).content == (TextBlock("a"),)
    with pytest.raises(InputError, match="content must be a sequence of content blocks, got NoneType") as exc:
        Message("user", None)  # type: ignore[arg-type]
    assert exc.value.field == "content"


def test_a_tokenizer_name_that_is_not_a_string_is_a_tokenizer_error() -> None:
    with pytest.raises(TokenizerError, match="named by a string"):
        get_tokenizer(None)  # type: ignore[arg-type]


def test_one_tokenizer_name_is_one_tokenizer_not_its_characters() -> None:
    s = Session.create(MemoryStore(), tokenizers="heuristic")  # type: ignore[arg-type]
    assert s.info.tokenizers == ("heuristic",)


def test_error_locations_read_as_words() -> None:
    assert str(InputError("bad", line=5, field="tool_use")) == "line 5 field 'tool_use': bad"  # was "line 5:field"
    assert str(InputError("bad", source="f.jsonl", line=5, field="x")) == "f.jsonl:line 5 field 'x': bad"
    assert str(InputError("bad", source="f.jsonl", field="x")) == "f.jsonl field 'x': bad"
    assert "only 1 is available" in str(ContextOverflowError(9, 1))
    assert "only 2 are available" in str(ContextOverflowError(9, 2))


def test_agent_arguments_are_checked_when_the_agent_is_made() -> None:
    from ctxmem.agent import Agent, Tool
    from ctxmem.clients import ScriptedClient
    from ctxmem.errors import ConfigError

    client, session = ScriptedClient([]), Session.create(MemoryStore())
    echo = Tool("echo", lambda a: "ok", "echo")
    cases = [
        ({"tools": ["echo"]}, "tools[0]"),
        ({"tools": {"echo": echo}}, "tools"),
        ({"tools": [Tool("z", 5)]}, "tools[0].fn"),  # type: ignore[arg-type]
        ({"system": 5}, "system"),
        ({"on_resume": "bogus"}, "on_resume"),
        ({"max_turns": -1}, "max_turns"),
        ({"max_tokens": 0}, "max_tokens"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ConfigError) as exc:
            Agent(client, session, preset="window-32k", **kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field, kwargs
    with pytest.raises(ConfigError, match="expected a model client") as exc:
        Agent(None, session, preset="window-32k")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected a ctxmem Session"):
        Agent(client, None, preset="window-32k")  # type: ignore[arg-type]


def test_builder_overrides_are_checked_and_a_size_string_reads_as_tokens() -> None:
    from ctxmem.config import load_preset
    from ctxmem.errors import ConfigError
    from ctxmem.tokens import Budget

    preset = load_preset("window-32k")
    assert preset.builder(context_window="128k").budget.context_window == 128_000  # type: ignore[arg-type]
    for kwargs, field in [({"context_window": True}, "context_window"), ({"context_window": 1000.5}, "context_window"),
                          ({"pinned": -1}, "pinned"), ({"reserve_output": -5}, "reserve_output")]:
        with pytest.raises(ConfigError) as exc:
            preset.builder(**kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field, kwargs
    for bad in ("128k", None, True, 1000.5):
        with pytest.raises(ConfigError, match="whole number of tokens"):
            Budget(bad)  # type: ignore[arg-type]


def test_a_tool_use_with_an_empty_id_or_name_is_refused_at_the_door(tmp_path: Path) -> None:
    from ctxmem.jsonl import import_jsonl
    from ctxmem.messages import ToolUseBlock

    s = Session.create(MemoryStore())
    for block, field in ((ToolUseBlock("", "run", {}), "content[0].id"), (ToolUseBlock("t1", "", {}), "content[0].name")):
        with pytest.raises(InputError, match="must not be empty") as exc:
            s.record(Message.assistant(block))
        assert exc.value.field == field
    assert s.events() == []
    line = b'{"role":"user","content":"go"}\n{"role":"assistant","content":[{"type":"tool_use","id":"","name":"run","input":{}}]}\n'
    with SQLiteStore(tmp_path / "x.db") as store, pytest.raises(InputError, match="must not be empty"):
        import_jsonl(store, line)


def test_a_system_prompt_in_metadata_that_is_not_text_is_refused() -> None:
    """It was stored, exported, and then the export could not be imported."""
    for bad in (5, ["a", "b"], {"x": 1}):
        with pytest.raises(InputError, match="system prompt must be a string") as exc:
            Session.create(MemoryStore(), metadata={"system": bad})
        assert exc.value.field == "metadata.system"


def test_a_system_prompt_bigger_than_the_window_is_named_as_such_by_the_pipeline() -> None:
    """pipeline-200k said "the restated facts alone exceed the budget" with no facts at all."""
    from ctxmem.config import load_preset

    s = Session.create(MemoryStore())
    s.record(Message.user("go"))
    builder = load_preset("pipeline-200k").builder(context_window=2000)
    with pytest.raises(ContextOverflowError, match=r"the system prompt and tools \(\d+ tokens\) alone exceed") as exc:
        builder.build(s, system="rule " * 3000, record=False)
    assert "restated facts" not in str(exc.value)


def test_model_call_usage_is_checked() -> None:
    s = Session.create(MemoryStore())
    with pytest.raises(InputError, match="unknown field") as exc:
        s.record_model_call("m", foo=1)
    assert exc.value.field == "foo"
    with pytest.raises(InputError, match="must be 0 or more") as exc:
        s.record_model_call("m", input_tokens=-5)  # it was stored, skewing calibration and cost
    assert exc.value.field == "input_tokens"
    assert s.events() == []
    s.record_model_call("m", input_tokens=5, latency_s=0.25)


def test_a_last_turn_that_answers_only_some_calls_is_refused_by_every_build() -> None:
    """A tool node that answered one of two parallel calls: the context went to the model
    as it was, and a provider refuses it."""
    from ctxmem.config import load_preset
    from ctxmem.errors import InvalidConversationError
    from ctxmem.messages import ToolUseBlock

    s = Session.create(MemoryStore())
    s.record(Message.user("q"))
    s.record(Message.assistant(ToolUseBlock("c1", "run", {}), ToolUseBlock("c2", "run", {})))
    s.record_tool_result("c1", "r1")
    for name in ("window-32k", "masking-200k", "pipeline-200k", "summarize-128k"):
        with pytest.raises(InvalidConversationError, match="tool call c2 of message 1 has no result") as exc:
            load_preset(name).builder().build(s, record=False)
        assert exc.value.field == "messages"
    s.record_tool_result("c2", "r2")
    load_preset("window-32k").builder().build(s, record=False)


def test_recall_refuses_a_max_chars_outside_its_range() -> None:
    """max_chars 0 or -1 was read as "no cap" (the 50,000 default), whatever the model meant."""
    from ctxmem.context import run_context_tool
    from ctxmem.messages import ToolUseBlock

    s = Session.create(MemoryStore())
    s.record(Message.user("go"))
    s.record(Message.assistant(ToolUseBlock("c1", "read", {})))
    s.record_tool_result("c1", "x" * 5000)
    for bad in (0, -1, 50, 10**7, "lots", True):
        with pytest.raises(InputError, match="'max_chars' must be a whole number from 100 to 200000") as exc:
            run_context_tool("recall", {"handle": "c1", "max_chars": bad}, session=s)
        assert exc.value.field == "max_chars"
    for ok in (500, 500.0, "500"):
        assert run_context_tool("recall", {"handle": "c1", "max_chars": ok}, session=s).startswith("x" * 500 + "\n…")
