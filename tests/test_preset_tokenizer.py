"""A preset naming a tokenizer that cannot load: one clear line naming the file, line and
field, from the CLI and from ``Agent(strategy=...)``, before anything is written.

No silent fallback: the budget is in that tokenizer's units, so counting with another
would quietly over- or under-fill the window. A preset that does not name a tokenizer
keeps counting with o200k_base.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxmem.agent import Agent
from ctxmem.cli import cli
from ctxmem.clients import ScriptedClient
from ctxmem.config import load_preset
from ctxmem.errors import ConfigError
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore

BAD = {
    "missing-file": ("hf:/nonexistent/dir/tokenizer.json", "no such file or folder '/nonexistent/dir/tokenizer.json'"),
    "unknown-name": ("o200k_bsae", "unknown tokenizer 'o200k_bsae'"),
    "uncached-hub-model": ("hf:ctxmem-test/not-a-cached-model", "cannot load Hugging Face tokenizer"),
}


def _preset(tmp_path: Path, tokenizer: str | None) -> Path:
    line = f'tokenizer = "{tokenizer}"\n' if tokenizer else ""
    path = tmp_path / "p.toml"
    path.write_text(f'description = "t"\ntype = "window"\n{line}[budget]\ncontext_window = 32000\n', encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "s.db"
    with SQLiteStore(str(path)) as store:
        s = Session.create(store)
        s.record_many(synthetic_session(4, 1))
        return path, s.id


def _events(db: Path, sid: str) -> int:
    with SQLiteStore(str(db)) as store:
        return len(list(Session.open(store, sid).events()))


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_cli_says_one_line_naming_file_line_and_field(
    case: str, tmp_path: Path, db: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, why = BAD[case]
    preset = _preset(tmp_path, name)
    path, sid = db
    before = _events(path, sid)
    result = CliRunner().invoke(cli, ["context", "build", "--session", sid, "--db", str(path), "--preset", str(preset)])
    assert result.exit_code == 1
    out = result.output.strip()
    assert len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert out.startswith(f"error: {preset}:3: field 'tokenizer': ") and why in out, out
    assert "remove the line to count with o200k_base" in out
    assert _events(path, sid) == before


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_agent_refuses_at_construction_and_writes_nothing(
    case: str, tmp_path: Path, db: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, why = BAD[case]
    preset = _preset(tmp_path, name)
    path, sid = db
    before = _events(path, sid)
    client = ScriptedClient(["never sent"])
    with SQLiteStore(str(path)) as store, pytest.raises(ConfigError) as info:
        Agent(client, Session.open(store, sid), strategy=str(preset))
    err = info.value
    assert (err.source, err.line, err.field) == (str(preset), 3, "tokenizer") and why in str(err)
    assert "\n" not in str(err) and not client.requests
    assert _events(path, sid) == before
    with pytest.raises(ConfigError, match="field 'tokenizer'"):  # and through Preset.builder directly
        load_preset(preset).builder()


def test_a_loadable_or_unnamed_tokenizer_still_builds(tmp_path: Path, db: tuple[Path, str]) -> None:
    path, sid = db
    for tokenizer, expected in (("cl100k_base", "cl100k_base"), (None, "o200k_base")):
        preset = _preset(tmp_path, tokenizer)
        result = CliRunner().invoke(cli, ["context", "build", "--session", sid, "--db", str(path),
                                           "--preset", str(preset), "--json"])
        assert result.exit_code == 0, result.output
        assert load_preset(preset).builder().tokenizer == expected
        assert json.loads(result.output)["report"]["tokens_out"] > 0
