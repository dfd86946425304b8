"""The sampler thread: every interval, the process's RSS, open fds, database connections,
operations, errors and latencies; it also enforces the soft and hard RSS limits.

The first sample is taken at once (the baseline), so a hard limit below the baseline stops the
run before its first operation, and any later crossing within one interval.

A day-long run must not grow by its own bookkeeping: each sample goes to ``samples.csv`` as it
is taken, and memory keeps only two packed arrays (time and RSS, 16 bytes a sample) and the
running extremes the summary needs.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter_cli.tools.soak.workload import Counters

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def rfc3339(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Sample:
    t_s: float
    time: str
    rss_bytes: int
    fds: int
    threads: int
    db_pool_checked_out: int
    db_backends: int
    ops: int
    errors: int
    ops_per_s: float
    p95_ms: dict[str, float]

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        row["p95_ms"] = ";".join(f"{op}={ms}" for op, ms in sorted(self.p95_ms.items()))
        return row


COLUMNS = ("t_s", "time", "rss_bytes", "fds", "threads", "db_pool_checked_out", "db_backends",
           "ops", "errors", "ops_per_s", "p95_ms")


@dataclass
class Series:
    """What the verdict, the plot and the summary need from every sample, in little memory."""

    times: array[float] = field(default_factory=lambda: array("d"))
    rss: array[int] = field(default_factory=lambda: array("q"))
    first: Sample | None = None
    last: Sample | None = None
    fds_max: int = 0
    pool_max: int = 0
    backends_max: int = -1

    def add(self, sample: Sample) -> None:
        self.times.append(sample.t_s)
        self.rss.append(sample.rss_bytes)
        self.first = self.first or sample
        self.last = sample
        self.fds_max = max(self.fds_max, sample.fds)
        self.pool_max = max(self.pool_max, sample.db_pool_checked_out)
        self.backends_max = max(self.backends_max, sample.db_backends)

    def __len__(self) -> int:
        return len(self.times)


class Connections:
    """Checked-out pool connections, and the server's backends on the scratch PostgreSQL db."""

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine
        self.postgres = engine is not None and engine.dialect.name == "postgresql"

    def checked_out(self) -> int:
        pool = getattr(self.engine, "pool", None)
        counter = getattr(pool, "checkedout", None)
        return int(counter()) if callable(counter) else 0

    def backends(self) -> int:
        """Backends on the scratch database other than the one asking (-1 if unknown)."""
        if not self.postgres or self.engine is None:
            return -1
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                return int(conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one())
        except SQLAlchemyError:
            return -1


Listener = Callable[[Sample, str], None]  # (sample, status "pass"|"warn"|"abort")


class Sampler:
    def __init__(self, counters: Counters, connections: Connections, *, interval_s: float,
                 soft_limit: int, hard_limit: int, listener: Listener, csv_path: Path) -> None:
        import psutil

        self.process = psutil.Process()
        self.counters = counters
        self.connections = connections
        self.interval_s = interval_s
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.listener = listener
        self.series = Series()
        self.csv_path = csv_path
        self._csv = csv_path.open("w", newline="", encoding="utf-8")
        self._rows = csv.DictWriter(self._csv, fieldnames=COLUMNS)
        self._rows.writeheader()
        self.stop = threading.Event()  # set by the runner (end) or by us (hard limit)
        self.aborted = threading.Event()
        self.failure: Exception | None = None  # the sampler thread's, re-raised by finish()
        self.started = time.monotonic()
        self._last = (self.started, 0)
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._last = (self.started, 0)
        self.take()
        self._thread.start()

    def _loop(self) -> None:
        next_at = self.started + self.interval_s
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.take()
            except Exception as exc:  # noqa: BLE001 - unwatched, the run must not go on
                self.failure = exc
                self.stop.set()
                return
            next_at += self.interval_s
            if next_at < time.monotonic():  # fell behind (a slow sample): skip, don't burst
                next_at = time.monotonic() + self.interval_s

    def finish(self) -> None:
        """Stop the thread and take the last sample (after a full garbage collection)."""
        import gc

        self.stop.set()
        if self._thread.is_alive():
            self._thread.join()
        gc.collect()
        try:
            if self.failure is not None:
                raise self.failure
            self.take()
        finally:
            self._csv.close()

    def take(self) -> Sample:
        now = time.monotonic()
        ops, errors, interval = self.counters.take_interval()
        last_at, last_ops = self._last
        self._last = (now, ops)
        sample = Sample(
            t_s=round(now - self.started, 3), time=rfc3339(),
            rss_bytes=int(self.process.memory_info().rss), fds=self._fds(),
            threads=self.process.num_threads(),
            db_pool_checked_out=self.connections.checked_out(),
            db_backends=self.connections.backends(), ops=ops, errors=errors,
            ops_per_s=round((ops - last_ops) / (now - last_at), 1) if now > last_at else 0.0,
            p95_ms={op: round(h.percentile(95) / 1e6, 3) for op, h in sorted(interval.items())},
        )
        self.series.add(sample)
        self._rows.writerow(sample.row())
        self._csv.flush()
        self.listener(sample, self._status(sample.rss_bytes))
        return sample

    def _status(self, rss: int) -> str:
        if rss > self.hard_limit:
            self.aborted.set()
            self.stop.set()
            return "abort"
        if rss > self.soft_limit:
            return "warn"
        return "pass"

    def _fds(self) -> int:
        try:
            return int(self.process.num_fds())
        except AttributeError:  # not on this platform
            return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1
