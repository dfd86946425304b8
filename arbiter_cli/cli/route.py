"""``arbiter route …``: task routing (SPEC §3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbiter_cli.cli import completion, render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.helptext import HelpGroup
from arbiter_cli.cli.inputs import parse_since, read_documents
from arbiter_cli.cli.options import CursorOpt, JsonOpt, LimitOpt, SinceOpt, TokenOpt, state_of
from arbiter_cli.domain.validation import fail

if TYPE_CHECKING:

    from rich.console import Console

    from arbiter_cli.domain.routing import Decision

app = typer.Typer(help="Route tasks to agents, record outcomes, and explain decisions.\n\n"
                  "Example: arbiter route task --task-type code-review --task-id PR-1234",
                  no_args_is_help=True)


def add_commands(root: typer.Typer) -> None:
    root.add_typer(app, name="route", cls=HelpGroup)

LanguagesOpt = Annotated[list[str] | None, typer.Option(
    "--language", help="Required language (repeat for more).", show_default=False,
    autocompletion=completion.languages)]
SpecsOpt = Annotated[list[str] | None, typer.Option(
    "--specialization", help="Required label (repeat for more).", show_default=False)]


OVER_CAPACITY = ("its agent held more tasks than its capacity during this decision (journaled "
                 "writes of hosts cut off from the database; see docs/resilience.md)")


def _decision_table(console: Console, decision: Decision) -> None:
    rows = [(i + 1, c["agent_id"], f"{c['score']:.4f}", f"{c['components']['value']:.4f}",
             f"{c['components']['posterior_mean']:.4f}", c["components"]["outcomes"],
             f"{c['components']['load']:.3f}", f"{c['components']['fit']:.3f}",
             f"{c['components']['latency']:.3f}")
            for i, c in enumerate(decision.candidates)]
    console.print(render.table("candidates", ("#", "agent", "score", "value", "mean", "n", "load",
                                              "fit", "latency"), rows))
    if decision.excluded:
        console.print(render.table("excluded", ("reason", "agents", "examples"), [
            (reason, n, ", ".join(decision.examples.get(reason, [])))
            for reason, n in decision.excluded.items()]))


def _routed_human(decision: Decision, already: bool, explain: bool) -> Any:
    def human(console: Console) -> None:
        verb = "already routed" if already else ("would route" if decision.decision_id is None
                                                  else "routed")
        flags = []
        if decision.explored:
            flags.append("explored")
        if decision.confidence is not None:
            flags.append(f"confidence {decision.confidence:.0%}")
        console.print(f"{verb} task [bold]{decision.task_id}[/] to [bold]{decision.agent_id}[/] "
                      f"({decision.strategy}, seed {decision.seed}"
                      + (f", {', '.join(flags)}" if flags else "") + ")")
        if decision.decision_id:
            console.print(f"decision {decision.decision_id}")
        if explain:
            _decision_table(console, decision)

    return human


@command(app, "task")
def task(
    ctx: typer.Context,
    task_type: Annotated[str | None, typer.Option("--task-type", help="Task type.",
                                                  autocompletion=completion.task_types,
                                                  show_default=False)] = None,
    task_id: Annotated[str | None, typer.Option(
        "--task-id", help="Your id for the task; routing is idempotent on it while open.",
        show_default=False)] = None,
    languages: LanguagesOpt = None,
    specializations: SpecsOpt = None,
    prefer: Annotated[list[str] | None, typer.Option(
        "--prefer-specialization", help="Preferred label (raises fit).", show_default=False)] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="1-10, default 5.",
                                                 show_default=False)] = None,
    metadata: Annotated[str | None, typer.Option("--metadata", help="A JSON object.",
                                                 show_default=False)] = None,
    file: Annotated[str | None, typer.Option(
        "--file", help="One JSON task with the same names ('-' reads stdin).",
        show_default=False)] = None,
    strategy: Annotated[str | None, typer.Option(
        "--strategy", help="thompson, ucb, epsilon-greedy, weighted or thompson-stationary "
        "(default: routing.strategy).", autocompletion=completion.choices(*completion.STRATEGIES),
        show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the decision (stored).",
                                             show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide without claiming or "
                                          "recording anything.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Show the candidates and the "
                                          "excluded agents.")] = False,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Pick the best eligible agent for a task, claim a slot, and record the decision.

    Example: arbiter route task --task-type code-review --language Python --task-id PR-1234 --json
    """
    state = state_of(ctx)
    flags = {"task_type": task_type, "task_id": task_id, "languages": languages,
             "specializations": specializations, "prefer": prefer, "priority": priority,
             "metadata": metadata}
    given = {k: v for k, v in flags.items() if v is not None}
    if file is not None:
        if given:
            raise fail("file", "exclusive", "use either --file or the task flags, not both")
        documents = read_documents(
            file, max_bytes=state.settings.security.max_input_bytes)
        if len(documents) != 1:
            raise fail("file", "single", "must hold exactly one JSON task")
        given = documents[0]
    routed = state.app().routing.route(state.principal(), given, strategy=strategy, seed=seed,
                                       dry_run=dry_run, correlation_id=state.correlation_id)
    document = routed.decision.to_dict()
    if routed.already_routed:
        document["already_routed"] = True
    render.emit(state, document, _routed_human(routed.decision, routed.already_routed, explain),
                **({} if dry_run or routed.already_routed else {"durability": "committed"}))


