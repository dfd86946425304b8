"""Agent registry use cases (SPEC §2). Time stamps are the database's (``UnitOfWork.now()``)."""

from __future__ import annotations

import base64
import binascii
import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from arbiter_cli.domain import agents as rules
from arbiter_cli.domain import validation as v
from arbiter_cli.domain.agents import (
    Agent,
    FleetStats,
    Patch,
    Registration,
    RegistryPolicy,
    TaskResult,
)
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.query import Query, match_item
from arbiter_cli.domain.results import Page
from arbiter_cli.domain.security import authorize_field
from arbiter_cli.errors import Conflict, Forbidden, InvalidInput, NotFound
from arbiter_cli.ports import IdFactory, UnitOfWork, UnitOfWorkFactory
from arbiter_cli.services.audit import Auditor


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise v.fail("cursor", "format", "is not a cursor returned by a previous page") from None
    return v.pattern(decoded, v.AGENT_ID_RE, "cursor", "cursor")


class AgentService:
    def __init__(
        self, uow: UnitOfWorkFactory, policy: RegistryPolicy, query_weights: Mapping[str, float],
        new_uid: IdFactory, auditor: Auditor | None = None,
    ) -> None:
        self._uow = uow
        self.policy = policy
        self._weights = dict(query_weights)
        self._new_uid = new_uid
        self._audit = auditor or Auditor()

    # ------------------------------------------------------------------ writes

    def register(
        self, principal: Principal, raws: Sequence[Mapping[str, Any]],
        progress: Callable[[int], None] | None = None, uids: Sequence[str] | None = None,
    ) -> builtins.list[Agent]:
        """Register all of ``raws`` or none: every input is validated before anything is written.

        ``uids``: only for a journaled registration replayed on the primary, the uids the
        agents got on the host's snapshot, so that the host's journaled decisions, which name
        them, find the same agents (a decision for another uid conflicts)."""
        many = len(raws) > 1
        specs = [
            Registration.parse(raw, self.policy, where=f"[{i}]." if many else "")
            for i, raw in enumerate(raws)
        ]
        _reject_repeated_ids(specs)
        given = None if uids is None else _given_uids(uids, len(specs))
        with self._uow(write=True) as uow:
            uow.tenants.lock(principal.tenant)  # two registrations cannot both pass the cap
            now = uow.now()
            if uow.agents.count(principal.tenant) + len(specs) > self.policy.max_agents:
                raise Conflict(
                    f"registry full: tenant {principal.tenant!r} may hold at most "
                    f"{self.policy.max_agents} agents (registry.max_agents)"
                )
            created = []
            for done, spec in enumerate(specs, start=1):
                if uow.agents.get(principal.tenant, spec.id) is not None:
                    raise Conflict(f"agent {spec.id!r} already exists")
                uid = self._new_uid() if given is None else given[done - 1]
                created.append(spec.new_agent(uid=uid, tenant=principal.tenant, now=now))
                if progress and done % 100 == 0:
                    progress(100)
            uow.agents.add_many(created)
            ids = [a.id for a in created]
            self._audit.record(uow, principal, "agent.register", ids[0] if len(ids) == 1 else None,
                               {"count": len(ids), "ids": ids[:100],
                                "truncated": len(ids) > 100})
            uow.commit()
        if progress:
            progress(len(specs) % 100)
        return created

    def update(self, principal: Principal, agent_id: str, raw: Mapping[str, Any]) -> Agent:
        """Change an agent's fields. ``active_tasks`` is an admin correction (SPEC §2.1): any
        other role is refused (6, audited), and it may not go below the agent's open
        decisions (5), whose outcomes will each release a slot."""
        if raw.get("active_tasks") is not None:
            self._authorize_correction(principal)  # permission (6) before the input (2)
        patch = Patch.parse(raw, self.policy)
        if not patch.changes():
            raise InvalidInput("nothing to update: give at least one field", field="", rule="required")
        guard = None if patch.active_tasks is None else _correction_guard(patch.active_tasks)
        return self._change(principal, agent_id, patch.apply,
                            "agent.update", {"fields": sorted(patch.changes())},
                            expect_version=patch.expect_version, guard=guard)

    def _authorize_correction(self, principal: Principal) -> None:
        try:
            authorize_field(principal, "agents update", "active_tasks")
        except Forbidden as exc:
            self._audit.deny(self._uow, principal, "authz.denied", None, {
                "reason": exc.message, "command": "agents update", "field": "active_tasks"})
            raise

    def set_status(
        self, principal: Principal, agent_id: str, status: str, reason: str | None = None
    ) -> Agent:
        rules.check_status(status, reason)  # input (exit 2) before lookup (exit 4), SPEC §0
        return self._change(
            principal, agent_id, lambda a, now: rules.set_status(a, status, reason, now),
            "agent.status", {"status": status, "reason": reason},
        )

    def heartbeat(self, principal: Principal, agent_id: str) -> Agent:
        return self._change(principal, agent_id, rules.heartbeat,
                            "agent.heartbeat", {})

    def record(self, principal: Principal, agent_id: str, result: TaskResult) -> Agent:
        window = self.policy.window
        return self._change(
            principal, agent_id, lambda a, now: rules.record(a, result, window, now),
            "agent.record", {"success": result.success, "quality": result.quality,
                             "latency_ms": result.latency_ms, "task_type": result.task_type},
        )

    def remove(self, principal: Principal, agent_id: str) -> Agent:
        _check_id(agent_id)
        with self._uow(write=True) as uow:
            agent = _require(uow, principal, agent_id)
            uow.agents.remove(principal.tenant, agent_id)
            self._audit.record(uow, principal, "agent.remove", agent_id, {"uid": agent.uid})
            uow.commit()
        return agent

    def cleanup(self, principal: Principal, older_than_s: float, *, dry_run: bool) -> builtins.list[Agent]:
        """Mark agents silent for ``older_than_s`` with no active tasks offline; never delete."""
        with self._uow(write=not dry_run) as uow:
            now = uow.now()
            cutoff = now - timedelta(seconds=older_than_s)
            stale = [a for a in uow.agents.silent_since(principal.tenant, cutoff)
                     if rules.is_stale(a, cutoff)]
            if dry_run:
                return stale
            marked = []
            for agent in stale:
                offline = rules.set_status(agent, "offline", "cleanup: silent", now)
                if uow.agents.update(offline, expect_version=agent.version):
                    marked.append(offline)
            if marked:
                self._audit.record(uow, principal, "agent.cleanup", None, {
                    "older_than_s": older_than_s, "ids": [a.id for a in marked][:100],
                    "count": len(marked)})
            uow.commit()
        return marked

    def _change(
        self, principal: Principal, agent_id: str, change: Callable[[Agent, datetime], Agent],
        action: str, details: Mapping[str, Any], expect_version: int | None = None,
        guard: Guard | None = None,
    ) -> Agent:
        """Read the agent under a row lock, apply ``change``, and store it atomically.

        ``guard`` checks the locked agent (it may refuse) and adds to the audit details.
        """
        _check_id(agent_id)
        with self._uow(write=True) as uow:
            agent = _require(uow, principal, agent_id, for_update=True)
            if expect_version is not None and agent.version != expect_version:
                raise Conflict(
                    f"agent {agent_id!r} is at version {agent.version}, not {expect_version}"
                )
            if guard is not None:
                details = {**details, **guard(uow, agent)}
            changed = change(agent, uow.now())
            if not uow.agents.update(changed, expect_version=agent.version):
                raise Conflict(f"agent {agent_id!r} changed meanwhile; retry")
            self._audit.record(uow, principal, action, agent_id, details)
            uow.commit()
        return changed

    # ------------------------------------------------------------------ reads

    def show(self, principal: Principal, agent_id: str) -> Agent:
        _check_id(agent_id)
        with self._uow() as uow:
            return _require(uow, principal, agent_id)

    def list(
        self, principal: Principal, *, status: str | None = None, task_type: str | None = None,
        cursor: str | None = None, limit: int = 100,
    ) -> Page:
        if status is not None and status not in rules.STATUSES:
            raise v.fail("status", "allowed", f"must be one of {', '.join(rules.STATUSES)}")
        if task_type is not None:
            task_type = v.choose([task_type], self.policy.task_types, "task_type")[0]
        limit = v.integer(limit, "limit", low=0, high=1_000_000)
        after = decode_cursor(cursor)
        with self._uow() as uow:
            found = uow.agents.list(
                principal.tenant, status=status, task_type=task_type, after=after,
                limit=limit + 1 if limit else 0,
            )
        if limit and len(found) > limit:
            return Page(found[:limit], encode_cursor(found[limit - 1].id))
        return Page(found, None)

    def query(self, principal: Principal, raw: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        query = Query.parse(raw, self.policy)
        with self._uow(one_statement=True) as uow:  # the search is one statement
            agents, ranking = uow.agents.search(principal.tenant, query, self._weights)
        return [
            match_item(agent, score, parts, query)
            for agent, score, parts in zip(agents, ranking.scores, ranking.components, strict=True)
        ]

    def stats(self, principal: Principal) -> FleetStats:
        with self._uow() as uow:
            return uow.agents.stats(principal.tenant)


Guard = Callable[[UnitOfWork, Agent], Mapping[str, Any]]


def _correction_guard(active_tasks: int) -> Guard:
    """An admin correction of ``active_tasks`` never goes below the open decisions' claims."""

    def guard(uow: UnitOfWork, agent: Agent) -> Mapping[str, Any]:
        held = uow.decisions.open_count(agent.tenant, agent.id, agent.uid)
        if active_tasks < held:
            raise Conflict(f"agent {agent.id!r} holds {held} open decision(s): --active-tasks "
                           f"must be at least {held} (record their outcomes, or `arbiter route "
                           "reap` expired ones, first)")
        return {"active_tasks": {"from": agent.active_tasks, "to": active_tasks,
                                 "open_decisions": held}}

    return guard


def _check_id(agent_id: str) -> None:
    v.pattern(agent_id, v.AGENT_ID_RE, "id", "agent id")


def _require(uow: UnitOfWork, principal: Principal, agent_id: str, for_update: bool = False) -> Agent:
    agent = uow.agents.get(principal.tenant, agent_id, for_update=for_update)
    if agent is None:
        raise NotFound(f"agent {agent_id!r} not found")
    return agent


UID_RE = re.compile(r"[A-Za-z0-9-]{1,36}")


def _given_uids(uids: Sequence[str], count: int) -> builtins.list[str]:
    """The uids of a replayed registration: one per agent, each like the ones we make."""
    if isinstance(uids, str) or len(uids) != count:
        raise InvalidInput(f"uids: give one uid per agent ({count})", field="uids",
                           rule="count")
    for value in uids:
        if not (isinstance(value, str) and UID_RE.fullmatch(value)):
            raise InvalidInput("uids: not a uid", field="uids", rule="pattern")
    return list(uids)


def _reject_repeated_ids(specs: Sequence[Registration]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise Conflict(f"agent {spec.id!r} appears more than once in the input")
        seen.add(spec.id)
