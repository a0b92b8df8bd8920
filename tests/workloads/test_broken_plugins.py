"""A broken workload plugin is one clear error naming it, and leaves every other workload usable.

Plugins are registered the way entry points are found (``Registry``): at run time for
classes defined here, and through a stand-in for ``importlib.metadata.entry_points`` for a
name two distributions register.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

import ctxmem.registry as registry
from ctxmem.cli import cli
from ctxmem.errors import ConfigError
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.session import Session
from ctxmem.workloads import WORKLOADS, WorkloadRun, get_workload


class _Cfg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int = 6


class Tiny:
    name: ClassVar[str] = "tiny"
    description: ClassVar[str] = "a few tool calls"
    Config: ClassVar[type[BaseModel]] = _Cfg
    modes: ClassVar[tuple[str, ...]] = ("record", "context")
    score_columns: ClassVar[tuple[tuple[str, str], ...]] = (("ok", "ok"),)

    def __init__(self, config: _Cfg) -> None:
        self.config = config

    def system_prompt(self) -> str | None:
        return None

    def tools(self) -> list[Any]:
        return []

    def check(self) -> None:
        return None

    def needles(self) -> tuple[Any, ...]:
        return ()

    def fact_profile(self) -> Any:
        return None

    def run(self, store: Any, *, preset: str | None = None, window: int | None = None, seed: int = 0,
            mode: str | None = None, progress: Any = None) -> WorkloadRun:
        msgs = [Message.user("go")]
        for i in range(self.config.n):
            msgs += [Message("assistant", (ToolUseBlock(f"c{i}", "t", {}),)),
                     Message("user", (ToolResultBlock(f"c{i}", f"line {i} " * 50),))]
        msgs.append(Message.assistant("done"))
        s = Session.create(store, messages=msgs, tokenizers=["o200k_base"])
        return WorkloadRun(self.name, s.id, mode or "record", preset, seed, {"ok": 1}, 1.0,
                           history_tokens=s.totals("o200k_base").content)


class Lacking:
    """Every member but run() and needles()."""

    name = "lacking"
    description = "lacks run and needles"
    Config = _Cfg
    modes = ("record",)
    score_columns = ()

    def __init__(self, config: _Cfg) -> None:
        self.config = config

    def system_prompt(self) -> None:
        return None

    def tools(self) -> list[Any]:
        return []

    def check(self) -> None:
        return None

    def fact_profile(self) -> None:
        return None


class SettingsElsewhere(Tiny):
    def __init__(self, config: _Cfg) -> None:  # keeps its settings under another name
        self.settings = config

    @property
    def config(self) -> Any:  # type: ignore[override]
        raise AttributeError("config")


class Raiser(Tiny):
    def run(self, store: Any, **kw: Any) -> WorkloadRun:
        if kw.get("window") and kw["window"] < 20_000:
            raise RuntimeError("the plugin blew up")
        return super().run(store, **kw)


INSTANCE = Tiny(_Cfg())


@pytest.fixture
def plugins() -> Iterator[dict[str, str]]:
    refs = {"ok_tiny": f"{__name__}:Tiny", "broken_import": "no_such_module_for_ctxmem_tests:Thing",
            "no_attr": f"{__name__}:DoesNotExist", "lacking": f"{__name__}:Lacking",
            "settings_elsewhere": f"{__name__}:SettingsElsewhere", "an_instance": f"{__name__}:INSTANCE",
            "raiser": f"{__name__}:Raiser"}
    for name, ref in refs.items():
        WORKLOADS.register(name, ref)
    yield refs
    assert WORKLOADS._refs is not None
    for name in refs:
        WORKLOADS._refs.pop(name, None)
        WORKLOADS._loaded.pop(name, None)


def test_each_broken_plugin_is_one_error_naming_it(plugins: dict[str, str]) -> None:
    cases = {"broken_import": "ModuleNotFoundError", "no_attr": "AttributeError", "lacking": "lacks run, needles",
             "settings_elsewhere": "self.config", "an_instance": "object: its entry point must name the workload class"}
    for name, says in cases.items():
        with pytest.raises(ConfigError) as exc:
            get_workload(name)
        text = str(exc.value)
        assert name in text and says in text and "\n" not in text, text
    assert get_workload("ok_tiny").config == _Cfg()


def test_workload_list_warns_about_a_broken_plugin_and_lists_the_others(plugins: dict[str, str]) -> None:
    r = CliRunner().invoke(cli, ["workload", "list", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    import json

    listed = {d["name"] for d in json.loads(r.stdout)}
    assert {"kernel", "synthetic", "ok_tiny", "raiser"} <= listed
    assert not listed & {"broken_import", "no_attr", "lacking", "an_instance"}
    assert "warning: workload 'broken_import'" in r.stderr and "Traceback" not in r.output


def test_a_name_two_distributions_register_fails_only_that_name(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [EntryPoint("synthetic", "someone.else:Synthetic", "ctxmem.test_dups"),
           EntryPoint("mine", f"{__name__}:Tiny", "ctxmem.test_dups"),
           EntryPoint("mine", f"{__name__}:Raiser", "ctxmem.test_dups")]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == "ctxmem.test_dups" else [])
    reg = registry.Registry("ctxmem.test_dups", "workload", {"synthetic": "ctxmem.workloads.synthetic:Synthetic",
                                                             "kernel": "ctxmem.workloads.kernel:KernelWorkload"})
    assert reg.names() == ["kernel", "mine", "synthetic"]
    for name in ("synthetic", "mine"):
        with pytest.raises(ConfigError, match=f"'{name}' is registered twice"):
            reg.get(name)
    assert reg.source("kernel") == "ctxmem"  # the other names still resolve


def test_a_cell_whose_workload_raises_fails_alone(plugins: dict[str, str]) -> None:
    from ctxmem.tune.prices import load_prices
    from ctxmem.tune.sweep import run_sweep

    price = load_prices(user=False).get("claude-sonnet-4-5")
    result = run_sweep("raiser", ["window-32k"], [32_000, 8_000], price)
    by_budget = {c.budget: c for c in result.cells}
    assert by_budget[32_000].error is None and by_budget[32_000].score == 1.0
    assert "RuntimeError: the plugin blew up" in (by_budget[8_000].error or "")


class Stamped(Tiny):
    """Tiny, its session created with the workload's registry name in the metadata."""

    def run(self, store: Any, *, preset: str | None = None, window: int | None = None, seed: int = 0,
            mode: str | None = None, progress: Any = None) -> WorkloadRun:
        got = super().run(store, preset=preset, window=window, seed=seed, mode=mode, progress=progress)
        msgs = list(Session.open(store, got.session_id).messages())
        s = Session.create(store, messages=msgs, tokenizers=["o200k_base"], metadata={"workload": "stamped"})
        return WorkloadRun("stamped", s.id, got.mode, preset, seed, got.scores, got.score,
                           history_tokens=got.history_tokens)


def test_session_needles_refuses_a_run_it_could_not_find_again(plugins: dict[str, str], tmp_path: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``metadata={"workload": name}`` the cells would ask about every workload's
    needles (another plugin's facts, scored as this one's) and every rerun would record anew."""
    import ctxmem.cli.evals as evals_cli

    WORKLOADS.register("stamped", f"{__name__}:Stamped")
    plugins["stamped"] = ""
    asked: list[list[str]] = []
    monkeypatch.setattr(evals_cli, "_execute", lambda **kw: asked.append(kw["sources"]))
    r = CliRunner().invoke(cli, ["eval", "session-needles", "--workload", "ok_tiny", "--out", str(tmp_path / "a"),
                                 "--no-progress"])
    assert r.exit_code != 0 and asked == []
    assert "metadata={'workload': 'ok_tiny'}" in r.output and "Traceback" not in r.output
    for _ in range(2):  # the second run finds the first's session: nothing recorded again
        r = CliRunner().invoke(cli, ["eval", "session-needles", "--workload", "stamped", "--out", str(tmp_path / "b"),
                                     "--no-progress"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    assert len(asked) == 2 and asked[0] == asked[1]
