"""The checks of ``arbiter health`` that do I/O: database, breaker, journal, disk, soak.

Each returns ``Check`` values and never raises for a failing component: a failure is a check
with status ``fail`` (or ``warn`` while degraded). The status rules live in
``arbiter_cli/domain/health.py``; ``tools/health.py`` runs these in order.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter_cli.adapters.sql import deadline
from arbiter_cli.adapters.sql.clock import measure_offset, now_expr
from arbiter_cli.adapters.sql.engine import check_revision
from arbiter_cli.adapters.sql.faults import Fault, classify, driver_error
from arbiter_cli.adapters.sql.schema_version import HEAD
from arbiter_cli.adapters.sql.tables import decisions as d
from arbiter_cli.domain.health import (
    FAIL,
    GIB,
    MIB,
    PASS,
    WARN,
    Check,
    Thresholds,
    backlog_status,
    breaker_status,
    conflicts_status,
    disk_status,
    latency_status,
    skew_status,
    soak_status,
    unreachable_status,
)
from arbiter_cli.errors import ArbiterError, SchemaOutdated, StorageUnavailable
from arbiter_cli.resilience.breaker import BreakerOpen, breaker_for
from arbiter_cli.resilience.identity import mount_of, volatile_filesystem
from arbiter_cli.resilience.journal import resilience_dir
from arbiter_cli.resilience.journal import resilience_status as journal_resilience_status
from arbiter_cli.resilience.snapshot import LocalStore, clock_offset
from arbiter_cli.tools.soak.state import live_states

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.config import Settings

UNAVAILABLE = "journal status unavailable"
JournalStatus = Callable[["Settings"], Mapping[str, Any]]
EngineFactory = Callable[["Settings"], "Engine"]
OVER_CAPACITY = "routing:overCapacity"
OVER_CAPACITY_WINDOW = timedelta(hours=24)


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
    engine: EngineFactory | None = None  # from the composition root: settings -> Engine

    @property
    def postgres(self) -> bool:
        return not self.settings.database_url.startswith("sqlite")

    @property
    def journal_writable(self) -> bool:
        return bool(self.resilience and self.resilience.get("journal_writable"))


def resilience(probe: Probe, source: JournalStatus | None = None) -> dict[str, Any] | None:
    """``resilience_status(settings)`` of the journal module, or None (noted in ``problems``)."""
    status = source or journal_resilience_status
    try:
        return dict(status(probe.settings))
    except (ArbiterError, OSError) as exc:
        probe.problems.append(f"{UNAVAILABLE}: {getattr(exc, 'message', exc)}")
        return None


# ---------------------------------------------------------------------------- database


def database(probe: Probe, *, with_over_capacity: bool = False) -> list[Check]:
    """``database:responseTime`` (connect + SELECT 1, through the breaker), ``schema:revision``
    and, with ``with_over_capacity``, ``routing:overCapacity``."""
    breaker = breaker_for(probe.settings) if probe.postgres else None
    try:
        permit = breaker.allow() if breaker is not None else None
    except BreakerOpen as exc:
        return _unreachable(probe, f"circuit breaker open: not connecting (retry in "
                                   f"{exc.retry_after_s:.1f}s)", with_over_capacity)
    except StorageUnavailable as exc:
        return _unreachable(probe, exc.message, with_over_capacity)
    from sqlalchemy.exc import SQLAlchemyError

    engine = None
    try:
        engine = _engine(probe)
        ms = _select_one(probe, engine)
    except (SQLAlchemyError, StorageUnavailable, OSError) as exc:
        if breaker is not None and permit is not None:
            _record_failure(breaker, permit, exc)
        if _misconfigured(exc):
            return _config_error(probe, _describe(exc), with_over_capacity)
        return _unreachable(probe, _describe(exc), with_over_capacity)
    else:
        if breaker is not None and permit is not None:
            breaker.success(permit)
        checks = [_response_time(probe, ms), _schema(probe, engine)]
        if with_over_capacity:
            checks.append(_over_capacity(probe, engine))
        return checks
    finally:
        if engine is not None:
            engine.dispose()


def _engine(probe: Probe) -> Engine:
    if probe.engine is None:
        raise ValueError("health checks of the database need an engine factory")
    return probe.engine(probe.settings)  # a missing SQLite file: StorageUnavailable


def _select_one(probe: Probe, engine: Engine) -> float:
    """Connect and one statement: ``SELECT 1``, or on PostgreSQL the database's clock in the
    same round trip (``probe.clock_offset_s`` for ``clock:skew``)."""
    from sqlalchemy import text

    with _deadline(probe):
        started = probe.timer()
        with engine.connect() as conn:
            if probe.postgres:
                probe.clock_offset_s = measure_offset(conn)
            else:
                conn.execute(text("SELECT 1")).scalar_one()
        return round((probe.timer() - started) * 1000, 2)


def _deadline(probe: Probe) -> Any:
    """The command's budget around the probe; psycopg2 gets the wait callback that enforces it."""
    from contextlib import nullcontext

    if not probe.postgres:
        return nullcontext()

    deadline.install()
    return deadline.Deadline(probe.settings.database.command_timeout).active()


