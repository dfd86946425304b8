"""Security use cases of SPEC §4 through the in-memory unit of work: tokens, admission
(authenticate, authorize, rate-limit), tenants and the audit log, with a fake clock.

Assertions read the store back through its ports (the fake is the in-memory adapter itself).
The clock starts on a whole second, and moves by dyadic fractions where the token bucket's
arithmetic has to be exact.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.security import (
    GENESIS,
    AuditEvent,
    Bucket,
    TokenRecord,
    format_token,
    hash_secret,
    parse_token,
    retry_after,
)
from arbiter_cli.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from arbiter_cli.services.security import IssuedToken, RatePolicy, SecurityService
from arbiter_cli.tools.setup import initialize

T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
#: The aggregation window (second) of a refusal at T (SPEC §4).
WINDOW = int(T.timestamp())
CORRELATION = "corr-sec-1"
LOCAL_ADMIN = Principal.local_admin()


class Clock:
    """A clock the test moves by hand, starting on a whole second."""

    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def empty_store(clock: Clock) -> MemoryUnitOfWorkFactory:
    """The memory store, with the test's clock as its "database clock"."""
    return MemoryUnitOfWorkFactory(clock=clock)


@pytest.fixture
def store(empty_store: MemoryUnitOfWorkFactory, clock: Clock) -> MemoryUnitOfWorkFactory:
    """A store after ``arbiter init``: tenant default exists, no token yet."""
    initialize(empty_store, lambda: None, clock)
    return empty_store


@pytest.fixture
def make(store: MemoryUnitOfWorkFactory, clock: Clock) -> Callable[..., SecurityService]:
    """A SecurityService over the store, with rate 2/s and burst 3 unless told otherwise."""

    def build(rate: float = 2.0, burst: int = 3,
              correlation_id: str | None = CORRELATION) -> SecurityService:
        return SecurityService(store, RatePolicy(rate=rate, burst=burst), correlation_id)

    return build


@pytest.fixture
def service(make: Callable[..., SecurityService]) -> SecurityService:
    return make()


@pytest.fixture
def acme(service: SecurityService) -> IssuedToken:
    """Tenant acme and its admin token."""
    return service.create_tenant("acme")


def principal_of(issued: IssuedToken) -> Principal:
    return Principal(issued.record.tenant, issued.record.role, issued.record.id)


def chain(store: MemoryUnitOfWorkFactory, tenant: str) -> list[AuditEvent]:
    with store() as uow:
        return uow.audit.events(tenant, ascending=True)


def actions(store: MemoryUnitOfWorkFactory, tenant: str, action: str) -> list[AuditEvent]:
    return [e for e in chain(store, tenant) if e.action == action]


def stored(store: MemoryUnitOfWorkFactory, token_id: str) -> TokenRecord | None:
    with store() as uow:
        return uow.tokens.get(token_id)


def token_count(store: MemoryUnitOfWorkFactory) -> int:
    with store() as uow:
        return uow.tokens.count()


def admitted(service: SecurityService, token: str, calls: int, command: str = "whoami") -> int:
    """How many of ``calls`` admits pass; the rest must be rate limited."""
    passed = 0
    for _ in range(calls):
        try:
            service.admit(token, command)
        except RateLimited:
            continue
        passed += 1
    return passed


def viewer(service: SecurityService, principal: Principal = LOCAL_ADMIN, **options: Any
           ) -> IssuedToken:
    return service.issue(principal, role="viewer", name="reader", expires_in_s=None, **options)


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_issues_an_admin_token_of_default_on_an_empty_store(service, store):
    """The first admin token: tenant default, role admin, no expiry, usable at once."""
    issued = service.bootstrap().issued
    assert issued is not None
    record = issued.record
    assert (record.tenant, record.role, record.name, record.expires_at) == (
        "default", "admin", "bootstrap admin", None)
    assert service.admit(issued.token, "tokens create") == Principal("default", "admin",
                                                                     record.id)


def test_bootstrap_returns_none_once_a_token_exists(service, store):
    """A second bootstrap issues nothing."""
    service.bootstrap()
    assert service.bootstrap().issued is None
    assert token_count(store) == 1


def test_bootstrap_returns_none_when_only_another_tenant_has_a_token(service, store, acme):
    """Any token in the store, whatever its tenant, ends the bootstrap."""
    assert service.bootstrap().issued is None
    assert token_count(store) == 1


# ---------------------------------------------------------------------------- issue


def test_issue_stores_only_the_hash_of_the_secret(service, store):
    """The stored record holds SHA-256(secret); the secret is nowhere in it or its dict."""
    issued = service.issue(LOCAL_ADMIN, role="manager", name="ci", expires_in_s=3600)
    token_id, secret = parse_token(issued.token)
    record = stored(store, token_id)
    assert record == issued.record
    assert record.secret_hash == hash_secret(secret)
    assert secret not in repr(record)
    assert secret not in json.dumps(record.to_dict())


def test_the_secret_never_reaches_the_audit_log(service, store):
    """The token.create event names the token id, never the token or its secret."""
    issued = service.issue(LOCAL_ADMIN, role="manager", name="ci", expires_in_s=None)
    _, secret = parse_token(issued.token)
    text = json.dumps([e.to_dict() for e in chain(store, "default")])
    assert secret not in text
    assert hash_secret(secret) not in text
    assert issued.record.id in text


def test_issued_token_parses_back_to_its_record_id(service):
    """The token is arb_<12 lowercase alnum id>_<43-char secret> naming the record."""
    issued = service.issue(LOCAL_ADMIN, role="viewer", name="ci", expires_in_s=None)
    token_id, secret = parse_token(issued.token)
    assert token_id == issued.record.id
    assert len(token_id) == 12 and token_id.isalnum() and token_id == token_id.lower()
    assert len(secret) == 43
    assert issued.token == format_token(token_id, secret)


