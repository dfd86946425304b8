"""``arbiter health``: the checks of SPEC §8 as an ``application/health+json`` report.

The body follows draft-inadarei-api-health-check: ``status`` (pass | warn | fail), ``version``,
``serviceId``, ``description`` and ``checks``, an object keyed ``component:measurement`` whose
values are arrays of ``{componentType, observedValue, observedUnit, status, time, output}``.

Status rules (pure functions below, covered by the unit tier):

* the report is the worst of its checks;
* running degraded is ``warn``: the breaker is not closed, or the journal holds entries;
* the database check is ``fail`` only when neither the database nor the journal can take a
  write; with a writable journal an unreachable primary is ``warn``;
* ``--live`` (mode ``live``) touches no database; ``--ready`` (mode ``ready``) checks what
  serving the next request needs: configuration, database or journal, schema, breaker, backlog.

Outputs never carry a password: messages name a database by its masked URL, and every string
goes through the secrets of the settings before it leaves.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter_cli import __version__
from arbiter_cli.domain.agents import rfc3339

if TYPE_CHECKING:
    from arbiter_cli.config import Settings

PASS, WARN, FAIL = "pass", "warn", "fail"
RANK = {PASS: 0, WARN: 1, FAIL: 2}
MODES = ("full", "live", "ready")
GIB, MIB = 1024**3, 1024**2
MEDIA_TYPE = "application/health+json"
_PROCESS_STARTED = time.monotonic()


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


@dataclass(frozen=True)
class HealthReport:
    mode: str
    checks: tuple[Check, ...]
    version: str = __version__

    @property
    def status(self) -> str:
        return worst(c.status for c in self.checks)

    @property
    def http_status(self) -> int:
        return 503 if self.status == FAIL else 200

    @property
    def exit_code(self) -> int:
        return RANK[self.status]

    def to_dict(self) -> dict[str, Any]:
        checks: dict[str, list[dict[str, Any]]] = {}
        for check in self.checks:
            checks.setdefault(check.name, []).append(check.to_dict())
        body: dict[str, Any] = {"status": self.status, "version": self.version,
                                "serviceId": "arbiter",
                                "description": f"arbiter health ({self.mode})",
                                "checks": checks}
        troubled = [c.name for c in self.checks if c.status != PASS]
        if troubled:
            body["output"] = f"{self.status}: " + ", ".join(dict.fromkeys(troubled))
        return body


# ---------------------------------------------------------------------------- pure rules


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


# ---------------------------------------------------------------------------- evaluation


@dataclass
class Probe:
    """What one evaluation found out, handed from check to check."""

    settings: Settings
    thresholds: Thresholds
    timer: Callable[[], float]
    resilience: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    mountinfo: Path = Path("/proc/self/mountinfo")  # which file system holds data_dir
    clock_offset_s: float | None = None  # the database's clock minus this host's, if measured

    @property
    def postgres(self) -> bool:
        return not self.settings.database_url.startswith("sqlite")

    @property
    def journal_writable(self) -> bool:
        return bool(self.resilience and self.resilience.get("journal_writable"))


JournalStatus = Callable[["Settings"], Mapping[str, Any]]


def evaluate(settings: Settings, *, mode: str = "full",
             clock: Callable[[], datetime] = lambda: datetime.now(UTC),
             thresholds: Thresholds | None = None,
             timer: Callable[[], float] = time.perf_counter,
             journal_status: JournalStatus | None = None,
             mountinfo: Path | None = None) -> HealthReport:
    """Run the checks of ``mode`` and return the report (never raises for a failing check).

    ``journal_status`` defaults to ``arbiter_cli.resilience.journal.resilience_status``;
    ``mountinfo`` to ``/proc/self/mountinfo`` (the file systems, for ``dataDir:persistent``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown health mode {mode!r}")
    probe = Probe(settings, thresholds or DEFAULT_THRESHOLDS, timer)
    if mountinfo is not None:
        probe.mountinfo = mountinfo
    checks = [_config(settings)]
    if mode == "live":
        checks.append(_process())
    else:
        from arbiter_cli.tools import health_checks as hc

        if probe.postgres:
            probe.resilience = hc.resilience(probe, journal_status)
        checks += hc.database(probe, with_over_capacity=mode == "full")
        if probe.postgres and probe.resilience is not None:
            # The database check may have probed and closed the breaker: read the status again,
            # so "degraded" describes the state after the check.
            probe.resilience = hc.resilience(probe, journal_status)
        checks.append(hc.breaker(probe))
        checks += hc.journal(probe, with_conflicts=mode == "full")
        if mode == "full":
            if probe.postgres and probe.resilience is not None:
                checks.append(hc.stranded(probe))
            checks.append(hc.clock(probe))
            checks.append(hc.disk(probe))
            checks.append(hc.data_dir_persistence(probe))
            checks += hc.soak(probe)
    stamp = rfc3339(clock())
    secrets = settings.secret_values()
    return HealthReport(mode, tuple(replace(c, time=stamp, output=scrub(c.output, secrets))
                                    for c in checks))


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _config(settings: Settings) -> Check:
    layers = ", ".join(settings.files) or "packaged defaults"
    return Check("config:valid", PASS, True, None,
                 f"environment {settings.env}; {layers}", "system")


def _process() -> Check:
    uptime = round(time.monotonic() - _PROCESS_STARTED, 3)
    return Check("process:uptime", PASS, uptime, "s", "process responds", "system")


def data_dir_usage(data_dir: Path) -> tuple[Path, int, int]:
    """``(path, free, total)`` of the file system holding ``data_dir`` (or its nearest parent)."""
    path = data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return path, usage.free, usage.total
