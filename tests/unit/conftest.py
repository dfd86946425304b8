"""Fixtures of the unit tier: a fake clock, deterministic uids, the registry policy, and the
agent service wired to the in-memory store (our own fake of the ports; no database)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory
from arbiter_cli.config import DEFAULT_LANGUAGES, DEFAULT_TASK_TYPES
from arbiter_cli.domain.agents import Agent, RegistryPolicy
from arbiter_cli.domain.principal import Principal
from arbiter_cli.resilience.journal import Journal
from arbiter_cli.services.agents import AgentService
from tests.helpers import FakeClock, Ticks

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
DEFAULT_WEIGHTS = {"fit": 0.3, "success": 0.3, "quality": 0.2, "load": 0.2}



class SequentialUids:
    """uid-0001, uid-0002, ...: deterministic registration uids."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    def __call__(self) -> str:
        uid = f"uid-{len(self.issued) + 1:04d}"
        self.issued.append(uid)
        return uid


@pytest.fixture
def policy() -> RegistryPolicy:
    return RegistryPolicy(task_types=tuple(DEFAULT_TASK_TYPES), languages=tuple(DEFAULT_LANGUAGES))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def uids() -> SequentialUids:
    return SequentialUids()


@pytest.fixture
def uow_factory(clock: FakeClock) -> MemoryUnitOfWorkFactory:
    """The memory store, with the fake clock as its "database clock"."""
    return MemoryUnitOfWorkFactory(clock=clock)


@pytest.fixture
def make_service(
    uow_factory: MemoryUnitOfWorkFactory, policy: RegistryPolicy, clock: FakeClock,
    uids: SequentialUids,
) -> Callable[..., AgentService]:
    """Build an ``AgentService`` as bootstrap does, optionally with another policy or weights."""

    def build(policy_: RegistryPolicy | None = None,
              weights: dict[str, float] | None = None) -> AgentService:
        return AgentService(uow_factory, policy_ or policy, weights or DEFAULT_WEIGHTS, uids)

    return build


@pytest.fixture
def service(make_service: Callable[..., AgentService]) -> AgentService:
    return make_service()


@pytest.fixture
def admin() -> Principal:
    return Principal.local_admin()


@pytest.fixture
def raw() -> Callable[..., dict[str, Any]]:
    """A valid registration input for ``agent_id``; keyword arguments override fields."""

    def build(agent_id: str = "coder-1", **fields: Any) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": agent_id, "name": f"Agent {agent_id}", "model_family": "claude",
            "task_types": ["code-editing", "code-review"], "languages": ["Python"],
        }
        document.update(fields)
        return document

    return build


@pytest.fixture
def make_agent() -> Callable[..., Agent]:
    """A domain ``Agent`` built directly (no validation); keyword arguments override fields."""

    def build(agent_id: str = "a1", **fields: Any) -> Agent:
        values: dict[str, Any] = {
            "uid": f"uid-{agent_id}", "tenant": "default", "id": agent_id, "name": agent_id,
            "model_family": "claude", "task_types": ("code-review",), "languages": ("Python",),
            "specializations": (), "capacity": 10, "registered_at": T0, "updated_at": T0,
            "last_active_at": T0,
        }
        values.update(fields)
        return Agent(**values)

    return build


# The journal tests' clock and journal (test_journal.py, test_journal_promises.py).
@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def journal(tmp_path: Path, ticks: Ticks) -> Iterator[Journal]:
    opened = Journal(tmp_path / "j" / "journal.db", max_entries=5, clock=ticks)
    yield opened
    opened.close()
