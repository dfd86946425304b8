"""``arbiter agents …``: the agent registry (SPEC §2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbiter_cli.cli import completion, render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.consent import YesOpt, require_consent, will_ask
from arbiter_cli.cli.helptext import HelpGroup
from arbiter_cli.cli.inputs import read_documents
from arbiter_cli.cli.options import CursorOpt, JsonOpt, LimitOpt, TokenOpt, state_of
from arbiter_cli.cli.progress import progress
from arbiter_cli.domain.validation import fail

if TYPE_CHECKING:
    from rich.console import Console

    from arbiter_cli.cli.state import State
    from arbiter_cli.domain.agents import Agent
    from arbiter_cli.domain.principal import Principal

app = typer.Typer(help="Register, inspect, query and maintain agents.\n\n"
                  "Example: arbiter agents list --status available", no_args_is_help=True)



def add_commands(root: typer.Typer) -> None:
    root.add_typer(app, name="agents", cls=HelpGroup)


IdArg = Annotated[str, typer.Argument(help="Agent id.", show_default=False,
                                          autocompletion=completion.agent_ids)]
TaskTypesOpt = Annotated[list[str] | None, typer.Option(
    "--task-type", autocompletion=completion.task_types,
    help="Task type the agent handles (repeat for more).", show_default=False)]
LanguagesOpt = Annotated[list[str] | None, typer.Option(
    "--language", help="Language (repeat for more).", show_default=False,
    autocompletion=completion.languages)]
SpecsOpt = Annotated[list[str] | None, typer.Option(
    "--specialization", help="Free label (repeat for more).", show_default=False)]
CapacityOpt = Annotated[int | None, typer.Option(
    "--capacity", help="Concurrent tasks, 1-1000 (default: registry.default_capacity).",
    show_default=False)]
MetadataOpt = Annotated[str | None, typer.Option(
    "--metadata", help="A JSON object of at most 16 KiB.", show_default=False)]


def _show_agent(agent: Agent, verb: str) -> Any:
    def human(console: Console) -> None:
        console.print(f"{verb} agent [bold]{agent.id}[/] (version {agent.version})")
        _details(console, agent)

    return human


def _details(console: Console, agent: Agent) -> None:
    perf = agent.performance
    rows = [
        ("id", agent.id), ("name", agent.name), ("model family", agent.model_family),
        ("status", agent.status.value + (f" ({agent.status_reason})" if agent.status_reason else "")),
        ("task types", ", ".join(agent.task_types)),
        ("languages", ", ".join(agent.languages) or "-"),
        ("specializations", ", ".join(agent.specializations) or "-"),
        ("capacity", f"{agent.active_tasks}/{agent.capacity} ({render.percent(agent.utilization)})"),
        ("success", f"{render.percent(perf.success_rate)} over {perf.task_count} tasks"),
        ("quality", f"{perf.average_quality:.3f}"),
        ("latency", f"{perf.average_latency_ms:.0f} ms"),
        ("last active", agent.to_dict()["last_active_at"]),
        ("version", agent.version),
    ]
    console.print(render.table(None, ("field", "value"), rows))


@command(app, "register")
def register(
    ctx: typer.Context,
    agent_id: Annotated[str | None, typer.Option("--id", help="Agent id.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name.", show_default=False)] = None,
    model_family: Annotated[str | None, typer.Option(
        "--model-family", help="Lower-case slug, e.g. claude-3.5.", show_default=False)] = None,
    task_types: TaskTypesOpt = None,
    languages: LanguagesOpt = None,
    specializations: SpecsOpt = None,
    capacity: CapacityOpt = None,
    metadata: MetadataOpt = None,
    file: Annotated[str | None, typer.Option(
        "--file", help="JSON object or JSON lines with the same fields ('-' reads stdin); "
        "all or nothing.", show_default=False)] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Register one agent from flags, or many from --file (all or nothing).

    Example: arbiter agents register --id coder-1 --name "Coder 1" --model-family claude-3.5
    --task-type code-editing --language Python --capacity 4
    """
    state = state_of(ctx)
    flags = {"id": agent_id, "name": name, "model_family": model_family, "task_types": task_types,
             "languages": languages, "specializations": specializations, "capacity": capacity,
             "metadata": metadata}
    given = {k: v for k, v in flags.items() if v is not None}
    if file is not None and given:
        raise fail("file", "exclusive", "use either --file or the agent flags, not both")
    raws = [given] if file is None else read_documents(
        file, max_bytes=state.settings.security.max_input_bytes)
    app_ = state.app()
    with progress(state, "agents.register", "registering", len(raws)) as bar:
        created = app_.agents.register(state.principal(), raws, progress=bar.advance)
    if len(created) == 1 and file is None:
        render.emit(state, created[0].to_dict(), _show_agent(created[0], "registered"),
                    durability="committed")
        return
    render.emit_list(
        state, [a.to_dict() for a in created], None,
        lambda console: console.print(f"registered {len(created)} agents"),
        durability="committed",
    )


