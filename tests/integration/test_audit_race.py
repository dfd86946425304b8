"""An audit append that loses the race for its ``seq`` chains again at the new head.

The append reads the chain head, then inserts ``seq = head + 1`` unless that key exists
(``adapters/sql/security.py``). Here another transaction commits an event between the two
statements, every time the first attempt is about to insert: the late append must come back
with the next ``seq``, chained to the event that won, and the chain must verify.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from arbiter_cli.domain.principal import Principal
from tests.helpers import fresh_postgres_database


def commit_winner(app: Any) -> int:
    """An audit append on another connection, committed: the seq it took."""
    with app.uow(write=True) as other:
        won = other.audit.append("default", actor=None, action="winner", target=None,
                                 result="ok", correlation_id=None, details={})
        other.commit()
    return int(won.seq)

@pytest.mark.postgres
def test_an_append_that_loses_its_seq_chains_at_the_new_head(test_settings):
    from arbiter_cli.bootstrap import scratch_app

    with fresh_postgres_database("auditrace") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        admin = Principal.local_admin()
        interleaved: list[int] = []

        def other_append_first(conn, _cursor, statement, params, _context, _many):  # type: ignore[no-untyped-def]
            if (statement.startswith("INSERT INTO audit_events") and not interleaved
                    and params.get("action") == "late"):
                interleaved.append(params["seq"])
                interleaved.append(commit_winner(app))  # another connection, first

        event.listen(app.engine, "before_cursor_execute", other_append_first)
        try:
            with app.uow(write=True) as uow:
                late = uow.audit.append("default", actor=None, action="late", target=None,
                                        result="ok", correlation_id=None, details={})
                uow.commit()
        finally:
            event.remove(app.engine, "before_cursor_execute", other_append_first)

        tried, won_seq = interleaved
        assert won_seq == tried  # the winner took the seq the late append had read
        assert late.seq == won_seq + 1
        with app.uow() as uow:
            events = uow.audit.events("default", ascending=True)
        assert [e.action for e in events[-2:]] == ["winner", "late"]
        assert events[-1].prev_hash == events[-2].hash
        verdict = app.security.verify(admin)
        assert verdict.ok and verdict.head_seq == late.seq


@pytest.mark.postgres
@pytest.mark.parametrize("action", ["route.task", "route.outcome"])
def test_a_head_read_with_the_claim_or_the_lock_that_went_stale_chains_again(test_settings,
                                                                               action):
    """The route's claim and the outcome's decision lock read the audit chain head for the
    append (``SqlAudit.prime``): an event committed between that statement and the audit
    insert makes the insert lose its ``seq``, and the append chains at the new head."""
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.domain.routing import Outcome

    with fresh_postgres_database("auditprime") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        admin = Principal.local_admin()
        app.agents.register(admin, [{"id": "a1", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"], "capacity": 5}])
        interleaved: list[int] = []
        inserts: list[str] = []

        def other_append_first(conn, _cursor, statement, params, _context, _many):  # type: ignore[no-untyped-def]
            # An outcome's insert carries its deferred writes, with every value bound in it.
            if "INSERT INTO audit_events" not in statement:
                return
            values = list(params.values())
            inserts.extend(v for v in values if v in (action, "winner"))
            if action in values and not interleaved:
                with app.uow() as uow:  # the seq this insert tries: the committed head's next
                    interleaved.append(uow.audit.events("default")[0].seq + 1)
                interleaved.append(commit_winner(app))  # another connection, first

        event.listen(app.engine, "before_cursor_execute", other_append_first)
        try:
            decision = app.routing.route(admin, {"task_type": "code-editing",
                                                 "task_id": "t-1"}).decision
            app.routing.outcome(admin, Outcome(success=True, quality=0.8),
                                decision_id=decision.decision_id)
        finally:
            event.remove(app.engine, "before_cursor_execute", other_append_first)

        tried, won_seq = interleaved
        assert won_seq == tried
        assert inserts.count(action) == 2  # the stale head inserted nothing; chained again
        with app.uow() as uow:
            events = uow.audit.events("default", ascending=True)
        ours = next(e for e in events if e.action == action)
        assert ours.seq == won_seq + 1
        assert ours.prev_hash == next(e for e in events if e.seq == won_seq).hash
        assert ours.at >= next(e for e in events if e.seq == won_seq).at
        assert app.security.verify(admin).ok
