"""One CLI vocabulary: the options every command shares, with one name and one meaning.

=================  ==========================================================================
``--preset``       a strategy preset (name or TOML path); repeatable, and a comma list works
                   too; ``--presets`` and ``--strategy`` are the same option
``--model``        a model client spec (``anthropic:…``, ``openai:…``, an offline reader);
                   repeatable and comma lists where a command takes several; ``--models``
                   and ``--reader`` are the same option
``--window``       a model's context window, in tokens (``--windows``: several, for sweeps);
                   ``--budget`` is the same option where a command builds a context
``--max-cost``     money: stop before spending more dollars
``--db``           the session store (a SQLite file)
``--out``          the folder a command writes its results and report into
``--session``      a session id: a unique prefix of it, or ``latest``
=================  ==========================================================================

Every token size accepts ``128k`` (×1,000), ``1M`` (×1,000,000), ``32Ki`` (×1,024) or a
plain integer: :data:`TOKENS` for one, :data:`TOKEN_LIST` for a comma list.
``tests/test_cli_vocabulary.py`` walks every command and holds them to this table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class TokenCount(click.ParamType):
    """A token count: ``128k``, ``1M``, ``32Ki`` or ``128000``."""

    name = "tokens"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if str(value).strip() == "0":  # "none": where a command gives 0 a meaning (compare: the presets' own)
            return 0
        from ctxmem.errors import InputError
        from ctxmem.tune.sweep import parse_tokens

        try:
            return parse_tokens(str(value))
        except InputError as exc:
            self.fail(str(exc).removeprefix("field 'budgets': "), param, ctx)


class TokenCountList(click.ParamType):
    """A comma list of token counts: ``8k,32k,128k``."""

    name = "tokens,…"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        items = [x.strip() for x in str(value).split(",") if x.strip()]
        if not items:
            self.fail("give at least one token count, e.g. 8k,32k", param, ctx)
        return [TOKENS.convert(x, param, ctx) for x in items]


TOKENS = TokenCount()
TOKEN_LIST = TokenCountList()


def split_multi(values: Iterable[str] | str | None) -> list[str]:
    """A repeatable option's values with comma lists split: ``("a,b", "c")`` → ``[a, b, c]``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def preset_option(default: tuple[str, ...] | str | None = None, *, multiple: bool = True,
                  required: bool = False, help: str | None = None) -> Callable[[F], F]:
    """``--preset`` (aliases ``--presets``, ``--strategy``): repeatable, comma lists split by
    :func:`split_multi`; passed to the command as ``presets`` (or ``preset`` when single)."""
    text = help or ("Strategy preset, a name or a TOML path" + (" (repeatable; a comma list works too)."
                                                                if multiple else "."))
    dest = "presets" if multiple else "preset"
    if multiple and isinstance(default, str):
        default = (default,)
    return click.option("--preset", "--presets", "--strategy", dest, multiple=multiple, default=default,
                        show_default=default is not None, required=required, help=text)


def model_option(default: tuple[str, ...] | str | None = None, *, multiple: bool = True,
                 help: str | None = None) -> Callable[[F], F]:
    """``--model`` (aliases ``--models``, ``--reader``): a client spec; repeatable when several."""
    text = help or ("Model (reader) client spec: extractive, extractive-embedding, anthropic:MODEL, "
                    "openai:MODEL… (repeatable; a comma list works too)." if multiple else "Model client spec.")
    dest = "models" if multiple else "model"
    if multiple and isinstance(default, str):
        default = (default,)
    return click.option("--model", "--models", "--reader", dest, multiple=multiple, default=default,
                        show_default=default is not None, help=text)


def window_option(*, default: int | None = None, help: str = "The model's context window in tokens (e.g. 128k).",
                  budget_alias: bool = False) -> Callable[[F], F]:
    """``--window`` (a token size; ``--budget`` is the same option where ``budget_alias``)."""
    names = ("--window", "--budget") if budget_alias else ("--window",)
    return click.option(*names, "window", type=TOKENS, default=default, show_default=default is not None, help=help)


__all__ = ["TOKENS", "TOKEN_LIST", "TokenCount", "TokenCountList", "model_option", "preset_option", "split_multi",
           "window_option"]


def utf8_text(field: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback refusing text that cannot be stored or searched: an argument
    holding bytes that are not UTF-8 reaches Python as lone surrogates (``$'\\xff'``), which
    the store cannot encode. The error names ``field`` and reads as the one
    :func:`ctxmem.session.check_session_fields` gives for ``import --title``. Use it on text
    options (titles, queries, session ids), never on file paths (a file name need not be
    UTF-8)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        from ctxmem.errors import InputError
        from ctxmem.events import surrogate_at

        for v in value if isinstance(value, tuple | list) else (value,):
            at = surrogate_at(v) if isinstance(v, str) else -1
            if at >= 0:
                raise InputError(f"holds a lone surrogate at character {at} (a byte that is not UTF-8); "
                                 "fix: remove it or pass the text as UTF-8", field=field)
        return value

    return check
