"""No existence oracle, anywhere (SPEC §4.1): every lookup of a globally unique id.

Decision ids and token ids are unique across tenants, so a lookup finds another tenant's object
before it checks the tenant. For the caller, that object must look exactly like an id that
exists nowhere: the same error (type, exit code, message once the id is substituted, details),
the same output, and the same rows in the caller's own audit chain. The attempt is recorded in
the owner's chain instead.

The walk covers every service method that takes such an id (a test enumerates the services'
signatures, so a new one fails until it is added here), on memory, SQLite and PostgreSQL; and
every command that takes one, through ``main()``, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from arbiter_cli.errors import ArbiterError
from tests.helpers import cli, fresh_postgres_database, local_principals_only

OWNER = Principal("default", "admin", "owner0000000")
CALLER = Principal("prober", "admin", "prober000000")
MISSING_DECISION = "01990000-0000-7000-8000-00000000dead"
MISSING_TOKEN = "zzzzzzzzzzzz"
MISSING_TASK = "task-nowhere"
SECRET = "S" * 43

#: Parameters that carry a globally unique id (or a token, which carries one).
GLOBAL_ID_PARAMETERS = {"decision_id", "token_id", "token", "decision"}


@dataclass(frozen=True)
class Seeded:
    decision_id: str
    task_id: str
    token_id: str


@dataclass(frozen=True)
class Lookup:
    """One service method that resolves a global id: how to call it with ``ref``."""

    name: str  # service.method(parameter)
    call: Callable[[Any, str], Any]
    other: Callable[[Seeded], str]  # the owner's id
    missing: str
    caller_chain_changes: bool  # whether the caller's chain records the miss at all


def _outcome() -> Outcome:
    return Outcome(success=True, quality=1.0)


LOOKUPS = [
    Lookup("routing.explain(decision_id)", lambda app, ref: app.routing.explain(CALLER, ref),
           lambda s: s.decision_id, MISSING_DECISION, True),
    Lookup("routing.outcome(decision_id)",
           lambda app, ref: app.routing.outcome(CALLER, _outcome(), decision_id=ref),
           lambda s: s.decision_id, MISSING_DECISION, True),
    Lookup("routing.apply_outcome(decision_id)",  # replay of a journaled outcome
           lambda app, ref: app.routing.apply_outcome(CALLER, _outcome(), decision_id=ref,
                                                      acknowledged_at=datetime.now(UTC)),
           lambda s: s.decision_id, MISSING_DECISION, True),
    Lookup("routing.outcome(task_id)",  # task ids are per tenant: a plain miss
           lambda app, ref: app.routing.outcome(CALLER, _outcome(), task_id=ref),
           lambda s: s.task_id, MISSING_TASK, False),
    Lookup("security.revoke(token_id)", lambda app, ref: app.security.revoke(CALLER, ref),
           lambda s: s.token_id, MISSING_TOKEN, True),
    Lookup("security.admit(token)",
           lambda app, ref: app.security.admit(f"arb_{ref}_{SECRET}", "whoami"),
           lambda s: s.token_id, MISSING_TOKEN, False),
    Lookup("security.login(token)", lambda app, ref: app.security.login(f"arb_{ref}_{SECRET}"),
           lambda s: s.token_id, MISSING_TOKEN, False),
    Lookup("security.readmit(token_id)",  # replay: a refusal becomes a journal conflict
           lambda app, ref: app.security.readmit(CALLER.tenant, ref, "agents register",
                                                 datetime.now(UTC)),
           lambda s: s.token_id, MISSING_TOKEN, False),
]

#: Methods that take such an id but cannot answer "like a missing one", and why.
NOT_A_LOOKUP = {
    # Replay stores a decision under the id the journal gave it: an id already taken is a
    # conflict whoever holds it. Tested below: it never returns or changes the holder's data.
    "routing.apply_decision(decision)",
    # Completion's read-only check answers None, never an error, for any token it will not
    # admit: tested below, the same None and no audit row for another tenant's and a missing id.
    "security.peek(token)",
}


def global_id_methods() -> set[str]:
    from arbiter_cli.services.agents import AgentService
    from arbiter_cli.services.routing import RoutingService
    from arbiter_cli.services.security import SecurityService

    found = set()
    for prefix, service in (("agents", AgentService), ("routing", RoutingService),
                            ("security", SecurityService)):
        for name, method in inspect.getmembers(service, inspect.isfunction):
            if name.startswith("_"):
                continue
            for parameter in inspect.signature(method).parameters:
                if parameter in GLOBAL_ID_PARAMETERS:
                    found.add(f"{prefix}.{name}({parameter})")
    return found


def test_the_walk_covers_every_service_method_that_takes_a_global_id():
    """A new method taking a decision id, token id or token fails here until it is walked."""
    walked = {lookup.name for lookup in LOOKUPS if "(task_id)" not in lookup.name}
    assert global_id_methods() == walked | NOT_A_LOOKUP


# ---------------------------------------------------------------------------- service level


@pytest.fixture
def seeded(backend_app) -> Seeded:  # type: ignore[no-untyped-def]
    local_principals_only(backend_app)
    """Tenant default owns an agent, an open decision and a token; tenant prober exists."""
    from arbiter_cli.tools.setup import initialize

    initialize(backend_app.uow, lambda: None, backend_app.clock, tenant="prober")
    backend_app.agents.register(OWNER, [{"id": "owned", "name": "Owned", "model_family": "x",
                                         "task_types": ["testing"]}])
    decision = backend_app.routing.route(OWNER, {"task_type": "testing",
                                                 "task_id": "owner-task"}).decision
    token = backend_app.security.issue(OWNER, role="viewer", name="victim", expires_in_s=None)
    assert decision.decision_id is not None
    return Seeded(decision.decision_id, decision.task_id, token.record.id)


def chain(app: Any, tenant: str) -> list[dict[str, Any]]:
    with app.uow() as uow:
        return [event.to_dict() for event in uow.audit.events(tenant, ascending=True)]


def attempt(app: Any, lookup: Lookup, ref: str) -> tuple[Any, list[dict[str, Any]]]:
    """What the caller sees: the error, and the rows its own chain gained (id substituted)."""
    before = len(chain(app, CALLER.tenant))
    with pytest.raises(ArbiterError) as caught:
        lookup.call(app, ref)
    error = caught.value
    seen = (type(error).__name__, error.exit_code, error.code,
            error.message.replace(ref, "<ID>"), json.dumps(error.details).replace(ref, "<ID>"))
    rows = [{k: (v.replace(ref, "<ID>") if isinstance(v, str) else v)
             for k, v in row.items() if k not in ("seq", "at", "hash", "prev_hash")}
            for row in chain(app, CALLER.tenant)[before:]]
    return seen, rows


def test_peek_answers_none_alike_for_another_tenants_token_and_a_missing_one(backend_app,
                                                                          seeded):
    """Shell completion's token check: no error, no audit row, no difference."""
    before = (chain(backend_app, CALLER.tenant), chain(backend_app, OWNER.tenant))
    theirs = backend_app.security.peek(f"arb_{seeded.token_id}_{SECRET}", "agents list")
    missing = backend_app.security.peek(f"arb_{MISSING_TOKEN}_{SECRET}", "agents list")
    assert theirs is None and missing is None
    assert (chain(backend_app, CALLER.tenant), chain(backend_app, OWNER.tenant)) == before


