"""The services of a command on a network primary, routed through :class:`Resilience`.

Each proxy has the same methods as the service it wraps. Writes listed in ``KINDS`` are
journaled when the primary cannot take them; reads fall back to the snapshot; anything else
(tokens, tenants, cleanup, reap) needs the primary and exits 10 without it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from arbiter_cli.errors import NotFound, StorageUnavailable
from arbiter_cli.resilience.gateway import Resilience
from arbiter_cli.resilience.records import KINDS, decision_record

READS = frozenset({
    "agents.show", "agents.list", "agents.query", "agents.stats",
    "routing.explain", "routing.history", "routing.stats", "security.admit",
})


class ResilientService:
    def __init__(self, domain: str, resilience: Resilience, primary: Any,
                 local: Callable[[], Any]) -> None:
        self._domain = domain
        self._res = resilience
        self._primary = primary
        self._local = local

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._primary, name)
        if not callable(method):
            return method  # policies and settings the CLI reads from a service
        kind = f"{self._domain}.{name}"
        res = self._res

        def on_local(*args: Any, **kwargs: Any) -> Any:
            try:
                return getattr(self._local(), name)(*args, **kwargs)
            except NotFound as exc:
                if kind not in KINDS:
                    raise
                # The primary may hold it: the snapshot can be up to an interval behind.
                # "Not found" would tell the caller to give up; it must retry instead.
                raise StorageUnavailable(
                    f"database unavailable, and the local snapshot does not know this yet "
                    f"({exc.message}; it may be newer than the last refresh): the write was "
                    "not accepted, retry when the database is back") from None

        def call(*args: Any, **kwargs: Any) -> Any:
            primary = lambda: method(*args, **kwargs)  # noqa: E731
            local = lambda: on_local(*args, **kwargs)  # noqa: E731
            if kind == "routing.route" and kwargs.get("dry_run"):
                return res.read(primary, local)
            if kind in READS:
                return res.read(primary, local)
            if kind in KINDS:
                bound = inspect.signature(method).bind(*args, **kwargs)
                principal = bound.arguments.pop("principal")
                bound.arguments.pop("progress", None)

                def args_of(result: Any) -> dict[str, Any] | None:
                    return journal_args(kind, bound.arguments, result)

                return res.write(kind, principal, primary, local, args_of,
                                 items=batch_size(kind, bound.arguments))
            return res.guarded(primary)

        return call


def batch_size(kind: str, arguments: Mapping[str, Any]) -> int:
    """The items of a batch write (`agents register --file`); 0 for a single write."""
    if kind != "agents.register":
        return 0
    raws = arguments.get("raws")
    return len(raws) if isinstance(raws, list | tuple) else 0


def journal_args(kind: str, arguments: Mapping[str, Any], result: Any) -> dict[str, Any] | None:
    """What replay needs for ``kind``; None when the local call changed nothing."""
    if kind == "routing.route":
        if result.already_routed:
            return None
        return {"decision": decision_record(result.decision)}
    if kind == "routing.outcome":
        if result.already_recorded:
            return None
        return {"outcome": arguments["outcome"].to_dict(),
                "decision_id": result.decision.decision_id}
    args = {name: _plain(value) for name, value in arguments.items()}
    if kind == "agents.register":
        # the uids the agents got here: the journaled decisions that name them must find them
        args["uids"] = [agent.uid for agent in result]
    return args


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