def _record_failure(breaker: Any, permit: Any, exc: BaseException) -> None:
    if classify(exc) in (Fault.CALLER, Fault.CONFIG):
        breaker.release(permit)  # not the database's trouble: neither counted nor reset
    else:
        breaker.failure(permit)


def _misconfigured(exc: BaseException) -> bool:
    return classify(exc) is Fault.CONFIG


def _describe(exc: BaseException) -> str:
    """One password-free line: our message, or the driver's first line."""
    if isinstance(exc, ArbiterError):
        return exc.message

    err = driver_error(exc)
    text = str(err).strip()
    return f"{type(err).__name__}: {(text.splitlines() or [''])[0][:300]}"


def _backend(probe: Probe) -> str:
    return "postgres" if probe.postgres else "sqlite"


def _response_time(probe: Probe, ms: float) -> Check:
    status = latency_status(ms, probe.thresholds)
    note = "" if status == PASS else f" (slower than {probe.thresholds.slow_ms:g} ms)"
    return Check("database:responseTime", status, ms, "ms", f"SELECT 1 in {ms:g} ms{note}",
                 "datastore", component_id=_backend(probe))


def _unreachable(probe: Probe, why: str, with_over_capacity: bool = False) -> list[Check]:
    status = unreachable_status(probe.journal_writable)
    if probe.postgres:
        problem = (probe.resilience or {}).get("journal_problem")
        why += ("; writes go to the local journal" if probe.journal_writable
                else f"; the local journal cannot take writes either: {problem}" if problem
                else "; the local journal cannot take writes either")
    return [Check("database:responseTime", status, None, "ms", why, "datastore",
                  component_id=_backend(probe)),
            Check("schema:revision", status, None, None, "not checked: database unreachable",
                  "datastore", component_id=_backend(probe))] + (
        [Check(OVER_CAPACITY, status, None, "decisions", "not checked: database unreachable",
               "datastore", component_id=_backend(probe))] if with_over_capacity else [])


def _config_error(probe: Probe, why: str, with_over_capacity: bool = False) -> list[Check]:
    """Wrong password, unknown database, unresolvable host: not an outage (SPEC §7.1), so no
    journal can stand in for the database; fail whatever the journal could take."""
    why = f"configuration error: {why}; commands exit 3 until database.url is fixed"
    return [Check("database:responseTime", FAIL, None, "ms", why, "datastore",
                  component_id=_backend(probe)),
            Check("schema:revision", FAIL, None, None, "not checked: configuration error",
                  "datastore", component_id=_backend(probe))] + (
        [Check(OVER_CAPACITY, FAIL, None, "decisions", "not checked: configuration error",
               "datastore", component_id=_backend(probe))] if with_over_capacity else [])


def _schema(probe: Probe, engine: Engine) -> Check:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _deadline(probe):
            revision = check_revision(engine)
    except SchemaOutdated as exc:
        return Check("schema:revision", FAIL, None, None, exc.message, "datastore",
                     component_id=_backend(probe))
    except (SQLAlchemyError, StorageUnavailable, OSError) as exc:
        return Check("schema:revision", FAIL, None, None, _describe(exc), "datastore",
                     component_id=_backend(probe))
    return Check("schema:revision", PASS, revision, None, f"at head ({HEAD})", "datastore",
                 component_id=_backend(probe))


