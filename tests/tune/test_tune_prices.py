"""The price table: shipped entries with sources, user overrides, tiers, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxmem.errors import ConfigError, UnknownNameError
from ctxmem.tune.prices import MissingPriceError, load_prices


def test_shipped_table_has_sources_dates_and_the_issue_prices() -> None:
    table = load_prices(user=False)
    for name in table.names():
        m = table.get(name).model
        assert m.source and m.as_of.year >= 2025, name
    sonnet = table.get("claude-sonnet-4-5").model
    assert (sonnet.input, sonnet.output) == (3.0, 15.0)
    assert sonnet.cache_write == pytest.approx(1.25 * sonnet.input)
    assert sonnet.cache_write_1h == pytest.approx(2 * sonnet.input)
    assert sonnet.cache_read == pytest.approx(0.1 * sonnet.input)
    qwen = table.get("qwen3.6-max").model
    assert (qwen.input, qwen.output) == (1.30, 7.80)
    assert "issue 7" in qwen.source
    assert table.get("gpt-4o").model.cache_write is None  # automatic caching: writes at the input price
    assert table.get("sonnet").name == "claude-sonnet-4-6"  # aliases resolve


def test_rates_long_context_tier_ttl_and_batch() -> None:
    p = load_prices(user=False).get("claude-sonnet-4-5")
    short = p.rates(200_000)
    assert (short.input, short.output, short.cache_write, short.cache_read) == (3.0, 15.0, 3.75, 0.30)
    long = p.rates(200_001)
    assert (long.input, long.output, long.cache_write, long.cache_read) == (6.0, 22.5, 7.5, 0.60)
    assert p.rates(10, ttl="1h").cache_write == 6.0
    batch = p.rates(10, batch=True)
    # 1M uncached + 1M output at half price: (3 + 15) / 2
    assert batch.dollars(uncached=1_000_000, written=0, read=0, output=1_000_000) == pytest.approx(9.0)
    gpt = load_prices(user=False).get("gpt-4o").rates(10)
    assert gpt.cache_write == gpt.input == 2.5


def test_unknown_model_did_you_mean_and_the_file_to_add_it_to(tmp_path: Path) -> None:
    user = tmp_path / "prices.toml"
    user.write_text("")
    table = load_prices(user)
    with pytest.raises(MissingPriceError) as info:
        table.get("claude-sonet-4-5")
    msg = str(info.value)
    assert isinstance(info.value, UnknownNameError)
    assert "'claude-sonet-4-5'" in msg and "Did you mean 'claude-sonnet-4-5'" in msg
    assert str(user) in msg and "[models.claude-sonet-4-5]" in msg


def test_user_file_overrides_fields_and_adds_models(tmp_path: Path) -> None:
    user = tmp_path / "prices.toml"
    user.write_text(
        '[models."gpt-4o"]\ninput = 2.0\n\n'
        '[models."my-local"]\nprovider = "vllm"\ninput = 0.05\noutput = 0.1\ncache_read = 0.0\n'
        'source = "our GPU bill"\nas_of = 2026-01-01\n'
    )
    table = load_prices(user)
    gpt = table.get("gpt-4o")
    assert gpt.model.input == 2.0 and gpt.model.output == 10.0  # field-level merge
    assert gpt.origin == str(user)
    assert table.get("my-local").model.cache_read == 0.0


def test_1h_ttl_without_a_price_names_the_model_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'gpt-4o' has no 1-hour cache write price.*prices.toml"):
        load_prices(user=False).get("gpt-4o").rates(10, ttl="1h")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[models.x]\nprovider = "a"\ninput = 1\noutput = 1\nsource = "s"\nas_of = 2026-01-01\ncache_wirte = 1\n',
         "models.x.cache_wirte"),
        ('[models.x]\nprovider = "a"\ninput = -1\noutput = 1\nsource = "s"\nas_of = 2026-01-01\n', "models.x.input"),
        ('[models.x]\nprovider = "a"\ninput = 1\noutput = 1\nas_of = 2026-01-01\n', "models.x.source"),
        ("[model.x]\ninput = 1\n", "model"),
    ],
)
def test_bad_user_file_names_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    user = tmp_path / "prices.toml"
    user.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_prices(user)
    assert info.value.source == str(user)
    assert info.value.field == field


def test_missing_explicit_file_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such price file"):
        load_prices(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.x\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_prices(bad)


def test_env_var_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "env.toml"
    user.write_text('[models."gpt-4o"]\noutput = 11.0\n')
    monkeypatch.setenv("CTXMEM_PRICES", str(user))
    assert load_prices().get("gpt-4o").model.output == 11.0
    assert load_prices(user=False).get("gpt-4o").model.output == 10.0
