"""Tenant isolation matrix (SPEC §4): every token-checked command × every role × every target.

Two tenants, ``alpha`` and ``bravo``, live in one initialized database per backend (SQLite,
PostgreSQL, and the API: SQLite behind a live server, every case run by the remote CLI). Each has a
token of every role and its own agents, decisions and tokens, all seeded through the CLI. Every
case runs ``main()`` through ``tests.helpers.cli``, as the caller's token:

- **own**: an object of the caller's tenant;
- **other**: the same kind of object, but it belongs to the other tenant;
- **missing**: an id that exists nowhere;
- **removed**: an agent that was removed, a decision whose agent was removed, a revoked token, or
  the task id of a closed decision.

What must hold:

- no case ever prints the other tenant's data (its marker string, its decision or token ids, its
  tenant name as a JSON value) on stdout or stderr;
- when the role may run the command, "other" and "missing" exit 4 with byte-identical stderr once
  the id is substituted (no existence oracle), and so does "removed" for agents;
- when it may not, every target exits 6 with the same stderr (authorization comes before lookup);
- every miss on a globally unique id (decision, token) is in the caller's audit chain under the
  case's correlation id, the same for "other" and "missing"; every denial is too, aggregated
  as SPEC §4 rules (one event per tenant, actor and reason per second): the first refusal of
  each (role, command) has its own event, and any later one without an event of its own fell
  in the second of an earlier one's event (the same for "other" and "missing"); a
  cross-tenant attempt is also in the owner's chain, and nothing else ever is; a failed case
  never leaves an ``ok`` event, a successful mutation always leaves one;
- the other tenant's objects are unchanged when the matrix is over.

Speed: a case costs ~10 ms because the module reuses the click command that Typer builds from
``build_app()`` (~40 ms per call, identical every time); ``main()``, the error boundary and the
admission gate still run for real on every case.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.helpers import CliResult, cli, fresh_postgres_database, start_server

ROLES = ("viewer", "orchestrator", "manager", "admin")
TENANTS = ("alpha", "bravo")
TARGETS = ("own", "other", "missing", "removed")
OTHER = {"alpha": "bravo", "bravo": "alpha"}
MISSING_DECISION = "01990000-0000-7000-8000-00000000dead"
MISSING_TOKEN = "zzzzzzzzzzzz"

#: SPEC §4's role table, written out independently of ``domain.security.PERMISSIONS``.
SPEC_LEAST_ROLE = {
    "whoami": "viewer",
    "agents show": "viewer", "agents list": "viewer", "agents query": "viewer",
    "agents stats": "viewer", "route explain": "viewer", "route history": "viewer",
    "route stats": "viewer",
    "route task": "orchestrator", "route outcome": "orchestrator", "route reap": "orchestrator",
    "agents heartbeat": "orchestrator", "agents status": "orchestrator",
    "agents register": "manager", "agents update": "manager", "agents remove": "manager",
    "agents record": "manager", "agents cleanup": "manager",
    "tokens create": "admin", "tokens list": "admin", "tokens revoke": "admin",
    "audit list": "admin", "audit verify": "admin",
}

#: Data commands, with ``{id}`` where the target goes (the checked object for id-less lists).
DATA_COMMANDS: dict[str, tuple[str, ...]] = {
    "agents show": ("agents", "show", "{id}"),
    "agents update": ("agents", "update", "{id}", "--capacity", "1000"),
    "agents remove": ("agents", "remove", "{id}", "--yes"),
    "agents status": ("agents", "status", "{id}", "available"),
    "agents heartbeat": ("agents", "heartbeat", "{id}"),
    "agents record": ("agents", "record", "{id}", "--success", "--quality", "0.9"),
    "agents register": ("agents", "register", "--id", "{id}", "--name", "{name}",
                        "--model-family", "x", "--task-type", "testing"),
    "agents list": ("agents", "list", "--limit", "0"),
    "agents query": ("agents", "query", "--task-type", "testing", "--limit", "0"),
    "agents stats": ("agents", "stats"),
    "agents cleanup": ("agents", "cleanup", "--older-than", "1d", "--dry-run"),
    "route explain": ("route", "explain", "{id}"),
    "route outcome": ("route", "outcome", "{id}", "--success", "--quality", "0.9"),
    "route task": ("route", "task", "--task-type", "testing", "--task-id", "{id}",
                   "--metadata", "{metadata}"),
    "route history": ("route", "history", "--agent", "{id}", "--limit", "0"),
    "route stats": ("route", "stats", "--by", "agent"),
    "route reap": ("route", "reap"),
    "tokens revoke": ("tokens", "revoke", "{id}", "--yes"),
}
#: Commands with no object id: each role must see only its own tenant.
TENANT_VIEW_COMMANDS: dict[str, tuple[str, ...]] = {
    "whoami": ("whoami",),
    "tokens create": ("tokens", "create", "--role", "viewer", "--name", "matrix"),
    "tokens list": ("tokens", "list", "--limit", "0"),
    "audit list": ("audit", "list", "--limit", "0"),
    "audit verify": ("audit", "verify"),
}
ID_COMMANDS = {"agents show", "agents update", "agents remove", "agents status",
               "agents heartbeat", "agents record", "route explain", "route outcome",
               "tokens revoke"}
GLOBAL_ID_COMMANDS = {"route explain": "route.explain", "route outcome": "route.outcome",
                      "tokens revoke": "token.revoke"}
MUTATIONS = {"agents update", "agents remove", "agents status", "agents heartbeat",
             "agents record", "agents register", "route task", "route outcome", "tokens revoke"}


class Case(NamedTuple):
    tenant: str
    role: str
    command: str
    target: str  # own | other | missing | removed; "view" for TENANT_VIEW_COMMANDS

    @property
    def label(self) -> str:
        return f"{self.tenant}-{self.role}-{self.command.replace(' ', '_')}-{self.target}"

    @property
    def permitted(self) -> bool:
        return ROLES.index(self.role) >= ROLES.index(SPEC_LEAST_ROLE[self.command])


DATA_CASES = [Case(*combo) for combo in itertools.product(TENANTS, ROLES, DATA_COMMANDS,
                                                           TARGETS)]
VIEW_CASES = [Case(t, r, c, "view") for t, r, c in itertools.product(TENANTS, ROLES,
                                                                    TENANT_VIEW_COMMANDS)]
ALL_CASES = DATA_CASES + VIEW_CASES


# ---------------------------------------------------------------------------- the world


class Ran(NamedTuple):
    case: Case
    argv: tuple[str, ...]
    object_id: str | None
    correlation_id: str
    result: CliResult
    #: The case's run lies in [started, finished] (epoch seconds, this host's clock, which is
    #: the database's: SQLite in process, PostgreSQL on loopback).
    started: float = 0.0
    finished: float = 0.0


class Tenant:
    """What one tenant owns after the setup, and how to recognise its data."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.marker = f"MK{secrets.token_hex(8)}"
        self.admin = ""  # the tenant's first admin token: reads the audit log, never a case
        self.tokens: dict[str, str] = {}
        self.token_ids: dict[str, str] = {}
        self.decisions: dict[str, str] = {}
        self.objects: dict[str, str] = {}  # other token ids by purpose
        self.snapshot: dict[str, Any] = {}

    def secrets_(self) -> set[str]:
        """Strings that only this tenant's data contains."""
        return {self.marker, *self.decisions.values(), *self.token_ids.values(),
                *self.objects.values()}


