"""JSONL import/export: lossless round trips, exact token totals, and bad input that changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from ctxmem.errors import InputError, InvalidConversationError, StoreError, UnknownNameError
from ctxmem.jsonl import export_lines, import_file, import_jsonl, parse_jsonl
from ctxmem.messages import Message, ToolUseBlock, to_anthropic, to_openai
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore
from generators import conversations
from support import tiktoken_encoding_or_skip


def _jsonl(objs: list[Any]) -> bytes:
    return "\n".join(json.dumps(o, ensure_ascii=False) for o in objs).encode("utf-8") + b"\n"


# --------------------------------------------------------------------------- round trips


@settings(max_examples=20)
@given(conv=conversations(max_turns=4, allow_pending=True))
def test_anthropic_export_import_round_trip(store: Any, conv: list[Message]) -> None:
    s = Session.create(store, metadata={"system": "You are terse."})
    s.record_many(conv)
    data = "\n".join(export_lines(s)).encode()
    again = import_jsonl(store, data, source="x.jsonl")
    assert again.messages() == conv
    assert again.info.metadata["system"] == "You are terse."
    assert again.info.metadata["source"] == "x.jsonl"


@settings(max_examples=20)
@given(conv=conversations(max_turns=4, openai_compatible=True, allow_pending=True))
def test_openai_export_import_round_trip(store: Any, conv: list[Message]) -> None:
    s = Session.create(store, metadata={"system": "sys"})
    s.record_many(conv)
    data = "\n".join(export_lines(s, fmt="openai")).encode()
    again = import_jsonl(store, data, fmt="openai")
    assert again.messages() == conv
    assert again.info.metadata["system"] == "sys"


def test_blank_lines_and_string_content_are_accepted() -> None:
    data = b'\n{"system": "be kind"}\n\n{"role": "user", "content": "hi"}\n   \n'
    assert parse_jsonl(data) == ("be kind", [Message.user("hi")])


def test_a_final_unanswered_tool_use_imports_as_pending(sqlite_store: SQLiteStore) -> None:
    data = _jsonl([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t9", "name": "compile", "input": {}}]},
    ])
    s = import_jsonl(sqlite_store, data)
    assert s.pending_tool_uses() == [ToolUseBlock("t9", "compile", {})]


# --------------------------------------------------------------------------- bad input

_GOOD = [
    {"role": "user", "content": "task"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a b"}]},
]


#: (id, extra fields of an assistant line, the field named, a phrase of the error)
_MALFORMED_OPENAI_ASSISTANT: list[tuple[str, dict[str, Any], str, str]] = [
    ("reasoning-parts-and-signatures-differ", {"reasoning_content": "ab", "reasoning_parts": ["a", "b"],
     "reasoning_signature": ["s"]}, "reasoning_signature", "1 signature for 2 reasoning_parts"),
    ("reasoning-part-not-a-string", {"reasoning_content": "ab", "reasoning_parts": ["a", 2],
     "reasoning_signature": ["s", "t"]}, "reasoning_parts[1]", "must be a string"),
    ("reasoning-not-a-string", {"reasoning_content": 5}, "reasoning_content", "must be a string"),
    ("signature-not-a-string", {"reasoning_content": "r", "reasoning_signature": 5},
     "reasoning_signature", "must be a string"),
    ("signature-false", {"reasoning_content": "r", "reasoning_signature": False},
     "reasoning_signature", "must be a string"),
    ("signature-list-without-parts", {"reasoning_content": "r", "reasoning_signature": ["s"]},
     "reasoning_signature", "needs 'reasoning_parts'"),
    ("redacted-reasoning-int", {"redacted_reasoning": 5}, "redacted_reasoning", "must be a list of strings"),
    ("redacted-reasoning-string", {"redacted_reasoning": "abc"}, "redacted_reasoning",
     "must be a list of strings"),
    ("redacted-reasoning-item-int", {"redacted_reasoning": [5]}, "redacted_reasoning[0]", "must be a string"),
]


def _bad_cases() -> list[Any]:
    good = _jsonl(_GOOD)
    lines = good.split(b"\n")
    return [
        pytest.param(good + b'{"role": "user", "content": "unterminated\n', "anthropic", InputError, 4, None,
                     "malformed JSON", id="malformed-json"),
        pytest.param(_jsonl([*_GOOD, {"role": "robot", "content": "beep"}]), "anthropic", InputError, 4, "role",
                     "robot", id="unknown-role"),
        pytest.param(_jsonl([*_GOOD, {"role": "assistant", "content": "ok"},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]),
                     "anthropic", InvalidConversationError, 5, "tool_use_id", "nope", id="orphan-tool-result"),
        pytest.param(lines[0] + b"\n" + lines[1][:-2] + b' "\xff\xfe"}]}\n' + lines[2] + b"\n", "anthropic",
                     InputError, 2, None, "UTF-8", id="invalid-utf8"),
        pytest.param(_jsonl([*_GOOD, {"role": "user", "content": [{"type": "image", "source": {}}]}]), "anthropic",
                     InputError, 4, "type", "image", id="unknown-block"),
        pytest.param(_jsonl([*_GOOD, {"role": "user", "content": [{"type": "tool_use", "id": "u", "name": "x",
                                                                     "input": {}}]}]),
                     "anthropic", InvalidConversationError, 4, "content", "tool_use", id="tool-use-in-user-message"),
        pytest.param(_jsonl([*_GOOD[:2], {"role": "user", "content": [
                                 {"type": "tool_result", "tool_use_id": "t1", "content": "a"},
                                 {"type": "tool_result", "tool_use_id": "t1", "content": "b"}]}]),
                     "anthropic", InvalidConversationError, 3, "tool_use_id", "already has a result",
                     id="second-result-for-one-call"),
        pytest.param(_jsonl([*_GOOD, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}]),
                     "anthropic", InvalidConversationError, 4, "tool_use_id", "already has a result",
                     id="second-result-in-a-later-message"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}, {"role": "wizard", "content": "x"}]), "openai",
                     InputError, 2, "role", "wizard", id="openai-unknown-role"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}]),
                     "openai", InvalidConversationError, 2, "tool_use_id", "zz", id="openai-orphan-tool-result"),
        pytest.param(_jsonl([{"role": "user", "content": "q"},
                             {"role": "assistant", "tool_calls": [{"id": "a", "type": "function",
                                                                   "function": {"name": "f", "arguments": "{bad"}}]}]),
                     "openai", InputError, 2, "tool_calls.function.arguments", "not valid JSON", id="openai-bad-arguments"),
        pytest.param(b'{"role": "user", "content": "q"}\n[1, 2]\n', "openai", InputError, 2, None, "object",
                     id="openai-not-an-object"),
        # values ctxmem cannot store: the line and the path of the value, never a traceback
        pytest.param(good + _call_line(b'{"x": "ok", "y": ["\\ud800"]}'), "anthropic", InputError, 4,
                     "content[0].input.y[0]", "lone surrogate", id="lone-surrogate-in-tool-input"),
        pytest.param(good + b'{"role": "user", "content": [{"type": "text", "text": "a\\udc00b"}]}\n', "anthropic",
                     InputError, 4, "content[0].text", "lone surrogate", id="lone-surrogate-in-text"),
        pytest.param(good + b'{"role": "user", "content": "x", "meta": {"\\ud800k": 1}}\n', "anthropic",
                     InputError, 4, 'meta["\\ud800k"]', "in the key", id="lone-surrogate-in-a-key"),
        pytest.param(good + _call_line(b'{"x": NaN}'), "anthropic", InputError, 4, "content[0].input.x", "NaN",
                     id="nan-in-tool-input"),
        pytest.param(good + _call_line(b'{"x": {"y": [1, -Infinity]}}'), "anthropic", InputError, 4,
                     "content[0].input.x.y[1]", "-Infinity", id="infinity-in-tool-input"),
        pytest.param(good + _call_line(b'{"big": 1e999}'), "anthropic", InputError, 4, "content[0].input.big",
                     "Infinity", id="overflowing-number"),
        pytest.param(good + _call_line(b'{"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"), "anthropic", InputError, 4,
                     "content[0].input.x[0][0][0]…(×255)", "deeper than 256", id="10000-deep-tool-input"),
        pytest.param(good + _call_line(b'{"x": ' + b"[" * 300 + b"]" * 300 + b"}"), "anthropic", InputError, 4,
                     "content[0].input.x[0][0][0]…(×255)", "deeper than 256", id="300-deep-tool-input"),
        pytest.param(good + b'{"role": "user", "content": "x", "extra": ' + b"{\"k\": " * 10_000 + b"1"
                     + b"}" * 10_000 + b"}\n", "anthropic", InputError, 4, "extra.k.k.k…(×258)",
                     "deeper than 256", id="10000-deep-object-anywhere"),
        pytest.param(b"\xff\xfe" + "{}\n".encode("utf-16-le"), "anthropic", InputError, 1, None, "UTF-16",
                     id="utf16-bom"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}]) + _openai_call(b'{\\"x\\": NaN}'), "openai",
                     InputError, 2, "tool_calls[0].function.arguments.x", "NaN", id="openai-nan-in-arguments"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}]) + _openai_call(b'{\\"x\\": \\"\\\\ud800\\"}'), "openai",
                     InputError, 2, "tool_calls[0].function.arguments.x", "lone surrogate",
                     id="openai-surrogate-in-arguments"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}])
                     + _openai_call(b'{\\"x\\": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"), "openai",
                     InputError, 2, "tool_calls[0].function.arguments.x[0][0][0]…(×255)", "deeper than 256",
                     id="openai-10000-deep-arguments"),
        pytest.param(json.dumps({"role": "user", "content": "q\ud800"}).encode() + b"\n", "openai", InputError, 1, "content",
                     "lone surrogate", id="openai-surrogate-in-content"),
        # an integer past Python's 4300-digit limit for int(str): the line (and field), never a traceback
        pytest.param(good + _call_line(b'{"n": ' + b"9" * 5000 + b"}"), "anthropic", InputError, 4, None,
                     "write the number as a string", id="5000-digit-integer"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}]) + b'{"role": "assistant", "content": "x", "n": '
                     + b"9" * 5000 + b"}\n", "openai", InputError, 2, None, "write the number as a string",
                     id="openai-5000-digit-integer"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}]) + _openai_call(b'{\\"n\\": ' + b"9" * 5000 + b"}"),
                     "openai", InputError, 2, "tool_calls[0].function.arguments", "write the number as a string",
                     id="openai-5000-digit-integer-in-arguments"),
        # malformed OpenAI fields: refused with the field, never a traceback nor a silent rewrite
        *(pytest.param(_jsonl([{"role": "user", "content": "q"}, {"role": "assistant", "content": "x", **extra}]),
                       "openai", InputError, 2, field, needle, id=f"openai-{name}")
          for name, extra, field, needle in _MALFORMED_OPENAI_ASSISTANT),
        *(pytest.param(_jsonl([{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [
                           {"id": "c1", "type": "function", "function": {"name": name, "arguments": "{}"}}]}]),
                       "openai", InputError, 2, "tool_calls[0].function.name", needle, id=f"openai-tool-name-{needle}")
          for name, needle in [(None, "null"), ({"a": 1}, "an object"), (5, "a number")]),
        *(pytest.param(_jsonl([{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [
                           {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                               {"role": "tool", "tool_call_id": "c1", "content": "x", "is_error": value}]),
                       "openai", InputError, 3, "is_error", "'is_error' must be true or false",
                       id=f"openai-is-error-{value}")
          for value in ["false", "yes", 1, None]),
        # tool lines merge into one message: an error about one result names that result's line
        pytest.param(_jsonl([*_OPENAI_CALLS, {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                                             {"role": "tool", "tool_call_id": "zz", "content": "bad"}]),
                     "openai", InvalidConversationError, 4, "tool_use_id", "'zz'", id="openai-orphan-second-tool-line"),
        pytest.param(b"\n\n" + _jsonl([*_OPENAI_CALLS, {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                                                     {"role": "tool", "tool_call_id": "c9", "content": "bad"}]),
                     "openai", InvalidConversationError, 6, "tool_use_id", "'c9'",
                     id="openai-orphan-after-blank-lines"),
        pytest.param(_jsonl([*_OPENAI_CALLS, {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                                             {"role": "tool", "tool_call_id": "c1", "content": "again"}]),
                     "openai", InvalidConversationError, 4, "tool_use_id", "already has a result",
                     id="openai-second-result-on-the-next-tool-line"),
        pytest.param(_jsonl([{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [
                                 {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                                 {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                             {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                             {"role": "user", "content": "too soon"}]),
                     "openai", InvalidConversationError, 4, "content[1]", "'c2'", id="openai-text-before-a-result"),
    ]


_OPENAI_CALLS: list[Any] = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
]


def _call_line(input_json: bytes, call_id: bytes = b"t2") -> bytes:
    return (b'{"role": "assistant", "content": [{"type": "tool_use", "id": "' + call_id + b'", "name": "run", "input": '
            + input_json + b"}]}\n")


def _openai_call(arguments: bytes) -> bytes:
    return (b'{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", '
            b'"function": {"name": "run", "arguments": "' + arguments + b'"}}]}\n')


def _snapshot(store: SQLiteStore) -> tuple[Any, ...]:
    tables = ("sessions", "events", "blobs", "token_counts", "event_tokens")
    counts = tuple(store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
    sessions = [(i.id, i.head_event_id, Session(store, i.id).messages()) for i in store.list_sessions()]
    return counts, sessions


@pytest.mark.parametrize(("data", "fmt", "exc_type", "line", "field", "needle"), _bad_cases())
def test_bad_input_names_line_and_field_and_changes_nothing(
    tmp_path: Path, db_path: Path, data: bytes, fmt: str, exc_type: type, line: int, field: str | None, needle: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    with SQLiteStore(db_path) as store:
        existing = Session.create(store, title="existing", tokenizers=["heuristic"])
        existing.record_many(synthetic_session(3, seed=2))
        before = _snapshot(store)
        with pytest.raises(exc_type) as exc:
            import_file(store, path, fmt=fmt, tokenizers=["heuristic"])  # type: ignore[arg-type]
        err = exc.value
        assert err.line == line and err.field == field
        assert str(path) in str(err) and f"line {line}" in str(err) and needle in str(err)
        assert _snapshot(store) == before  # no partial session, nothing lost
        assert store.integrity_check() == "ok"


def test_unknown_tokenizer_says_did_you_mean_and_changes_nothing(sqlite_store: SQLiteStore) -> None:
    Session.create(sqlite_store, session_id="keep").record(Message.user("kept"))
    before = _snapshot(sqlite_store)
    with pytest.raises(UnknownNameError) as exc:
        import_jsonl(sqlite_store, _jsonl(_GOOD), tokenizers=["o200k_bse"])
    assert exc.value.name == "o200k_bse"
    assert "Did you mean 'o200k_base'" in str(exc.value)
    assert _snapshot(sqlite_store) == before


def test_unknown_format_is_an_input_error() -> None:
    with pytest.raises(InputError) as exc:
        parse_jsonl(b"", fmt="xml")  # type: ignore[arg-type]
    assert exc.value.field == "format"


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "the file is empty"),
        (b"\xef\xbb\xbf", "the file is empty"),
        (b"\n  \n\t\r\n", "only blank lines"),
        (b'{"system": "you are terse"}\n\n', "only a system prompt"),
    ],
    ids=["empty", "bom-only", "blank-lines", "system-only"],
)
@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_a_file_without_messages_says_so_and_creates_nothing(sqlite_store: SQLiteStore, data: bytes, what: str,
                                                             fmt: str) -> None:
    if fmt == "openai" and b"system" in data:
        data = b'{"role": "system", "content": "you are terse"}\n'
    before = _snapshot(sqlite_store)
    with pytest.raises(InputError) as exc:
        import_jsonl(sqlite_store, data, source="t.jsonl", fmt=fmt)  # type: ignore[arg-type]
    assert "no messages to import" in str(exc.value) and what in str(exc.value) and "nothing was imported" in str(exc.value)
    assert str(exc.value).startswith("t.jsonl: ")
    assert _snapshot(sqlite_store) == before and sqlite_store.list_sessions() == []


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_a_utf8_bom_is_accepted(sqlite_store: SQLiteStore, fmt: str) -> None:
    conv = synthetic_session(2, seed=5)
    body = _jsonl(to_anthropic(conv)) if fmt == "anthropic" else _jsonl(to_openai(conv))
    s = import_jsonl(sqlite_store, b"\xef\xbb\xbf" + body, fmt=fmt)  # type: ignore[arg-type]
    assert s.messages() == conv
    with pytest.raises(InputError):  # only at the start of the file: elsewhere it is not JSON
        import_jsonl(sqlite_store, body + b"\xef\xbb\xbf" + body, fmt=fmt)  # type: ignore[arg-type]
    assert len(sqlite_store.list_sessions()) == 1


def test_the_session_and_its_events_are_one_write(sqlite_store: SQLiteStore) -> None:
    """The import creates the session with its events in one transaction: a failure inside
    that transaction (here: the id is taken) leaves no session and no event behind."""
    Session.create(sqlite_store, session_id="taken")
    before = _snapshot(sqlite_store)
    for fmt, body in (("anthropic", _jsonl(_GOOD)), ("openai", _jsonl(to_openai(synthetic_session(2, seed=1))))):
        with pytest.raises(InputError) as exc:
            import_jsonl(sqlite_store, body, fmt=fmt, session_id="taken", tokenizers=["heuristic"])  # type: ignore[arg-type]
        assert exc.value.field == "session_id"
        assert _snapshot(sqlite_store) == before


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_a_failure_after_the_events_are_written_takes_the_session_back(sqlite_store: SQLiteStore, fmt: str) -> None:
    """Fault injection at the last insert of the import's transaction (the running totals):
    the session row and every event row written before it are rolled back with it."""
    conv = synthetic_session(3, seed=4)
    body = _jsonl(to_anthropic(conv)) if fmt == "anthropic" else _jsonl(to_openai(conv))
    sqlite_store.conn.execute(
        "CREATE TEMP TRIGGER fail_totals BEFORE INSERT ON event_tokens BEGIN SELECT RAISE(ABORT, 'injected'); END"
    )
    with pytest.raises(StoreError, match="injected"):
        import_jsonl(sqlite_store, body, fmt=fmt, tokenizers=["heuristic"])  # type: ignore[arg-type]
    assert sqlite_store.list_sessions() == []
    assert [sqlite_store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "blobs")] == [0, 0]
    sqlite_store.conn.execute("DROP TRIGGER fail_totals")
    assert import_jsonl(sqlite_store, body, fmt=fmt, tokenizers=["heuristic"]).messages() == conv  # type: ignore[arg-type]


def test_nan_is_never_stored_and_export_is_strict_json(sqlite_store: SQLiteStore) -> None:
    with pytest.raises(InputError):
        import_jsonl(sqlite_store, _jsonl(_GOOD[:1]) + _call_line(b'{"x": NaN}'))
    s = import_jsonl(sqlite_store, _jsonl(_GOOD[:1]) + _call_line(b'{"x": 1.5}'))
    # a NaN written by an older ctxmem (straight into the table): export names it, never writes invalid JSON
    sqlite_store.conn.execute(
        "UPDATE blobs SET text = '[\"run\",{\"x\":NaN}]' WHERE id = (SELECT blob_id FROM events WHERE kind = 'tool_call')"
    )
    with pytest.raises(StoreError) as exc:
        list(export_lines(Session.open(sqlite_store, s.id)))
    assert "line 2" in str(exc.value) and "content[0].input.x" in str(exc.value) and "NaN" in str(exc.value)


# --------------------------------------------------------------------------- the CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from ctxmem.cli import main; sys.exit(main())", *args],
        capture_output=True, text=True, timeout=300,
    )


def test_cli_bad_input_is_one_clear_line(tmp_path: Path, db_path: Path) -> None:
    pytest.importorskip("ctxmem.cli", reason="the CLI is not written yet")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_jsonl([*_GOOD, {"role": "robot", "content": "x"}]))
    r = _cli("sessions", "import", str(bad), "--db", str(db_path), "--tokenizer", "heuristic")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "line 4" in r.stderr and "role" in r.stderr
    r = _cli("sessions", "show", "nosuch", "--db", str(db_path), "--json")
    assert r.returncode == 1 and "nosuch" in r.stderr and "Traceback" not in r.stderr


def test_cli_refuses_unstorable_files_in_one_line_and_creates_nothing(tmp_path: Path, db_path: Path) -> None:
    """A real ``ctxmem`` process per file: exit 1, one line naming line and field, no traceback,
    no session (the 10,000-deep line is the RecursionError case)."""
    pytest.importorskip("ctxmem.cli", reason="the CLI is not written yet")
    good = _jsonl(_GOOD)
    cases = {
        "surrogate.jsonl": (good + _call_line(b'{"x": "\\ud800"}'), "line 4 field 'content[0].input.x'"),
        "deep.jsonl": (good + _call_line(b'{"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
                       "line 4 field 'content[0].input.x[0][0][0]…(×255)'"),
        "nan.jsonl": (good + _call_line(b'{"x": NaN}'), "line 4 field 'content[0].input.x'"),
        "empty.jsonl": (b"\n\n", "no messages to import"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        r = _cli("sessions", "import", str(tmp_path / name), "--db", str(db_path), "--tokenizer", "heuristic")
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
        assert needle in r.stderr, r.stderr
        assert "fix" in r.stderr or name == "empty.jsonl", r.stderr
    with SQLiteStore(db_path) as store:
        assert store.list_sessions() == []
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0


# --------------------------------------------------------------------------- exact count


def _independent_content_tokens(jsonl: bytes, enc: Any) -> tuple[int, int]:
    """Content tokens straight from the JSON lines with tiktoken (see messages.block_texts)."""
    texts: list[str] = []
    n_messages = 0
    for raw in jsonl.decode("utf-8").splitlines():
        obj = json.loads(raw)
        if "role" not in obj:
            continue
        n_messages += 1
        for b in obj["content"]:
            if b["type"] == "text":
                texts.append(b["text"])
            elif b["type"] == "thinking":
                texts.append(b["thinking"])
            elif b["type"] == "tool_use":
                texts.append(b["name"])
                texts.append(json.dumps(b["input"], sort_keys=True, separators=(",", ":"), ensure_ascii=False))
            elif b["type"] == "tool_result":
                c = b["content"]
                texts.append(c if isinstance(c, str) else "\n".join(p["text"] for p in c))
            else:
                raise AssertionError(b["type"])
    return sum(len(enc.encode(t)) for t in texts), n_messages


@pytest.fixture(scope="module")
def million_token_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("session") / "session.jsonl"
    path.write_bytes(_jsonl(to_anthropic(synthetic_session(1200, seed=42, output_scale=1.25))))
    return path


@pytest.mark.slow
def test_million_token_session_totals_are_exact(million_token_jsonl: Path, db_path: Path) -> None:
    enc = tiktoken_encoding_or_skip("o200k_base")
    expected, n_messages = _independent_content_tokens(million_token_jsonl.read_bytes(), enc)
    assert n_messages == 2401 and expected > 1_000_000
    with SQLiteStore(db_path) as store:
        s = import_file(store, million_token_jsonl, tokenizers=["o200k_base"])
        assert s.totals("o200k_base").content == expected
        assert s.totals("cl100k_base").content > 0  # an untracked tokenizer is backfilled
    with SQLiteStore(db_path) as store:  # and the totals persist
        assert Session.open(store, s.id).totals("o200k_base").content == expected


@pytest.mark.slow
def test_cli_show_reports_the_exact_content_total(million_token_jsonl: Path, db_path: Path) -> None:
    pytest.importorskip("ctxmem.cli", reason="the CLI is not written yet")
    enc = tiktoken_encoding_or_skip("o200k_base")
    expected, n_messages = _independent_content_tokens(million_token_jsonl.read_bytes(), enc)
    r = _cli("sessions", "import", str(million_token_jsonl), "--db", str(db_path), "--json")
    assert r.returncode == 0, r.stderr
    sid = json.loads(r.stdout)["id"]
    r = _cli("sessions", "show", sid, "--json", "--tokenizer", "o200k_base", "--db", str(db_path))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["tokens"]["tokenizer"] == "o200k_base"
    assert shown["tokens"]["content"] == expected
    assert shown["tokens"]["overhead"] > 0
    assert shown["tokens"]["total"] == expected + shown["tokens"]["overhead"]
    assert shown["messages"] == n_messages
    r = _cli("sessions", "export", sid, "--db", str(db_path))
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()] == [
        json.loads(x) for x in million_token_jsonl.read_text().splitlines()
    ]


# --------------------------------------------------------------------------- the bulk import path


def _stored_rows(store: SQLiteStore, session_id: str) -> tuple[Any, ...]:
    """Everything a session's import wrote, with ids made relative and times dropped."""
    conn = store.conn
    first = conn.execute("SELECT min(id) FROM events WHERE session_id = ?", (session_id,)).fetchone()[0] or 0
    events = conn.execute(
        "SELECT e.id - ?, e.parent_id - ?, e.depth, e.kind, e.role, e.starts_message, e.tool_use_id, e.tool_name, "
        "e.is_error, e.fmt, b.hash, b.size, b.text, e.meta FROM events e LEFT JOIN blobs b ON b.id = e.blob_id "
        "WHERE e.session_id = ? ORDER BY e.id",
        (first, first, session_id),
    ).fetchall()
    tokens = conn.execute(
        "SELECT t.event_id - ?, t.tokenizer, t.content, t.overhead, t.cum_content, t.cum_overhead FROM event_tokens t "
        "JOIN events e ON e.id = t.event_id WHERE e.session_id = ? ORDER BY t.event_id, t.tokenizer",
        (first, session_id),
    ).fetchall()
    memo = conn.execute("SELECT hash, tokenizer, tokens FROM token_counts ORDER BY hash, tokenizer").fetchall()
    fts = conn.execute(
        "SELECT b.hash FROM tool_output_fts f JOIN blobs b ON b.id = f.rowid WHERE tool_output_fts MATCH 'a OR the OR x' "
        "ORDER BY b.hash"
    ).fetchall()
    info = store.get_session(session_id)
    return events, tokens, memo, fts, info.metadata, info.tokenizers


