"""What one request of ``arbiter serve`` costs outside the services (SPEC §15, §13.1): the
per-request wiring opens no file it can share with the process's other requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.conftest import Live, _live
from tests.api.test_resources import AGENT
from tests.helpers import fresh_postgres_database


@pytest.fixture
def pg_live(clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    from arbiter_cli.config import load_settings

    with fresh_postgres_database("wiring") as url:
        monkeypatch.setenv("ARBITER_DATABASE__URL", url)
        yield from _live({**clean_env, "ARBITER_DATABASE__URL": url}, load_settings)


def test_writes_on_a_healthy_primary_do_not_open_the_journal_each(
        pg_live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write asks how many of its tenant's entries wait in the journal. Each request
    opened (and closed) the journal's SQLite file for that: ~0.6 ms of CPU, and the close of
    the last connection deleted the WAL files under another request's open (a 503). The
    process's probe answers it on one connection kept open."""
    from arbiter_cli.resilience import journal

    opened: list[Any] = []
    real = journal.Journal.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        opened.append(args[0] if args else kwargs.get("path"))
        real(self, *args, **kwargs)

    with pg_live.client() as http:
        assert http.post("/v1/agents", json={**AGENT, "capacity": 50}).status_code == 200
        monkeypatch.setattr(journal.Journal, "__init__", counting)
        for n in range(10):
            routed = http.post("/v1/route", json={"task_type": "code-editing",
                                                  "task_id": f"T-{n}"})
            assert routed.status_code == 200, routed.text
            assert routed.json()["meta"]["durability"] == "committed"
            told = http.post("/v1/outcomes", json={"decision_id": routed.json()["decision_id"],
                                                   "success": True})
            assert told.status_code == 200, told.text
    assert len(opened) <= 1, f"the journal was opened {len(opened)} times for 20 writes"