class World:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        #: The API backend: cases run as the remote CLI against a live server (SPEC §15).
        self.server: str | None = None
        self.tenants = {name: Tenant(name) for name in TENANTS}
        self.ran: dict[Case, Ran] = {}
        self._serial = itertools.count()

    # -- running -----------------------------------------------------------------

    def run(self, case: Case) -> Ran:
        """Run a case once (memoised), whatever order pytest chose."""
        if case not in self.ran:
            me = self.tenants[case.tenant]
            object_id = self.object_id(case)
            template = DATA_COMMANDS.get(case.command) or TENANT_VIEW_COMMANDS[case.command]
            fill = {"{id}": object_id or "", "{name}": f"{me.name} {me.marker}",
                    "{metadata}": json.dumps({"marker": me.marker})}
            argv = tuple(fill.get(part, part) for part in template)
            correlation_id = f"mx-{self.backend}-{next(self._serial)}-{secrets.token_hex(4)}"
            through = ("--server", self.server) if self.server else ()
            started = time.time()
            result = cli(*through, "--json", "--correlation-id", correlation_id,
                         "--token", me.tokens[case.role], *argv)
            self.ran[case] = Ran(case, argv, object_id, correlation_id, result, started,
                                 time.time())
        return self.ran[case]

    def object_id(self, case: Case) -> str | None:
        x, y, role, target = case.tenant, OTHER[case.tenant], case.role, case.target
        me, them = self.tenants[x], self.tenants[y]
        command = case.command
        if target == "view":
            return None
        if command in ("route explain", "route outcome"):
            own = me.decisions["own"] if command == "route explain" else me.decisions[f"out-{role}"]
            return {"own": own, "other": them.decisions["victim"], "missing": MISSING_DECISION,
                    "removed": me.decisions["removed"]}[target]
        if command == "tokens revoke":
            return {"own": me.objects[f"revoke-{role}"], "other": them.objects["victim"],
                    "missing": MISSING_TOKEN, "removed": me.objects["revoked"]}[target]
        if command == "route task":
            return {"own": f"{x}-task-open", "other": f"{y}-task-victim",
                    "missing": f"{x}-task-new-{role}", "removed": f"{x}-task-closed"}[target]
        if command == "agents register":
            return {"own": f"{x}-own", "other": f"{y}-victim-reg-{role}",
                    "missing": f"{x}-new-reg-{role}", "removed": f"{x}-gone-reg-{role}"}[target]
        if command in ("agents list", "agents query", "agents stats", "route stats",
                       "route reap", "agents cleanup"):
            return {"own": f"{x}-own", "other": f"{y}-own", "missing": f"{x}-missing",
                    "removed": f"{x}-gone"}[target]
        own = f"{x}-own-rm-{role}" if command == "agents remove" else f"{x}-own"
        return {"own": own, "other": f"{y}-victim", "missing": f"{x}-missing",
                "removed": f"{x}-gone"}[target]

    def run_all(self) -> list[Ran]:
        return [self.run(case) for case in ALL_CASES]

    def audit(self, tenant: str) -> list[dict[str, Any]]:
        result = cli("--json", "--token", self.tenants[tenant].admin, "audit", "list",
                     "--limit", "0")
        assert result.exit_code == 0, result
        return result.json()["items"]  # type: ignore[no-any-return]

    # -- setup -------------------------------------------------------------------

    def setup(self, folder: Path) -> None:
        assert cli("--json", "init").exit_code == 0
        for tenant in self.tenants.values():
            self._seed(tenant, folder)
        for tenant in self.tenants.values():
            tenant.snapshot = self.victim_state(tenant)

    def _seed(self, t: Tenant, folder: Path) -> None:
        x = t.name
        t.admin = ok(cli("--json", "tenants", "create", x))["admin_token"]
        for role in ROLES:
            issued = ok(cli("--json", "--token", t.admin, "tokens", "create", "--role", role,
                            "--name", f"matrix {role}"))
            t.tokens[role], t.token_ids[role] = issued["token"], issued["id"]
        for purpose in ("victim", "revoked", *(f"revoke-{role}" for role in ROLES)):
            t.objects[purpose] = ok(cli("--json", "--token", t.admin, "tokens", "create",
                                        "--role", "viewer", "--name", purpose))["id"]
        ok(cli("--json", "--token", t.admin, "tokens", "revoke", t.objects["revoked"], "--yes"))

        def agent(agent_id: str, task_types: list[str], pin: str | None = None,
                  capacity: int = 1000) -> dict[str, Any]:
            return {"id": agent_id, "name": f"{x} {t.marker}", "model_family": "x",
                    "task_types": task_types, "capacity": capacity,
                    "specializations": [pin] if pin else [],
                    "metadata": {"marker": t.marker, "tenant": x}}

        fleet = [agent(f"{x}-own", ["testing"], "own-pin"),
                 agent(f"{x}-victim", ["documentation"], "victim-pin", capacity=10),
                 agent(f"{x}-gone", ["research", "testing"], "gone-pin")]
        fleet += [agent(f"{x}-own-rm-{role}", ["testing"]) for role in ROLES]
        fleet += [agent(f"{x}-victim-reg-{role}", ["documentation"]) for role in ROLES]
        fleet += [agent(f"{x}-gone-reg-{role}", ["testing"]) for role in ROLES]
        path = folder / f"{x}-fleet.jsonl"
        path.write_text("".join(json.dumps(a) + "\n" for a in fleet))
        assert ok(cli("--json", "--token", t.admin, "agents", "register", "--file", str(path))
                  )["count"] == len(fleet)

        def route(task_id: str, task_type: str, pin: str | None) -> str:
            argv = ["--json", "--token", t.admin, "route", "task", "--task-id", task_id,
                    "--task-type", task_type, "--metadata", json.dumps({"marker": t.marker})]
            return ok(cli(*argv, *(["--specialization", pin] if pin else [])))["decision_id"]

        t.decisions["own"] = route(f"{x}-task-open", "testing", "own-pin")
        for role in ROLES:
            t.decisions[f"out-{role}"] = route(f"{x}-task-out-{role}", "testing", "own-pin")
        t.decisions["victim"] = route(f"{x}-task-victim", "documentation", "victim-pin")
        t.decisions["removed"] = route(f"{x}-task-removed", "research", None)
        t.decisions["closed"] = route(f"{x}-task-closed", "testing", "own-pin")
        ok(cli("--json", "--token", t.admin, "route", "outcome", t.decisions["closed"],
               "--success"))
        for gone in (f"{x}-gone", *(f"{x}-gone-reg-{role}" for role in ROLES)):
            ok(cli("--json", "--token", t.admin, "agents", "remove", gone, "--yes"))

    def victim_state(self, t: Tenant) -> dict[str, Any]:
        """Everything the other tenant's cases aim at, as this tenant's admin sees it."""
        def strip(document: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in document.items() if k != "meta"}

        state: dict[str, Any] = {}
        for agent_id in (f"{t.name}-victim", *(f"{t.name}-victim-reg-{r}" for r in ROLES)):
            state[agent_id] = strip(ok(cli("--json", "--token", t.admin, "agents", "show",
                                           agent_id)))
        state["decision"] = strip(ok(cli("--json", "--token", t.admin, "route", "explain",
                                         t.decisions["victim"])))
        tokens = ok(cli("--json", "--token", t.admin, "tokens", "list", "--limit", "0"))
        state["token"] = [tok for tok in tokens["items"] if tok["id"] == t.objects["victim"]]
        return state