def test_issue_sets_created_and_expires_at_from_the_clock(service):
    """created_at is now and expires_at is now + expires_in."""
    record = service.issue(LOCAL_ADMIN, role="viewer", name="ci", expires_in_s=90.5).record
    assert record.created_at == T
    assert record.expires_at == T + timedelta(seconds=90.5)
    assert (record.revoked_at, record.last_used_at) == (None, None)


def test_issue_without_expires_in_never_expires(service):
    """expires_in None leaves expires_at None."""
    assert service.issue(LOCAL_ADMIN, role="viewer", name="ci",
                         expires_in_s=None).record.expires_at is None


def test_issue_belongs_to_the_callers_tenant(service, acme):
    """A token is created in the issuing principal's tenant."""
    issued = viewer(service, principal_of(acme))
    assert issued.record.tenant == "acme"


def test_issue_audits_token_create_without_secrets(service, store):
    """One token.create event, ok, naming role, name, expiry and rate overrides."""
    issued = service.issue(LOCAL_ADMIN, role="orchestrator", name="router", expires_in_s=60,
                           rate=5, burst=9)
    [event] = chain(store, "default")
    assert (event.seq, event.at, event.actor, event.action, event.target, event.result) == (
        1, T, None, "token.create", issued.record.id, "ok")
    assert event.details == {"role": "orchestrator", "name": "router",
                             "expires_at": "2026-03-01T12:01:00.000Z", "rate": 5.0, "burst": 9}


def test_issued_token_to_dict_shows_the_token_once(service):
    """The JSON of tokens create names id, token, role, tenant and expiry."""
    issued = service.issue(LOCAL_ADMIN, role="viewer", name="ci", expires_in_s=None)
    assert issued.to_dict() == {"id": issued.record.id, "token": issued.token, "role": "viewer",
                                "tenant": "default", "expires_at": None, "name": "ci",
                                "rate": None, "burst": None}


@pytest.mark.parametrize(("options", "field", "rule"), [
    ({"role": "root"}, "role", "allowed"),
    ({"name": ""}, "name", "length"),
    ({"name": "x" * 201}, "name", "length"),
    ({"name": "a\nb"}, "name", "no_control_characters"),
    ({"rate": 0.0009}, "rate", "range"),
    ({"rate": float("nan")}, "rate", "finite"),
    ({"burst": 0}, "burst", "range"),
    ({"burst": 10_000_001}, "burst", "range"),
])
def test_issue_rejects_invalid_input_and_stores_nothing(service, store, options, field, rule):
    """Role, name, rate and burst are validated (exit 2) before anything is written."""
    arguments = {"role": "viewer", "name": "ci", "expires_in_s": None, **options}
    with pytest.raises(InvalidInput) as caught:
        service.issue(LOCAL_ADMIN, **arguments)
    assert (caught.value.exit_code, caught.value.field, caught.value.rule) == (2, field, rule)
    assert token_count(store) == 0
    assert chain(store, "default") == []


@pytest.mark.parametrize(("options", "rate", "burst"), [
    ({"rate": 0.001, "burst": 1}, 0.001, 1),
    ({"rate": "2.5", "burst": 10_000_000}, 2.5, 10_000_000),
    ({"name": "x" * 200}, None, None),
])
def test_issue_accepts_the_boundary_values(service, options, rate, burst):
    """rate >= 0.001, 1 <= burst <= 10 000 000 and names up to 200 characters are accepted."""
    arguments = {"role": "viewer", "name": "ci", "expires_in_s": None, **options}
    record = service.issue(LOCAL_ADMIN, **arguments).record
    assert (record.rate, record.burst) == (rate, burst)


# ---------------------------------------------------------------------------- authentication


def wrong_secret(issued: IssuedToken) -> str:
    token_id, secret = parse_token(issued.token)
    return format_token(token_id, ("B" if secret[0] != "B" else "C") + secret[1:])


def expired(service: SecurityService, clock: Clock, acme: IssuedToken) -> str:
    issued = service.issue(principal_of(acme), role="admin", name="brief", expires_in_s=60)
    clock.advance(60)
    return issued.token


def revoked(service: SecurityService, clock: Clock, acme: IssuedToken) -> str:
    issued = viewer(service, principal_of(acme))
    service.revoke(principal_of(acme), issued.record.id)
    return issued.token


UNKNOWN_ID = "zzzzzzzzzzzz"
DENIALS: dict[str, tuple[Callable[..., str | None], str, str]] = {
    # case: (token maker, tenant audited, reason)
    "missing": (lambda s, c, a: None, "default", "missing token"),
    "empty": (lambda s, c, a: "", "default", "empty token"),
    "malformed": (lambda s, c, a: "arb_short_secret", "default", "malformed token"),
    "unknown id": (lambda s, c, a: format_token(UNKNOWN_ID, "s" * 43), "default",
                   "invalid token"),
    "wrong secret": (lambda s, c, a: wrong_secret(a), "acme", "invalid token"),
    "expired": (expired, "acme", "token expired"),
    "revoked": (revoked, "acme", "token revoked"),
}


