"""The health rules of SPEC §8: statuses, thresholds, checks, and which status wins (pure).

* a report is the worst of its checks;
* running degraded is ``warn``: the breaker is not closed, or the journal holds entries;
* an unreachable primary is ``fail`` only when the journal cannot take a write either;
* low disk, a slow database, a skewed clock, conflicts and a soak run near its limits warn.

The checks that gather the observed values (engines, files) are in ``arbiter_cli/tools``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PASS, WARN, FAIL = "pass", "warn", "fail"
RANK = {PASS: 0, WARN: 1, FAIL: 2}
MODES = ("full", "live", "ready")
GIB, MIB = 1024**3, 1024**2
MEDIA_TYPE = "application/health+json"


@dataclass(frozen=True)
class Thresholds:
    disk_warn_bytes: int = GIB
    disk_warn_fraction: float = 0.10
    disk_fail_bytes: int = 100 * MIB
    slow_ms: float = 1000.0  # a SELECT 1 slower than this is warn


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Check:
    name: str  # "component:measurement"
    status: str
    observed_value: Any
    observed_unit: str | None
    output: str
    component_type: str  # component | datastore | system
    time: str = ""
    component_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"componentType": self.component_type,
                                "observedValue": self.observed_value,
                                "observedUnit": self.observed_unit, "status": self.status,
                                "time": self.time, "output": self.output}
        if self.component_id is not None:
            body["componentId"] = self.component_id
        return body


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=RANK.__getitem__, default=PASS)


def disk_status(free: int, total: int, t: Thresholds = DEFAULT_THRESHOLDS) -> str:
    if free < t.disk_fail_bytes:
        return FAIL
    if free < t.disk_warn_bytes or (total > 0 and free / total < t.disk_warn_fraction):
        return WARN
    return PASS


def unreachable_status(journal_writable: bool) -> str:
    """An unreachable primary: degraded (warn) if the journal takes writes, else fail."""
    return WARN if journal_writable else FAIL


def latency_status(ms: float, t: Thresholds = DEFAULT_THRESHOLDS) -> str:
    return WARN if ms > t.slow_ms else PASS


def breaker_status(state: str) -> str:
    return PASS if state == "closed" else WARN


def skew_status(skew_s: float, limit_s: float) -> str:
    """A host clock further than ``limit_s`` from the database's, either way, is warn."""
    return WARN if abs(skew_s) > limit_s else PASS


def backlog_status(backlog: int, degraded: bool) -> str:
    return WARN if backlog > 0 or degraded else PASS


def conflicts_status(conflicts: int) -> str:
    return WARN if conflicts > 0 else PASS


def soak_status(state: Mapping[str, Any]) -> str:
    """The run's own verdict when it gives one, else RSS against its soft and hard limits."""
    declared = state.get("status")
    if declared in RANK:
        return str(declared)
    rss = int(state.get("rss_bytes") or 0)
    if state.get("max_rss_bytes") and rss >= int(state["max_rss_bytes"]):
        return FAIL
    if state.get("soft_limit_bytes") and rss >= int(state["soft_limit_bytes"]):
        return WARN
    return PASS


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
