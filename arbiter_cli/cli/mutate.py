"""``arbiter mutate``: mutation testing of the core with a score gate (SPEC §12). No token."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

import arbiter_cli
from arbiter_cli.cli import render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.options import JsonOpt, state_of
from arbiter_cli.cli.progress import progress
from arbiter_cli.errors import CheckFailed, InvalidInput

if TYPE_CHECKING:

    from rich.console import Console
    from rich.table import Table

    from arbiter_cli.tools.mutate import MutationReport

def add_commands(app: typer.Typer) -> None:
    command(app, "mutate")(mutate)


def mutate(
    ctx: typer.Context,
    paths: Annotated[list[str] | None, typer.Option(
        "--paths", help="Glob of modules to mutate, relative to the project; repeat it "
        "(default: the core: domain, use-case services, breaker, journal).", show_default=False)] = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="Least score that passes, a fraction in [0, 1].")] = 0.8,
    max_children: Annotated[int | None, typer.Option(
        "--max-children", help="Mutants tested in parallel (default: the CPU count).",
        show_default=False)] = None,
    output: Annotated[Path, typer.Option(
        "--output", help="Directory for mutation.json and mutmut.log.", file_okay=False)
    ] = Path("artifacts/mutation"),
    show_survivors: Annotated[bool, typer.Option(
        "--show-survivors", help="Print each surviving mutant's diff.")] = False,
    changed_since: Annotated[str | None, typer.Option(
        "--changed-since", help="Only the modules changed since this git revision "
        "(committed or not).", show_default=False)] = None,
    project: Annotated[Path | None, typer.Option(
        "--project", help="Source checkout to test (default: the one this arbiter runs "
        "from).", file_okay=False, show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Mutation-test the core with mutmut in an isolated copy; exit 1 under --threshold.

    The score is killed / (killed + survived); timeouts and suspicious mutants are shown
    apart and never count as killed. Needs a source checkout (tests/unit) and the mutate
    extra. Writes mutation.json to --output.

    Example: arbiter mutate --threshold 0.8 --changed-since "$(cat .ci/mutation-baseline)"
    """
    import os

    from arbiter_cli.bootstrap import mutation_run  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools import mutate as service  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    if sys.platform == "win32":
        raise InvalidInput("arbiter mutate needs fork(): run it on Linux or macOS",
                           field="platform", rule="posix")
    request = service.MutationRequest(
        project=(project or _checkout()).resolve(),
        patterns=tuple(paths) if paths else service.CORE_SCOPE,
        threshold=threshold,
        max_children=max_children or os.cpu_count() or 2,
        output=output,
        show_survivors=show_survivors,
        changed_since=changed_since,
        explicit_paths=bool(paths),
    )
    with progress(state, "mutate", "starting mutmut") as bar:
        report = mutation_run(request, bar)
    render.emit(state, report.to_dict(), lambda console: _human(console, report, show_survivors))
    announce("mutate.wrote", path=str(report.report_path))
    if not report.passed:
        raise CheckFailed(
            f"mutation score {render.percent(report.score)} is under the threshold "
            f"{render.percent(report.threshold)}",
            details={"score": round(report.score, 4), "threshold": report.threshold})


def announce(event: str, **values: object) -> None:
    """Progress as log events (JSON off a terminal), shown at every --log-level."""
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.observability.logging import announce as log_announce

    log_announce(event, **values)


def _checkout() -> Path:
    """The directory holding the imported ``arbiter_cli`` package (a clone, or site-packages)."""
    return Path(arbiter_cli.__file__).resolve().parent.parent


def _human(console: Console, report: MutationReport, show_survivors: bool) -> None:
    if report.note:
        console.print(report.note)
    modules = {name: counts for name, counts in report.modules.items() if counts.total}
    if modules:  # a module without functions has no mutant (the JSON lists it)
        package = {name.partition(".")[0] for name in modules}
        prefix = f"{package.pop()}." if len(package) == 1 else ""
        rows = [(name.removeprefix(prefix) or name, *_cells(counts.to_dict()))
                for name, counts in modules.items()]
        rows.append(("total", *_cells(report.totals().to_dict())))
        console.print(_table(f"Mutation score per module of {prefix[:-1]}" if prefix
                             else "Mutation score per module", rows))
    verdict = "pass" if report.passed else "FAIL"
    console.print(f"score {render.percent(report.score)} (threshold "
                  f"{render.percent(report.threshold)}): {verdict}, in {report.duration_s:.0f} s")
    if report.survivors and not show_survivors:
        console.print(f"{len(report.survivors)} surviving mutants: --show-survivors prints "
                      "their diffs (names are in mutation.json)")
    for survivor in report.survivors if show_survivors else ():
        console.print(f"\n[bold]{survivor.name}[/] ({survivor.status})", markup=True)
        console.print(survivor.diff or "", markup=False, highlight=False)


def _table(title: str, rows: list[tuple[object, ...]]) -> Table:
    from rich import box
    from rich.table import Table

    grid = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                 collapse_padding=True, pad_edge=False)
    grid.add_column("module", no_wrap=True)
    for name in ("killed", "survived", "timeout", "suspicious", "skipped", "score"):
        grid.add_column(name, justify="right")
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    return grid


def _cells(counts: dict[str, object]) -> list[object]:
    score = counts["score"]
    return [counts["killed"], counts["survived"], counts["timeout"], counts["suspicious"],
            counts["skipped"], "—" if score is None else render.percent(float(str(score)))]