@pytest.mark.parametrize("case", list(DENIALS))
def test_a_refused_token_is_unauthenticated_with_one_auth_denied_event(service, store, clock,
                                                                       acme, case):
    """Each cause is exit 6 and appends exactly one auth.denied (denied) to the right chain."""
    make_token, tenant, reason = DENIALS[case]
    token = make_token(service, clock, acme)
    other = "default" if tenant == "acme" else "acme"
    before = {t: len(chain(store, t)) for t in ("default", "acme")}
    with pytest.raises(Unauthenticated) as caught:
        service.admit(token, "agents list")
    assert (caught.value.exit_code, caught.value.code) == (6, "unauthenticated")
    assert len(chain(store, other)) == before[other]
    new = chain(store, tenant)[before[tenant]:]
    assert [(e.action, e.result, e.target, e.at) for e in new] == [
        ("auth.denied", "denied", None, clock())]
    assert new[0].details["reason"] == reason
    assert new[0].details["command"] == "agents list"


def test_an_unknown_token_id_is_audited_with_that_id_and_no_actor(service, store):
    """Nobody is authenticated, so the actor is empty and the id goes to details."""
    with pytest.raises(Unauthenticated, match="^invalid token$"):
        service.admit(format_token(UNKNOWN_ID, "s" * 43), "whoami")
    [event] = chain(store, "default")
    assert event.actor is None
    assert event.details == {"reason": "invalid token", "command": "whoami",
                             "token_id": UNKNOWN_ID, "window_start": WINDOW}


def test_a_wrong_secret_is_audited_against_the_token_it_named(service, store, acme):
    """The event's actor is the token id; no token_id detail is needed."""
    with pytest.raises(Unauthenticated, match="^invalid token$"):
        service.admit(wrong_secret(acme), "whoami")
    [event] = actions(store, "acme", "auth.denied")
    assert event.actor == acme.record.id
    assert event.details == {"reason": "invalid token", "command": "whoami",
                             "window_start": WINDOW}


def test_a_missing_token_is_audited_with_its_reason_and_command(service, store):
    """A call without a token leaves reason and command, and no actor, in default's chain."""
    with pytest.raises(Unauthenticated, match="^no token: "):
        service.admit(None, "route task")
    [event] = chain(store, "default")
    assert (event.actor, event.details) == (None, {"reason": "missing token",
                                                   "command": "route task",
                                                   "window_start": WINDOW})


def test_a_malformed_token_is_audited_without_the_token(service, store):
    """The malformed text is not copied into the audit log."""
    with pytest.raises(Unauthenticated, match="^malformed token"):
        service.admit("arb_NOTVALID_secret-text-here", "whoami")
    [event] = chain(store, "default")
    assert event.details == {"reason": "malformed token", "command": "whoami",
                             "window_start": WINDOW}
    assert "secret-text-here" not in json.dumps(event.to_dict())


def test_a_missing_token_before_init_is_refused_without_an_audit(empty_store, clock):
    """With no tenant default yet there is no chain to write to, and nothing is created."""
    service = SecurityService(empty_store, RatePolicy(2.0, 3), CORRELATION)
    with pytest.raises(Unauthenticated):
        service.admit(None, "whoami")
    with empty_store() as uow:
        assert uow.tenants.list() == []
        assert uow.audit.events("default") == []


def test_a_token_expires_exactly_at_its_expiry(service, clock):
    """One microsecond before expires_at it admits; at expires_at it is refused."""
    issued = service.issue(LOCAL_ADMIN, role="viewer", name="ci", expires_in_s=10)
    clock.advance(10 - 1e-6)
    assert service.admit(issued.token, "whoami").token_id == issued.record.id
    clock.advance(1e-6)
    with pytest.raises(Unauthenticated, match="^token expired$"):
        service.admit(issued.token, "whoami")


# ---------------------------------------------------------------------------- authorization


def test_a_viewer_running_a_manager_command_is_forbidden_and_audited(service, store, acme):
    """Exit 6 (forbidden) with one authz.denied event in the viewer's tenant."""
    issued = viewer(service, principal_of(acme))
    before = len(chain(store, "acme"))
    with pytest.raises(Forbidden) as caught:
        service.admit(issued.token, "agents register")
    assert (caught.value.exit_code, caught.value.code) == (6, "forbidden")
    [event] = chain(store, "acme")[before:]
    assert (event.action, event.result, event.actor, event.target) == (
        "authz.denied", "denied", issued.record.id, None)
    assert event.details == {
        "reason": "role 'viewer' may not run `agents register` (needs manager)",
        "command": "agents register", "window_start": WINDOW}
    assert actions(store, "default", "authz.denied") == []


def test_admit_returns_the_principal_of_a_permitted_token(service, acme):
    """A manager may run a viewer command and gets its own tenant, role and id."""
    issued = service.issue(principal_of(acme), role="manager", name="m", expires_in_s=None)
    assert service.admit(issued.token, "agents list") == Principal("acme", "manager",
                                                                   issued.record.id)


def test_an_unknown_command_is_forbidden_even_for_admin(service, acme):
    """Deny by default through admission too."""
    with pytest.raises(Forbidden):
        service.admit(acme.token, "tokens destroy")


def test_a_successful_admit_sets_last_used_at(service, store):
    """The first admitted call stamps last_used_at with the clock's time."""
    issued = viewer(service)
    assert stored(store, issued.record.id).last_used_at is None
    service.admit(issued.token, "whoami")
    assert stored(store, issued.record.id).last_used_at == T


def test_last_used_at_is_refreshed_once_it_is_a_minute_old(service, store, clock):
    """Within 60 s the stamp stays (one write per minute); at 60 s it moves to now."""
    issued = viewer(service)
    service.admit(issued.token, "whoami")
    clock.advance(60 - 1e-6)
    service.admit(issued.token, "whoami")
    assert stored(store, issued.record.id).last_used_at == T
    clock.advance(1e-6)
    service.admit(issued.token, "whoami")
    assert stored(store, issued.record.id).last_used_at == T + timedelta(seconds=60)