def ok(result: CliResult) -> dict[str, Any]:
    assert result.exit_code == 0, result
    return result.json()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                               marks=pytest.mark.postgres),
                                        "api"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    """One initialized database per backend, seeded once for the whole module."""
    import typer.main

    import arbiter_cli.cli.app as app_module

    folder = tmp_path_factory.mktemp(f"matrix-{request.param}")
    command = typer.main.get_command(app_module.build_app())
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("ARBITER_") and not name.startswith("ARBITER_TEST_"):
                mp.delenv(name)
        for name, value in {
            "HOME": str(folder / "home"), "ARBITER_DATA_DIR": str(folder / "data"),
            "ARBITER_CONFIG_DIR": str(folder / "config"),
            "XDG_CONFIG_HOME": str(folder / "xdg-config"),
            # The matrix makes hundreds of calls per token: rate limits are tested elsewhere.
            "ARBITER_SECURITY__RATE_LIMIT__RATE": "1000000",
            "ARBITER_SECURITY__RATE_LIMIT__BURST": "10000000",
        }.items():
            mp.setenv(name, value)
        mp.setattr(app_module, "build_app", lambda: command)
        if request.param == "sqlite":
            world = World("sqlite")
            world.setup(folder)
            yield world
            return
        if request.param == "api":  # seeded locally, every case through the server
            from arbiter_cli.config import load_settings

            world = World("api")
            world.setup(folder)
            for url in start_server(load_settings(environ=dict(os.environ))):
                world.server = url
                yield world
            return
        with fresh_postgres_database("matrix") as url:
            mp.setenv("ARBITER_DATABASE__URL", url)
            world = World("postgres")
            world.setup(folder)
            yield world


