"""``arbiter soak`` (SPEC §11): drive the real services on a scratch store for a while, sample
memory, profile it with memray, and decide with a least-squares fit whether memory grows.

The sequence: set up the scratch store and its fleet, take the baseline sample, run the mix (at
``--rate``) inside a memray Tracker while the sampler thread watches RSS, then read the capture,
fit RSS after the warm-up, and write the artifacts. The caller turns the verdict into the exit
code (leak 1, aborted 11) after the summary is written.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from arbiter_cli import __version__
from arbiter_cli.config import Settings
from arbiter_cli.errors import InvalidInput
from arbiter_cli.tools.soak import artifacts, picture, profiling
from arbiter_cli.tools.soak import state as soak_state
from arbiter_cli.tools.soak.display import LogLines, monitor
from arbiter_cli.tools.soak.options import SoakOptions
from arbiter_cli.tools.soak.sampler import Connections, Sample, Sampler, rfc3339
from arbiter_cli.tools.soak.verdict import Fit, after_warmup, decide, explain, fit
from arbiter_cli.tools.soak.workload import Counters, Workload
from arbiter_cli.tools.wiring import ScratchStore


def default_output(data_dir: Path) -> Path:
    return soak_state.state_dir(data_dir) / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class Run:
    """One soak run's moving parts, for the sampler's listener and the loop."""

    def __init__(self, options: SoakOptions, data_dir: Path, log: LogLines) -> None:
        import os

        self.options = options
        self.data_dir = data_dir
        self.log = log
        self.pid = os.getpid()
        self.started_at = rfc3339()
        self.counters = Counters()
        self.soft_crossed = False
        self.stopped_by = "duration"

    def on_sample(self, sample: Sample, status: str) -> None:
        """Sampler thread: state file for health, the live view or log line, the limits."""
        warn = status != "pass"
        if warn and not self.soft_crossed:
            self.soft_crossed = True
            self.log.event("warning", "soak.soft_limit", rss_bytes=sample.rss_bytes,
                           soft_limit_bytes=self.options.soft_limit_bytes,
                           message="RSS is over 80 % of --max-rss")
        soak_state.write_state(self.data_dir, {
            "pid": self.pid, "started_at": self.started_at, "updated_at": sample.time,
            "rss_bytes": sample.rss_bytes, "max_rss_bytes": self.options.max_rss_bytes,
            "soft_limit_bytes": self.options.soft_limit_bytes,
            "status": "warn" if warn else "pass"})
        with self.counters.lock:
            ops, errors = dict(self.counters.ops), dict(self.counters.errors)
        self.log.sample(sample, status, ops, errors)
        if status == "abort" and self.stopped_by != "max-rss":
            self.stopped_by = "max-rss"
            self.log.event("error", "soak.hard_limit", rss_bytes=sample.rss_bytes,
                           max_rss_bytes=self.options.max_rss_bytes,
                           message="RSS is over --max-rss: stopping the run")


def run(settings: Settings, options: SoakOptions, *, context: dict[str, Any],
        scratch_app: ScratchStore, log: LogLines | None = None) -> dict[str, Any]:
    """Run the soak on a store from ``scratch_app`` (``bootstrap.scratch_app``) and write its
    artifacts; returns the summary (with ``verdict``)."""
    _check_fleet(settings, options.agents)
    if options.memray:
        profiling.require_memray()
    capture = options.output / profiling.CAPTURE if options.memray else None
    title = f"soak {options.workload} on {options.backend}"
    log = log or monitor(context, title=title, duration_s=options.duration_s)
    current = Run(options, settings.paths.data_dir, log)
    try:
        with scratch_app(settings, options.backend, purpose="soak",
                         database_url=options.database_url, keep=options.keep) as (app, where):
            options.output.mkdir(parents=True, exist_ok=True)  # once the store is there
            workload = Workload(app, agents=options.agents, mix=options.mix,
                                leaky=options.workload == "leaky", counters=current.counters)
            workload.setup()
            workload.prime()
            log.event("info", "soak.start", store=where, output=str(options.output),
                      duration_s=options.duration_s, agents=options.agents, rate=options.rate)
            sampler = Sampler(current.counters, Connections(app.engine),
                              interval_s=options.sample_interval_s,
                              soft_limit=options.soft_limit_bytes,
                              hard_limit=options.max_rss_bytes, listener=current.on_sample,
                              csv_path=options.output / artifacts.SAMPLES)
            with _signals(current, sampler), profiling.tracking(
                    capture, native=options.native, duration_s=options.duration_s):
                sampler.start()
                try:
                    _drive(workload, sampler, options)
                finally:
                    sampler.finish()
    finally:
        soak_state.remove_state(current.data_dir, current.pid)
        log.close()
    summary = _conclude(current, sampler, where, capture, log)
    log.event("info" if summary["verdict"] == "pass" else "error", "soak.end",
              verdict=summary["verdict"], reason=summary["reason"],
              output=str(options.output))
    return summary


def _check_fleet(settings: Settings, agents: int) -> None:
    """The churn keeps up to 10 % more agents than --agents: they must fit under the cap."""
    cap = settings.registry.max_agents
    most = agents + max(1, agents // 10) + 1
    if most > cap:
        raise InvalidInput(f"agents: the churn of {agents} agents needs room for {most}, over "
                           f"registry.max_agents = {cap}; use --agents {cap * 10 // 11 - 1} or "
                           "less, or raise it (ARBITER_REGISTRY__MAX_AGENTS)", field="agents",
                           rule="max_agents")


TICK_S = 0.25  # the longest the driver waits without letting the workload's clock tick


def _drive(workload: Workload, sampler: Sampler, options: SoakOptions) -> None:
    """Run the mix until the end of the run, the hard limit or a signal; paced at ``--rate``."""
    end = sampler.started + options.duration_s
    step = 1 / options.rate if options.rate else 0.0
    next_at = time.monotonic()
    workload.start_measuring()
    while not sampler.stop.is_set():
        now = time.monotonic()
        if now >= end:
            return
        if step:
            if next_at > now:
                sampler.stop.wait(min(next_at, end, now + TICK_S) - now)
                workload.tick()
                continue
            next_at = max(next_at + step, now - 1.0)  # after a stall, catch up 1 s at most
        workload.step()


@contextmanager
def _signals(current: Run, sampler: Sampler) -> Iterator[None]:
    """SIGTERM and SIGINT end the run early but still write its artifacts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        current.stopped_by = signal.Signals(signum).name
        sampler.stop.set()

    previous: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    for signum in (signal.Signals.SIGTERM, signal.Signals.SIGINT):
        previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _conclude(current: Run, sampler: Sampler, where: str, capture: Path | None,
              log: LogLines) -> dict[str, Any]:
    options = current.options
    series = sampler.series
    first = after_warmup(series.times, options.warmup_s)
    result = fit(series.times[first:], series.rss[first:])
    verdict = decide(result, max_slope_mib_h=options.max_slope_mib_h, min_r2=options.min_r2,
                     aborted=sampler.aborted.is_set())
    notes: list[str] = []
    memray_report = _memray(capture, options.output, notes)
    note = picture.draw(options.output, options.output / artifacts.SAMPLES, result,
                        picture.Limits(options.max_slope_mib_h, options.warmup_s,
                                       options.max_rss_bytes),
                        verdict=verdict, title=f"soak {options.workload} on {options.backend}",
                        name=artifacts.PLOT)
    if note:
        notes.append(note)
    for text in notes:
        log.event("warning", "soak.note", message=text)
    summary = _summary(current, sampler, result, verdict, where, memray_report, notes)
    artifacts.write_summary(options.output, summary)
    return summary