def test_a_refused_admit_does_not_set_last_used_at(service, store):
    """A forbidden call is not a use of the token."""
    issued = viewer(service)
    with pytest.raises(Forbidden):
        service.admit(issued.token, "agents register")
    assert stored(store, issued.record.id).last_used_at is None


def test_a_successful_admit_writes_no_audit_event(service, store):
    """Only denials and mutations are audited, not reads."""
    issued = viewer(service)
    before = len(chain(store, "default"))
    service.admit(issued.token, "whoami")
    assert len(chain(store, "default")) == before


# ---------------------------------------------------------------------------- rate limits


def test_exactly_burst_admits_pass_at_a_frozen_time(service):
    """RatePolicy(rate=2, burst=3): three pass, the fourth is rate limited (exit 7)."""
    issued = viewer(service)
    for _ in range(3):
        service.admit(issued.token, "whoami")
    with pytest.raises(RateLimited) as caught:
        service.admit(issued.token, "whoami")
    error = caught.value
    assert (error.exit_code, error.code) == (7, "rate_limited")
    assert error.retry_after_s > 0
    assert error.retry_after_s == retry_after(Bucket(-1.0, 0.0), 2.0)
    assert error.details == {"retry_after_s": error.retry_after_s}
    assert error.message == f"rate limited: token {issued.record.id} may make 2 calls/s (burst 3)"


def test_admits_refill_at_the_policy_rate(service, clock):
    """After the burst, 0.5 s at rate 2 buys exactly one more call."""
    issued = viewer(service)
    assert admitted(service, issued.token, 3) == 3
    clock.advance(0.5)
    assert admitted(service, issued.token, 2) == 1


def test_refusals_in_one_second_are_one_aggregated_event(service, store, clock):
    """Three refusals within the same second leave one rate_limit.denied event."""
    issued = viewer(service)
    assert admitted(service, issued.token, 6) == 3
    clock.advance(0.999)
    assert admitted(service, issued.token, 1) == 0
    [event] = actions(store, "default", "rate_limit.denied")
    assert (event.actor, event.target, event.result, event.at) == (
        issued.record.id, None, "denied", T)
    assert event.details == {"command": "whoami", "window_start": int(T.timestamp())}


def test_a_refusal_in_the_next_second_is_a_new_event(service, store, clock):
    """Crossing a whole second starts a new aggregation window."""
    issued = viewer(service)
    admitted(service, issued.token, 6)  # three refusals leave the floor, -3
    clock.advance(1)
    assert admitted(service, issued.token, 2) == 0
    events = actions(store, "default", "rate_limit.denied")
    assert [e.details["window_start"] for e in events] == [int(T.timestamp()),
                                                           int(T.timestamp()) + 1]


def test_a_refusal_in_an_earlier_second_is_also_audited(service, store, clock):
    """A clock stepped back lands in another second, which gets its own event."""
    issued = viewer(service)
    admitted(service, issued.token, 6)
    clock.advance(1)
    assert admitted(service, issued.token, 1) == 0
    clock.advance(-1)
    assert admitted(service, issued.token, 1) == 0
    events = actions(store, "default", "rate_limit.denied")
    assert [e.at for e in events] == [T, T + timedelta(seconds=1), T]


def test_refusals_are_aggregated_per_token(service, store):
    """Two tokens refused in the same second give one event each."""
    first, second = viewer(service), viewer(service)
    admitted(service, first.token, 5)
    admitted(service, second.token, 5)
    events = actions(store, "default", "rate_limit.denied")
    assert sorted(e.actor for e in events) == sorted([first.record.id, second.record.id])


def test_a_per_token_burst_overrides_a_smaller_policy_burst(service):
    """burst=5 on the token: five admits pass at one instant despite policy burst 3."""
    issued = viewer(service, burst=5)
    assert admitted(service, issued.token, 8) == 5


def test_a_per_token_burst_overrides_a_larger_policy_burst(service):
    """burst=1 on the token: one admit passes."""
    issued = viewer(service, burst=1)
    assert admitted(service, issued.token, 4) == 1


def test_a_per_token_rate_overrides_the_policy_rate(service, clock):
    """rate=8 refills a token in 0.125 s, which rate 2 would not; retry_after uses 8 too."""
    issued = viewer(service, rate=8, burst=1)
    assert admitted(service, issued.token, 1) == 1
    clock.advance(0.125)
    assert admitted(service, issued.token, 1) == 1
    with pytest.raises(RateLimited) as caught:
        service.admit(issued.token, "whoami")
    assert caught.value.retry_after_s == retry_after(Bucket(-1.0, 0.0), 8.0)
    assert caught.value.message == (f"rate limited: token {issued.record.id} may make 8 "
                                    "calls/s (burst 1)")


def test_one_tenants_hammering_does_not_reduce_anothers_allowance(service, acme):
    """Buckets are per token: acme's refusals leave default's token a full burst."""
    theirs, ours = viewer(service, principal_of(acme)), viewer(service)
    assert admitted(service, theirs.token, 20) == 3
    assert admitted(service, ours.token, 5) == 3


def test_login_checks_a_token_without_spending_its_allowance(service):
    """Ten logins leave the whole burst for admits."""
    issued = viewer(service)
    for _ in range(10):
        assert service.login(issued.token) == principal_of(issued)
    assert admitted(service, issued.token, 4) == 3


LOGIN_DENIALS = {case: DENIALS[case] for case in ("malformed", "unknown id", "wrong secret",
                                                  "expired", "revoked")}