# ---------------------------------------------------------------------------- assertions


def assert_no_leak(world: World, ran: Ran) -> None:
    """Neither stream carries the other tenant's data (ids the caller typed excepted)."""
    them = world.tenants[OTHER[ran.case.tenant]]
    typed = set(ran.argv)
    stdout = ran.result.stdout
    if ran.case.command == "audit list" and ran.result.exit_code == 0:
        # The caller's own misses name the ids it typed (the same whether they were the other
        # tenant's or nobody's). Attempts of the other tenant's tokens on the caller's objects
        # are recorded here with who made them (SPEC §4.1): that is the owner's record, the
        # only place where the other tenant's token ids and name may appear.
        typed |= {them.decisions["victim"], them.objects["victim"]}
        document = json.loads(stdout)
        document["items"] = [item for item in document["items"]
                             if item["details"].get("reason") != "cross-tenant"]
        stdout = json.dumps(document)
    for stream_name, stream in (("stdout", stdout), ("stderr", ran.result.stderr)):
        for secret in them.secrets_() - typed:
            assert secret not in stream, f"{ran.case.label}: {stream_name} leaks {secret}"
        assert not re.search(rf'"tenant":\s*"{them.name}"', stream), (
            f"{ran.case.label}: {stream_name} shows tenant {them.name}")


