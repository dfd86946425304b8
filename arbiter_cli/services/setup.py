"""``arbiter init``: migrate the store and create tenant ``default`` (idempotent)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arbiter_cli.domain.principal import DEFAULT_TENANT
from arbiter_cli.ports import Clock, UnitOfWorkFactory


@dataclass(frozen=True)
class InitResult:
    tenant: str
    created: bool
    revision: str | None
    admin_token: str | None = None
    credentials_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "admin_token": self.admin_token,
                "credentials_file": self.credentials_file, "revision": self.revision,
                "created": self.created}


def initialize(
    uow: UnitOfWorkFactory, migrate: Callable[[], str | None], clock: Clock,
    tenant: str = DEFAULT_TENANT,
) -> InitResult:
    revision = migrate()
    with uow(write=True) as work:
        created = work.tenants.add(tenant, clock())
        work.commit()
    return InitResult(tenant=tenant, created=created, revision=revision)