@pytest.mark.parametrize("case", list(LOGIN_DENIALS))
def test_a_refused_login_is_audited_like_a_refused_admit(service, store, clock, acme, case):
    """login refuses what admit refuses (exit 6), with one auth.denied event for command
    login in the chain of the token's tenant, whose actor is the token it named."""
    make_token, tenant, reason = LOGIN_DENIALS[case]
    token = make_token(service, clock, acme)
    before = len(chain(store, tenant))
    with pytest.raises(Unauthenticated) as caught:
        service.login(token)
    assert caught.value.message.startswith(reason)
    new = chain(store, tenant)[before:]
    named = None if case in ("malformed", "unknown id") else parse_token(token)[0]
    expected_details: dict[str, Any] = {"reason": reason, "command": "login",
                                        "window_start": int(clock().timestamp())}
    if case == "unknown id":
        expected_details["token_id"] = UNKNOWN_ID
    assert [(e.actor, e.action, e.result, e.target, e.at, e.details) for e in new] == [
        (named, "auth.denied", "denied", None, clock(), expected_details)]


def test_login_checks_expiry_on_the_database_clock(service, clock):
    """A token that expires in a minute logs in until the store's clock reaches the minute."""
    issued = service.issue(LOCAL_ADMIN, role="viewer", name="brief", expires_in_s=60)
    clock.advance(59)
    assert service.login(issued.token) == principal_of(issued)
    clock.advance(1)
    with pytest.raises(Unauthenticated, match="^token expired"):
        service.login(issued.token)


# ---------------------------------------------------------------------------- peek


@pytest.mark.parametrize("case", list(DENIALS))
def test_peek_answers_none_for_every_refused_token_and_audits_nothing(service, store, clock,
                                                                     acme, case):
    """Shell completion: a token admit would refuse yields None, with no event anywhere."""
    token = DENIALS[case][0](service, clock, acme)
    before = {t: len(chain(store, t)) for t in ("default", "acme")}
    assert service.peek(token, "agents list") is None
    assert {t: len(chain(store, t)) for t in ("default", "acme")} == before


def test_peek_answers_the_principal_admit_would_and_changes_nothing(service, store, clock,
                                                                   acme):
    """No last_used_at stamp, no rate-limit token spent, no audit event."""
    issued = viewer(service, principal_of(acme))
    record = stored(store, issued.record.id)
    events = len(chain(store, "acme"))
    for _ in range(10):
        assert service.peek(issued.token, "agents list") == principal_of(issued)
    assert stored(store, issued.record.id) == record and record.last_used_at is None
    assert len(chain(store, "acme")) == events
    assert admitted(service, issued.token, 4) == 3  # the whole burst is left


def test_peek_answers_none_where_the_role_may_not_run_the_command(service, store, acme):
    issued = viewer(service, principal_of(acme))
    events = len(chain(store, "acme"))
    assert service.peek(issued.token, "agents register") is None
    assert service.peek(issued.token, "no such command") is None
    assert service.peek(acme.token, "agents register") == principal_of(acme)
    assert len(chain(store, "acme")) == events


def test_peek_checks_expiry_on_the_database_clock(service, clock):
    issued = service.issue(LOCAL_ADMIN, role="viewer", name="brief", expires_in_s=60)
    clock.advance(59)
    assert service.peek(issued.token, "route history") == principal_of(issued)
    clock.advance(1)
    assert service.peek(issued.token, "route history") is None


# ---------------------------------------------------------------------------- revoke


def test_revoke_sets_revoked_at_and_audits(service, store, clock, acme):
    """A revoked token records when, is audited token.revoke, and no longer admits."""
    issued = viewer(service, principal_of(acme))
    clock.advance(7)
    record = service.revoke(principal_of(acme), issued.record.id)
    assert record.revoked_at == T + timedelta(seconds=7)
    assert stored(store, issued.record.id) == record
    [event] = actions(store, "acme", "token.revoke")
    assert (event.actor, event.target, event.result, event.details) == (
        acme.record.id, issued.record.id, "ok", {})
    with pytest.raises(Unauthenticated, match="^token revoked$"):
        service.admit(issued.token, "whoami")


def test_revoke_is_idempotent(service, store, clock):
    """A second revoke keeps the first time and adds no event."""
    issued = viewer(service)
    first = service.revoke(LOCAL_ADMIN, issued.record.id)
    clock.advance(60)
    again = service.revoke(LOCAL_ADMIN, issued.record.id)
    assert again == first
    assert again.revoked_at == T
    assert len(actions(store, "default", "token.revoke")) == 1


def test_revoking_another_tenants_token_looks_like_a_missing_one(service, store, acme):
    """Exit 4 with the same message as an unknown id; the token stays valid."""
    ours = viewer(service)
    with pytest.raises(NotFound) as cross:
        service.revoke(principal_of(acme), ours.record.id)
    with pytest.raises(NotFound) as missing:
        service.revoke(principal_of(acme), UNKNOWN_ID)
    assert cross.value.exit_code == missing.value.exit_code == 4
    assert cross.value.message.replace(ours.record.id, "ID") == \
        missing.value.message.replace(UNKNOWN_ID, "ID") == "token 'ID' not found"
    assert cross.value.details == missing.value.details == {}
    assert stored(store, ours.record.id).revoked_at is None


