"""How every command and group prints its help (SPEC §16 "Help").

Typer builds each command with these classes (``cls=``): a flag shows no ``<bool>`` type, and
help text reflows to the terminal: the lines of a paragraph in a docstring are joined, so a
summary never keeps the hard line breaks of the source. Their option values are coerced
without pydantic where that is certain (``cli/coercion.py``). Only typer is imported here.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any

from typer.core import TyperCommand, TyperGroup

from arbiter_cli.cli.coercion import lighten


def reflow(text: str | None) -> str | None:
    """Join the lines of each paragraph; paragraphs stay apart (a blank line between them)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs if paragraph.strip())


def _without_bool_type(params: list[Any]) -> list[Any]:
    """A flag takes no value: print no ``<bool>`` next to it (an empty metavar). And every
    value is coerced by ``cli/coercion.py`` (typer's completion options too)."""
    lighten(params)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _NotLoaded:
    """Stands for rich's ``Markdown`` and ``Traceback`` in typer's help module: the CLI's help
    is rich markup, never Markdown, and typer's pretty exceptions are off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("rich's Markdown and Traceback are not loaded for help")


def load_rich_help() -> None:
    """Import ``typer.rich_utils`` without ``rich.markdown`` and ``rich.traceback``.

    Typer imports them at the top of its help module, for Markdown help and pretty tracebacks;
    with markdown-it, pygments and rich's Syntax they were about a third of `arbiter --help`'s
    CPU (docs/performance.md, Start-up). Stand-ins serve that one import and leave
    ``sys.modules`` afterwards, so an ``import rich.markdown`` later gets the real module.
    """
    if "typer.rich_utils" in sys.modules:
        return
    stand_ins = {}
    for name, attribute in (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback")):
        if name not in sys.modules:
            stand_ins[name] = types.ModuleType(name)
            setattr(stand_ins[name], attribute, _NotLoaded)
    sys.modules.update(stand_ins)
    try:
        importlib.import_module("typer.rich_utils")
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


class HelpCommand(TyperCommand):
    """A command whose help reflows and whose flags show no value type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = reflow(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_bool_type(super().get_params(ctx))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        load_rich_help()
        super().format_help(ctx, formatter)


class HelpGroup(TyperGroup):
    """A command group whose help reflows and whose flags show no value type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = reflow(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_bool_type(super().get_params(ctx))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        load_rich_help()
        super().format_help(ctx, formatter)