def _over_capacity(probe: Probe, engine: Engine) -> Check:
    """Decisions flagged ``over_capacity`` whose interval reaches into the last 24 h (by the
    database's clock), all tenants together: warn while there is any."""
    from sqlalchemy import func, or_, select
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _deadline(probe), engine.connect() as conn:
            now = conn.execute(select(now_expr(conn.dialect.name))).scalar_one()
            since = now - OVER_CAPACITY_WINDOW
            count = int(conn.execute(select(func.count()).select_from(d).where(
                d.c.over_capacity, or_(d.c.closed_at.is_(None), d.c.closed_at >= since))
            ).scalar_one())
    except (SQLAlchemyError, StorageUnavailable, OSError) as exc:
        return Check(OVER_CAPACITY, WARN, None, "decisions", f"cannot count: {_describe(exc)}",
                     "datastore", component_id=_backend(probe))
    output = (f"{count} decision(s) of the last 24 h ran while their agent held more tasks "
              "than its capacity (journaled writes replayed): `arbiter route history "
              "--over-capacity` lists them" if count else "none in the last 24 h")
    return Check(OVER_CAPACITY, WARN if count else PASS, count, "decisions", output,
                 "datastore", component_id=_backend(probe))


# ---------------------------------------------------------------------------- clock


def clock(probe: Probe) -> Check:
    """``clock:skew``: this host's clock minus the database's, in seconds (SPEC §4.1).

    Measured by the database check's own round trip; while the database is out of reach, the
    offset the last snapshot refresh measured stands in (the snapshot tells time with it)."""
    limit = probe.settings.resilience.max_clock_skew
    if not probe.postgres:
        return Check("clock:skew", PASS, 0, "s", "SQLite primary: the database's clock is "
                     "this host's", "system")
    offset = probe.clock_offset_s
    source = "measured now"
    if offset is None:
        offset = _snapshot_offset(probe)
        if offset is None:
            return Check("clock:skew", PASS, None, "s",
                         "not measured: the database is out of reach and no snapshot has "
                         "measured it", "system")
        source = "as the last snapshot refresh measured it"
    skew = round(-offset, 3)
    status = skew_status(skew, limit)
    if status == PASS:
        output = f"{skew:+.3f} s from the database's clock ({source}); limit {limit:g} s"
    else:
        output = (f"this host's clock is {abs(skew):.0f} s "
                  f"{'ahead of' if skew > 0 else 'behind'} the database's ({source}), beyond "
                  f"resilience.max_clock_skew ({limit:g} s): arbiter uses the database's time, "
                  "but fix the host's clock (NTP)")
    return Check("clock:skew", status, skew, "s", output, "system")


