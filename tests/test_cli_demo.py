"""``ctxmem demo`` text output: a tokenizer note is one short line under the table, never a table cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxmem.cli import cli

MISSING = "hf:/nonexistent/folder"


def test_a_tokenizer_that_cannot_load_is_one_short_line_under_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # a short db path, so the table's width is the demo's own
    db = "d.db"
    result = CliRunner().invoke(cli, ["demo", "--turns", "8", "--tokenizer", MISSING, "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    notes = [i for i, line in enumerate(lines) if line.startswith("note: ")]
    assert len(notes) == 1, result.output  # said once (not again on stderr or in the table)
    note = lines[notes[0]]
    assert "counts are the heuristic" in note and MISSING in note and len(note) <= 240
    # it sits right under the summary table, whose rows stay short
    table = lines[: notes[0]]
    assert table[0].startswith("demo") and any(line.startswith("tokenizer") and "heuristic" in line for line in table)
    assert max(len(line) for line in table) < 80
    # --json keeps the full error for scripts, next to the short note
    report = json.loads(CliRunner().invoke(cli, ["demo", "--turns", "8", "--tokenizer", MISSING, "--db", db,
                                                  "--json"]).output)
    assert report["tokenizer"] == "heuristic" and report["note"] == note.removeprefix("note: ")
    assert "Hugging Face" in report["tokenizer_error"]
