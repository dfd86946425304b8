"""``arbiter init``: migrate the store, then bootstrap tenant ``default`` (idempotent)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arbiter_cli.domain.principal import DEFAULT_TENANT
from arbiter_cli.domain.results import Bootstrap
from arbiter_cli.ports import Clock, UnitOfWorkFactory


@dataclass(frozen=True)
class InitResult:
    tenant: str
    created: bool
    revision: str | None
    admin_token: str | None = None
    credentials_file: str | None = None
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "admin_token": self.admin_token,
                "credentials_file": self.credentials_file, "revision": self.revision,
                "created": self.created, "profile": self.profile}


def initialize(
    uow: UnitOfWorkFactory, migrate: Callable[[], str | None], clock: Clock,
    tenant: str = DEFAULT_TENANT,
) -> InitResult:
    """Migrate and create ``tenant``, no token: the scratch stores of bench and soak."""
    revision = migrate()
    with uow(write=True) as work:
        created = work.tenants.add(tenant, clock())
        work.commit()
    return InitResult(tenant=tenant, created=created, revision=revision)


def init_database(
    migrate: Callable[[], str | None], bootstrap: Callable[[], Bootstrap],
    tenant: str = DEFAULT_TENANT,
) -> InitResult:
    """``arbiter init`` and ``demo``: migrate to head, then create ``tenant`` and, on a database
    without any token, its first admin token (``SecurityService.bootstrap``, which the caller
    runs under the migration lock so that concurrent inits issue exactly one)."""
    revision = migrate()
    boot = bootstrap()
    return InitResult(tenant=tenant, created=boot.created, revision=revision,
                      admin_token=None if boot.issued is None else boot.issued.token)
