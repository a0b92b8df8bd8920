"""Preset errors name the file, the LINE and the dotted field (tomllib keeps no positions)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ctxmem.config import load_preset, toml_field_line, toml_field_lines
from ctxmem.errors import ConfigError


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str, name: str = "x.toml") -> ConfigError:
    path = _file(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    return info.value


HEADER = 'description = "test"\ntype = "masking"\n\n[budget]\ncontext_window = 100000\nreserve_output = 4000\n'


def test_a_bad_type_in_params_names_file_line_and_field(tmp_path: Path) -> None:
    # line 7 holds keep_last; a comment and a key of the same name in [budget] come first
    text = HEADER.replace("reserve_output", "# keep_last = 1 (a comment)\nreserve_output") + (
        '[params]\nkeep_last = "three"\n'
    )
    assert text.splitlines()[8] == 'keep_last = "three"'
    err = _error(tmp_path, text)
    assert (err.line, err.field) == (9, "params.keep_last")
    assert str(err).startswith(f"{tmp_path / 'x.toml'}:9: field 'params.keep_last': ")
    assert "integer" in str(err)


def test_an_out_of_range_value_in_budget(tmp_path: Path) -> None:
    err = _error(tmp_path, HEADER.replace("context_window = 100000", "context_window = -5"))
    assert (err.line, err.field) == (5, "budget.context_window")
    assert re.match(r".*x\.toml:5: field 'budget\.context_window': .*greater than 0", str(err))


def test_a_reserve_over_a_quarter_of_the_window_is_refused_not_capped_silently(tmp_path: Path) -> None:
    """A build caps the reply reserve at a quarter of the window: a preset asking for 40K of
    a 32K window built with 8K and no word of it."""
    err = _error(tmp_path, HEADER.replace("reserve_output = 4000", "reserve_output = 40000"))
    assert (err.line, err.field) == (6, "budget.reserve_output")
    assert "over a quarter of context_window 100000 (25000)" in str(err)
    ok = tmp_path / "ok.toml"
    ok.write_text(HEADER.replace("reserve_output = 4000", "reserve_output = 25000"), encoding="utf-8")
    assert load_preset(ok).budget().reserve_output == 25000  # a quarter exactly is kept as given


def test_an_unknown_field_is_found_under_its_own_section(tmp_path: Path) -> None:
    # keep_lsat also appears in a multi-line string above: that line must not be taken
    text = (
        'description = """\nkeep_lsat = 1 is not a key here\n"""\ntype = "masking"\n'
        "[budget]\ncontext_window = 1000\n[params]\nreducer = 'none'\nkeep_lsat = 3\n"
    )
    err = _error(tmp_path, text)
    assert (err.line, err.field) == (9, "params.keep_lsat")
    assert "unknown field" in str(err)


def test_a_misspelled_section_is_reported_at_its_header_with_a_suggestion(tmp_path: Path) -> None:
    err = _error(tmp_path, 'type = "masking"\n\n[budgett]\ncontext_window = 1000\n')
    assert (err.line, err.field) == (3, "budgett")
    assert "unknown table; did you mean 'budget'?" in str(err)


def test_a_missing_field_points_at_its_table_and_a_missing_top_level_key_at_the_file(tmp_path: Path) -> None:
    err = _error(tmp_path, 'type = "masking"\n[budget]\nreserve_output = 10\n')
    assert (err.line, err.field) == (2, "budget.context_window")
    err = _error(tmp_path, "[budget]\ncontext_window = 1000\n")
    assert (err.line, err.field) == (None, "type")
    assert str(err).startswith(f"{tmp_path / 'x.toml'}: field 'type': ")


def test_an_unknown_strategy_type_names_its_line(tmp_path: Path) -> None:
    err = _error(tmp_path, '\n\ntype = "maskin"\n[budget]\ncontext_window = 1000\n')
    assert (err.line, err.field) == (3, "type")
    assert "Did you mean 'masking'" in str(err)


def test_nested_strategy_params_are_located_in_dotted_tables(tmp_path: Path) -> None:
    text = (
        'type = "pipeline"\n[budget]\ncontext_window = 1000\n[params]\ncore = "masking"\n'
        "[params.core_params]\nkeep_last = 2\n\n[params.core_params.tools.compile]\nreducer = \"nope\"\n"
    )
    err = _error(tmp_path, text)
    # the nested config's own field, at the line that sets it
    assert err.field == "params.core_params.tools.compile.reducer"
    assert err.line == 10 and "unknown reducer 'nope'" in str(err)


def test_invalid_toml_names_its_line(tmp_path: Path) -> None:
    err = _error(tmp_path, 'type = "masking"\n[budget]\ncontext_window 1000\n')
    assert err.line == 3 and str(err).startswith(f"{tmp_path / 'x.toml'}:3: invalid TOML")


def test_the_locator_reads_toml_structure() -> None:
    text = (
        "a = 1\n"
        "arr = [\n  1,\n  2,\n]\n"  # lines 2-5: a multi-line array
        '"quoted.key" = 2\n'  # 6
        "[t]\n"  # 7
        "x.y = 3  # dotted key\n"  # 8
        "inline = { p = 1, q = 2 }\n"  # 9
        "[[list]]\n"  # 10
        "k = 1\n"  # 11
        "[[list]]\n"  # 12
        "k = 'two'\n"  # 13
        "s = '''\n[fake]\nk = 0\n'''\n"  # 14-17: a multi-line literal string
        "after = true\n"  # 18
    )
    lines = toml_field_lines(text)
    assert lines["a"] == 1 and lines["arr"] == 2 and lines["quoted.key"] == 6
    assert lines["t"] == 7 and lines["t.x"] == 8 and lines["t.x.y"] == 8 and lines["t.inline"] == 9
    assert lines["list"] == 10 and lines["list.0.k"] == 11 and lines["list.1"] == 12 and lines["list.1.k"] == 13
    assert "fake" not in lines and lines["list.1.after"] == 18
    # a field inside an inline table, or missing, is reported at the nearest enclosing line
    assert toml_field_line(text, "t.inline.q") == 9
    assert toml_field_line(text, "list.1.missing") == 12
    assert toml_field_line(text, "nowhere") is None
    assert toml_field_line(None, "a") is None


def test_every_shipped_preset_still_loads() -> None:
    from ctxmem.config import available_presets

    for name in available_presets():
        assert load_preset(name).name == name


def test_a_missing_run_time_dependency_names_its_line_when_the_builder_is_made(tmp_path: Path) -> None:
    path = _file(tmp_path, "llm.toml", 'type = "summarization"\n[budget]\ncontext_window = 100000\n\n[params]\n'
                 'summarizer = "llm"\nsummarizer_model = "agent"\n')
    preset = load_preset(path)  # valid as data: the client is a run-time object
    with pytest.raises(ConfigError) as info:
        preset.builder()
    assert (info.value.line, info.value.field) == (7, "params.summarizer_model")
    assert str(info.value).startswith(f"{path}:7: field 'params.summarizer_model': ")


def test_an_unknown_reducer_names_its_line_and_dotted_field_at_every_depth(tmp_path: Path) -> None:
    """The reducer check raised the registry's error from inside pydantic, which lost the
    field: the message said only ``field 'params'``, with no line."""
    err = _error(tmp_path, HEADER + '[params]\nreducer = "nope"\n')
    assert (err.line, err.field) == (8, "params.reducer")
    assert "unknown reducer 'nope'. Did you mean 'none'?" in str(err)
    assert "Value error" not in str(err)
    err = _error(tmp_path, HEADER + '[params.tools.compile]\nreducer = "frist_error"\n')
    assert (err.line, err.field) == (8, "params.tools.compile.reducer")
    assert "Did you mean 'first_error'?" in str(err)
    pipeline = HEADER.replace('"masking"', '"pipeline"') + '[params.core_params.tools.compile]\nreducer = "x"\n'
    err = _error(tmp_path, pipeline)
    assert (err.line, err.field) == (8, "params.core_params.tools.compile.reducer")


def test_token_sizes_read_as_on_the_command_line(tmp_path: Path) -> None:
    """``--window 128k`` works on the CLI; the same size in a preset was a type error."""
    path = _file(tmp_path, "sizes.toml", 'type = "pipeline"\n[budget]\ncontext_window = "200k"\nreserve_output = "8Ki"\n'
                 '[params]\nledger_tokens = "1k"\n[params.core_params]\nfacts_tokens = "6k"\n')
    preset = load_preset(path)
    assert (preset.budget().context_window, preset.budget().reserve_output) == (200_000, 8192)
    strategy = preset.builder().strategy
    assert strategy.config.ledger_tokens == 1000
    assert strategy.core.config.facts_tokens == 6000
    err = _error(tmp_path, HEADER.replace("context_window = 100000", 'context_window = "100 k tokens"'))
    assert (err.line, err.field) == (5, "budget.context_window")
    assert "not a token count: '100 k tokens' (use e.g. 32k" in str(err)
    # a string is a size only where the field counts tokens
    err = _error(tmp_path, HEADER + '[params]\nkeep_last = "3k"\n')
    assert err.field == "params.keep_last"


def test_a_shipped_preset_asked_for_as_a_file_name_points_at_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"the shipped preset is named 'masking-200k' \(without \.toml\)"):
        load_preset("masking-200k.toml")


def test_values_of_the_wrong_type_are_refused_not_coerced(tmp_path: Path) -> None:
    """keep_last = "3" was read as 3, keep_last = true as 1, context_window = true as a
    1-token window and reversible = "yes" as true: a typo changed the strategy silently."""
    for line, field in (('keep_last = "3"', "params.keep_last"), ("keep_last = true", "params.keep_last"),
                        ('reversible = "yes"', "params.reversible")):
        err = _error(tmp_path, HEADER + f"[params]\n{line}\n")
        assert (err.line, err.field) == (8, field), line
    err = _error(tmp_path, HEADER.replace("context_window = 100000", "context_window = true"))
    assert (err.line, err.field) == (5, "budget.context_window")