@pytest.mark.parametrize("lookup", LOOKUPS, ids=lambda lookup: lookup.name)
def test_another_tenants_id_is_indistinguishable_from_a_missing_one(backend_app, seeded, lookup):
    """Same error and same rows in the caller's chain; the owner's objects are untouched."""
    owner_before = chain(backend_app, OWNER.tenant)
    theirs = attempt(backend_app, lookup, lookup.other(seeded))
    missing = attempt(backend_app, lookup, lookup.missing)
    assert theirs == missing
    assert theirs[0][1] in (4, 6)
    assert bool(theirs[1]) == lookup.caller_chain_changes
    owner_after = chain(backend_app, OWNER.tenant)
    assert owner_after[:len(owner_before)] == owner_before
    explained = backend_app.routing.explain(OWNER, seeded.decision_id)
    assert (explained.status, explained.outcome) == ("open", None)
    with backend_app.uow() as uow:
        token = uow.tokens.get(seeded.token_id)
    assert token is not None and token.revoked_at is None


@pytest.mark.parametrize("lookup", [lookup for lookup in LOOKUPS if lookup.caller_chain_changes],
                         ids=lambda lookup: lookup.name)
def test_the_attempt_is_audited_in_the_owners_chain(backend_app, seeded, lookup):
    """The owner's chain records who tried its object; a missing id adds nothing there."""
    before = len(chain(backend_app, OWNER.tenant))
    with pytest.raises(ArbiterError):
        lookup.call(backend_app, lookup.missing)
    assert len(chain(backend_app, OWNER.tenant)) == before
    ref = lookup.other(seeded)
    with pytest.raises(ArbiterError):
        lookup.call(backend_app, ref)
    [event] = chain(backend_app, OWNER.tenant)[before:]
    assert (event["actor"], event["target"], event["result"], event["details"]) == (
        CALLER.token_id, ref, "denied", {"reason": "cross-tenant", "caller_tenant": "prober"})


def test_replaying_a_decision_under_another_tenants_id_never_returns_theirs(backend_app,
                                                                             seeded):
    """A journaled decision whose id is taken by another tenant is a conflict that shows
    nothing of the holder's decision, and is recorded in the holder's chain."""
    from dataclasses import replace

    from arbiter_cli.errors import Conflict

    theirs = backend_app.routing.explain(OWNER, seeded.decision_id)
    forged = replace(theirs, tenant=CALLER.tenant, task_id="forged", metadata={})
    before = len(chain(backend_app, OWNER.tenant))
    with pytest.raises(Conflict) as caught:
        backend_app.routing.apply_decision(CALLER, forged)
    assert "owner-task" not in caught.value.message
    assert backend_app.routing.explain(OWNER, seeded.decision_id) == theirs
    [event] = chain(backend_app, OWNER.tenant)[before:]
    assert event["details"] == {"reason": "cross-tenant", "caller_tenant": "prober"}


