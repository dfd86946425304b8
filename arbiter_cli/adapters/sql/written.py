"""The rows a command's write committed on the primary, for the host's snapshot (SPEC §7).

While a :class:`Written` is set in ``current_written`` (the resilience gateway sets one around a
write on a network primary), the SQL repositories note every agent row a slot claim, a release
or an agent update left behind (the whole row, read back with ``RETURNING``, so its ``version``
is the primary's), every decision they opened and every decision they closed. Rows of a
transaction count only once it committed: a rolled-back attempt (a retry) leaves nothing.
After the commit the gateway writes them through to the local snapshot
(``LocalStore.write_through``), so a host that later runs degraded knows what it itself
claimed and released, not only what its last refresh saw.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Written:
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> agent row
    opened: dict[str, dict[str, Any]] = field(default_factory=dict)  # decision id -> row
    closed: set[str] = field(default_factory=set)  # decision ids
    _agents: dict[str, dict[str, Any]] = field(default_factory=dict)  # this transaction's
    _opened: dict[str, dict[str, Any]] = field(default_factory=dict)
    _closed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.agents or self.opened or self.closed)

    # ------------------------------------------------------------------ one transaction

    def begin(self) -> None:
        self._agents, self._opened, self._closed = {}, {}, set()

    def agent(self, row: dict[str, Any]) -> None:
        self._agents[str(row["uid"])] = row

    def forget_agent(self, uid: str) -> None:
        """The agent's capabilities changed (or it is gone): the refresh copies it whole."""
        self._agents.pop(uid, None)
        self.agents.pop(uid, None)

    def decision_opened(self, row: dict[str, Any]) -> None:
        self._opened[str(row["decision_id"])] = row

    def decision_closed(self, decision_id: str) -> None:
        self._opened.pop(decision_id, None)
        self._closed.add(decision_id)

    def committed(self) -> None:
        self.agents.update(self._agents)
        for decision_id in self._closed:
            self.opened.pop(decision_id, None)
        self.opened.update(self._opened)
        self.closed |= self._closed
        self.begin()


current_written: ContextVar[Written | None] = ContextVar("arbiter_current_written", default=None)
