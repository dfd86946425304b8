"""What the operator tools receive from the composition root (``bootstrap``), as types.

The tools never import ``bootstrap``: ``cli/`` hands them ``bootstrap.scratch_app`` (a
``ScratchStore``), and the app it yields is a ``Wired``: the services on one store.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.config import Settings
    from arbiter_cli.ports import AgentsPort, RoutingPort, SecurityPort


class Wired(Protocol):
    """The services of one store, and its engine (None for the memory store)."""

    engine: Engine | None

    @property
    def agents(self) -> AgentsPort: ...

    @property
    def routing(self) -> RoutingPort: ...

    @property
    def security(self) -> SecurityPort: ...


class ScratchStore(Protocol):
    """``bootstrap.scratch_app``: an initialized app on a scratch store, and where it lives."""

    def __call__(self, settings: Settings, backend: str, *, purpose: str,
                 database_url: str | None = None,
                 keep: bool = False) -> AbstractContextManager[tuple[Wired, str]]: ...
