"""Every call of a command on a network primary goes through here (SPEC §7).

- Writes run on the primary with retries, the breaker and the command's deadline, and store
  their op id in ``applied_ops`` in the same transaction. When the primary cannot take them (or
  the tenant already has journaled writes waiting, to keep order), the same service runs on the
  local snapshot, and the op is appended to the journal before the command answers
  ``durability: journaled``.
- Reads fall back to the snapshot, marked stale with its age.
- Token checks fall back to the snapshot too, and fail closed without one.

A commit that fails may still have happened: such an op is never retried, only journaled, and
replay skips it if its op id is already in ``applied_ops``.

What is an outage (SPEC §7.1): a write is journaled only when the primary is unreachable, the
connection is lost, or the breaker is open. A configuration error leaves as ``ConfigInvalid``
(exit 3) and a healthy primary that was too slow as ``PrimarySlow`` (exit 10, rolled back):
neither is journaled nor served from the snapshot.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

from arbiter_cli.adapters.sql import deadline
from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.deadline import Deadline
from arbiter_cli.adapters.sql.repository import OpContext
from arbiter_cli.adapters.sql.written import Written, current_written
from arbiter_cli.errors import ArbiterError, SchemaOutdated, StorageUnavailable
from arbiter_cli.ids import uuid7
from arbiter_cli.observability.logging import get_logger
from arbiter_cli.resilience import refresher
from arbiter_cli.resilience.breaker import breaker_for, url_without_password
from arbiter_cli.resilience.files import key_path
from arbiter_cli.resilience.identity import RECORD_FILE, database_identity, write_record
from arbiter_cli.resilience.journal import Journal, open_journal, resilience_dir
from arbiter_cli.resilience.records import principal_record
from arbiter_cli.resilience.retry import PrimarySlow, guarded
from arbiter_cli.resilience.snapshot import LocalStore, clock_offset

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.config import Settings
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.ports import Clock
    from arbiter_cli.resilience.breaker import FileBreaker
    from arbiter_cli.resilience.records import Kind

T = TypeVar("T")
COMMITTED: Final = "committed"
JOURNALED: Final = "journaled"
#: The liveness probe gets this share of database.command_timeout, at most LIVENESS_MAX_S.
LIVENESS_SHARE = 0.2
LIVENESS_MAX_S = 1.0
#: How long a committed write waits for the snapshot's publish lock to write itself through.
WRITE_THROUGH_WAIT_S = 1.0
#: How far this host's clock may be behind the primary's time at the snapshot's last refresh
#: before a degraded command warns (the stamps are raised to it either way).
CLOCK_BEHIND_WARN_S = 1.0


@dataclass(frozen=True)
class Durability:
    """What became of a write (``meta.durability``): committed on the primary, or journaled on
    this host, in the journal at ``journal`` (``meta.journal``: ``{"host", "path"}``)."""

    state: Literal["committed", "journaled"]
    journal: dict[str, str] | None = None


@dataclass(frozen=True)
class Done(Generic[T]):
    """A write's result and what became of it."""

    value: T
    durability: Durability