@command(app, "outcome")
def outcome(
    ctx: typer.Context,
    decision_id: Annotated[str | None, typer.Argument(help="Decision id (or use --task-id).",
                                                      autocompletion=completion.open_decision_ids,
                                                      show_default=False)] = None,
    task_id: Annotated[str | None, typer.Option("--task-id", help="The task's id instead.",
                                                show_default=False)] = None,
    success: Annotated[bool | None, typer.Option(
        "--success/--failure", help="How the task ended (required).", show_default=False)] = None,
    quality: Annotated[str | None, typer.Option(
        "--quality", help="0-1 (default 1.0 on success, 0.0 on failure).",
        show_default=False)] = None,
    latency_ms: Annotated[str | None, typer.Option("--latency-ms", help="Task latency, ms.",
                                                   show_default=False)] = None,
    tokens: Annotated[str | None, typer.Option("--tokens", help="Tokens the task used.",
                                               show_default=False)] = None,
    error: Annotated[str | None, typer.Option("--error", help="What went wrong.",
                                              show_default=False)] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Record how a routed task ended: releases the slot and teaches the router. Idempotent.

    Example: arbiter route outcome --task-id PR-1234 --success --quality 0.9 --latency-ms 42000
    """
    from arbiter_cli.domain.routing import Outcome  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    result = Outcome.parse(success=success, quality=quality, latency_ms=latency_ms,
                           tokens=tokens, error=error)
    recorded = state.app().routing.outcome(state.principal(), result, decision_id=decision_id,
                                           task_id=task_id)
    document = recorded.decision.to_dict()
    if recorded.already_recorded:
        document["already_recorded"] = True
    decision = recorded.decision
    render.emit(
        state, document,
        lambda c: c.print(f"{'already recorded' if recorded.already_recorded else 'recorded'} "
                          f"{decision.status} for task [bold]{decision.task_id}[/] on "
                          f"[bold]{decision.agent_id}[/]"),
        **({} if recorded.already_recorded else {"durability": "committed"}))


@command(app, "explain")
def explain(ctx: typer.Context, decision_id: Annotated[str, typer.Argument(
        help="Decision id.", show_default=False, autocompletion=completion.decision_ids)],
        json_out: JsonOpt = False,
        token: TokenOpt = None) -> None:
    """Show a stored decision: every candidate with its components, exclusions, and the seed.

    Example: arbiter route explain 01935c9e-3f5a-7b1c-9d2e-4f6a8b0c1d2e
    """
    state = state_of(ctx)
    decision = state.app().routing.explain(state.principal(), decision_id)

    def human(console: Console) -> None:
        d = decision.to_dict()
        console.print(f"decision [bold]{decision.decision_id}[/]: task {decision.task_id} "
                      f"({decision.task_type}) → [bold]{decision.agent_id}[/], {decision.status}")
        console.print(f"strategy {decision.strategy}, seed {decision.seed}, explored "
                      f"{decision.explored}, confidence {decision.confidence}, "
                      f"{decision.latency_us} µs, config {decision.config_hash[:12]}, "
                      f"at {d['created_at']}")
        if decision.over_capacity:
            console.print(f"[yellow]over capacity[/]: {OVER_CAPACITY}")
        _decision_table(console, decision)
        if decision.outcome:
            shown = ", ".join(f"{key} {value}" for key, value in decision.outcome.items()
                              if value is not None)
            console.print(f"outcome: {shown}", markup=False)

    render.emit(state, decision.to_dict(), human)


@command(app, "history")
def history(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.",
                                              autocompletion=completion.agent_ids,
                                              show_default=False)] = None,
    task_type: Annotated[str | None, typer.Option("--task-type", help="Only this task type.",
                                                  autocompletion=completion.task_types,
                                                  show_default=False)] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="open, succeeded, failed or expired.", show_default=False,
        autocompletion=completion.choices(*completion.DECISION_STATUSES))] = None,
    since: SinceOpt = None,
    over_capacity: Annotated[bool, typer.Option(
        "--over-capacity", help="Only decisions flagged over_capacity (their agent held more "
        "tasks than its capacity meanwhile).")] = False,
    limit: LimitOpt = 100,
    cursor: CursorOpt = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """List decisions, newest first.

    Example: arbiter route history --agent coder-1 --since 24h
    """
    state = state_of(ctx)
    app_ = state.app()
    decisions, next_cursor = app_.routing.history(
        state.principal(), agent_id=agent, task_type=task_type, status=status,
        since=parse_since(since), cursor=cursor, limit=limit, over_capacity=over_capacity)

    def human(console: Console) -> None:
        rows = [(render.Stamp.of(d.to_dict()["created_at"]), d.task_id, d.task_type, d.agent_id,
                 d.strategy, d.status, "yes" if d.explored else "",
                 "yes" if d.over_capacity else "")
                for d in decisions]
        console.print(render.table(f"{len(decisions)} decisions", (
            "time", "task", "type", "agent", "strategy", "status", "explored", "over capacity"),
            rows))

    render.emit_list(state, [d.to_dict() for d in decisions], next_cursor, human,
                     empty="no decision matches" if cursor or any(
                         (agent, task_type, status, since, over_capacity)) else "no decisions yet")


@command(app, "stats")
def stats(
    ctx: typer.Context,
    since: SinceOpt = None,
    by: Annotated[str, typer.Option(
        "--by", help="agent, task-type or strategy.",
        autocompletion=completion.choices(*completion.STATS_BY))] = "agent",
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Routing statistics: explore share, results per arm, latency, open work, starvation.

    Example: arbiter route stats --since 24h --by strategy
    """
    state = state_of(ctx)
    app_ = state.app()
    result = app_.routing.stats(state.principal(), since=parse_since(since), by=by)

    def human(console: Console) -> None:
        latency = result["latency_ms"]
        console.print(f"{result['decisions']} decisions, explored {result['explored_share']:.1%}, "
                      f"{result['without_outcome']} without outcome ({result['open']} open, "
                      f"{result['expired']} expired); latency p50 {latency['p50']} ms, "
                      f"p95 {latency['p95']} ms, p99 {latency['p99']} ms")
        console.print(render.table(f"by {result['by']}", (
            result["by"], "decisions", "succeeded", "failed", "open", "expired", "explored"), [
            (name, g.get("decisions", 0), g.get("succeeded", 0), g.get("failed", 0),
             g.get("open", 0), g.get("expired", 0), g.get("explored", 0))
            for name, g in result["groups"].items()]))
        if result["arms"]:
            console.print(render.table("arms", ("agent", "task type", "outcomes", "success",
                                                "quality"), [
                (arm["agent_id"], arm["task_type"], arm["outcomes"],
                 render.percent(arm["success_rate"]), f"{arm['mean_quality']:.3f}")
                for arm in result["arms"]]))
        if result["starved"]:
            console.print("eligible but never chosen: " + ", ".join(result["starved"]))

    render.emit(state, result, human)


@command(app, "reap")
def reap(ctx: typer.Context, json_out: JsonOpt = False, token: TokenOpt = None) -> None:
    """Expire decisions open longer than routing.assignment_ttl and release their slots.

    Example: arbiter route reap --json
    """
    state = state_of(ctx)
    expired = state.app().routing.reap(state.principal())
    render.emit_list(
        state, [d.to_dict() for d in expired], None,
        lambda c: c.print(f"expired {len(expired)} decisions" + (
            ": " + ", ".join(f"{d.task_id}→{d.agent_id}" for d in expired) if expired else "")),
        durability="committed")


@command(app, "simulate")
def simulate(
    ctx: typer.Context,
    agents: Annotated[int, typer.Option("--agents", help="Simulated agents.", min=1,
                                        max=10_000)] = 5,
    tasks: Annotated[int | None, typer.Option(
        "--tasks", help="Simulated tasks [default: the scenario's, else 3000].", min=1,
        max=1_000_000, show_default=False)] = None,
    strategy: Annotated[str, typer.Option(
        "--strategy", help="A strategy, or all.",
        autocompletion=completion.choices(*completion.STRATEGIES, "all"))] = "all",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the whole simulation.", min=0,
                                      max=2**63 - 1)] = 1,
    truth: Annotated[str | None, typer.Option(
        "--truth", help='JSON file {"agent_id": p | [[task_index, p], ...] | {"p": ..., '
        '"arrives_at": N, "capacity": C}}.', show_default=False)] = None,
    scenario: Annotated[str | None, typer.Option(
        "--scenario", help="Built-in fleet: easy, close, drift, newcomer or capacity.",
        autocompletion=completion.choices(*completion.SCENARIOS),
        show_default=False)] = None,
    runs: Annotated[int, typer.Option("--runs", help="Runs, with seeds seed … seed+runs-1.",
                                      min=1, max=1000)] = 1,
    plot: Annotated[str | None, typer.Option(
        "--plot", help="Draw cumulative regret and best share to this PNG file.",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare strategies offline on agents with known success probabilities (deterministic).

    Example: arbiter route simulate --scenario drift --runs 20 --strategy all --plot drift.png
    """
    from arbiter_cli.bootstrap import routing_policy  # deferred: start-up of `arbiter --help`
    from arbiter_cli.domain.routing import STRATEGIES  # deferred: start-up of `arbiter --help`
    from arbiter_cli.services import simulate as sim  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    fleet = _simulated_fleet(state, truth, scenario, agents, seed)
    strategies = list(STRATEGIES) if strategy == "all" else [strategy]
    result = sim.simulate(routing_policy(state.settings), truth=fleet,
                          tasks=tasks or fleet.tasks, strategies=strategies, seed=seed,
                          runs=runs)
    if scenario:
        result["scenario"] = scenario
    if plot:
        from pathlib import Path

        # deferred: start-up of `arbiter --help` (matplotlib is imported by the plot itself)
        from arbiter_cli.adapters.simulation_plot import plot_simulation

        result["plot"] = str(plot_simulation(result, Path(plot), scenario or "simulation"))

    def human(console: Console) -> None:
        console.print(f"{len(fleet.agents)} agents, {result['tasks']} tasks, {runs} run(s) from "
                      f"seed {seed}; best agent at the end [bold]{result['best_agent']}[/]")
        console.print(render.table(None, ("strategy", "best share", "best share, last 500",
                                          "cumulative regret", "95 % interval"), [
            (s["strategy"], render.percent(s["best_agent_share"]),
             render.percent(s["best_agent_share_last_500"]), f"{s['cumulative_regret']:.1f}",
             "{:.1f} … {:.1f}".format(*s["regret_ci95"])) for s in result["strategies"]]))
        if plot:
            console.print(f"plot: {result['plot']}")

    render.emit(state, result, human)


def _simulated_fleet(state: Any, truth: str | None, scenario: str | None, agents: int,
                     seed: int) -> Any:
    """The fleet of --scenario, of --truth, or drawn from --agents and --seed."""
    from arbiter_cli.domain.scenarios import scenario as built_in  # deferred: start-up
    from arbiter_cli.services import simulate as sim  # deferred: start-up of `arbiter --help`

    if scenario and truth:
        raise fail("scenario", "exclusive", "give --scenario or --truth, not both")
    if scenario:
        return built_in(scenario)
    limit = state.settings.security.max_input_bytes
    documents = read_documents(truth, "truth", max_bytes=limit) if truth else None
    if documents is not None and len(documents) != 1:
        raise fail("truth", "single", "must hold exactly one JSON object")
    if documents is not None and not isinstance(documents[0], dict):
        raise fail("truth", "object", "must be a JSON object")
    return sim.fleet_of(documents[0] if documents else None, agents, seed)