def test_revoking_another_tenants_token_reads_like_a_missing_one_in_the_callers_chain(
        service, store, acme):
    """No existence oracle in the audit log either: acme's chain records the same denial for
    default's token id as for an id that exists nowhere (SPEC §4.1)."""
    ours = viewer(service)
    seen = []
    for token_id in (ours.record.id, UNKNOWN_ID):
        before = len(chain(store, "acme"))
        with pytest.raises(NotFound):
            service.revoke(principal_of(acme), token_id)
        [event] = chain(store, "acme")[before:]
        seen.append({**event.body(), "target": "ID", "seq": None, "at": None})
    assert seen[0] == seen[1]
    assert (seen[0]["action"], seen[0]["result"], seen[0]["actor"], seen[0]["details"]) == (
        "token.revoke", "denied", acme.record.id, {"reason": "not found"})


def test_revoking_another_tenants_token_is_audited_in_the_owners_chain(service, store, acme):
    """default, whose token it is, records the attempt and who made it; a missing id adds
    nothing to default's chain."""
    ours = viewer(service)
    before = len(chain(store, "default"))
    with pytest.raises(NotFound):
        service.revoke(principal_of(acme), UNKNOWN_ID)
    assert len(chain(store, "default")) == before
    with pytest.raises(NotFound):
        service.revoke(principal_of(acme), ours.record.id)
    [event] = chain(store, "default")[before:]
    assert (event.actor, event.action, event.target, event.result, event.details) == (
        acme.record.id, "token.revoke", ours.record.id, "denied",
        {"reason": "cross-tenant", "caller_tenant": "acme"})


def test_tokens_lists_only_the_callers_tenant(service, acme):
    """Listing is scoped by tenant, in id order, with a cursor."""
    ours = sorted(viewer(service).record.id for _ in range(3))
    page, cursor = service.tokens(LOCAL_ADMIN, limit=2)
    assert ([t.id for t in page], cursor) == (ours[:2], ours[1])
    rest, end = service.tokens(LOCAL_ADMIN, cursor=cursor, limit=2)
    assert ([t.id for t in rest], end) == (ours[2:], None)
    assert [t.id for t in service.tokens(principal_of(acme))[0]] == [acme.record.id]


# ---------------------------------------------------------------------------- tenants


def test_create_tenant_returns_an_admin_token_of_the_new_tenant(service, store):
    """The new tenant's first token is an admin of it, and admits as such."""
    issued = service.create_tenant("acme")
    record = issued.record
    assert (record.tenant, record.role, record.name, record.expires_at) == (
        "acme", "admin", "acme admin", None)
    assert service.admit(issued.token, "audit verify") == Principal("acme", "admin", record.id)
    assert service.tenants() == ["acme", "default"]


@pytest.mark.parametrize("name", ["a", "0", "a" * 64, "a-b_c9", "9lives"])
def test_create_tenant_accepts_slugs(service, name):
    """Lowercase alnum first, then up to 63 of [a-z0-9_-]."""
    assert service.create_tenant(name).record.tenant == name


@pytest.mark.parametrize("name", ["", "A", "Acme", "-a", "_a", "a" * 65, "a b", "a.b",
                                  "acme\n", "émile", None, 5])
def test_create_tenant_rejects_other_names(service, store, name):
    """Exit 2 on field name, rule pattern, and nothing is created."""
    with pytest.raises(InvalidInput) as caught:
        service.create_tenant(name)
    assert (caught.value.exit_code, caught.value.field, caught.value.rule) == (2, "name",
                                                                               "pattern")
    assert service.tenants() == ["default"]
    assert token_count(store) == 0


def test_create_tenant_rejects_a_duplicate(service, store, acme):
    """An existing tenant is a conflict (exit 5) and no token is issued."""
    with pytest.raises(Conflict) as caught:
        service.create_tenant("acme")
    assert (caught.value.exit_code, caught.value.message) == (5, "tenant 'acme' already exists")
    assert token_count(store) == 1


# ---------------------------------------------------------------------------- audit log


def five_events(service: SecurityService, clock: Clock) -> list[IssuedToken]:
    """Five token.create events in default, one second apart."""
    issued = []
    for _ in range(5):
        issued.append(viewer(service))
        clock.advance(1)
    return issued


def test_events_are_newest_first(service, clock):
    """The default page lists seq 5 down to 1."""
    five_events(service, clock)
    page, cursor = service.events(LOCAL_ADMIN)
    assert ([e.seq for e in page], cursor) == ([5, 4, 3, 2, 1], None)


def test_events_page_with_a_cursor(service, clock):
    """limit 2 walks 5,4 then 3,2 then 1; the cursor is the last seq shown."""
    five_events(service, clock)
    first, cursor = service.events(LOCAL_ADMIN, limit=2)
    assert ([e.seq for e in first], cursor) == ([5, 4], "4")
    second, cursor = service.events(LOCAL_ADMIN, limit=2, cursor=int(cursor))
    assert ([e.seq for e in second], cursor) == ([3, 2], "2")
    third, cursor = service.events(LOCAL_ADMIN, limit=2, cursor=int(cursor))
    assert ([e.seq for e in third], cursor) == ([1], None)


@pytest.mark.parametrize(("limit", "seqs", "cursor"), [
    (5, [5, 4, 3, 2, 1], None), (4, [5, 4, 3, 2], "2"), (0, [5, 4, 3, 2, 1], None)])
def test_events_cursor_appears_only_when_more_remain(service, clock, limit, seqs, cursor):
    """A page that holds everything has no cursor; limit 0 means all."""
    five_events(service, clock)
    page, next_cursor = service.events(LOCAL_ADMIN, limit=limit)
    assert ([e.seq for e in page], next_cursor) == (seqs, cursor)


