"""``arbiter health``: the checks of SPEC §8 as an ``application/health+json`` report.

The body follows draft-inadarei-api-health-check: ``status`` (pass | warn | fail), ``version``,
``serviceId``, ``description`` and ``checks``, an object keyed ``component:measurement`` whose
values are arrays of ``{componentType, observedValue, observedUnit, status, time, output}``.

The status rules are pure and live in ``arbiter_cli/domain/health.py``; the checks that touch
engines and files in ``health_checks.py``. ``--live`` (mode ``live``) touches no database;
``--ready`` (mode ``ready``) checks what serving the next request needs: configuration, database
or journal, schema, breaker, backlog.

Outputs never carry a password: messages name a database by its masked URL, and every string
goes through the secrets of the settings before it leaves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter_cli import __version__
from arbiter_cli.domain.agents import rfc3339
from arbiter_cli.domain.health import (
    DEFAULT_THRESHOLDS,
    FAIL,
    MODES,
    PASS,
    RANK,
    Check,
    Thresholds,
    scrub,
    worst,
)
from arbiter_cli.tools import health_checks as hc
from arbiter_cli.tools.health_checks import EngineFactory, JournalStatus, Probe

if TYPE_CHECKING:
    from arbiter_cli.config import Settings

_PROCESS_STARTED = time.monotonic()


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


# ---------------------------------------------------------------------------- evaluation


def evaluate(settings: Settings, *, mode: str = "full",
             clock: Callable[[], datetime] = lambda: datetime.now(UTC),
             thresholds: Thresholds | None = None,
             timer: Callable[[], float] = time.perf_counter,
             journal_status: JournalStatus | None = None,
             mountinfo: Path | None = None,
             engine: EngineFactory | None = None) -> HealthReport:
    """Run the checks of ``mode`` and return the report (never raises for a failing check).

    ``journal_status`` defaults to ``arbiter_cli.resilience.journal.resilience_status``;
    ``mountinfo`` to ``/proc/self/mountinfo`` (the file systems, for ``dataDir:persistent``);
    ``engine`` (settings -> Engine) is ``bootstrap.sql_engine``; only mode ``live`` goes without.
    """
    if mode not in MODES:
        raise ValueError(f"unknown health mode {mode!r}")
    probe = Probe(settings, thresholds or DEFAULT_THRESHOLDS, timer)
    probe.engine = engine
    if mountinfo is not None:
        probe.mountinfo = mountinfo
    checks = [_config(settings)]
    if mode == "live":
        checks.append(_process())
    else:
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


def _config(settings: Settings) -> Check:
    layers = ", ".join(settings.files) or "packaged defaults"
    return Check("config:valid", PASS, True, None,
                 f"environment {settings.env}; {layers}", "system")


def _process() -> Check:
    uptime = round(time.monotonic() - _PROCESS_STARTED, 3)
    return Check("process:uptime", PASS, uptime, "s", "process responds", "system")
