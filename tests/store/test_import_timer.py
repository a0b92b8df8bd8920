"""``ctxmem sessions import`` reports its own timer: wall and CPU of the import alone (the
tokenizer's load reported apart), in both wire formats, which take the same bulk path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctxmem.cli import cli
from ctxmem.jsonl import parse_jsonl
from ctxmem.messages import to_anthropic, to_openai
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import SQLiteStore


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_import_reports_its_wall_and_cpu_apart_from_the_tokenizer_load(tmp_path: Path, fmt: str) -> None:
    msgs = synthetic_session(40, seed=11)
    objs: list[Any] = to_anthropic(msgs) if fmt == "anthropic" else to_openai(msgs)
    src = tmp_path / f"s.{fmt}.jsonl"
    src.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    db = tmp_path / "s.db"
    r = CliRunner().invoke(cli, ["sessions", "import", str(src), "--format", fmt, "--db", str(db),
                                 "--tokenizer", "o200k_base", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    for key in ("import_seconds", "import_cpu_seconds", "tokenizer_load_seconds"):
        assert isinstance(got[key], float) and got[key] >= 0, key
    assert got["import_cpu_seconds"] > 0  # the import parsed, counted and wrote something
    with SQLiteStore(db) as store:  # what the validating reader makes of the file
        assert Session.open(store, got["id"]).messages() == parse_jsonl(src.read_bytes(), fmt=fmt)[1]  # type: ignore[arg-type]
