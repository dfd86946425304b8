"""The root command group, which imports and builds a command module on first use.

``arbiter agents list`` imports ``cli/agents.py`` and builds the Click commands of ``agents``
only: importing every command module and building every command (Typer reads each signature
and its annotations) cost about 85 ms of CPU at each start on the 2-core reference machine,
more than the whole command needs of them (docs/performance.md, Start-up).

``arbiter --help`` lists the commands without importing them: each ``Entry`` carries the first
paragraph of its command's help, and ``tests/cli/test_commands.py`` checks that the listing
is the one the loaded commands would print.

A loaded command group (``agents``, ``route`` …) builds its subcommands on first use too
(``LazyCommands``): ``arbiter agents list`` builds ``list`` and none of the ten others.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
from collections.abc import Callable, Iterator, MutableMapping
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
        groups = _defer_subcommands(scratch)
        built = typer.main.get_group(scratch)
        for name, (group, options) in groups.items():
            command: Any = built.commands[name]  # the TyperGroup built from the shell
            command.commands = LazyCommands(group, options)
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


class LazyCommands(MutableMapping[str, Any]):
    """A group's commands by name, in typer's order, each built from its typer definition
    the first time it is looked up (``get``, ``[]``); iterating names builds nothing,
    ``items()`` and ``values()`` build them all (help, completion)."""

    def __init__(self, group: typer.Typer, options: dict[str, Any]) -> None:
        self._options = options
        self._pending: dict[str, Callable[[], Any]] = {}
        self._built: dict[str, Any] = {}
        self._names: dict[str, None] = {}  # every name, in typer's order (commands, groups)
        for info in group.registered_commands:
            assert info.callback is not None, "a command needs a callback"
            name = info.name or typer.main.get_command_name(info.callback.__name__)
            self._add(name, functools.partial(
                typer.main.get_command_from_info, info,
                pretty_exceptions_short=options["pretty_exceptions_short"],
                rich_markup_mode=options["rich_markup_mode"]))
        for group_info in group.registered_groups:
            group_name = typer.main.solve_typer_info_defaults(group_info).name
            if not group_name:  # typer merges an unnamed group's commands: not deferred
                for sub, command in typer.main.get_group_from_info(group_info, **options
                                                                   ).commands.items():
                    self[sub] = command
                continue
            self._add(group_name, functools.partial(typer.main.get_group_from_info,
                                                    group_info, **options))

    def _add(self, name: str, build: Callable[[], Any]) -> None:
        self._names.setdefault(name, None)  # a name defined again keeps its place, as in typer
        self._built.pop(name, None)
        self._pending[name] = build

    def __getitem__(self, name: str) -> Any:
        if name in self._pending:
            self._built[name] = self._pending.pop(name)()
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._names.setdefault(name, None)
        self._pending.pop(name, None)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._names[name]
        self._pending.pop(name, None)
        self._built.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _defer_subcommands(scratch: typer.Typer) -> dict[str, tuple[typer.Typer, dict[str, Any]]]:
    """Replace each named command group of ``scratch`` by a copy without subcommands, so
    ``get_group`` builds only the group itself; its name → (its typer info, the options of
    ``get_group_from_info``), for ``LazyCommands``. The group's own ``typer.Typer`` (a
    module's ``app``) is not changed."""
    options = {"pretty_exceptions_short": scratch.pretty_exceptions_short,
               "rich_markup_mode": scratch.rich_markup_mode,
               "suggest_commands": scratch.suggest_commands}
    names = [typer.main.solve_typer_info_defaults(info).name
             for info in scratch.registered_groups]
    deferred: dict[str, tuple[typer.Typer, dict[str, Any]]] = {}
    for index, (info, name) in enumerate(zip(scratch.registered_groups, names, strict=True)):
        group = info.typer_instance
        if not name or group is None or names.count(name) > 1:  # built as typer does
            continue
        shell = copy.copy(group)
        shell.registered_commands = []
        shell.registered_groups = []
        shell_info = copy.copy(info)
        shell_info.typer_instance = shell
        scratch.registered_groups[index] = shell_info
        deferred[name] = (group, options)
    return deferred