def _import_both_ways(tmp_path: Path, data: bytes, tokenizers: list[str]) -> tuple[Any, Any, bool]:
    """(rows of import_jsonl, rows of parse_jsonl + record_many, whether the bulk path took it)."""
    from ctxmem.jsonl import _encode_fast

    with SQLiteStore(tmp_path / "fast.db") as a, SQLiteStore(tmp_path / "slow.db") as b:
        fast = import_jsonl(a, data, tokenizers=tokenizers)
        system, msgs = parse_jsonl(data)
        meta: dict[str, Any] = {"source": "<input>"}
        if system is not None:
            meta["system"] = system
        slow = Session.create(b, metadata=meta, tokenizers=tokenizers)
        slow.record_many(msgs)
        assert fast.messages() == msgs
        return _stored_rows(a, fast.id), _stored_rows(b, slow.id), _encode_fast(data) is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_import_stores_exactly_what_record_many_stores(tmp_path: Path, seed: int) -> None:
    tiktoken_encoding_or_skip("o200k_base")
    msgs = synthetic_session(25 * seed, seed=seed)
    data = _jsonl([{"system": "be brief"}, *to_anthropic(msgs)])
    fast, slow, took = _import_both_ways(tmp_path, data, ["o200k_base", "heuristic"])
    assert took
    assert fast == slow


_UNUSUAL = [
    {"role": "user", "content": "plain string content"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "thinking", "thinking": "no signature"},
        {"type": "thinking", "thinking": "null signature", "signature": None},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "calling", "cache_control": {"type": "ephemeral"}},
        {"type": "tool_use", "id": "a1", "name": "run", "input": {"x": 1.5, "big": 123456789012345678901234567890,
                                                                 "neg": -9223372036854775809, "z": [1e300, -0.0]}},
        {"type": "tool_use", "id": "a2", "name": "ls", "input": {"unicode": "é✓😀", "nested": {"b": [1, {"c": None}]}}},
        {"type": "text", "text": "after"},
    ]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "a1", "content": [{"type": "text", "text": "part 1"},
                                                                 {"type": "text", "text": "part 2"}]},
    ]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a2", "content": "failed",
                                  "is_error": True},  # results may follow results
                                 {"type": "text", "text": "thanks"}]},  # and text follows the last result
    {"role": "assistant", "content": []},
    {"role": "user", "content": "x", "extra": {"ignored": 18446744073709551616}},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "a3", "name": "run", "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a3", "content": "ok"}]},
]


def test_bulk_import_of_unusual_but_valid_lines_matches_record_many(tmp_path: Path) -> None:
    data = _jsonl(_UNUSUAL) + b"\r\n\n" + b'{"role":"user","content":"dup","content":"last wins"}\r\n'
    data += b'{"role": "assistant", "content": [{"type": "tool_use", "id": "a4", "name": "n", "input": {"s": "\\ud83d\\ude00", "f": null}}]}\n'
    fast, slow, took = _import_both_ways(tmp_path, data, ["heuristic"])
    assert took
    assert fast == slow


