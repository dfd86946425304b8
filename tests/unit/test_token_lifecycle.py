"""Tokens and tenants that cannot be lost (SPEC §4.1), on the in-memory store: the bootstrap,
tenants with their admin token, the last admin, and positive lifetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.security import TokenRecord, is_active, is_last_admin
from arbiter_cli.errors import Conflict, InvalidInput
from arbiter_cli.services.security import RatePolicy, SecurityService
from tests.helpers import FakeClock

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def store(clock: FakeClock) -> MemoryUnitOfWorkFactory:
    return MemoryUnitOfWorkFactory(clock=clock)  # the fake clock is the database's clock


@pytest.fixture
def service(store: MemoryUnitOfWorkFactory, clock: FakeClock) -> SecurityService:
    return SecurityService(store, RatePolicy(), clock)


def tenants(store: MemoryUnitOfWorkFactory) -> list[str]:
    with store() as uow:
        return uow.tenants.list()


def token_count(store: MemoryUnitOfWorkFactory) -> int:
    with store() as uow:
        return uow.tokens.count()


def record(role: str, *, id: str = "t1", revoked: bool = False,
           expires_in_s: float | None = None) -> TokenRecord:
    return TokenRecord(id=id, tenant="acme", name=id, role=role, secret_hash="0" * 64,
                       created_at=NOW, revoked_at=NOW if revoked else None,
                       expires_at=None if expires_in_s is None
                       else NOW + timedelta(seconds=expires_in_s))


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_creates_the_tenant_and_its_first_admin_in_one_go(service, store):
    boot = service.bootstrap()
    assert boot.created and boot.issued is not None
    assert tenants(store) == ["default"] and token_count(store) == 1
    again = service.bootstrap()
    assert (again.created, again.issued) == (False, None)


def test_a_refusal_before_the_token_commits_nothing(service, store):
    """``before_issue`` raising (say, the profile is taken) leaves no tenant and no token."""

    def taken() -> None:
        raise Conflict("profile taken")

    with pytest.raises(Conflict):
        service.bootstrap(before_issue=taken)
    assert tenants(store) == [] and token_count(store) == 0


def test_bootstrap_without_issue_makes_a_throwaway_database(service, store):
    boot = service.bootstrap(issue=False, before_issue=lambda: pytest.fail("not called"))
    assert boot.created and boot.issued is None
    assert not service.holds_tokens()
    service.bootstrap()
    assert service.holds_tokens()


# ---------------------------------------------------------------------------- tenants


def test_a_tenant_and_its_admin_token_are_created_together(service, store):
    issued = service.create_tenant("acme")
    assert issued.record.tenant == "acme" and issued.record.role == "admin"
    with pytest.raises(Conflict):
        service.create_tenant("acme")
    assert token_count(store) == 1


# ---------------------------------------------------------------------------- last admin


@pytest.mark.parametrize(("others", "last"), [
    ([], True),
    ([record("admin", id="t2")], False),
    ([record("admin", id="t2", revoked=True)], True),
    ([record("admin", id="t2", expires_in_s=0)], True),
    ([record("admin", id="t2", expires_in_s=60)], False),
    ([record("manager", id="t2"), record("viewer", id="t3")], True),
])
def test_is_last_admin(others: list[TokenRecord], last: bool):
    me = record("admin")
    assert is_last_admin(me, [me, *others], NOW) is last


def test_a_token_that_is_no_active_admin_is_never_the_last_admin():
    for me in (record("manager"), record("admin", revoked=True),
               record("admin", expires_in_s=-1)):
        assert not is_last_admin(me, [me], NOW)
    assert is_active(record("admin", expires_in_s=1), NOW)
    assert not is_active(record("admin", expires_in_s=0), NOW)


def test_revoking_the_last_admin_needs_force(service, store):
    admin = service.create_tenant("acme")
    me = Principal("acme", "admin", admin.record.id)
    with pytest.raises(Conflict, match="last active admin"):
        service.revoke(me, admin.record.id)
    second = service.issue(me, role="admin", name="second", expires_in_s=None)
    assert service.revoke(me, admin.record.id).revoked_at == NOW
    with pytest.raises(Conflict):
        service.revoke(me, second.record.id)
    assert service.revoke(me, second.record.id, force=True).revoked_at == NOW


# ---------------------------------------------------------------------------- lifetimes


@pytest.mark.parametrize("seconds", [0, -1, -0.5, float("-inf"), float("nan")])
def test_a_lifetime_must_be_positive(service, seconds: float):
    service.create_tenant("acme")
    with pytest.raises(InvalidInput) as refused:
        service.issue(Principal("acme", "admin"), role="viewer", name="v",
                      expires_in_s=seconds)
    assert (refused.value.field, refused.value.rule) == ("expires_in", "positive")