def test_events_filter_by_action_actor_and_since(service, store, clock, acme):
    """Filters narrow the caller's tenant's events."""
    five_events(service, clock)
    issued = viewer(service, principal_of(acme))
    service.revoke(principal_of(acme), issued.record.id)
    admin = principal_of(acme)
    assert [e.action for e in service.events(admin, action="token.revoke")[0]] == [
        "token.revoke"]
    assert [e.seq for e in service.events(admin, actor=acme.record.id)[0]] == [3, 2]
    assert [e.seq for e in service.events(LOCAL_ADMIN, since=T + timedelta(seconds=3))[0]] == [
        5, 4]


def test_events_are_scoped_to_the_callers_tenant(service, acme):
    """acme sees only its own chain."""
    viewer(service)
    assert {e.tenant for e in service.events(principal_of(acme))[0]} == {"acme"}


def test_verify_passes_on_the_stores_own_chain(service, store, clock, acme):
    """After tokens, denials, revocations and rate limits, each tenant's chain verifies."""
    five_events(service, clock)
    issued = viewer(service, principal_of(acme))
    admitted(service, issued.token, 5)
    for token in (None, "bad", wrong_secret(acme)):
        with pytest.raises(Unauthenticated):
            service.admit(token, "whoami")
    service.revoke(principal_of(acme), issued.record.id)
    for principal, tenant in ((LOCAL_ADMIN, "default"), (principal_of(acme), "acme")):
        events = chain(store, tenant)
        head = f"{events[-1].seq}:{events[-1].hash}"
        verdict = service.verify(principal, expect_head=head)
        assert (verdict.ok, verdict.events, verdict.head) == (True, len(events), head)


def test_verify_holds_an_anchor_while_the_log_grows_and_names_a_lost_one(service, clock):
    """An anchor taken at seq 3 still holds after more writes; an anchor past the head (the
    tail was deleted) fails at its seq; a bare hash is not an anchor (exit 2)."""
    five_events(service, clock)
    anchor = service.verify(LOCAL_ADMIN).head
    viewer(service)
    assert service.verify(LOCAL_ADMIN, expect_head=anchor).ok is True
    verdict = service.verify(LOCAL_ADMIN, expect_head=f"9:{GENESIS}")
    assert (verdict.ok, verdict.first_bad_seq) == (False, 9)
    with pytest.raises(InvalidInput):
        service.verify(LOCAL_ADMIN, expect_head=GENESIS)


def test_the_correlation_id_is_on_every_event_the_service_writes(service, store, clock, acme):
    """Issue, denials, rate limits and revocations carry the service's correlation id."""
    issued = viewer(service)
    admitted(service, issued.token, 5)
    with pytest.raises(Unauthenticated):
        service.admit(None, "whoami")
    with pytest.raises(Forbidden):
        service.admit(issued.token, "agents register")
    service.revoke(LOCAL_ADMIN, issued.record.id)
    events = chain(store, "default") + chain(store, "acme")
    assert {e.action for e in events} == {"token.create", "rate_limit.denied", "auth.denied",
                                          "authz.denied", "token.revoke"}
    assert {e.correlation_id for e in events} == {CORRELATION}


def test_without_a_correlation_id_events_carry_none(make, store):
    """A service built without one writes correlation_id None."""
    viewer(make(correlation_id=None))
    assert [e.correlation_id for e in chain(store, "default")] == [None]


# ---------------------------------------------------------------------------- messages and limits


@pytest.mark.parametrize(("token", "message"), [
    (None, "no token: pass --token, set ARBITER_TOKEN, or run `arbiter login`"),
    ("", "empty token: --token or ARBITER_TOKEN is set but empty (no profile is used instead)"),
], ids=["missing", "empty"])
def test_a_call_without_a_token_says_how_to_give_one(service, token, message):
    with pytest.raises(Unauthenticated) as caught:
        service.admit(token, "whoami")
    assert caught.value.message == message


def test_a_token_may_live_for_less_than_a_second(service, clock):
    """Any positive lifetime is a lifetime; zero is refused with what to give instead."""
    issued = service.issue(LOCAL_ADMIN, role="viewer", name="blink", expires_in_s=0.5)
    assert issued.record.expires_at == clock() + timedelta(seconds=0.5)
    with pytest.raises(InvalidInput) as caught:
        service.issue(LOCAL_ADMIN, role="viewer", name="never", expires_in_s=0)
    assert (caught.value.field, caught.value.message) == (
        "expires_in", "expires_in: must be a positive duration, e.g. 30d (leave it out for a "
        "token that never expires)")


def test_revoke_checks_the_token_id_before_looking_it_up(service):
    with pytest.raises(InvalidInput) as caught:
        service.revoke(LOCAL_ADMIN, "NOT-AN-ID")
    assert (caught.value.field, caught.value.rule) == ("token_id", "pattern")
    assert caught.value.message.startswith("token_id: 'NOT-AN-ID' is not a valid token id (")


def test_the_last_admin_token_is_revoked_only_with_force(service, acme):
    with pytest.raises(Conflict) as caught:
        service.revoke(principal_of(acme), acme.record.id)
    assert caught.value.message == (
        f"token '{acme.record.id}' is the last active admin token of tenant 'acme': create "
        "another admin token first, or pass --force to leave the tenant without one")
    assert service.revoke(principal_of(acme), acme.record.id, force=True).revoked_at is not None


@pytest.mark.parametrize("lister", ["tokens", "events"])
def test_token_and_event_lists_page_by_a_hundred_by_default(service, lister):
    for n in range(101):
        service.issue(LOCAL_ADMIN, role="viewer", name=f"v{n}", expires_in_s=None)
    page, cursor = getattr(service, lister)(LOCAL_ADMIN)
    assert len(page) == 100 and cursor is not None
    everything, none = getattr(service, lister)(LOCAL_ADMIN, limit=0)
    assert len(everything) == 101 and none is None


