"""One CLI vocabulary (see ctxmem/cli/_options.py): every command walked, every option held
to one name, one meaning, one type; every token size accepts 128k; -h works everywhere."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from ctxmem.cli import cli
from ctxmem.cli._options import TokenCount, TokenCountList

#: option names that are token sizes, wherever they appear
SIZES = {"--window", "--windows", "--budget", "--budgets", "--lengths", "--length", "--context", "--max-tokens"}
#: names whose meaning is fixed: a predicate on (option, help text)
MEANINGS = {
    "--db": lambda o: "session" in (o.help or "").lower() or "store" in (o.help or "").lower(),
    "--max-cost": lambda o: "dollar" in (o.help or "").lower(),
    "--budget": lambda o: isinstance(o.type, TokenCount),  # never money: that is --max-cost
    "--preset": lambda o: "preset" in (o.help or "").lower(),
    "--session": lambda o: "session" in (o.help or "").lower(),
}


def _commands() -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(cli)

    def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[str, click.Command]]:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(cli, [])


def _options() -> dict[str, list[tuple[str, click.Option]]]:
    uses: dict[str, list[tuple[str, click.Option]]] = defaultdict(list)
    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, click.Option):
                for name in (*p.opts, *p.secondary_opts):
                    uses[name].append((path, p))
    return uses


def test_the_walk_sees_every_group() -> None:
    paths = {p for p, _ in _commands()}
    assert {"sessions list", "context build", "eval niah", "tune sweep", "tune kv", "workload run", "demo"} <= paths


def test_every_size_option_accepts_128k() -> None:
    seen = 0
    for name, uses in _options().items():
        if name not in SIZES:
            continue
        for path, opt in uses:
            seen += 1
            if isinstance(opt.type, TokenCountList):
                assert opt.type.convert("32k,128k", opt, None) == [32_000, 128_000], (path, name)
            else:
                assert isinstance(opt.type, TokenCount), f"{path} {name} is {type(opt.type).__name__}, not a size"
                assert opt.type.convert("128k", opt, None) == 128_000
                assert opt.type.convert("1M", opt, None) == 1_000_000
    assert seen >= 10


def test_no_two_options_share_a_name_with_different_meanings() -> None:
    problems = []
    for name, uses in _options().items():
        kinds = {type(opt.type).__name__ for _, opt in uses}
        if len(kinds) > 1:
            problems.append(f"{name}: {sorted((p, type(o.type).__name__) for p, o in uses)}")
        check = MEANINGS.get(name)
        if check is not None:
            problems += [f"{path} {name}: {opt.help!r}" for path, opt in uses if not check(opt)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("args", [["-h"], ["eval", "-h"], ["tune", "sweep", "-h"], ["sessions", "list", "-h"],
                                  ["demo", "-h"], ["workload", "kernel", "run", "-h"]])
def test_dash_h_is_help_everywhere(args: list[str]) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "Usage:" in res.output


def test_dash_h_survives_a_group_invoked_on_its_own_first() -> None:
    """click caches a command's help option when first built: a group run on its own
    (as the tests and ``python -m`` do) must not lose -h under the root afterwards."""
    from ctxmem.cli.evals import eval_group

    assert CliRunner().invoke(eval_group, ["niah", "-h"]).exit_code == 0
    res = CliRunner().invoke(cli, ["eval", "niah", "-h"])
    assert res.exit_code == 0 and "Usage:" in res.output