def test_the_deepest_storable_input_imports_both_ways_and_round_trips(tmp_path: Path) -> None:
    """A tool input exactly MAX_DEPTH levels deep is stored (the bulk path and the
    validating path alike) and its export imports again; one level more is refused."""
    from ctxmem.events import MAX_DEPTH

    def nested(levels: int) -> bytes:
        return b'{"x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    data = _jsonl(_GOOD[:1]) + _call_line(nested(MAX_DEPTH))
    fast, slow, took = _import_both_ways(tmp_path, data, ["heuristic"])
    assert took and fast == slow
    with SQLiteStore(tmp_path / "fast.db") as store:
        exported = "\n".join(export_lines(Session.open(store, store.list_sessions()[0].id))).encode()
        again = import_jsonl(store, exported)
        assert again.messages() == parse_jsonl(data)[1]
    for fmt in ("anthropic", "openai"):
        too_deep = (_jsonl(_GOOD[:1]) + _call_line(nested(MAX_DEPTH + 1)) if fmt == "anthropic" else
                    _jsonl([{"role": "user", "content": "q"}]) + _openai_call(nested(MAX_DEPTH + 1).replace(b'"', b'\\"')))
        with pytest.raises(InputError) as exc:
            parse_jsonl(too_deep, fmt=fmt)  # type: ignore[arg-type]
        assert f"deeper than {MAX_DEPTH}" in str(exc.value) and exc.value.line == 2
    from ctxmem.jsonl import _encode_fast

    assert _encode_fast(_jsonl(_GOOD[:1]) + _call_line(nested(MAX_DEPTH + 1))) is None