@dataclass
class Resilience:
    """The resilience state of one command against one PostgreSQL primary."""

    settings: Settings
    url: str
    primary: Engine
    clock: Clock
    correlation_id: str | None = None
    #: How a snapshot's engine is made (bootstrap's ``sql_engine`` with these settings).
    engine_for: Callable[[str], Engine] | None = None
    stale_age_s: float | None = None
    primary_ok: bool = False
    outage: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: The folder whose journal this replays, when not ``database.url``'s own
    #: (``journal replay --from KEY``, identity.py); its entries go to ``primary``.
    folder: Path | None = None
    #: A cheaper count of a tenant's pending entries than opening this command's own journal
    #: (``serve``: one per process, ``journal.PendingProbe``); None when it cannot tell.
    pending_of: Callable[[str], int | None] | None = None
    #: Keep this thread's journal open for the next layer (``serve``: one layer per request,
    #: ``_OpenJournals``). A command of its own opens and closes it, so every command sees the
    #: file as it is now (a journal damaged or replaced since is reported, not served).
    keep_journal: bool = False
    _journal: Journal | None = None
    _journal_shared: bool = False
    _local_engine: Engine | None = None
    _breaker: FileBreaker | None = None
    _local_clock_offset_s: float | None = None
    _time_floor: float | None = None

    def __post_init__(self) -> None:
        deadline.install()
        self.directory = self.folder or resilience_dir(self.settings.paths.data_dir, self.url)
        self.local = LocalStore(self.directory)
        self.deadline = Deadline(self.settings.database.command_timeout)

    # ------------------------------------------------------------------ parts

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            max_entries = self.settings.resilience.journal.max_entries
            data_dir = self.settings.paths.data_dir
            try:
                if self.folder is None and self.keep_journal:
                    self._journal = _OPEN.journal(
                        self.directory / "journal.db", max_entries,
                        lambda: open_journal(data_dir, self.url, max_entries=max_entries,
                                             clock=self.primary_time))
                    self._journal_shared = True
                elif self.folder is None:
                    self._journal = open_journal(data_dir, self.url, max_entries=max_entries,
                                                 clock=self.primary_time)
                else:
                    self._journal = Journal(self.folder / "journal.db", max_entries=max_entries,
                                            clock=self.primary_time, key_file=key_path(data_dir))
            except OSError as exc:
                raise StorageUnavailable(f"cannot open the journal in {self.directory}: "
                                         f"{exc.strerror}") from None
            self._journal.use_clock(self.primary_time)  # a kept one: this command's time
        return self._journal

    @property
    def breaker(self) -> FileBreaker:
        if self._breaker is None:
            self._breaker = breaker_for(self.settings, self.url)
        return self._breaker

    def local_engine(self) -> Engine:
        if not self.local.exists():
            raise StorageUnavailable(
                "database unavailable and no local snapshot yet (it is taken after the first "
                "successful command): the request was not accepted")
        if self._local_engine is None:
            if self.engine_for is None:
                raise StorageUnavailable("database unavailable, and this command has no way "
                                         "to open the local snapshot")
            self._local_engine = self.engine_for(self.local.url())
        return self._local_engine

    def for_folder(self, folder: Path) -> Resilience:
        """The same primary, with the journal of another folder (``journal replay --from``)."""
        return Resilience(settings=self.settings, url=self.url, primary=self.primary,
                          clock=self.clock, correlation_id=self.correlation_id,
                          engine_for=self.engine_for, folder=folder)

    def primary_time(self) -> float:
        """The primary's time as this host knows it (its clock plus the snapshot's measured
        offset): what journal entries are stamped with, so a journaled outcome closes its
        decision, and a journaled write is re-admitted, at the database's time (SPEC §4.1).
        Never earlier than :meth:`time_floor`: a host clock set back cannot back-date it."""
        return max(time.time() + self.local_clock_offset_s(), self.time_floor())

    def local_clock_offset_s(self) -> float:
        """The primary's clock minus this host's, as the snapshot's last refresh measured it
        (0 for a snapshot taken before it was measured): the snapshot's units of work tell
        the primary's time with it, never this host's alone (SPEC §4.1). Raised, with a
        warning, when this host's clock has gone back since that refresh, so that the time it
        tells is never earlier than :meth:`time_floor` (attack A9)."""
        if self._local_clock_offset_s is None:
            measured = clock_offset(self.local.meta()) or 0.0
            behind = self.time_floor() - (time.time() + measured)
            if behind > CLOCK_BEHIND_WARN_S:
                self.warn(f"this host's clock is {behind:.0f}s behind the database's last "
                          "known time (the local snapshot's last refresh, or the newest "
                          "journal entry): set back? Times stamped here count from that time")
            self._local_clock_offset_s = measured + max(0.0, behind)
        return self._local_clock_offset_s

    def time_floor(self) -> float:
        """The earliest the primary's time can be now, as this host knows for sure: its time
        at the snapshot's last refresh (``refreshed_at`` plus the offset measured then) and
        the time of the newest entry of this journal; -inf when neither tells it."""
        if self._time_floor is None:
            meta = self.local.meta()
            known = [float(meta["refreshed_at"]) + (clock_offset(meta) or 0.0)
                     if _finite(meta.get("refreshed_at")) else -math.inf]
            if self._journal is not None or (self.directory / "journal.db").exists():
                # A journal that cannot be read bounds nothing here: a degraded read still
                # answers, and a write reports it when it appends (its entries stay in order).
                with contextlib.suppress(sqlite3.Error, ArbiterError):
                    known += [e.created_at for e in self.journal.entries(limit=1)
                              if _finite(e.created_at)]
            self._time_floor = max(known)
        return self._time_floor

    def close(self) -> None:
        self.local.close()
        if self._local_engine is not None:
            self._local_engine.dispose()
            self._local_engine = None
        if self._journal is not None:
            if self._journal_shared:  # this thread's open journal stays open (_OpenJournals)
                self._journal.use_clock(time.time)  # and no longer holds this command
            else:
                self._journal.close()
            self._journal = None
            self._journal_shared = False

    # ------------------------------------------------------------------ calls

    def guarded(self, fn: Callable[[], T], may_retry: Callable[[], bool] | None = None,
                deadline: Deadline | None = None) -> T:
        result = guarded(fn, breaker=self.breaker, deadline=deadline or self.deadline,
                         may_retry=may_retry, alive=self.alive)
        self.primary_ok = True
        return result

    def alive(self) -> bool:
        """A short, independent liveness probe (a fresh connection and ``SELECT 1``, outside
        the breaker): tells a slow healthy primary from a dead one after a deadline cut a
        statement in flight."""
        from sqlalchemy.exc import SQLAlchemyError

        budget = min(LIVENESS_MAX_S,
                     LIVENESS_SHARE * self.settings.database.command_timeout)
        try:
            with Deadline(budget).active(), self.primary.connect() as conn:
                conn.exec_driver_sql("SELECT 1").scalar()
        except (SQLAlchemyError, OSError):
            return False
        return True

    def read(self, primary: Callable[[], T], local: Callable[[], T]) -> T:
        try:
            return self.guarded(primary)
        except (SchemaOutdated, PrimarySlow):
            raise
        except StorageUnavailable as exc:
            result = local_call(self, local)
            if self.stale_age_s is None:  # one age (and one warning) per command
                self.stale_age_s = self.local.age_s()
            self.unavailable(exc.message)
            self.warn(f"served from the local snapshot, {self.stale_age_s}s old")
            return result

    def write(self, kind: Kind, principal: Principal, primary: Callable[[OpContext], T],
              local: Callable[[], T], args_of: Callable[[T], dict[str, Any] | None],
              items: int = 0) -> Done[T]:
        """Commit on the primary, or journal when it is out (see the module's docstring).

        ``primary`` runs the write with the op it must commit under (its units of work store
        the op's id in ``applied_ops``). ``items``: a batch's size; its budget grows by
        ``database.per_item_timeout`` each. The result says what became of the write.
        """
        op = OpContext(op_id=uuid7(), tenant=principal.tenant, kind=str(kind), now=self.clock)
        waiting = self.pending_of(principal.tenant) if self.pending_of is not None else None
        if waiting is None:
            waiting = self.journal.pending(principal.tenant)
        if waiting == 0:
            written = Written()
            noting = current_written.set(written)
            budget = self.deadline.extended(
                items * self.settings.database.per_item_timeout)
            try:
                result = self.guarded(lambda: primary(op), may_retry=lambda: not op.ambiguous,
                                      deadline=budget)
                self.write_through(written)
                return Done(result, Durability(COMMITTED))
            except SchemaOutdated:
                raise
            except PrimarySlow as exc:
                if not op.ambiguous:
                    raise  # rolled back on a healthy primary: not an outage (SPEC §7.1)
                # Cut during COMMIT: it may have committed. Only its op id can tell, so it is
                # journaled under it; replay drops it if applied_ops already holds it.
                self.unavailable(exc.message)
                reason = "the commit's outcome is unknown"
            except StorageUnavailable as exc:
                self.unavailable(exc.message)
                reason = "database unavailable"
            finally:
                current_written.reset(noting)
        else:
            reason = f"{waiting} earlier write(s) of tenant {principal.tenant!r} wait in the journal"
        self.journal.check_room()  # past the cap the write is refused before it touches anything
        result = local_call(self, local)
        args = args_of(result)
        if args is None:  # nothing changed (an idempotent repeat): nothing to replay
            return Done(result, Durability(COMMITTED))
        self.journal.append(op_id=op.op_id, tenant=principal.tenant, kind=str(kind),
                            principal=principal_record(principal), args=args,
                            correlation_id=self.correlation_id)
        where = {"host": socket.gethostname(), "path": str(self.journal.path)}
        self.warn(f"{reason}: the write was journaled as op {op.op_id} on host "
                  f"{where['host']} in {where['path']} and will be "
                  "replayed (`arbiter journal status`); it exists only there until then")
        return Done(result, Durability(JOURNALED, where))

    def write_through(self, written: Written) -> None:
        """Bring what the write just committed into this host's snapshot (issue 17, F2): a
        host that goes degraded next knows the slots it filled and freed itself. Best
        effort: the write is committed whatever happens here; the next refresh catches up."""
        if not written:
            return
        wait_s = min(WRITE_THROUGH_WAIT_S, max(0.05, self.deadline.remaining()))
        try:
            if self.local.write_through(written, wait_s=wait_s) or not self.local.exists():
                return
            problem = "the snapshot was busy"
        except Exception as exc:  # noqa: BLE001 - the command already succeeded
            problem = (f"{type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
        self.warn(f"local snapshot not updated with this write ({problem}): it learns it at "
                  "its next refresh")

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def unavailable(self, reason: str) -> None:
        """Remember why the primary was not used (reported once, first reason kept)."""
        if self.outage is None:
            self.outage = reason

    def flush_warnings(self) -> None:
        """Report the outage once, then each note, as warning log events on stderr."""
        log = get_logger()
        if self.outage is not None:
            log.warning(self.outage)
        for message in self.warnings:
            log.warning(message)
        self.warnings.clear()
        self.outage = None

    # ------------------------------------------------------------------ housekeeping

    def maybe_refresh(self) -> None:
        """After a command that reached the primary: refresh the snapshot if it is due, in
        a detached process when it would cost the command more than 50 ms (refresher.py)."""
        self.record_database()
        if not self.primary_ok or self.journal.pending() > 0:
            return
        interval = self.settings.resilience.snapshot_interval
        if not self.local.due(interval):
            return
        if (refresher.in_background(self.settings, self.local, self._count_agents)
                and refresher.spawn(self.settings, self.local)):
            return
        refresh_deadline = Deadline(max(1.0, self.settings.database.command_timeout))
        try:
            with refresh_deadline.active():
                self.local.refresh(self.primary, interval_s=interval)
        except Exception as exc:  # noqa: BLE001 - best effort: the command already succeeded
            self.warn(f"local snapshot not refreshed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")

    def record_database(self) -> None:
        """After a command that reached the primary: record in the folder, once, which
        database it belongs to (``identity.py``). A stat per command once recorded."""

        if not self.primary_ok or (self.directory / RECORD_FILE).exists():
            return
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with Deadline(LIVENESS_MAX_S).active():
                identity = database_identity(self.primary)
        except (SQLAlchemyError, StorageUnavailable):
            return  # the next command that reaches the primary tries again
        if identity is None:
            return  # a database before migration 0003: `arbiter db upgrade` gives it one
        try:
            write_record(self.directory, identity, url_without_password(self.url))
        except OSError as exc:
            self.warn(f"cannot record which database {self.directory} belongs to: "
                      f"{exc.strerror or exc}")

    def _count_agents(self) -> int:
        from sqlalchemy import func, select

        with Deadline(LIVENESS_MAX_S).active(), self.primary.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.agents)).scalar_one())


