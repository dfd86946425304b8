"""An audit append that loses the race for its ``seq`` chains again at the new head.

The append reads the chain head, then inserts ``seq = head + 1`` unless that key exists
(``adapters/sql/security.py``). Here another transaction commits an event between the two
statements, every time the first attempt is about to insert: the late append must come back
with the next ``seq``, chained to the event that won, and the chain must verify.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event

from arbiter_cli.domain.principal import Principal
from tests.helpers import fresh_postgres_database


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
                with app.uow(write=True) as other:  # another connection, committed first
                    won = other.audit.append("default", actor=None, action="winner",
                                             target=None, result="ok", correlation_id=None,
                                             details={})
                    other.commit()
                interleaved.append(won.seq)

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