def _snapshot_offset(probe: Probe) -> float | None:
    try:
        directory = resilience_dir(probe.settings.paths.data_dir, probe.settings.database_url)
        return clock_offset(LocalStore(directory).meta())
    except (ArbiterError, OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- breaker, journal


def breaker(probe: Probe) -> Check:
    if not probe.postgres:
        return Check("breaker:state", PASS, "closed", None, "no breaker: SQLite primary",
                     "component")

    try:
        state = breaker_for(probe.settings).snapshot()
    except StorageUnavailable as exc:
        return Check("breaker:state", WARN, None, None, exc.message, "component")
    if state.state == "closed":
        output = f"closed; {state.failures} consecutive counted failure(s)"
    else:
        output = f"{state.state.replace('_', '-')} since {state.opened_at_rfc3339() or '?'}"
    return Check("breaker:state", breaker_status(state.state), state.state, None, output,
                 "component")


def journal(probe: Probe, *, with_conflicts: bool) -> list[Check]:
    if not probe.postgres:
        checks = [Check("journal:backlog", PASS, 0, "entries", "no journal: SQLite primary",
                        "datastore")]
        if with_conflicts:
            checks.append(Check("journal:conflicts", PASS, 0, "entries",
                                "no journal: SQLite primary", "datastore"))
        return checks
    status = probe.resilience
    if status is None:
        why = "; ".join(probe.problems) or UNAVAILABLE
        checks = [Check("journal:backlog", WARN, None, "entries", why, "datastore")]
        if with_conflicts:
            checks.append(Check("journal:conflicts", WARN, None, "entries", why, "datastore"))
        return checks
    return [_backlog(status)] + ([_conflicts(status)] if with_conflicts else [])


def stranded(probe: Probe) -> Check:
    """``journal:stranded``: other journals of data_dir holding writes that nothing replays
    (a URL change, issue 17 F1). Read from the journal status: no database I/O."""
    others = [o for o in (probe.resilience or {}).get("stranded") or [] if o.get("pending")]
    if not others:
        return Check("journal:stranded", PASS, 0, "entries", "no other journal holds writes",
                     "datastore")
    total = sum(max(0, int(o["pending"])) for o in others)
    output = "; ".join(
        f"journal {o['key']} ({o.get('url') or 'database not recorded'}) holds "
        f"{o['pending']} pending write(s): `arbiter journal replay --from {o['key']}` drains "
        "it if it is this database" for o in others)
    return Check("journal:stranded", WARN, total, "entries", output, "datastore")


def data_dir_persistence(probe: Probe) -> Check:
    """``dataDir:persistent``: the journal holds acknowledged writes, so data_dir must
    survive a reboot and the container (warn on tmpfs, ramfs, overlay; issue 17 F7)."""
    data_dir = probe.settings.paths.data_dir
    mount = volatile_filesystem(data_dir, probe.mountinfo)
    if mount is not None:
        return Check("dataDir:persistent", WARN, False, None,
                     f"{data_dir} is on {mount.fstype} (mounted at {mount.point}): journaled "
                     "writes there are lost at a reboot or with the container; set "
                     "ARBITER_DATA_DIR to a persistent disk", "system")
    found = mount_of(data_dir, probe.mountinfo)
    if found is None:
        return Check("dataDir:persistent", PASS, None, None,
                     f"file system of {data_dir} not known (no {probe.mountinfo})", "system")
    return Check("dataDir:persistent", PASS, True, None,
                 f"{data_dir} is on {found.fstype} (mounted at {found.point})", "system")


def _backlog(status: dict[str, Any]) -> Check:
    if status.get("journal_readable") is False:  # it may hold acknowledged writes
        return Check("journal:backlog", WARN, None, "entries",
                     f"{status.get('journal_problem')}", "datastore")
    backlog = int(status.get("backlog") or 0)
    degraded = bool(status.get("degraded"))
    oldest = status.get("oldest_age_s")
    if backlog:
        output = f"{backlog} pending, oldest {oldest}s: `arbiter journal replay` drains them"
    else:
        output = "empty" + ("; running degraded" if degraded else "")
    if not status.get("journal_writable"):
        output += "; the journal cannot take writes"
    return Check("journal:backlog", backlog_status(backlog, degraded), backlog, "entries",
                 output, "datastore")


def _conflicts(status: dict[str, Any]) -> Check:
    conflicts = int(status.get("conflicts") or 0)
    output = (f"{conflicts} conflict(s): see `arbiter journal list --conflicts`" if conflicts
              else "none")
    return Check("journal:conflicts", conflicts_status(conflicts), conflicts, "entries", output,
                 "datastore")


# ---------------------------------------------------------------------------- host


def disk(probe: Probe) -> Check:
    try:
        path, free, total = data_dir_usage(probe.settings.paths.data_dir)
    except OSError as exc:
        return Check("disk:free", WARN, None, "bytes", f"cannot read disk usage: {exc.strerror}",
                     "system")
    share = free / total if total else 0.0
    return Check("disk:free", disk_status(free, total, probe.thresholds), free, "bytes",
                 f"{free / GIB:.2f} GiB free ({share:.0%}) at {path}", "system")


def soak(probe: Probe) -> list[Check]:
    """One ``soak:rss`` entry per live soak run; none when no run is alive."""
    checks = []
    for state in live_states(probe.settings.paths.data_dir):
        rss = int(state.get("rss_bytes") or 0)
        limits = ", ".join(f"{label} {int(state[key]) / MIB:.0f} MiB"
                           for label, key in (("soft limit", "soft_limit_bytes"),
                                              ("max", "max_rss_bytes")) if state.get(key))
        checks.append(Check("soak:rss", soak_status(state), rss, "bytes",
                            f"soak pid {state.get('pid')}: rss {rss / MIB:.0f} MiB"
                            + (f" ({limits})" if limits else ""), "component",
                            component_id=f"soak-{state.get('pid')}"))
    return checks


def data_dir_usage(data_dir: Path) -> tuple[Path, int, int]:
    """``(path, free, total)`` of the file system holding ``data_dir`` (or its nearest parent)."""
    path = data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return path, usage.free, usage.total