@pytest.mark.parametrize(("data", "fmt", "exc_type", "line", "field", "needle"), _bad_cases())
def test_bulk_path_declines_every_bad_case(data: bytes, fmt: str, exc_type: type, line: int, field: str | None,
                                           needle: str) -> None:
    from ctxmem.jsonl import _encode_fast, _encode_fast_openai

    encode = _encode_fast_openai if fmt == "openai" else _encode_fast
    assert encode(data) is None  # the validating path reports the error


def test_an_openai_refusal_is_kept_as_the_assistants_text(tmp_path: Path) -> None:
    """Chat Completions puts what the model said when it declined in ``refusal`` (content
    null): an import dropped it, leaving an empty assistant turn."""
    data = (b'{"role": "user", "content": "do x"}\n'
            b'{"role": "assistant", "content": null, "refusal": "I cannot help with that."}\n'
            b'{"role": "user", "content": "ok"}\n')
    with SQLiteStore(tmp_path / "s.db") as store:
        session = import_jsonl(store, data, fmt="openai", tokenizers=["o200k_base"])
        assert session.messages()[1] == Message.assistant("I cannot help with that.")
    _, msgs = parse_jsonl(data, fmt="openai")
    assert msgs[1] == Message.assistant("I cannot help with that.")
    with pytest.raises(InputError, match="refusal"):
        parse_jsonl(data.replace(b'"I cannot help with that."', b"7"), fmt="openai")