@command(app, "update")
def update(
    ctx: typer.Context,
    agent_id: IdArg,
    name: Annotated[str | None, typer.Option("--name", help="Display name.", show_default=False)] = None,
    task_types: TaskTypesOpt = None,
    languages: LanguagesOpt = None,
    specializations: SpecsOpt = None,
    capacity: CapacityOpt = None,
    metadata: MetadataOpt = None,
    active_tasks: Annotated[int | None, typer.Option(
        "--active-tasks", help="Admin only: correct the active task count (never below the "
        "agent's open decisions).",
        show_default=False)] = None,
    expect_version: Annotated[int | None, typer.Option(
        "--expect-version", help="Fail with exit 5 unless the agent is at this version.",
        show_default=False)] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Change an agent's fields; a list flag replaces that whole list.

    Example: arbiter agents update coder-1 --capacity 8 --language Python --language Go
    """
    state = state_of(ctx)
    raw = {"name": name, "task_types": task_types, "languages": languages,
           "specializations": specializations, "capacity": capacity, "metadata": metadata,
           "active_tasks": active_tasks, "expect_version": expect_version}
    agent = state.app().agents.update(state.principal(), agent_id, raw)
    render.emit(state, agent.to_dict(), _show_agent(agent, "updated"), durability="committed")


@command(app, "remove")
def remove(ctx: typer.Context, agent_id: IdArg, yes: YesOpt = False, json_out: JsonOpt = False,
           token: TokenOpt = None) -> None:
    """Remove an agent; its decisions and audit records stay. Asks first on a terminal;
    needs --yes off one.

    Example: arbiter agents remove coder-1 --yes
    """
    state = state_of(ctx)
    principal = state.principal()
    require_consent(f"remove agent {agent_id!r} of tenant {principal.tenant!r} (its decisions "
                    "and audit records stay)", yes=yes)
    agent = state.app().agents.remove(principal, agent_id)
    render.emit(
        state, {**agent.to_dict(), "removed": True},
        lambda console: console.print(f"removed agent [bold]{agent.id}[/]"),
        durability="committed",
    )


@command(app, "show")
def show(ctx: typer.Context, agent_id: IdArg, json_out: JsonOpt = False,
         token: TokenOpt = None) -> None:
    """Show one agent in full.

    Example: arbiter agents show coder-1 --json
    """
    state = state_of(ctx)
    agent = state.app().agents.show(state.principal(), agent_id)
    render.emit(state, agent.to_dict(), lambda console: _details(console, agent))


@command(app, "list")
def list_agents(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(
        "--status", help="available, draining, offline or maintenance.", show_default=False,
        autocompletion=completion.choices(*completion.AGENT_STATUSES))] = None,
    task_type: Annotated[str | None, typer.Option(
        "--task-type", help="Only agents that handle this task type.", show_default=False,
        autocompletion=completion.task_types)] = None,
    limit: LimitOpt = 100,
    cursor: CursorOpt = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """List agents by id: a table, or full objects with --json.

    Example: arbiter agents list --status available --task-type code-review
    """
    state = state_of(ctx)
    page = state.app().agents.list(state.principal(), status=status, task_type=task_type,
                                   cursor=cursor, limit=limit)

    def human(console: Console) -> None:
        rows = [(a.id, a.name, a.status.value, render.percent(a.utilization),
                 render.percent(a.performance.success_rate),
                 f"{a.performance.average_quality:.2f}", ", ".join(a.task_types))
                for a in page.items]
        console.print(render.table(
            f"{len(page.items)} agents", ("id", "name", "status", "util", "success", "quality",
                                          "task types"), rows))

    render.emit_list(state, [a.to_dict() for a in page.items], page.next_cursor, human,
                     empty="no agent" + (" matches these filters" if status or task_type
                                         else "s registered: see `arbiter agents register`"))


@command(app, "query")
def query(
    ctx: typer.Context,
    task_type: Annotated[str, typer.Option("--task-type", help="Required task type.",
                                           autocompletion=completion.task_types,
                                           show_default=False)],
    languages: LanguagesOpt = None,
    specializations: Annotated[list[str] | None, typer.Option(
        "--specialization", help="Required label (repeat for more).", show_default=False)] = None,
    prefer: Annotated[list[str] | None, typer.Option(
        "--prefer-specialization", help="Preferred label, raises the fit score.",
        show_default=False)] = None,
    max_utilization: Annotated[float | None, typer.Option(
        "--max-utilization", help="Highest utilization, 0-1 (default 1.0).",
        show_default=False)] = None,
    min_success_rate: Annotated[float | None, typer.Option(
        "--min-success-rate", help="Lowest success rate, 0-1 (default 0).",
        show_default=False)] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only agents with this status.", show_default=False,
        autocompletion=completion.choices(*completion.AGENT_STATUSES))] = None,
    limit: Annotated[int, typer.Option("--limit", help="Top K; 0 means all.")] = 10,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Find capable agents, ranked by match score.

    Example: arbiter agents query --task-type code-review --language Python --limit 5
    """
    state = state_of(ctx)
    raw = {"task_type": task_type, "languages": languages, "specializations": specializations,
           "prefer": prefer, "max_utilization": max_utilization,
           "min_success_rate": min_success_rate, "status": status, "limit": limit}
    items = state.app().agents.query(state.principal(), raw)

    def human(console: Console) -> None:
        rows = [(i + 1, item["agent"]["id"], f"{item['match_score']:.4f}",
                 render.percent(item["agent"]["performance"]["success_rate"]),
                 f"{item['agent']['performance']['average_quality']:.2f}",
                 render.percent(item["agent"]["utilization"]), "; ".join(item["reasons"]))
                for i, item in enumerate(items)]
        console.print(render.table(f"{len(items)} matches for {task_type}",
                                   ("#", "id", "score", "success", "quality", "util", "why"),
                                   rows))

    render.emit_list(state, items, None, human,
                     empty=f"no agent matches task type {task_type!r} and these filters")


@command(app, "stats")
def stats(ctx: typer.Context, json_out: JsonOpt = False, token: TokenOpt = None) -> None:
    """Fleet statistics of your tenant, computed by aggregate SQL.

    Example: arbiter agents stats --json
    """
    state = state_of(ctx)
    result = state.app().agents.stats(state.principal()).to_dict()

    def human(console: Console) -> None:
        rows = [("agents", result["agents"])]
        rows += [(f"  {name}", n) for name, n in result["by_status"].items()]
        rows += [("busy / idle", f"{result['busy']} / {result['idle']}"),
                 ("mean utilization", render.percent(result["mean_utilization"])),
                 ("mean success", render.percent(result["mean_success"])),
                 ("active / capacity",
                  f"{result['total_active_tasks']} / {result['total_capacity']}")]
        console.print(render.table(f"tenant {result['tenant']}", ("measure", "value"), rows))

    render.emit(state, result, human)


@command(app, "status")
def status(
    ctx: typer.Context,
    agent_id: IdArg,
    new_status: Annotated[str, typer.Argument(
        metavar="{available|draining|offline|maintenance}", help="The new status.",
        autocompletion=completion.choices(*completion.AGENT_STATUSES),
        show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept with the agent).",
                                               show_default=False)] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Set an agent's status; only available agents receive new tasks.

    Example: arbiter agents status coder-1 draining --reason "deploying v2"
    """
    state = state_of(ctx)
    agent = state.app().agents.set_status(state.principal(), agent_id, new_status, reason)
    render.emit(state, agent.to_dict(),
                lambda console: console.print(f"agent [bold]{agent.id}[/] is {agent.status.value}"),
                durability="committed")


@command(app, "heartbeat")
def heartbeat(ctx: typer.Context, agent_id: IdArg, json_out: JsonOpt = False,
              token: TokenOpt = None) -> None:
    """Record that an agent is alive (bumps last_active_at).

    Example: arbiter agents heartbeat coder-1
    """
    state = state_of(ctx)
    agent = state.app().agents.heartbeat(state.principal(), agent_id)
    render.emit(state, agent.to_dict(),
                lambda console: console.print(f"agent [bold]{agent.id}[/] heartbeat recorded"),
                durability="committed")


@command(app, "record")
def record(
    ctx: typer.Context,
    agent_id: IdArg,
    success: Annotated[bool | None, typer.Option(
        "--success/--failure", help="How the task ended (required).", show_default=False)] = None,
    quality: Annotated[str | None, typer.Option(
        "--quality", help="0-1 (default 1.0 on success, 0.0 on failure).",
        show_default=False)] = None,
    latency_ms: Annotated[str | None, typer.Option(
        "--latency-ms", help="Task latency in ms, >= 0.", show_default=False)] = None,
    task_type: Annotated[str | None, typer.Option(
        "--task-type", help="Task type of the finished task.", show_default=False,
        autocompletion=completion.task_types)] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Fold one finished task into an agent's performance.

    Example: arbiter agents record coder-1 --success --quality 0.9 --latency-ms 4200
    """
    from arbiter_cli.domain.agents import TaskResult  # deferred: start-up of `arbiter --help`

    if success is None:
        raise fail("success", "required", "give --success or --failure")
    state = state_of(ctx)
    app_ = state.app()
    result = TaskResult.parse(success=success, quality=quality, latency_ms=latency_ms,
                              task_type=task_type, policy=app_.agents.policy)
    agent = app_.agents.record(state.principal(), agent_id, result)
    render.emit(state, agent.to_dict(), _show_agent(agent, "recorded a task for"),
                durability="committed")


@command(app, "cleanup")
def cleanup(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option(
        "--older-than", help="Silence after which an idle agent goes offline.")] = "24h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, change nothing.")] = False,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Mark agents silent for --older-than with no active tasks offline; never deletes.
    Without --dry-run it asks first on a terminal and needs --yes off one.

    Example: arbiter agents cleanup --older-than 24h --dry-run
    """
    from arbiter_cli.config import parse_duration  # deferred: start-up of `arbiter --help`

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise fail("older_than", "duration", str(exc)) from None
    state = state_of(ctx)
    principal = state.principal()
    if not dry_run:
        require_consent(_cleanup_action(state, principal, older_than, seconds, yes), yes=yes)
    marked = state.app().agents.cleanup(principal, seconds, dry_run=dry_run)
    verb = "would mark" if dry_run else "marked"

    def human(console: Console) -> None:
        summary = f"{verb} {len(marked)} agents offline"
        if render.output_format(state) == "table":
            console.print(summary)
        else:  # stdout keeps the rows alone
            render.hint(summary)
        if marked:
            console.print(render.table(None, ("id", "last active"),
                                       [(a.id, render.Stamp.of(a.last_active_at))
                                        for a in marked]))

    if state.json:
        render.write_json({"items": [a.to_dict() for a in marked], "count": len(marked),
                           "next_cursor": None, "dry_run": dry_run,
                           "meta": state.meta(**({} if dry_run else {"durability": "committed"}))})
    else:
        human(render.stdout_console(state, titles=False))


def _cleanup_action(state: State, principal: Principal, older_than: str, seconds: float,
                    yes: bool) -> str:
    """What cleanup will do; on a terminal, with the agents a dry run finds now."""
    action = f"mark agents of tenant {principal.tenant!r} silent for {older_than} offline"
    if not will_ask(yes=yes):
        return action
    found = [a.id for a in state.app().agents.cleanup(principal, seconds, dry_run=True)]
    shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    return f"{action}: {len(found)} now ({shown or 'none'})"
