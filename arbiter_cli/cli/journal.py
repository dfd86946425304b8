"""``arbiter journal …``: the local journal of writes made during an outage (SPEC §7, §7.1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbiter_cli.cli import render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.consent import YesOpt, require_consent
from arbiter_cli.cli.helptext import HelpGroup
from arbiter_cli.cli.options import CursorOpt, JsonOpt, LimitOpt, state_of
from arbiter_cli.cli.progress import progress
from arbiter_cli.errors import InvalidInput, NotFound, StorageUnavailable

if TYPE_CHECKING:
    from rich.console import Console

    from arbiter_cli.cli.state import State
    from arbiter_cli.resilience.gateway import Resilience

app = typer.Typer(help="Inspect, replay and resolve the journal of writes made while the "
                  "database was unavailable.\n\nExample: arbiter journal status", no_args_is_help=True)


def add_commands(root: typer.Typer) -> None:
    root.add_typer(app, name="journal", cls=HelpGroup)


def _resilience(state: State) -> Resilience | None:
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.bootstrap import build

    app_ = build(state.settings, check_schema=False, resilient=True,
                 telemetry=state.telemetry)
    state.on_close(app_.close)
    return app_.resilience


@command(app, "status")
def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Backlog, conflicts, age of the oldest entry, and the circuit breaker. No database I/O.

    Example: arbiter journal status --json
    """
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.resilience.journal import resilience_status

    state = state_of(ctx)
    found = resilience_status(state.settings)
    doc = {k: found[k] for k in ("backlog", "conflicts", "oldest_age_s", "breaker", "stranded")}
    state.warn_stranded()

    def human(c: Console) -> None:
        if state.settings.database_url.startswith("sqlite"):
            c.print("no journal: the primary is a local SQLite file (writes either commit or "
                    "exit 10)")
        else:
            age = ("" if doc["oldest_age_s"] is None
                   else f", oldest {doc['oldest_age_s']:.1f}s old")
            c.print(f"backlog {doc['backlog']}{age}; conflicts {doc['conflicts']}; breaker "
                    f"{doc['breaker']['state']}")
        for other in doc["stranded"]:
            c.print(f"other journal {other['key']} ({other['url'] or 'database not recorded'}): "
                    + (f"{other['pending']} pending, {other['conflicts']} conflicts"
                       if other["pending"] >= 0 else "cannot be read (it may hold writes)")
                    + (f"; drain it with `arbiter journal replay --from {other['key']}`"
                       if other["pending"] else ""), markup=False, highlight=False)

    render.emit(state, doc, human)