def ids_in(document: dict[str, Any]) -> set[str]:
    items = document.get("items", [])
    return {item["agent"]["id"] if "agent" in item else item.get("id", item.get("agent_id"))
            for item in items}


def check_permitted(world: World, ran: Ran) -> None:
    case, result, object_id = ran.case, ran.result, ran.object_id
    assert object_id is not None
    me = case.tenant
    if case.command in ID_COMMANDS:
        expect_found = case.target == "own" or (
            case.target == "removed" and case.command.split()[0] in ("route", "tokens"))
        if not expect_found:
            assert result.exit_code == 4, result
            assert result.error()["code"] == "not_found"
            assert result.stdout == ""
            return
        document = ok(result)
        assert document["meta"]["tenant"] == me
        if case.command.startswith("route"):
            assert document["decision_id"] == object_id
            assert document["metadata"]["marker"] == world.tenants[me].marker
            if case.target == "removed":
                assert document["agent_id"] == f"{me}-gone"
        elif case.command == "tokens revoke":
            assert document["id"] == object_id and document["tenant"] == me
            assert document["revoked_at"] is not None
        else:
            assert document["id"] == object_id and document["tenant"] == me
        return
    if case.command == "agents register":
        if case.target == "own":
            assert result.exit_code == 5, result
            assert result.error()["code"] == "conflict"
            return
        document = ok(result)
        assert document["id"] == object_id and document["tenant"] == me
        assert document["version"] == 1
        return
    document = ok(result)
    assert document["meta"]["tenant"] == me
    if case.command == "route task":
        assert document["task_id"] == object_id
        assert document["metadata"]["marker"] == world.tenants[me].marker
        if case.target == "own":
            assert document.get("already_routed") is True
            assert document["decision_id"] == world.tenants[me].decisions["own"]
        if case.target == "removed":
            assert document["decision_id"] != world.tenants[me].decisions["closed"]
        return
    if case.command == "route history":
        assert all(item["metadata"]["marker"] == world.tenants[me].marker
                   for item in document["items"])
        found = {item["agent_id"] for item in document["items"]}
        if case.target in ("own", "removed"):
            assert found == {object_id}, document
        else:
            assert document["count"] == 0, document
        return
    if case.command == "agents stats":
        assert document["tenant"] == me and document["agents"] >= 1
        return
    if case.command == "route stats":
        shown = set(document["groups"]) | {arm["agent_id"] for arm in document["arms"]}
        assert (object_id in shown) == (case.target in ("own", "removed")), document
        return
    # agents list | agents query | agents cleanup | route reap: lists of the caller's tenant
    for item in document["items"]:
        body = item.get("agent", item)
        if "decision_id" in body:
            assert body["metadata"]["marker"] == world.tenants[me].marker, item
        else:
            assert body["tenant"] == me, item
    if case.command in ("agents list", "agents query"):
        assert (object_id in ids_in(document)) == (case.target == "own"), document
    else:
        assert object_id not in ids_in(document)


