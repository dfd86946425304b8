"""The circuit breaker of a network primary, shared by the processes of one host (SPEC §7).

Consecutive-count semantics:

* **closed**: calls go through; a counted failure adds one to ``failures``, a success resets it;
  ``fail_max`` consecutive counted failures open the breaker.
* **open**: calls are refused (``BreakerOpen``, exit 10) for ``reset_timeout_s``.
* **half_open**: after the timeout exactly one caller on the host gets a *probe* permit, under
  a lease of ``probe_lease_s``. Its success closes the breaker; its failure re-opens it with a
  fresh ``opened_at``. Everyone else is refused while the lease runs; if the prober dies, the
  lease expires and the next caller probes.
* A caller error (``release``) neither counts nor resets; a released probe frees the lease.
* Only the holder of the current lease decides the half-open state: the outcome of a probe
  whose lease was taken over, and outcomes of ordinary calls that finish after the breaker
  opened, change nothing (a late failure never extends the break, a late success never closes
  it without a probe).

The transitions are pure functions of ``(state, config, now)`` so mutation testing covers them.
``FileBreaker`` runs them as read-modify-write of a JSON state file under an exclusive
``fcntl.flock`` on a separate ``.lock`` file, writing the state atomically (tmp, fsync, rename)
and only when it changed, so the healthy path never writes. The directory is not fsync'd: after
a power cut the breaker may come back older or closed, and re-learns within ``fail_max`` calls.
Why not pybreaker: see ``docs/resilience.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from arbiter_cli.dburl import identity
from arbiter_cli.domain.agents import rfc3339 as moment_rfc3339
from arbiter_cli.errors import StorageUnavailable

if TYPE_CHECKING:
    from arbiter_cli.config import Settings

StateName = Literal["closed", "open", "half_open"]
STATES: tuple[StateName, ...] = ("closed", "open", "half_open")


@dataclass(frozen=True)
class BreakerConfig:
    fail_max: int
    reset_timeout_s: float
    probe_lease_s: float


@dataclass(frozen=True)
class BreakerState:
    state: StateName = "closed"
    failures: int = 0
    opened_at: float | None = None
    probe_until: float | None = None

    def opened_at_rfc3339(self) -> str | None:
        return None if self.opened_at is None else rfc3339(self.opened_at)


CLOSED = BreakerState()


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; a probe permit carries the end of its lease."""

    probe_until: float | None = None

    @property
    def probe(self) -> bool:
        return self.probe_until is not None


@dataclass(frozen=True)
class Refusal:
    """Why a call may not go now, and when to ask again."""

    state: BreakerState
    retry_after_s: float


class BreakerOpen(StorageUnavailable):
    """The breaker refuses the call: nothing connects to the database."""

    def __init__(self, message: str, *, retry_after_s: float, opened_at: str | None) -> None:
        super().__init__(message, details={"retry_after_s": round(retry_after_s, 3),
                                           "breaker": {"opened_at": opened_at}})
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------------- pure transitions


def admit(state: BreakerState, config: BreakerConfig,
          now: float) -> tuple[BreakerState, Permit | Refusal]:
    """Decide one call: an ordinary permit, the probe (taking the lease), or a refusal."""
    if state.state == "closed":
        return state, Permit()
    if state.state == "open":
        wait = open_remaining(state, config, now)
        if wait > 0:
            return state, Refusal(state, wait)
        return _take_lease(state, config, now)
    lease_left = lease_remaining(state, config, now)
    if lease_left > 0:
        return state, Refusal(state, lease_left)
    return _take_lease(state, config, now)


def _take_lease(state: BreakerState, config: BreakerConfig,
                now: float) -> tuple[BreakerState, Permit]:
    until = now + config.probe_lease_s
    return replace(state, state="half_open", probe_until=until), Permit(probe_until=until)


def open_remaining(state: BreakerState, config: BreakerConfig, now: float) -> float:
    """Seconds the open breaker still refuses; a clock that went back counts as elapsed."""
    if state.opened_at is None:
        return 0.0
    wait = state.opened_at + config.reset_timeout_s - now
    return wait if 0 < wait <= config.reset_timeout_s else 0.0


def lease_remaining(state: BreakerState, config: BreakerConfig, now: float) -> float:
    """Seconds the current probe's lease still runs; a clock that went back counts as expired."""
    if state.probe_until is None:
        return 0.0
    left = state.probe_until - now
    return left if 0 < left <= config.probe_lease_s else 0.0


def holds_lease(state: BreakerState, permit: Permit) -> bool:
    return permit.probe and state.state == "half_open" and state.probe_until == permit.probe_until


def on_success(state: BreakerState, permit: Permit) -> BreakerState:
    """A call succeeded: the lease holder closes the breaker; a closed breaker forgets failures."""
    if holds_lease(state, permit):
        return CLOSED
    if state.state == "closed" and not permit.probe:
        return CLOSED
    return state


def on_failure(state: BreakerState, permit: Permit, config: BreakerConfig,
               now: float) -> BreakerState:
    """A counted failure: the lease holder re-opens; in closed, the fail_max-th one opens."""
    if holds_lease(state, permit):
        return BreakerState("open", state.failures + 1, opened_at=now)
    if state.state != "closed" or permit.probe:
        return state
    failures = state.failures + 1
    if failures >= config.fail_max:
        return BreakerState("open", failures, opened_at=now)
    return replace(state, failures=failures)