@pytest.mark.parametrize("lister", ["tokens", "events"])
def test_a_list_limit_is_a_number_from_zero(service, lister):
    with pytest.raises(InvalidInput) as caught:
        getattr(service, lister)(LOCAL_ADMIN, limit=-1)
    assert (caught.value.field, caught.value.rule) == ("limit", "range")


def test_a_tokenless_write_is_readmitted_as_admin_only_on_a_database_without_tokens(service):
    at = T + timedelta(seconds=1)
    assert service.readmit("acme", None, "agents register", at) == Principal(
        "acme", "admin", None)
    viewer(service)
    with pytest.raises(Unauthenticated) as caught:
        service.readmit("acme", None, "agents register", at)
    assert caught.value.message == (
        "written without a token (security.enabled = false), but the database holds tokens: "
        "only a token it knows can vouch for a write")


def test_a_write_by_another_tenant_s_token_is_not_readmitted(service, acme):
    with pytest.raises(Unauthenticated) as caught:
        service.readmit("default", acme.record.id, "agents list", T)
    assert caught.value.message == (
        f"token {acme.record.id} does not exist in tenant 'default' on the database")


# ---------------------------------------------------------------------------- denial flood
# SPEC §4: refusals are audited as one aggregated event per (tenant, actor, reason) per
# second, so a client without a valid token cannot flood a chain (trust finding "auditflood").

FLOOD = 200


def refuse(service: SecurityService, token: str | None, calls: int = FLOOD,
           command: str = "whoami") -> None:
    """``calls`` admits of ``token``, every one of which must be refused (exit 6)."""
    for _ in range(calls):
        with pytest.raises((Unauthenticated, Forbidden)):
            service.admit(token, command)


def weight(events: list[AuditEvent]) -> int:
    """How many refusals the events stand for: each itself, plus those folded before it."""
    return sum(1 + e.details.get("folded", 0) for e in events)


def test_a_flood_without_a_token_leaves_one_event_per_second(service, store, clock):
    """200 calls with no token in one second: one auth.denied row, not 200; the next
    second's refusal is a new event that carries the 199 folded into the first."""
    refuse(service, None)
    [event] = actions(store, "default", "auth.denied")
    assert (event.actor, event.result, event.at) == (None, "denied", T)
    assert event.details == {"reason": "missing token", "command": "whoami",
                             "window_start": WINDOW}
    clock.advance(1)
    refuse(service, None, 1)
    first, second = actions(store, "default", "auth.denied")
    assert second.details == {"reason": "missing token", "command": "whoami",
                              "window_start": WINDOW + 1, "folded": FLOOD - 1}
    assert weight([first, second]) == FLOOD + 1
    with store() as uow:
        assert uow.audit.verify("default").ok


def test_varying_fake_token_ids_do_not_defeat_the_aggregation(service, store):
    """Ids that exist nowhere are one actor (none): 200 random ids, one event, and no
    attacker's id becomes an actor."""
    for _ in range(FLOOD):
        refuse(service, format_token("".join(secrets.choice("abcdefghijkl") for _ in range(12)),
                                     secrets.token_urlsafe(32)), 1)
    [event] = actions(store, "default", "auth.denied")
    assert event.actor is None and event.details["reason"] == "invalid token"


def test_a_flood_of_wrong_secrets_is_one_event_in_the_named_token_s_tenant(service, store,
                                                                           acme, clock):
    """A wrong secret for a real id is aggregated under that token's id, in its tenant."""
    before = len(chain(store, "acme"))
    refuse(service, wrong_secret(acme))
    assert [(e.action, e.actor, e.details["reason"]) for e in chain(store, "acme")[before:]] == [
        ("auth.denied", acme.record.id, "invalid token")]
    assert actions(store, "default", "auth.denied") == []


def test_each_reason_and_actor_keeps_its_own_event(service, store, acme):
    """Aggregation never hides a different denial: alternating causes in one second leave
    one event per (tenant, actor, reason), each still recorded."""
    issued = viewer(service, principal_of(acme))
    tokens = [None, "", "arb_short_secret", format_token(UNKNOWN_ID, "s" * 43),
              wrong_secret(acme), issued.token]
    for _ in range(FLOOD // len(tokens)):
        for token in tokens:
            refuse(service, token, 1, "agents register")
    mine = {(e.tenant, e.action, e.actor, e.details["reason"])
            for e in chain(store, "default") + chain(store, "acme") if e.result == "denied"}
    assert sorted(mine, key=str) == sorted({
        ("default", "auth.denied", None, "missing token"),
        ("default", "auth.denied", None, "empty token"),
        ("default", "auth.denied", None, "malformed token"),
        ("default", "auth.denied", None, "invalid token"),
        ("acme", "auth.denied", acme.record.id, "invalid token"),
        ("acme", "authz.denied", issued.record.id,
         "role 'viewer' may not run `agents register` (needs manager)")}, key=str)
    denied = [e for e in chain(store, "default") + chain(store, "acme") if e.result == "denied"]
    assert len(denied) == len(tokens)


def test_a_flood_of_forbidden_calls_is_one_authz_event_per_second(service, store, acme,
                                                                  clock):
    """authz.denied is aggregated like auth.denied; a later second still records."""
    issued = viewer(service, principal_of(acme))
    refuse(service, issued.token, FLOOD, "agents register")
    clock.advance(1.5)
    refuse(service, issued.token, 3, "agents register")
    events = actions(store, "acme", "authz.denied")
    assert [(e.actor, e.details["window_start"]) for e in events] == [
        (issued.record.id, WINDOW), (issued.record.id, WINDOW + 1)]
    assert events[1].details["folded"] == FLOOD - 1
