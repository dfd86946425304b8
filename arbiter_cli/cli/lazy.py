"""The root command group, which imports and builds a command module on first use.

``arbiter agents list`` imports ``cli/agents.py`` and builds the Click commands of ``agents``
only: importing every command module and building every command (Typer reads each signature
and its annotations) cost about 85 ms of CPU at each start on the 2-core reference machine,
more than the whole command needs of them (docs/performance.md, Start-up).

``arbiter --help`` lists the commands without importing them: each ``Entry`` carries the first
paragraph of its command's help, and ``tests/cli/test_commands.py`` checks that the listing
is the one the loaded commands would print.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class Entry:
    """A root command (or command group) defined by ``add_commands(app)`` in ``module``."""

    module: str  # under arbiter_cli.cli
    help: str  # the first paragraph of its help, as `arbiter --help` lists it


class LazyGroup(TyperGroup):
    """A ``TyperGroup`` whose commands are loaded from ``entries`` when first resolved.

    Commands registered on the Typer app itself are kept too and listed after the entries.
    """

    entries: ClassVar[dict[str, Entry]] = {}
    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.entries, *(name for name in self.commands if name not in self.entries)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.entries.get(cmd_name)
        if entry is None:
            return None
        if self._listing:  # help lists names and first paragraphs: nothing to import for that
            return TyperCommand(name=cmd_name, help=entry.help)
        self._load(entry.module)
        return self.commands.get(cmd_name)

    def _load(self, module: str) -> None:
        """Import ``module`` and build the commands its ``add_commands(app)`` defines."""
        loaded = importlib.import_module(f"arbiter_cli.cli.{module}")
        scratch = typer.Typer(rich_markup_mode=self.rich_markup_mode)
        loaded.add_commands(scratch)
        built = typer.main.get_group(scratch)
        for name, command in built.commands.items():
            self.commands.setdefault(name, command)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx: Any, args: list[str]
                        ) -> tuple[str | None, Any, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as exc:  # a usage error: suggest among every name
            if not hasattr(exc, "ctx"):  # only usage errors carry the context
                raise
            close = difflib.get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if close and self.suggest_commands and "Did you mean" not in exc.message:
                suggestions = ", ".join(f"{name!r}" for name in close)
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise
