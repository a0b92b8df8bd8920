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
