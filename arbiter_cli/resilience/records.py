"""What a journal entry carries: its kind, the op's arguments as JSON, and back (pure).

:class:`Kind` is the one list of journaled writes: the resilient services name theirs with it
(``resilience/policy.py``), the journal stores it, and replay dispatches on it. Each kind names
the service call that replays it; ``routing.route`` carries the decision made while the
primary was down, so replay stores that decision instead of routing again.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from arbiter_cli.domain.agents import TaskResult
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Decision, Outcome


class Kind(StrEnum):
    """A journaled write: ``<service area>.<method>`` of the service call it records."""

    AGENTS_REGISTER = "agents.register"
    AGENTS_UPDATE = "agents.update"
    AGENTS_SET_STATUS = "agents.set_status"
    AGENTS_HEARTBEAT = "agents.heartbeat"
    AGENTS_RECORD = "agents.record"
    AGENTS_REMOVE = "agents.remove"
    ROUTING_ROUTE = "routing.route"
    ROUTING_OUTCOME = "routing.outcome"

    @property
    def method(self) -> str:
        """The service method it records (``register`` for ``agents.register``)."""
        return self.value.partition(".")[2]


#: The command whose permission (``domain.security.PERMISSIONS``) a journaled kind needs when
#: replay re-admits it.
KIND_COMMANDS: dict[Kind, str] = {
    Kind.AGENTS_REGISTER: "agents register", Kind.AGENTS_UPDATE: "agents update",
    Kind.AGENTS_SET_STATUS: "agents status", Kind.AGENTS_HEARTBEAT: "agents heartbeat",
    Kind.AGENTS_RECORD: "agents record", Kind.AGENTS_REMOVE: "agents remove",
    Kind.ROUTING_ROUTE: "route task", Kind.ROUTING_OUTCOME: "route outcome",
}


def kind_of(text: str) -> Kind | None:
    """The kind a journal entry names; None for one this version does not know."""
    try:
        return Kind(text)
    except ValueError:
        return None
_DATES = ("created_at", "closed_at")


def principal_record(principal: Principal) -> dict[str, Any]:
    return asdict(principal)


def principal_from(record: dict[str, Any]) -> Principal:
    return Principal(tenant=str(record["tenant"]), role=str(record["role"]),
                     token_id=record.get("token_id"))


def decision_record(decision: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(Decision):
        value = getattr(decision, f.name)
        if f.name in _DATES:
            value = None if value is None else value.isoformat()
        elif f.name in ("requirements", "metadata", "excluded", "outcome") and value is not None:
            value = dict(value)
        elif f.name == "examples":
            value = {k: list(v) for k, v in value.items()}
        out[f.name] = value
    return out


def decision_from(record: dict[str, Any]) -> Decision:
    values = dict(record)
    for name in _DATES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    known = {f.name for f in fields(Decision)}
    return Decision(**{k: v for k, v in values.items() if k in known})


def task_result_record(result: TaskResult) -> dict[str, Any]:
    return asdict(result)


def task_result_from(record: dict[str, Any]) -> TaskResult:
    return TaskResult(**record)


def outcome_from(record: dict[str, Any]) -> Outcome:
    return Outcome(**record)
