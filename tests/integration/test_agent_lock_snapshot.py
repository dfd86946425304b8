"""A locking agent lookup on PostgreSQL reads the agent (its capabilities are on the row) and
its arms with the lock (``SqlAgents._get_locked``): one round trip. The arms come from the
statement's snapshot, so a commit on the agent while the lookup waited for its lock must make
it read them again: the caller (an outcome folding its arm, an agent update) never works from
the earlier ones."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from arbiter_cli.adapters.sql.capabilities import encode
from arbiter_cli.domain.principal import Principal
from tests.helpers import fresh_postgres_database


@pytest.mark.postgres
def test_a_lookup_that_waited_for_the_lock_reads_the_committed_capabilities_and_arms(
        test_settings: Any) -> None:
    from arbiter_cli.bootstrap import scratch_app

    with fresh_postgres_database("agentlock") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        admin = Principal.local_admin()
        app.agents.register(admin, [{"id": "a1", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"], "capacity": 5}])
        found: dict[str, Any] = {}
        with app.uow(write=True) as holder:
            uid = holder.agents.get("default", "a1", for_update=True).uid  # the lock
            assert holder.routing.arm("default", uid, "code-editing") is None

            def waiter() -> None:
                with app.uow(write=True) as uow:
                    agent = uow.agents.get("default", "a1", for_update=True)  # waits
                    found["agent"] = agent
                    found["arm"] = uow.routing.arm("default", uid, "code-editing")

            thread = threading.Thread(target=waiter)
            thread.start()
            time.sleep(0.5)  # the waiter's statement took its snapshot and waits for the lock
            conn = holder._conn
            # as an update does: the row's capabilities and version, and the child rows
            conn.execute(text("UPDATE agents SET version = version + 1, capabilities = :c "
                              "WHERE uid = :u"),
                         {"u": uid, "c": encode(("code-editing",), ("Rust",), ())})
            conn.execute(text("INSERT INTO agent_languages (agent_uid, language_key, language,"
                              " tenant) VALUES (:u, 'rust', 'Rust', 'default')"), {"u": uid})
            conn.execute(text("INSERT INTO arms (agent_uid, task_type, tenant, alpha, beta,"
                              " outcomes, updated_at) VALUES (:u, 'code-editing', 'default',"
                              " 3, 1, 2, now())"), {"u": uid})
            holder.commit()
        thread.join(10)
        assert not thread.is_alive()
        assert found["agent"].languages == ("Rust",)
        assert found["agent"].version == 2
        assert found["arm"] is not None and (found["arm"].alpha, found["arm"].outcomes) == (3, 2)
