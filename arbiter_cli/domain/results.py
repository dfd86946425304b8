"""What the use cases answer: plain values the services return and the CLI renders (pure).

They live below the services so that ``ports.py`` can name them in the service Protocols.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arbiter_cli.domain.agents import Agent
from arbiter_cli.domain.routing import Decision
from arbiter_cli.domain.security import TokenRecord


@dataclass(frozen=True)
class Page:
    items: builtins.list[Agent]
    next_cursor: str | None


@dataclass(frozen=True)
class Routed:
    decision: Decision
    already_routed: bool = False
    #: ``over_capacity`` flags a replayed decision set or cleared: ``{decision id: flag}``
    flags: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    decision: Decision
    already_recorded: bool = False
    flags: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedToken:
    record: TokenRecord
    token: str  # shown once

    def to_dict(self) -> dict[str, Any]:
        data = self.record.to_dict()
        return {"id": data["id"], "token": self.token, "role": data["role"],
                "tenant": data["tenant"], "expires_at": data["expires_at"],
                "name": data["name"], "rate": data["rate"], "burst": data["burst"]}


@dataclass(frozen=True)
class Bootstrap:
    created: bool  # the tenant is new
    issued: IssuedToken | None  # the first admin token of the database, if this call made it