def substituted(ran: Ran) -> str:
    assert ran.object_id
    return ran.result.stderr.replace(ran.object_id, "<ID>")


# ---------------------------------------------------------------------------- tests


def test_matrix_covers_every_token_checked_command_and_the_spec_table():
    """The matrix runs every PERMISSIONS key, and PERMISSIONS is SPEC §4's table."""
    from arbiter_cli.domain.security import PERMISSIONS

    assert set(DATA_COMMANDS) | set(TENANT_VIEW_COMMANDS) == set(PERMISSIONS)
    assert dict(PERMISSIONS) == SPEC_LEAST_ROLE
    assert len(ALL_CASES) >= 400


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda c: c.label)
def test_data_command(world: World, case: Case):
    """Own objects work, other tenants' objects are missing ones, roles are enforced, no leak."""
    ran = world.run(case)
    assert_no_leak(world, ran)
    if not case.permitted:
        assert ran.result.exit_code == 6, ran.result
        assert ran.result.error()["code"] == "forbidden"
        assert ran.result.stdout == ""
        # Authorization comes before the lookup: no target can tell another apart.
        own = world.run(case._replace(target="own"))
        assert ran.result.stderr == own.result.stderr
        return
    check_permitted(world, ran)
    if case.target in ("other", "removed") and ran.result.exit_code == 4:
        missing = world.run(case._replace(target="missing"))
        assert missing.result.exit_code == 4
        assert substituted(ran) == substituted(missing), (ran.result, missing.result)
    if case.command == "route history" and case.target == "other":
        missing = world.run(case._replace(target="missing"))
        assert ran.result.json()["items"] == missing.result.json()["items"] == []


@pytest.mark.parametrize("case", VIEW_CASES, ids=lambda c: c.label)
def test_tenant_view_command(world: World, case: Case):
    """whoami, tokens and audit commands see only the caller's tenant."""
    ran = world.run(case)
    assert_no_leak(world, ran)
    me = world.tenants[case.tenant]
    if not case.permitted:
        assert ran.result.exit_code == 6, ran.result
        assert ran.result.error()["code"] == "forbidden"
        return
    document = ok(ran.result)
    assert document["meta"]["tenant"] == case.tenant
    if case.command == "whoami":
        assert document == {**document, "tenant": case.tenant, "role": case.role,
                            "token_id": me.token_ids[case.role]}
    elif case.command == "tokens create":
        assert document["tenant"] == case.tenant and document["role"] == "viewer"
    elif case.command in ("tokens list", "audit list"):
        assert document["count"] > 0
        assert {item["tenant"] for item in document["items"]} == {case.tenant}
        if case.command == "tokens list":
            assert set(me.token_ids.values()) <= {item["id"] for item in document["items"]}
    else:
        assert document["ok"] is True and re.fullmatch(r"\d+:[0-9a-f]{64}", document["head"])


