"""``ctxmem strategies``: what strategy types and presets exist."""

from __future__ import annotations

import click

from ctxmem.cli._common import CtxmemGroup, echo_json, json_option, table
from ctxmem.config import available_presets, load_preset
from ctxmem.context import STRATEGIES


@click.group(cls=CtxmemGroup)
def strategies() -> None:
    """Context strategies and presets."""


@strategies.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Registered strategy types (built-ins and plugins) and the presets found."""
    types = []
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        fields = {
            f: (info.description or "") for f, info in cls.Config.model_fields.items()
        } if hasattr(cls, "Config") else {}
        types.append({"type": name, "summary": doc[0] if doc else "", "params": fields})
    presets = []
    for name, path in available_presets().items():
        p = load_preset(path)
        b = p.budget()
        presets.append({"name": name, "type": p.type, "context_window": b.context_window, "description": p.description,
                        "path": str(path)})
    if as_json:
        echo_json({"types": types, "presets": presets})
        return
    click.echo(table([[t["type"], t["summary"]] for t in types], ["type", "summary"]))
    click.echo()
    click.echo(table([[p["name"], p["type"], p["context_window"], p["description"]] for p in presets],
                     ["preset", "type", "window", "description"]))
