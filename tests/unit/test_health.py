"""Health: the status rules, the thresholds, and the application/health+json body."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.bootstrap import sql_engine
from arbiter_cli.config import Settings
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
    scrub,
    skew_status,
    soak_status,
    unreachable_status,
    worst,
)
from arbiter_cli.errors import StorageUnavailable
from arbiter_cli.resilience.breaker import BreakerState, breaker_for
from arbiter_cli.tools import health
from tests.health_schema import health_body_problems

HealthReport = health.HealthReport
# The composition root hands the checks their engine factory; these tests pass the same one.
evaluate = functools.partial(health.evaluate, engine=sql_engine)

NOW = datetime(2026, 11, 29, 12, 0, 0, 250000, tzinfo=UTC)
NOWHERE = "postgresql+psycopg2://arb:pw-s3cret@127.0.0.1:1/arbiter"  # nothing listens on port 1


def at_now() -> datetime:
    return NOW


def with_values(settings: Settings, **values: Any) -> Settings:
    merged = {**settings.values, **{k.replace("__", "."): v for k, v in values.items()}}
    return replace(settings, values=merged)


def journal(**overrides: Any) -> Any:
    status = {"backlog": 0, "conflicts": 0, "oldest_age_s": None, "journal_writable": True,
              "degraded": False, "breaker": {"state": "closed", "opened_at": None}}
    status.update(overrides)
    return lambda _settings: status


def by_name(report: HealthReport) -> dict[str, Check]:
    return {c.name: c for c in report.checks}


def check(name: str = "disk:free", status: str = PASS) -> Check:
    return Check(name, status, 1, "bytes", "out", "system", time="2026-11-29T12:00:00.250Z")


# ---------------------------------------------------------------------------- rules


@pytest.mark.parametrize(("statuses", "expected"), [
    ([], PASS), ([PASS, PASS], PASS), ([PASS, WARN], WARN), ([WARN, FAIL, PASS], FAIL),
    ([FAIL, WARN], FAIL)])
def test_report_status_is_the_worst_of_its_checks(statuses: list[str], expected: str) -> None:
    assert worst(statuses) == expected


@pytest.mark.parametrize(("free", "total", "expected"), [
    (100 * MIB - 1, 200 * MIB, FAIL),     # under 100 MiB fails, whatever the share
    (100 * MIB, 200 * MIB, WARN),         # at 100 MiB: under 1 GiB still warns
    (GIB - 1, 100 * GIB, WARN),           # under 1 GiB warns
    (GIB, 5 * GIB, PASS),                 # 1 GiB and 20 %: pass
    (10 * GIB - 1, 100 * GIB, WARN),      # under 10 % warns
    (10 * GIB, 100 * GIB, PASS),          # exactly 10 %: pass
    (2 * GIB, 0, PASS),                   # an unknown total never divides by zero
])
def test_disk_free_thresholds(free: int, total: int, expected: str) -> None:
    assert disk_status(free, total) == expected


def test_disk_thresholds_are_injectable() -> None:
    strict = Thresholds(disk_warn_bytes=10 * GIB, disk_warn_fraction=0.5, disk_fail_bytes=GIB)
    assert disk_status(GIB - 1, 100 * GIB, strict) == FAIL
    assert disk_status(5 * GIB, 8 * GIB, strict) == WARN
    assert disk_status(60 * GIB, 100 * GIB, strict) == PASS


def test_unreachable_database_is_warn_only_while_the_journal_takes_writes() -> None:
    assert unreachable_status(journal_writable=True) == WARN
    assert unreachable_status(journal_writable=False) == FAIL


def test_slow_database_is_warn() -> None:
    assert latency_status(1000.0) == PASS
    assert latency_status(1000.01) == WARN
    assert latency_status(5.0, Thresholds(slow_ms=4)) == WARN


@pytest.mark.parametrize(("state", "expected"), [
    ("closed", PASS), ("open", WARN), ("half_open", WARN)])
def test_a_breaker_that_is_not_closed_means_running_degraded(state: str, expected: str) -> None:
    assert breaker_status(state) == expected


def test_a_clock_beyond_the_allowed_skew_either_way_is_warn() -> None:
    assert skew_status(0.0, 30.0) == PASS
    assert skew_status(30.0, 30.0) == PASS
    assert skew_status(-30.0, 30.0) == PASS
    assert skew_status(30.001, 30.0) == WARN
    assert skew_status(-10800.0, 30.0) == WARN


def test_journal_in_use_is_warn() -> None:
    assert backlog_status(0, degraded=False) == PASS
    assert backlog_status(1, degraded=False) == WARN
    assert backlog_status(0, degraded=True) == WARN
    assert conflicts_status(0) == PASS
    assert conflicts_status(1) == WARN


@pytest.mark.parametrize(("state", "expected"), [
    ({"status": "warn", "rss_bytes": 1}, WARN),
    ({"status": "pass", "rss_bytes": 10**12, "max_rss_bytes": 1}, PASS),  # the run decides
    ({"rss_bytes": 80, "soft_limit_bytes": 80, "max_rss_bytes": 100}, WARN),
    ({"rss_bytes": 79, "soft_limit_bytes": 80, "max_rss_bytes": 100}, PASS),
    ({"rss_bytes": 100, "soft_limit_bytes": 80, "max_rss_bytes": 100}, FAIL),
    ({"status": "leaking", "rss_bytes": 1}, PASS),
])
def test_soak_rss_status(state: dict[str, Any], expected: str) -> None:
    assert soak_status(state) == expected


# ---------------------------------------------------------------------------- report and body


@pytest.mark.parametrize(("status", "http", "exit_code"), [
    (PASS, 200, 0), (WARN, 200, 1), (FAIL, 503, 2)])
def test_http_status_and_exit_code_follow_the_status(status: str, http: int,
                                                     exit_code: int) -> None:
    report = HealthReport("full", (check("config:valid"), check(status=status)))
    assert (report.status, report.http_status, report.exit_code) == (status, http, exit_code)


def test_body_has_the_drafts_shape() -> None:
    report = HealthReport("full", (check("config:valid"), check("soak:rss", WARN),
                                   check("soak:rss", PASS)))
    body = report.to_dict()
    assert health_body_problems(body) == []
    assert body["status"] == WARN and body["serviceId"] == "arbiter"
    assert [e["status"] for e in body["checks"]["soak:rss"]] == [WARN, PASS]
    assert body["output"] == "warn: soak:rss"
    assert set(body["checks"]["config:valid"][0]) == {
        "componentType", "observedValue", "observedUnit", "status", "time", "output"}


def test_passing_body_has_no_output() -> None:
    assert "output" not in HealthReport("live", (check(),)).to_dict()


def test_schema_check_finds_broken_bodies() -> None:
    """The hand-written schema check itself can fail."""
    good = HealthReport("full", (check(),)).to_dict()
    assert health_body_problems({**good, "status": "ok"})
    assert health_body_problems({**good, "checks": {"disk": [good["checks"]["disk:free"][0]]}})
    assert health_body_problems({**good, "checks": {"disk:free": good["checks"]["disk:free"][0]}})
    entry = {**good["checks"]["disk:free"][0], "time": "yesterday"}
    assert health_body_problems({**good, "checks": {"disk:free": [entry]}})
    entry = {k: v for k, v in good["checks"]["disk:free"][0].items() if k != "observedUnit"}
    assert health_body_problems({**good, "checks": {"disk:free": [entry]}})
    assert health_body_problems({**good, "meta": {}})
    assert health_body_problems({**good, "meta": {}}, extra_top_level=frozenset({"meta"})) == []


def test_scrub_hides_every_secret() -> None:
    assert scrub("password pw1 and token t2", ["pw1", "t2"]) == "password *** and token ***"


# ---------------------------------------------------------------------------- evaluate


def test_live_mode_touches_no_database(test_settings: Settings) -> None:
    """--live: configuration and process only; no connection, no breaker file."""
    settings = with_values(test_settings, database__url=NOWHERE)
    report = evaluate(settings, mode="live", clock=at_now)
    assert [c.name for c in report.checks] == ["config:valid", "process:uptime"]
    assert report.status == PASS
    assert not (settings.paths.data_dir / "breaker").exists()
    assert health_body_problems(report.to_dict()) == []


def test_unknown_mode_is_rejected(test_settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown health mode"):
        evaluate(test_settings, mode="deep")


def open_breaker(settings: Settings) -> BreakerState:
    breaker = breaker_for(settings)
    for _ in range(settings.breaker.fail_max):
        breaker.failure(breaker.allow())
    return breaker.snapshot()


def test_open_breaker_with_a_writable_journal_is_warn_without_connecting(
        test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    before = open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal(degraded=True, backlog=2))
    checks = by_name(report)
    assert report.status == WARN and report.exit_code == 1
    assert checks["database:responseTime"].status == WARN
    assert checks["database:responseTime"].output.startswith("circuit breaker open")
    assert "journal" in checks["database:responseTime"].output
    assert checks["breaker:state"].status == WARN
    assert checks["breaker:state"].observed_value == "open"
    assert checks["journal:backlog"].status == WARN
    assert checks["journal:backlog"].observed_value == 2
    assert breaker_for(settings).snapshot() == before  # refused: no probe, no count


def test_open_breaker_without_a_writable_journal_is_fail(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal(journal_writable=False))
    assert by_name(report)["database:responseTime"].status == FAIL
    assert report.status == FAIL and report.http_status == 503


def test_ready_mode_checks_what_serving_needs(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, mode="ready", clock=at_now, journal_status=journal())
    assert [c.name for c in report.checks] == [
        "config:valid", "database:responseTime", "schema:revision", "breaker:state",
        "journal:backlog"]
    assert report.status == WARN


def test_journal_conflicts_are_warn(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal(conflicts=3))
    conflicts = by_name(report)["journal:conflicts"]
    assert (conflicts.status, conflicts.observed_value) == (WARN, 3)
    assert "journal list --conflicts" in conflicts.output


def test_unreadable_journal_status_is_warn_and_not_writable(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)

    def broken(_settings: Settings) -> dict[str, Any]:
        raise StorageUnavailable("journal locked")

    checks = by_name(evaluate(settings, clock=at_now, journal_status=broken))
    assert checks["journal:backlog"].status == WARN
    assert checks["journal:backlog"].output == "journal status unavailable: journal locked"
    assert checks["journal:conflicts"].status == WARN
    assert checks["database:responseTime"].status == FAIL


def test_every_check_carries_the_injected_time(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal())
    assert {c.time for c in report.checks} == {"2026-11-29T12:00:00.250Z"}
    assert health_body_problems(report.to_dict()) == []


def test_no_output_carries_the_database_password(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal())
    assert "pw-s3cret" not in str(report.to_dict())


def test_low_disk_threshold_makes_health_warn(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal(),
                      thresholds=Thresholds(disk_warn_bytes=2**62))
    disk = by_name(report)["disk:free"]
    assert disk.status == WARN and isinstance(disk.observed_value, int)
    assert disk.observed_unit == "bytes"


def test_live_soak_runs_each_add_a_soak_rss_entry(test_settings: Settings) -> None:
    from arbiter_cli.tools.soak.state import write_state

    data_dir = test_settings.paths.data_dir
    base = {"started_at": time.time(), "updated_at": time.time(), "max_rss_bytes": 512 * MIB,
            "soft_limit_bytes": 410 * MIB}
    write_state(data_dir, {**base, "pid": os.getpid(), "rss_bytes": 420 * MIB,
                           "status": "warn"})
    write_state(data_dir, {**base, "pid": os.getppid(), "rss_bytes": 100 * MIB,
                           "status": "pass"})
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal())
    soak = [c for c in report.checks if c.name == "soak:rss"]
    assert sorted((c.component_id, c.status) for c in soak) == sorted(
        [(f"soak-{os.getpid()}", WARN), (f"soak-{os.getppid()}", PASS)])
    assert len(report.to_dict()["checks"]["soak:rss"]) == 2


def test_no_soak_check_without_a_live_run(test_settings: Settings, tmp_path: Path) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    report = evaluate(settings, clock=at_now, journal_status=journal())
    assert "soak:rss" not in report.to_dict()["checks"]


def test_sqlite_primary_has_no_clock_skew(test_settings: Settings) -> None:
    assert test_settings.database_url.startswith("sqlite")
    skew = by_name(evaluate(test_settings, clock=at_now))["clock:skew"]
    assert (skew.status, skew.observed_value, skew.observed_unit) == (PASS, 0, "s")


def test_clock_skew_unmeasured_while_unreachable_without_a_snapshot(
    test_settings: Settings,
) -> None:
    settings = with_values(test_settings, database__url=NOWHERE)
    open_breaker(settings)
    skew = by_name(evaluate(settings, clock=at_now, journal_status=journal()))["clock:skew"]
    assert (skew.status, skew.observed_value) == (PASS, None)
    assert "not measured" in skew.output
    assert "clock:skew" not in [c.name for c in evaluate(
        settings, mode="ready", clock=at_now, journal_status=journal()).checks]


@pytest.mark.parametrize(("offset_s", "limit", "status"), [
    (-10800.0, "30s", WARN), (-29.0, "30s", PASS), (31.5, "30s", WARN), (31.5, "1m", PASS),
    (float("nan"), "30s", PASS)])
def test_clock_skew_while_unreachable_is_the_last_refresh_s(
    test_settings: Settings, offset_s: float, limit: str, status: str,
) -> None:
    """The snapshot's measured offset (the database's clock minus this host's) stands in."""
    import json
    import sqlite3

    from arbiter_cli.resilience.journal import resilience_dir

    settings = with_values(test_settings, database__url=NOWHERE,
                           resilience__max_clock_skew=limit)
    directory = resilience_dir(settings.paths.data_dir, settings.database_url)
    directory.mkdir(parents=True)
    db = sqlite3.connect(directory / "snapshot.db")
    db.execute("CREATE TABLE arbiter_snapshot_meta (name TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO arbiter_snapshot_meta VALUES ('meta', ?)",
               (json.dumps({"refreshed_at": time.time(), "db_clock_offset_s": offset_s}),))
    db.commit()
    db.close()
    open_breaker(settings)
    skew = by_name(evaluate(settings, clock=at_now, journal_status=journal()))["clock:skew"]
    if offset_s != offset_s:  # a damaged offset (NaN) is not a measurement
        assert (skew.status, skew.observed_value) == (PASS, None)
        return
    assert (skew.status, skew.observed_value, skew.observed_unit) == (status, -offset_s, "s")
    assert "last snapshot refresh" in skew.output
    if status == WARN:
        assert ("ahead of" if offset_s < 0 else "behind") in skew.output
        assert "resilience.max_clock_skew" in skew.output
