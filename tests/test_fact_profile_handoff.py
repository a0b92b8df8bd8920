"""A workload's fact profile reaches the strategy of whatever preset the user picked."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxmem.config import available_presets, load_preset
from ctxmem.context import STRATEGIES
from ctxmem.errors import ConfigError


@pytest.mark.parametrize("name", available_presets())
def test_the_kernel_run_hands_every_preset_the_kernel_profile(name: str) -> None:
    from ctxmem.workloads.kernel.run import kernel_preset

    preset = kernel_preset(name)
    has_field = "fact_profile" in STRATEGIES.get(preset.type).Config.model_fields
    if not has_field:  # window and dump have no salience to tune: the preset is unchanged
        assert preset.model == load_preset(name).model
        return
    assert preset.model.params["fact_profile"] == "kernel"
    strategy = preset.builder().strategy
    assert strategy.config.fact_profile == "kernel"
    if preset.type == "pipeline":  # its ledger's profile, and the one its core is built with
        assert strategy.profile.name == "kernel"
        strategy = strategy.core
    assert strategy._carry.profile.name == "kernel"  # what the facts section scores with

def test_a_preset_file_that_names_its_profile_keeps_it(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('type = "masking"\n[budget]\ncontext_window = 50000\n[params]\nfact_profile = "generic"\n')
    preset = load_preset(str(f)).with_fact_profile("kernel")
    assert preset.model.params["fact_profile"] == "generic"


def test_an_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_preset("masking-200k").with_fact_profile("nope")