@command(app, "replay")
def replay_cmd(
    ctx: typer.Context,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="Stop starting new entries after this long (e.g. 30s); default: "
        "until the journal is empty.", show_default=False)] = None,
    from_key: Annotated[str | None, typer.Option(
        "--from", help="Drain another journal of this data_dir (its KEY, from `arbiter "
        "journal status`) into database.url: only if both are the same database.",
        show_default=False)] = None,
    accept_unrecorded: Annotated[bool, typer.Option(
        "--accept-unrecorded", help="With --from: replay a journal whose folder records no "
        "database (an older arbiter made it), on your word that it is this one. Never "
        "overrides a recorded, different database.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Replay every journaled write into the database, in order; stops if it fails again.

    Each entry is re-admitted first (its token must still be valid on the database) and gets
    the time its command had. Exit 0 when the journal is empty afterwards (conflicts are kept
    and listed), 10 when entries remain (the database is still unavailable, or --budget ran
    out).

    --from KEY drains a journal left under another URL of the same database (after a
    failover or a changed host name). Its folder records which database it was written for;
    when that is not the database database.url reaches, nothing is applied (exit 5), and the
    same when the folder recorded no database, unless --accept-unrecorded.

    Example: arbiter journal replay --from 3f2a9c41d07b5e68 --json
    """
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.resilience.identity import stranded_folder

    state = state_of(ctx)
    budget_s = _duration(budget, "--budget")
    if accept_unrecorded and from_key is None:
        raise InvalidInput("--accept-unrecorded applies only with --from KEY (the journal of "
                           "database.url itself needs no record)", field="accept_unrecorded",
                           rule="needs_from")
    folder = stranded_folder(state.settings, from_key) if from_key is not None else None
    res = _resilience(state)
    if res is None:
        state.warn_stranded()
        render.emit(state, {"applied": 0, "conflicts": 0, "remaining": 0, "over_capacity": 0},
                    lambda c: c.print("no journal: the primary is a local SQLite file"))
        return
    if folder is not None:
        res = _foreign(state, res, folder, accept_unrecorded=accept_unrecorded)
    report = _replay(state, res, budget_s)
    if report["remaining"]:
        raise StorageUnavailable(
            f"replay stopped with {report['remaining']} entries left "
            f"({report['applied']} applied, {report['conflicts']} conflicts, "
            f"{report['over_capacity']} flagged over_capacity): {report['stopped']}")
    if (report["applied"] or report["conflicts"]) and folder is None:
        res.maybe_refresh()
    doc: dict[str, Any] = {"applied": report["applied"], "conflicts": report["conflicts"],
                           "remaining": 0, "over_capacity": report["over_capacity"]}
    if folder is not None:
        doc["from"] = folder.name
    state.gauge("arbiter_journal_replay_over_capacity", "Decisions this journal replay "
                "flagged over_capacity.", doc["over_capacity"])
    state.warn_stranded()  # after the replay: a journal it drained is no longer named
    render.emit(state, doc, lambda c: _replayed(c, doc))


def _replayed(console: Console, doc: dict[str, Any]) -> None:
    console.print(
        f"replayed {doc['applied']} entries; {doc['conflicts']} conflicts "
        f"{'(see `arbiter journal list --conflicts`)' if doc['conflicts'] else ''}".rstrip())
    if doc["over_capacity"]:
        console.print(f"[yellow]{doc['over_capacity']} decision(s) flagged over_capacity[/]: "
                      "their agent held more tasks than its capacity (`arbiter route history "
                      "--json`, docs/resilience.md)")


def _foreign(state: State, res: Resilience, folder: Path, *,
             accept_unrecorded: bool) -> Resilience:
    """The stranded journal in ``folder``, once it is known to belong to ``res.primary``."""
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.resilience.identity import check_foreign_journal

    check_foreign_journal(res, folder, accept_unrecorded=accept_unrecorded)
    foreign = res.for_folder(folder)
    state.on_close(foreign.close)
    return foreign


def _replay(state: State, res: Resilience, budget_s: float | None) -> dict[str, Any]:
    """Replay ``res``'s journal into its primary, with its progress (``cli/progress.py``)."""
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.bootstrap import replay_services
    from arbiter_cli.resilience.replay import replay

    services = replay_services(state.settings, res.primary)
    with progress(state, "journal.replay", "replaying", res.journal.pending()) as bar:
        return replay(res, services, budget_s=budget_s, blocking=True, progress=bar.advance)


def _duration(text: str | None, flag: str) -> float | None:
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.config import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"{flag}: {exc}", field=flag.lstrip("-"), rule="duration") from None


@command(app, "list")
def list_cmd(
    ctx: typer.Context,
    conflicts: Annotated[bool, typer.Option(
        "--conflicts", help="Only entries that conflicted at replay.")] = False,
    limit: LimitOpt = 100,
    cursor: CursorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List journaled writes, newest first (seq, kind, tenant, age, state, error).

    Replay applies them oldest first (the smallest seq).

    Example: arbiter journal list --conflicts
    """
    import time

    # deferred: start-up of `arbiter --help`
    from arbiter_cli.resilience.journal import open_for

    state = state_of(ctx)
    if limit < 0:
        raise InvalidInput("--limit must be 0 or more")
    before: int | None = None
    if cursor is not None:
        if not cursor.isdigit() or len(cursor) > 18:
            raise InvalidInput("--cursor: not a cursor of `journal list`")
        before = int(cursor)
    journal = open_for(state.settings)
    found = [] if journal is None else journal.entries(conflicts_only=conflicts, limit=limit,
                                                       before=before)
    if journal is not None:
        state.on_close(journal.close)
    now = time.time()
    items = [e.to_dict(now) for e in found]
    next_cursor = str(found[-1].seq) if limit and len(found) == limit else None

    def human(c: Console) -> None:
        c.print(render.table(None, ["seq", "op id", "kind", "tenant", "written", "state", "why"], [
            [str(e.seq), i["op_id"], i["kind"], i["tenant"],
             render.Stamp.of(e.created_at, missing="?"),
             i["state"], i["error"] or ""] for e, i in zip(found, items, strict=True)]))
        if conflicts and found:
            render.hint("resolve one with `arbiter journal resolve OP_ID --retry` or `--drop`")

    empty = ("no journal: the primary is a local SQLite file" if journal is None else
             "the journal holds no conflicts" if conflicts else "the journal is empty")
    render.emit_list(state, items, next_cursor, human, empty=empty)


@command(app, "resolve")
def resolve_cmd(
    ctx: typer.Context,
    op_id: Annotated[str, typer.Argument(
        help="Op id of a conflict (see `arbiter journal list --conflicts`).",
        show_default=False)],
    drop: Annotated[bool, typer.Option(
        "--drop", help="Delete the conflict for good: the write is never applied.")] = False,
    retry: Annotated[bool, typer.Option(
        "--retry", help="Put it back to pending (attempts reset): the next replay re-admits "
        "and applies it, or keeps it as a conflict again.")] = False,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Resolve a journal conflict: drop it, or retry it. Audited in its tenant's chain.

    --drop asks first on a terminal and needs --yes off one. Both need the database (the
    decision is audited there first); nothing changes without it (exit 10).

    Example: arbiter journal resolve 0190f3b2-7c1e-7a10-8000-5e2f9d1c0a11 --retry
    """
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.bootstrap import sql_unit_of_work
    from arbiter_cli.resilience.conflicts import DROP, RETRY, find_conflict, resolve

    state = state_of(ctx)
    if drop == retry:
        raise InvalidInput("choose one of --drop or --retry", field="resolution", rule="one_of")
    res = _resilience(state)
    if res is None:
        raise NotFound(f"no journal entry with op id {op_id!r}: the primary is a local SQLite "
                       "file, which has no journal")
    entry = find_conflict(res, op_id)
    if drop:
        require_consent(f"drop the journaled write {entry.op_id} ({entry.kind} of tenant "
                        f"{entry.tenant!r}): it will never be applied", yes=yes)
    doc = resolve(res, sql_unit_of_work(state.settings, res.primary), entry, DROP if drop else RETRY)
    render.emit(state, doc, lambda c: c.print(
        f"dropped {doc['op_id']} ({doc['kind']}): it will never be applied" if drop else
        f"{doc['op_id']} ({doc['kind']}) is pending again: the next replay re-admits it"))