# ---------------------------------------------------------------------------- the CLI


#: Every command that takes a global id, with ``{id}`` where it goes.
COMMANDS = {
    "route explain": (("route", "explain", "{id}"), "decision"),
    "route outcome": (("route", "outcome", "{id}", "--success"), "decision"),
    "route outcome --task-id": (("route", "outcome", "--task-id", "{id}", "--success"), "task"),
    "tokens revoke": (("tokens", "revoke", "{id}", "--yes"), "token"),
    "--token (any command)": (("--token", "arb_{id}_" + SECRET, "whoami"), "token"),
    "login --token": (("login", "--token", "arb_{id}_" + SECRET, "--profile", "probe"), "token"),
}
MISSING = {"decision": MISSING_DECISION, "task": MISSING_TASK, "token": MISSING_TOKEN}


def test_the_cli_walk_covers_every_command_that_takes_a_global_id():
    """Every token-checked command with a decision or token argument is in COMMANDS."""
    from arbiter_cli.domain.security import PERMISSIONS

    with_ids = {"route explain", "route outcome", "tokens revoke"}
    assert with_ids <= {name.split(" --")[0] for name in COMMANDS}
    assert with_ids <= set(PERMISSIONS)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                               marks=pytest.mark.postgres)])
def cli_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, str]]:
    """An initialized database: default owns an agent, an open decision and a token; tenant
    prober has an admin token (the caller)."""
    import os

    folder = tmp_path_factory.mktemp(f"oracle-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("ARBITER_") and not name.startswith("ARBITER_TEST_"):
                mp.delenv(name)
        for name, value in {"HOME": str(folder / "home"), "ARBITER_DATA_DIR": str(folder / "d"),
                            "ARBITER_CONFIG_DIR": str(folder / "c"),
                            "XDG_CONFIG_HOME": str(folder / "x")}.items():
            mp.setenv(name, value)
        Path(folder / "c").mkdir()
        if request.param == "postgres":
            with fresh_postgres_database("oracle") as url:
                mp.setenv("ARBITER_DATABASE__URL", url)
                yield _seed_cli()
        else:
            yield _seed_cli()


def _ok(*argv: str) -> dict[str, Any]:
    result = cli("--json", *argv)
    assert result.exit_code == 0, result
    return result.json()


def _seed_cli() -> dict[str, str]:
    owner = _ok("init")["admin_token"]
    caller = _ok("tenants", "create", "prober")["admin_token"]
    _ok("--token", owner, "agents", "register", "--id", "owned", "--name", "Owned",
        "--model-family", "x", "--task-type", "testing")
    decision = _ok("--token", owner, "route", "task", "--task-type", "testing", "--task-id",
                   "owner-task")["decision_id"]
    token = _ok("--token", owner, "tokens", "create", "--role", "viewer", "--name", "victim")
    return {"owner": owner, "caller": caller, "decision": decision, "task": "owner-task",
            "token": token["id"]}


def _audit(token: str) -> list[dict[str, Any]]:
    return _ok("--token", token, "audit", "list", "--limit", "0")["items"]


def _run(world: dict[str, str], argv: tuple[str, ...], ref: str, json_mode: bool
         ) -> tuple[Any, ...]:
    before = len(_audit(world["caller"]))
    filled = [part.replace("{id}", ref) for part in argv]
    token = [] if filled[0] == "--token" or filled[0] == "login" else ["--token", world["caller"]]
    result = cli(*(["--json"] if json_mode else []), "--correlation-id", "probe", *token,
                 *filled)
    rows = [{k: v for k, v in row.items() if k not in ("seq", "at", "hash", "prev_hash")}
            for row in _audit(world["caller"])[: len(_audit(world["caller"])) - before]]
    return (result.exit_code, result.stdout.replace(ref, "<ID>"),
            result.stderr.replace(ref, "<ID>"), json.dumps(rows).replace(ref, "<ID>"))


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_answers_another_tenants_id_exactly_like_a_missing_one(cli_world, command,
                                                                          json_mode):
    """Exit code, stdout, stderr and the caller's new audit rows are identical."""
    argv, kind = COMMANDS[command]
    theirs = _run(cli_world, argv, cli_world[kind], json_mode)
    missing = _run(cli_world, argv, MISSING[kind], json_mode)
    assert theirs == missing
    assert theirs[0] in (4, 6), theirs
    assert theirs[1] == ""
    owner = _ok("--token", cli_world["owner"], "route", "explain", cli_world["decision"])
    assert owner["status"] == "open"
