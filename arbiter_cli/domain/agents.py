"""The agent, its registration and update inputs, and performance folding (SPEC §2.1, §2.3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from arbiter_cli.domain import validation as v

PRIOR_SUCCESS = 0.8
PRIOR_QUALITY = 0.7
PRIOR_LATENCY_MS = 5000.0


class Status(StrEnum):
    AVAILABLE = "available"
    DRAINING = "draining"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


STATUSES = tuple(s.value for s in Status)


@dataclass(frozen=True)
class RegistryPolicy:
    """The registry rules that come from configuration."""

    task_types: tuple[str, ...]
    languages: tuple[str, ...]
    default_capacity: int = 10
    max_agents: int = 10_000
    window: int = 100


@dataclass(frozen=True)
class Performance:
    """Folded task results. ``latency_count`` is how many tasks carried a latency, or None
    when every task did (the common case), so the latency average has its own count."""

    success_rate: float = PRIOR_SUCCESS
    average_quality: float = PRIOR_QUALITY
    average_latency_ms: float = PRIOR_LATENCY_MS
    task_count: int = 0
    latency_count: int | None = None

    @property
    def latencies(self) -> int:
        return self.task_count if self.latency_count is None else self.latency_count


@dataclass(frozen=True)
class Agent:
    uid: str
    tenant: str
    id: str
    name: str
    model_family: str
    task_types: tuple[str, ...]
    languages: tuple[str, ...]
    specializations: tuple[str, ...]
    capacity: int
    registered_at: datetime
    updated_at: datetime
    last_active_at: datetime
    active_tasks: int = 0
    status: Status = Status.AVAILABLE
    status_reason: str | None = None
    performance: Performance = field(default_factory=Performance)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def utilization(self) -> float:
        return self.active_tasks / self.capacity

    def has_languages(self, wanted: tuple[str, ...]) -> bool:
        mine = {lang.lower() for lang in self.languages}
        return all(lang.lower() in mine for lang in wanted)

    def has_specializations(self, wanted: tuple[str, ...]) -> bool:
        mine = {label.lower() for label in self.specializations}
        return all(label.lower() in mine for label in wanted)

    def to_dict(self) -> dict[str, Any]:
        perf = self.performance
        return {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "model_family": self.model_family,
            "task_types": list(self.task_types),
            "languages": list(self.languages),
            "specializations": list(self.specializations),
            "capacity": self.capacity,
            "active_tasks": self.active_tasks,
            "status": self.status.value,
            "status_reason": self.status_reason,
            "utilization": round(self.utilization, 6),
            "performance": {
                "success_rate": perf.success_rate,
                "average_quality": perf.average_quality,
                "average_latency_ms": perf.average_latency_ms,
                "task_count": perf.task_count,
            },
            "metadata": dict(self.metadata),
            "registered_at": rfc3339(self.registered_at),
            "last_active_at": rfc3339(self.last_active_at),
            "updated_at": rfc3339(self.updated_at),
            "version": self.version,
        }


@lru_cache(maxsize=2048)  # listings repeat timestamps; 65 536 entries read as a 15 MiB leak in soaks
def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds and ``Z`` (SPEC §0)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"



# ---------------------------------------------------------------------------- inputs

REGISTER_FIELDS = frozenset(
    {"id", "name", "model_family", "task_types", "languages", "specializations", "capacity",
     "metadata", "performance"}
)
PERFORMANCE_FIELDS = frozenset(
    {"success_rate", "average_quality", "average_latency_ms", "task_count"}
)


def parse_performance(raw: Any, where: str) -> Performance:
    """Performance imported with a registration (history from another registry, or a benchmark)."""
    if not isinstance(raw, Mapping):
        raise v.fail(where, "object", "must be an object")
    unknown = sorted(set(raw) - PERFORMANCE_FIELDS)
    if unknown:
        raise v.fail(f"{where}.{unknown[0]}", "unknown_field", "is not a performance field")
    prior = Performance()
    return Performance(
        success_rate=v.fraction(raw.get("success_rate", prior.success_rate),
                                f"{where}.success_rate"),
        average_quality=v.fraction(raw.get("average_quality", prior.average_quality),
                                   f"{where}.average_quality"),
        average_latency_ms=v.finite(raw.get("average_latency_ms", prior.average_latency_ms),
                                    f"{where}.average_latency_ms", low=0.0),
        task_count=v.integer(raw.get("task_count", 0), f"{where}.task_count", low=0,
                             high=2**62),
    )


@dataclass(frozen=True)
class Registration:
    """A validated ``agents register`` input."""

    id: str
    name: str
    model_family: str
    task_types: tuple[str, ...]
    languages: tuple[str, ...]
    specializations: tuple[str, ...]
    capacity: int
    metadata: Mapping[str, Any]
    performance: Performance = field(default_factory=Performance)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], policy: RegistryPolicy, where: str = "") -> Registration:
        unknown = sorted(set(raw) - REGISTER_FIELDS)
        if unknown:
            raise v.fail(where + unknown[0], "unknown_field", "is not an agent field")
        for required in ("id", "name", "model_family", "task_types"):
            if raw.get(required) in (None, "", [], ()):
                raise v.fail(where + required, "required", "is required")
        task_types = v.string_list(raw["task_types"], where + "task_types")
        for slug in task_types:
            v.pattern(slug, v.SLUG_RE, where + "task_types", "task type")
        capacity = raw.get("capacity")
        return cls(
            id=v.pattern(raw["id"], v.AGENT_ID_RE, where + "id", "agent id"),
            name=v.text(raw["name"], where + "name"),
            model_family=v.pattern(
                raw["model_family"], v.MODEL_FAMILY_RE, where + "model_family", "model family"
            ),
            task_types=v.choose(task_types, policy.task_types, where + "task_types"),
            languages=v.choose(
                v.string_list(raw.get("languages") or [], where + "languages"),
                policy.languages, where + "languages",
            ),
            specializations=v.labels(
                v.string_list(raw.get("specializations") or [], where + "specializations"),
                where + "specializations",
            ),
            capacity=policy.default_capacity if capacity is None
            else v.integer(capacity, where + "capacity", low=1, high=1000),
            metadata=v.metadata({} if raw.get("metadata") is None else raw["metadata"],
                                where + "metadata"),
            performance=Performance() if raw.get("performance") is None
            else parse_performance(raw["performance"], where + "performance"),
        )

    def new_agent(self, *, uid: str, tenant: str, now: datetime) -> Agent:
        return Agent(
            uid=uid, tenant=tenant, id=self.id, name=self.name, model_family=self.model_family,
            task_types=self.task_types, languages=self.languages,
            specializations=self.specializations, capacity=self.capacity,
            metadata=self.metadata, performance=self.performance, registered_at=now,
            updated_at=now, last_active_at=now,
        )


PATCH_FIELDS = frozenset(
    {"name", "task_types", "languages", "specializations", "capacity", "metadata",
     "active_tasks", "expect_version"}
)


@dataclass(frozen=True)
class Patch:
    """A validated ``agents update`` input: ``None`` means unchanged; a list replaces."""

    name: str | None = None
    task_types: tuple[str, ...] | None = None
    languages: tuple[str, ...] | None = None
    specializations: tuple[str, ...] | None = None
    capacity: int | None = None
    metadata: Mapping[str, Any] | None = None
    active_tasks: int | None = None
    expect_version: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any], policy: RegistryPolicy) -> Patch:
        unknown = sorted(k for k, value in raw.items() if k not in PATCH_FIELDS and value is not None)
        if unknown:
            raise v.fail(unknown[0], "unknown_field", "is not a field agents update changes")

        def get(name: str) -> Any:
            return raw.get(name)

        task_types = get("task_types")
        if task_types is not None:
            task_types = v.choose(
                v.string_list(task_types, "task_types"), policy.task_types, "task_types"
            )
            if not task_types:
                raise v.fail("task_types", "required", "must not be empty")
        languages = get("languages")
        specs = get("specializations")
        return cls(
            name=None if get("name") is None else v.text(get("name"), "name"),
            task_types=task_types,
            languages=None if languages is None else v.choose(
                v.string_list(languages, "languages"), policy.languages, "languages"),
            specializations=None if specs is None else v.labels(
                v.string_list(specs, "specializations"), "specializations"),
            capacity=None if get("capacity") is None
            else v.integer(get("capacity"), "capacity", low=1, high=1000),
            metadata=None if get("metadata") is None else v.metadata(get("metadata")),
            active_tasks=None if get("active_tasks") is None
            else v.integer(get("active_tasks"), "active_tasks", low=0, high=1_000_000),
            expect_version=None if get("expect_version") is None
            else v.integer(get("expect_version"), "expect_version", low=1, high=2**62),
        )

    def changes(self) -> dict[str, Any]:
        fields = ("name", "task_types", "languages", "specializations", "capacity", "metadata",
                  "active_tasks")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}

    def apply(self, agent: Agent, now: datetime) -> Agent:
        return replace(agent, **self.changes(), updated_at=now, version=agent.version + 1)


@dataclass(frozen=True)
class TaskResult:
    """One finished task to fold into performance (``agents record`` or an outcome)."""

    success: bool
    quality: float
    latency_ms: float | None = None
    task_type: str | None = None

    @classmethod
    def parse(
        cls, *, success: bool, quality: Any = None, latency_ms: Any = None,
        task_type: str | None = None, policy: RegistryPolicy | None = None,
    ) -> TaskResult:
        q = (1.0 if success else 0.0) if quality is None else v.fraction(quality, "quality")
        latency = None if latency_ms is None else v.finite(latency_ms, "latency_ms", low=0.0)
        if task_type is not None and policy is not None:
            task_type = v.choose([task_type], policy.task_types, "task_type")[0]
        return cls(success=success, quality=q, latency_ms=latency, task_type=task_type)


def fold(perf: Performance, result: TaskResult, window: int) -> Performance:
    """Fold one task into ``perf``: cumulative mean below ``window`` tasks, then EMA(1/window).

    The first task replaces the prior, because x + (v - x)/1 = v.
    """
    n = perf.task_count

    def step(current: float, value: float, count: int) -> float:
        return current + (value - current) / (count + 1 if count < window else window)

    latency, latencies = perf.average_latency_ms, perf.latencies
    if result.latency_ms is not None:  # latency has its own count: a missing one is no sample
        latency, latencies = step(latency, result.latency_ms, latencies), latencies + 1
    return Performance(
        success_rate=step(perf.success_rate, 1.0 if result.success else 0.0, n),
        average_quality=step(perf.average_quality, result.quality, n),
        average_latency_ms=latency,
        task_count=n + 1,
        latency_count=None if latencies == n + 1 else latencies,
    )


def record(agent: Agent, result: TaskResult, window: int, now: datetime) -> Agent:
    """The agent after one more finished task."""
    return replace(
        agent,
        performance=fold(agent.performance, result, window),
        last_active_at=now,
        updated_at=now,
        version=agent.version + 1,
    )


def check_status(status: str, reason: str | None) -> None:
    if status not in STATUSES:
        raise v.fail("status", "allowed", f"must be one of {', '.join(STATUSES)}")
    if reason is not None:
        v.text(reason, "reason", max_len=500)


def set_status(agent: Agent, status: str, reason: str | None, now: datetime) -> Agent:
    check_status(status, reason)
    return replace(
        agent, status=Status(status), status_reason=reason, updated_at=now,
        version=agent.version + 1,
    )


def heartbeat(agent: Agent, now: datetime) -> Agent:
    return replace(agent, last_active_at=now, updated_at=now, version=agent.version + 1)


def is_stale(agent: Agent, cutoff: datetime) -> bool:
    """``agents cleanup`` marks agents silent since ``cutoff`` with no active tasks."""
    return (
        agent.last_active_at < cutoff
        and agent.active_tasks == 0
        and agent.status != Status.OFFLINE
    )


@dataclass(frozen=True)
class FleetStats:
    """``agents stats`` for one tenant (SPEC §2.4); backends compute it by aggregation."""

    tenant: str
    total: int
    by_status: Mapping[str, int]
    busy: int
    idle: int
    mean_utilization: float
    mean_success: float
    total_capacity: int
    total_active_tasks: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "agents": self.total,
            "by_status": {s: int(self.by_status.get(s, 0)) for s in STATUSES},
            "busy": self.busy,
            "idle": self.idle,
            "mean_utilization": round(self.mean_utilization, 6),
            "mean_success": round(self.mean_success, 6),
            "total_capacity": self.total_capacity,
            "total_active_tasks": self.total_active_tasks,
        }
