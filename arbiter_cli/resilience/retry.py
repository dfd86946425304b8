"""Retries for transient database failures, outside the circuit breaker (SPEC §7).

tenacity drives the attempts: ``wait_random_exponential(multiplier=0.1, max=2)``, at most four
attempts, and never past the command's deadline. Each attempt first asks the breaker for a
permit, so an open breaker fails fast and is not retried. What is retried, counted or passed
through is decided by :func:`arbiter_cli.adapters.sql.faults.classify`; a configuration error
(wrong password, unknown database, a host name that does not resolve) leaves at once as
``ConfigInvalid`` (exit 3) and the breaker never hears of it (SPEC §7.1).

Slowness of a healthy primary is not an outage either (SPEC §7.1). When the server answers
with a statement or lock timeout, or the deadline cuts a statement in flight and a short
independent probe (``alive``) finds the primary answering, the call leaves as ``PrimarySlow``:
exit 10 with a hint, the breaker permit released (neither counted nor reset), and the callers
in ``gateway.py`` neither journal it nor serve it from the snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from arbiter_cli.adapters.sql.deadline import Deadline
from arbiter_cli.adapters.sql.faults import Fault, classify, driver_error, slowness
from arbiter_cli.errors import ConfigInvalid, StorageUnavailable

if TYPE_CHECKING:
    from arbiter_cli.resilience.breaker import FileBreaker

T = TypeVar("T")

MAX_ATTEMPTS = 4


class PrimarySlow(StorageUnavailable):
    """The primary is up but did not finish in time: the work was rolled back, not journaled."""


def guarded(
    fn: Callable[[], T], *, breaker: FileBreaker | None, deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep, attempts: int = MAX_ATTEMPTS,
    may_retry: Callable[[], bool] | None = None, alive: Callable[[], bool] | None = None,
) -> T:
    """Run ``fn`` with retries, breaker and deadline; give up as ``StorageUnavailable`` (exit 10).

    Caller errors (integrity, data, our own ``ArbiterError``s) leave unchanged after one attempt.
    ``may_retry`` can veto a retry (an op whose commit may have happened is never re-run).
    ``alive`` probes the primary when the deadline cut a statement (see ``PrimarySlow``);
    without it, running out of time counts as the primary's failure.
    """
    from tenacity import (
        RetryCallState,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        stop_any,
        wait_random_exponential,
    )
    from tenacity.stop import stop_base

    def attempt() -> T:
        permit = breaker.allow() if breaker is not None else None  # BreakerOpen: exit 10, no retry
        try:
            with deadline.active():
                result = fn()
        except BaseException as exc:
            slow = isinstance(exc, Exception) and slow_but_alive(exc, alive)
            if permit is not None and breaker is not None:
                if isinstance(exc, Exception) and counts(exc) and not slow:
                    breaker.failure(permit)
                else:
                    breaker.release(permit)
            if slow:
                raise too_slow(exc, deadline) from exc
            raise
        if permit is not None and breaker is not None:
            breaker.success(permit)
        return result

    class out_of_time(stop_base):  # noqa: N801 - reads like tenacity's
        def __call__(self, retry_state: RetryCallState) -> bool:
            return deadline.expired()

    def nap(seconds: float) -> None:
        sleep(min(seconds, deadline.remaining()))

    retrying = Retrying(
        retry=retry_if_exception(lambda e: classify(e) is Fault.TRANSIENT
                                 and (may_retry is None or may_retry())),
        stop=stop_any(stop_after_attempt(attempts), out_of_time()),
        wait=wait_random_exponential(multiplier=0.1, max=2),
        sleep=nap,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except Exception as exc:
        fault = classify(exc)
        if fault is Fault.CONFIG:  # also behind a StorageUnavailable of the unit of work
            raise misconfigured_from(exc, getattr(breaker, "label", "")) from exc
        if fault is Fault.CALLER or isinstance(exc, StorageUnavailable):
            raise
        raise unavailable_from(exc) from exc


def slow_but_alive(exc: Exception, alive: Callable[[], bool] | None) -> bool:
    """The primary answered a timeout, or was cut mid-statement and answers a probe."""
    if alive is None:
        return False
    kind = slowness(exc)
    return kind == "timeout" or (kind == "cut" and alive())


def too_slow(exc: BaseException, deadline: Deadline) -> PrimarySlow:
    return PrimarySlow(
        f"the database is up but did not finish within the command's budget "
        f"({deadline.budget_s:g}s): the work was rolled back and nothing was journaled; retry, "
        "and for a large batch raise database.per_item_timeout or database.command_timeout, or "
        "split it", driver=driver_error(exc))


def counts(exc: Exception) -> bool:
    """Whether a failure counts against the breaker: the primary's trouble, not ours."""
    return classify(exc) not in (Fault.CALLER, Fault.CONFIG)


def unavailable_from(exc: BaseException) -> StorageUnavailable:
    """A one-line, password-free StorageUnavailable describing a driver failure."""
    err = driver_error(exc)
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return StorageUnavailable(f"database unavailable: {first[:300]}", driver=err)


def misconfigured_from(exc: BaseException, where: str = "") -> ConfigInvalid:
    """A one-line, password-free ConfigInvalid (exit 3) for a configuration error of the URL."""
    err = driver_error(exc)
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    where = where.split("?", 1)[0]  # a query string may hold a password= argument
    place = f" {where}" if where else ""
    return ConfigInvalid(
        f"cannot use the database{place}: {first[:300]} (a configuration error: check "
        "database.url and database.password; nothing was retried, journaled or served from "
        "the local snapshot)")