@pytest.mark.parametrize(
    ("third", "field", "needle"),
    [
        ({"role": "user", "content": "never mind"}, "content", "'a1' of the assistant message before this line has no result"),
        ({"role": "assistant", "content": "more"}, "role", "'a1' of the assistant message before this line has no result"),
        ({"role": "user", "content": [{"type": "text", "text": "hm"},
                                      {"type": "tool_result", "tool_use_id": "a1", "content": "x"}]},
         "content[0]", "content[0] comes before the result of tool call 'a1'"),
    ],
    ids=["user-text", "assistant", "text-before-result"],
)
def test_only_results_may_follow_unanswered_calls_in_a_file(
    tmp_path: Path, third: dict[str, Any], field: str, needle: str
) -> None:
    """A transcript where something else comes between tool calls and their results is one
    no provider accepts; it imported, and every build of it was invalid."""
    data = _jsonl([{"role": "user", "content": "go"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "a1", "name": "ls", "input": {}}]},
                   third])
    with SQLiteStore(tmp_path / "s.db") as store:
        with pytest.raises(InvalidConversationError) as exc:
            import_jsonl(store, data)
        assert (exc.value.line, exc.value.field) == (3, field)
        assert needle in str(exc.value)
        assert store.list_sessions() == []


def test_an_agent_app_transcript_line_gets_a_hint_not_just_unknown_role(tmp_path: Path) -> None:
    data = _jsonl([{"type": "summary", "summary": "x", "leafUuid": "u"},
                   {"type": "user", "message": {"role": "user", "content": "hi"}, "uuid": "a"}])
    with SQLiteStore(tmp_path / "s.db") as store, pytest.raises(InputError) as exc:
        import_jsonl(store, data)
    assert (exc.value.line, exc.value.field) == (1, "role")
    assert "a line of type 'summary' and no role" in str(exc.value) and "jq -c" in str(exc.value)