def on_release(state: BreakerState, permit: Permit) -> BreakerState:
    """A caller error: nothing counts or resets; a probe hands its lease back."""
    if holds_lease(state, permit):
        return replace(state, probe_until=None)
    return state


# ---------------------------------------------------------------------------- shared file


class FileBreaker:
    """One breaker whose state lives in ``path``, shared by every process on the host."""

    def __init__(self, path: Path, config: BreakerConfig,
                 clock: Callable[[], float] = time.time, label: str = "") -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_suffix(".lock")
        self.config = config
        self.clock = clock
        self.label = label  # a password-free description of the database, for messages

    def allow(self) -> Permit:
        """A permit for one call, or ``BreakerOpen`` (exit 10) without touching the database."""
        with self._locked() as current:
            now = self.clock()
            new, decision = admit(current, self.config, now)
            self._store(current, new)
        if isinstance(decision, Refusal):
            raise self._refused(decision)
        return decision

    def success(self, permit: Permit) -> None:
        self._apply(lambda s: on_success(s, permit))

    def failure(self, permit: Permit) -> None:
        self._apply(lambda s: on_failure(s, permit, self.config, self.clock()))

    def release(self, permit: Permit) -> None:
        self._apply(lambda s: on_release(s, permit))

    def snapshot(self) -> BreakerState:
        """The state as stored now (read without the lock: the file is replaced atomically)."""
        return self._read()

    def _apply(self, transition: Callable[[BreakerState], BreakerState]) -> None:
        with self._locked() as current:
            self._store(current, transition(current))

    def _refused(self, refusal: Refusal) -> BreakerOpen:
        what = "half-open: a probe is in flight" if refusal.state.state == "half_open" else "open"
        where = f" for {self.label}" if self.label else ""
        opened = refusal.state.opened_at_rfc3339()
        return BreakerOpen(
            f"database circuit breaker{where} is {what} (opened {opened or 'earlier'}): "
            f"not connecting; retry in {refusal.retry_after_s:.1f}s",
            retry_after_s=refusal.retry_after_s, opened_at=opened)

    @contextmanager
    def _locked(self) -> Iterator[BreakerState]:
        import fcntl

        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            fd = self._create_directory_and_open()
        except OSError as exc:
            raise self._unusable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)  # closing the descriptor drops the lock

    def _create_directory_and_open(self) -> int:
        from arbiter_cli.adapters.files import private_dir

        try:
            # Every missing parent 0700 too (``mkdir(parents=True)`` gave them the umask's mode,
            # so a data_dir made here under umask 000 was 0777, which the journal refuses).
            private_dir(self.path.parent)
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._unusable(exc) from None

    def _read(self) -> BreakerState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return CLOSED
        except OSError as exc:
            raise self._unusable(exc) from None
        return decode(raw)

    def _store(self, old: BreakerState, new: BreakerState) -> None:
        if new == old:
            return
        body = json.dumps({**asdict(new), "database": self.label}, sort_keys=True).encode()
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: OSError) -> StorageUnavailable:
        return StorageUnavailable(
            f"cannot use the circuit breaker state {self.path}: {exc.strerror or exc}; "
            "set ARBITER_DATA_DIR to a writable directory")


def decode(raw: bytes) -> BreakerState:
    """The state in a file's bytes; anything unreadable is a closed breaker (it re-learns)."""
    try:
        data = json.loads(raw)
        state = data["state"]
        if state not in STATES:
            return CLOSED
        return BreakerState(state, int(data["failures"]), _number(data.get("opened_at")),
                            _number(data.get("probe_until")))
    except (ValueError, TypeError, KeyError):
        return CLOSED


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def rfc3339(epoch_s: float) -> str:
    return moment_rfc3339(datetime.fromtimestamp(epoch_s, UTC))


# ---------------------------------------------------------------------------- per database


@functools.lru_cache(maxsize=64)
def url_without_password(url: str) -> str:
    """``postgresql+psycopg2://u:pw@h/db?password=x`` → ``postgresql://u@h/db``.

    The breaker's identity and label (``dburl.identity``): no password of the user info or of
    the query, so the state file never holds one, and a URL names the same database with or
    without ``?password=``.
    """
    return identity(url)


def breaker_path(data_dir: Path, url: str) -> Path:
    digest = hashlib.sha256(url_without_password(url).encode()).hexdigest()[:16]
    return data_dir / "breaker" / f"{digest}.json"


def breaker_config(settings: Settings) -> BreakerConfig:
    return BreakerConfig(
        fail_max=settings.breaker.fail_max,
        reset_timeout_s=settings.breaker.reset_timeout,
        probe_lease_s=settings.database.command_timeout,
    )


def breaker_for(settings: Settings, url: str | None = None,
                clock: Callable[[], float] = time.time) -> FileBreaker:
    """The host's breaker of ``url`` (default ``database.url``), kept in ``<data_dir>/breaker``."""
    url = url or settings.database_url
    return FileBreaker(breaker_path(settings.paths.data_dir, url), breaker_config(settings),
                       clock, label=url_without_password(url))
