"""An admission reads the token, spends its bucket and stamps its last use together
(``TokenRepository.admit``: one statement on PostgreSQL). Only an admissible token spends:
a wrong secret, a revoked token or a role that may not run the command leaves the bucket as it
was; a per-token rate and burst are the ones spent; the last use is the database's time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from arbiter_cli.domain.principal import Principal
from arbiter_cli.errors import Forbidden, RateLimited, Unauthenticated
from tests.helpers import postgres_url

ADMIN = Principal.local_admin()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, test_settings: Any) -> Iterator[Any]:
    from arbiter_cli.bootstrap import scratch_app

    url = postgres_url() if request.param == "postgres" else None
    with scratch_app(test_settings, request.param, purpose="t", database_url=url) as (found, _):
        yield found


def bucket(app: Any, token_id: str) -> tuple[float, float] | None:
    with app.engine.connect() as conn:
        row = conn.execute(text("SELECT tokens, updated_at FROM rate_buckets "
                                "WHERE token_id = :t"), {"t": token_id}).first()
    return None if row is None else (float(row[0]), float(row[1]))


def test_only_an_admissible_token_spends_its_bucket(app: Any) -> None:
    viewer = app.security.issue(ADMIN, role="viewer", name="v", expires_in_s=None,
                                rate=None, burst=None)
    token_id = viewer.record.id
    wrong = viewer.token[: -4] + ("aaaa" if not viewer.token.endswith("aaaa") else "bbbb")
    with pytest.raises(Unauthenticated):
        app.security.admit(wrong, "agents list")
    with pytest.raises(Forbidden):  # a viewer may not route
        app.security.admit(viewer.token, "route task")
    assert bucket(app, token_id) is None  # neither refusal spent anything
    app.security.admit(viewer.token, "agents list")
    spent = bucket(app, token_id)
    assert spent is not None and spent[0] == pytest.approx(app.settings.security.rate_limit.burst
                                                           - 1, abs=1e-6)
    with app.uow() as uow:
        record = uow.tokens.get(token_id)
        now = uow.now()
    assert record is not None and record.last_used_at is not None
    assert abs((now - record.last_used_at).total_seconds()) < 60  # the database's time
    app.security.revoke(ADMIN, token_id)
    with pytest.raises(Unauthenticated):
        app.security.admit(viewer.token, "agents list")
    assert bucket(app, token_id) == spent  # a revoked token spends nothing


def test_a_token_s_own_burst_is_the_one_spent(app: Any) -> None:
    small = app.security.issue(ADMIN, role="viewer", name="s", expires_in_s=None, rate=0.001,
                               burst=2)
    app.security.admit(small.token, "agents list")
    app.security.admit(small.token, "agents list")
    with pytest.raises(RateLimited):
        app.security.admit(small.token, "agents list")