def _memray(capture: Path | None, output: Path, notes: list[str]) -> profiling.Report | None:
    if capture is None:
        return None
    report = profiling.read(capture)
    problem = profiling.flamegraph(capture, output / profiling.FLAMEGRAPH)
    if problem:
        notes.append(problem)
    else:
        report.flamegraph = str(output / profiling.FLAMEGRAPH)
    return report


def _summary(current: Run, sampler: Sampler, result: Fit, verdict: str, where: str,
             memray_report: profiling.Report | None, notes: list[str]) -> dict[str, Any]:
    options = current.options
    series = sampler.series
    assert series.first is not None and series.last is not None
    counters = current.counters
    folder = options.output
    return {
        "verdict": verdict,
        "slope_mib_per_h": round(result.slope_mib_per_h, 4),
        "r2": round(result.r2, 4),
        "samples": len(series),
        "baseline_rss_bytes": series.first.rss_bytes,
        "peak_rss_bytes": max(series.rss),
        "memray_peak_bytes": memray_report.peak_bytes if memray_report else None,
        "top_leaks": memray_report.top_leaks if memray_report else [],
        "ops": dict(sorted(counters.ops.items())),
        "errors": dict(sorted(counters.errors.items())),
        "latency_ms": {op: h.summary_ms() for op, h in sorted(counters.latency.items())},
        "reason": explain(verdict, result, max_slope_mib_h=options.max_slope_mib_h,
                          min_r2=options.min_r2),
        "fit_samples": result.samples,
        "final_rss_bytes": series.last.rss_bytes,
        "stopped_by": current.stopped_by,
        "soft_limit_crossed": current.soft_crossed,
        "started_at": current.started_at,
        "ended_at": rfc3339(),
        "elapsed_s": series.last.t_s,
        "ops_total": sum(counters.ops.values()),
        "errors_total": sum(counters.errors.values()),
        "fds": {"first": series.first.fds, "last": series.last.fds, "max": series.fds_max},
        "db_connections_max": {"pool_checked_out": series.pool_max,
                               "backends": series.backends_max},
        "run": {"backend": options.backend, "store": where, "kept": options.keep,
                "workload": options.workload, "duration_s": options.duration_s,
                "rate": options.rate, "agents": options.agents, "mix": options.mix,
                "sample_interval_s": options.sample_interval_s, "warmup_s": options.warmup_s,
                "memray": options.memray, "native": options.native,
                "memray_file_format": memray_report.file_format if memray_report else None},
        "thresholds": {"max_slope_mib_per_h": options.max_slope_mib_h,
                       "min_r2": options.min_r2, "max_rss_bytes": options.max_rss_bytes,
                       "soft_limit_bytes": options.soft_limit_bytes},
        "artifacts": {
            "output": str(folder), "summary": str(folder / artifacts.SUMMARY),
            "samples": str(folder / artifacts.SAMPLES),
            "plot": str(folder / artifacts.PLOT) if (folder / artifacts.PLOT).exists() else None,
            "capture": memray_report.capture if memray_report else None,
            "flamegraph": memray_report.flamegraph if memray_report else None},
        "notes": notes,
        "version": __version__,
    }