class _OpenJournals(threading.local):
    """Each thread's open journal per path, kept between the resilience layers of one
    long-lived process (``arbiter serve`` builds one per request).

    Opening the journal (its folder and file checked private, SQLite connected, WAL and
    ``synchronous=FULL`` set, the schema made sure of, its first read) costs ~0.7 ms of CPU,
    every write asks it for the tenant's backlog, and the backlog query itself costs ~5 µs.
    A kept connection is reused only while it is safe: same process (not a forked child),
    the file at the path is still the same file (not moved aside, replaced or removed: the
    journal names that as the way to recover a damaged one), and the folder and the file are
    still ours, not links, and private; otherwise the journal is opened anew, with the full
    checks and tightening of ``open_journal``. Each thread has its own SQLite connection, so
    two requests never share a transaction.
    """

    def __init__(self) -> None:
        self.kept: dict[Path, tuple[int, tuple[int, int], Journal]] = {}

    def journal(self, path: Path, max_entries: int, open_: Callable[[], Journal]) -> Journal:
        found = self.kept.get(path)
        if found is not None:
            pid, identity, journal = found
            if pid == os.getpid() and identity == _private_identity(path) \
                    and journal.max_entries == max_entries:
                return journal
            del self.kept[path]
            if pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    journal.close()
        journal = open_()
        opened = _private_identity(path)
        if opened is not None:
            self.kept[path] = (os.getpid(), opened, journal)
        return journal


def _private_identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the journal file while it and its folder are ours, no links, and
    private (0600 in 0700, as ``open_journal`` leaves them); else None."""
    uid = os.geteuid()
    try:
        folder, found = os.lstat(path.parent), os.lstat(path)
    except OSError:
        return None
    for entry, kind in ((folder, stat.S_ISDIR), (found, stat.S_ISREG)):
        if not kind(entry.st_mode) or entry.st_uid != uid or entry.st_mode & 0o077:
            return None
    return found.st_dev, found.st_ino


_OPEN = _OpenJournals()


def local_call(res: Resilience, fn: Callable[[], T]) -> T:
    res.local_engine()  # no snapshot: StorageUnavailable before anything runs
    return fn()


def _finite(value: Any) -> bool:
    """A number of seconds that can be a time (not a bool, not inf or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)