def test_every_denial_and_cross_tenant_attempt_is_audited(world: World):
    """Each refused case has its event, under its correlation id, in the caller's chain."""
    ran_all = world.run_all()
    events: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for tenant in TENANTS:
        by_correlation: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in world.audit(tenant):
            by_correlation[event["correlation_id"]].append(event)
        events[tenant] = by_correlation
    problems = []
    for ran in ran_all:
        case, code = ran.case, ran.result.exit_code
        mine = events[case.tenant].get(ran.correlation_id, [])
        theirs = events[OTHER[case.tenant]].get(ran.correlation_id, [])
        attempt_on_theirs = (case.target == "other" and case.command in GLOBAL_ID_COMMANDS
                             and case.permitted)
        if attempt_on_theirs:
            me = world.tenants[case.tenant]
            wanted = [e for e in theirs if e["action"] == GLOBAL_ID_COMMANDS[case.command]
                      and e["result"] == "denied" and e["target"] == ran.object_id
                      and e["actor"] == me.token_ids[case.role]
                      and e["details"] == {"reason": "cross-tenant",
                                           "caller_tenant": case.tenant}]
            if len(wanted) != 1 or len(theirs) != 1:
                problems.append(f"{case.label}: expected one record in the owner's chain, "
                                f"got {theirs}")
        elif theirs:
            problems.append(f"{case.label}: wrote to the other tenant's chain: {theirs}")
        if code == 6:
            problems += _denial_problems(world, ran, ran_all, mine, events[case.tenant])
        if (case.target in ("other", "missing") and case.command in GLOBAL_ID_COMMANDS
                and case.permitted):
            wanted = [e for e in mine if e["action"] == GLOBAL_ID_COMMANDS[case.command]
                      and e["result"] == "denied" and e["target"] == ran.object_id
                      and e["details"] == {"reason": "not found"}]
            if len(wanted) != 1 or len(mine) != 1:
                problems.append(f"{case.label}: expected one 'not found' denial, got {mine}")
        if code != 0 and any(e["result"] == "ok" for e in mine):
            problems.append(f"{case.label}: failed (exit {code}) but audited ok: {mine}")
        mutated = code == 0 and case.command in MUTATIONS and _mutated(ran)
        if mutated and not any(e["result"] == "ok" for e in mine):
            problems.append(f"{case.label}: a mutation without an ok audit event")
    assert not problems, "\n".join(problems[:20])


def _denial_problems(world: World, ran: Ran, ran_all: list[Ran],
                     mine: list[dict[str, Any]],
                     chain: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A refused case (6) is audited ``authz.denied`` under its correlation id, or, when an
    earlier refusal of the same tenant, token and command left its event in the second the
    case ran in, folded into that event (SPEC §4 aggregation); the first refusal of each
    (tenant, role, command) always has its own event."""
    case = ran.case
    actor = world.tenants[case.tenant].token_ids[case.role]

    def denials(of: Ran) -> list[dict[str, Any]]:
        return [e for e in chain.get(of.correlation_id, []) if e["action"] == "authz.denied"
                and e["result"] == "denied" and e["actor"] == actor
                and e["details"].get("command") == case.command]

    own = denials(ran)
    if len(own) > 1:
        return [f"{case.label}: more than one authz.denied event: {mine}"]
    if own:
        return []
    serial = _serial(ran)
    earlier = [other for other in ran_all if other.case.tenant == case.tenant
               and other.case.role == case.role and other.case.command == case.command
               and other.result.exit_code == 6 and _serial(other) < serial]
    if not earlier:
        return [f"{case.label}: the first refusal of its kind has no authz.denied event: {mine}"]
    window = range(int(ran.started), int(ran.finished) + 1)
    if not any(int(datetime.fromisoformat(e["at"]).timestamp()) in window
               for other in earlier for e in denials(other)):
        return [f"{case.label}: neither audited nor folded into an event of its second"]
    return []


def _serial(ran: Ran) -> int:
    return int(ran.correlation_id.split("-")[2])


def _mutated(ran: Ran) -> bool:
    document = ran.result.json()
    if document.get("already_routed") or document.get("already_recorded"):
        return False
    return not (ran.case.command == "tokens revoke" and ran.case.target == "removed")


def test_the_other_tenants_objects_are_unchanged_and_chains_intact(world: World):
    """After every cross-tenant attempt, the victims are exactly as seeded; chains verify."""
    world.run_all()
    for tenant in world.tenants.values():
        assert world.victim_state(tenant) == tenant.snapshot
        verified = ok(cli("--json", "--token", tenant.admin, "audit", "verify"))
        assert verified["ok"] is True
