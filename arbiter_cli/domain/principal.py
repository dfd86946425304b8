"""Who is calling: every service call receives a ``Principal``."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("viewer", "orchestrator", "manager", "admin")
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    tenant: str
    role: str
    token_id: str | None = None

    @classmethod
    def local_admin(cls, tenant: str = DEFAULT_TENANT) -> Principal:
        """The principal of direct local access before tokens exist (SPEC §4 no-token list)."""
        return cls(tenant=tenant, role="admin", token_id=None)
