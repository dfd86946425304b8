"""Trust finding "auditflood" (SPEC §4): refused calls cannot flood an audit chain.

Authentication and authorization come before the rate limit, so before this rule every
request without a valid token appended one row (100 requests → 100 rows in 0.55 s). Now a
refusal is one event per (tenant, actor, reason) per second of the database's clock, with the
number folded into earlier events carried on the key's next one (docs/security.md, "Denials
are aggregated"). Real server, real HTTP, SQLite and PostgreSQL; the bounds are in seconds of
wall time measured around the flood, so a loaded machine cannot make them flaky.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx

from arbiter_cli.domain.security import format_token, parse_token
from tests.api.conftest import Live

FLOOD = 200


def flood(live: Live, headers: dict[str, str], calls: int = FLOOD) -> tuple[float, float]:
    """``calls`` GET /v1/whoami, every one refused 401; the wall-time span they took."""
    started = time.time()
    with httpx.Client(base_url=live.url, headers=headers, timeout=20) as client:
        for _ in range(calls):
            assert client.get("/v1/whoami").status_code == 401
    return started, time.time()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def denials(live: Live, reason: str) -> list[dict[str, Any]]:
    """default's auth.denied events of ``reason``, oldest first (read as its admin)."""
    with live.client() as admin:
        answer = admin.get("/v1/audit", params={"action": "auth.denied", "limit": "0"})
    assert answer.status_code == 200, answer.text
    found = [e for e in answer.json()["items"] if e["details"]["reason"] == reason]
    return sorted(found, key=lambda e: e["seq"])


def seconds(started: float, finished: float) -> int:
    """How many whole seconds [started, finished] touches: the most events one key may leave."""
    return int(finished) - int(started) + 1


def weight(events: list[dict[str, Any]]) -> int:
    return sum(1 + e["details"].get("folded", 0) for e in events)


def next_second(after: float) -> None:
    while int(time.time()) <= int(after):
        time.sleep(0.05)


def test_a_flood_without_a_token_is_one_event_per_second_with_its_count(live: Live) -> None:
    """200 calls with no token: at most one row per second they spanned, not 200; one more
    call in a later second is a new event, and the events account for every call."""
    started, finished = flood(live, {})
    events = denials(live, "missing token")
    assert 1 <= len(events) <= seconds(started, finished), (len(events), finished - started)
    assert {e["actor"] for e in events} == {None}
    assert len({e["details"]["window_start"] for e in events}) == len(events)
    next_second(finished)
    flood(live, {}, 1)
    after = denials(live, "missing token")
    assert len(after) == len(events) + 1
    assert after[-1]["details"]["window_start"] > events[-1]["details"]["window_start"]
    assert weight(after) == FLOOD + 1  # every refusal counted, none lost to aggregation
    with live.client() as admin:
        assert admin.get("/v1/audit/verify").json()["ok"] is True


def test_random_fake_token_ids_cannot_split_the_aggregation(live: Live) -> None:
    """An id that exists nowhere is the empty actor, whatever the id: 200 random ids leave at
    most one row per second, and no attacker's string becomes an actor."""
    ids = ["".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
           for _ in range(FLOOD)]
    started = time.time()
    with httpx.Client(base_url=live.url, timeout=20) as client:
        for token_id in ids:
            token = format_token(token_id, secrets.token_urlsafe(32))
            assert client.get("/v1/whoami", headers=bearer(token)).status_code == 401
    finished = time.time()
    events = denials(live, "invalid token")
    assert 1 <= len(events) <= seconds(started, finished)
    assert {e["actor"] for e in events} == {None}
    assert {e["details"]["token_id"] for e in events} <= set(ids)


def test_a_wrong_secret_flood_is_aggregated_under_the_real_token_id(live: Live) -> None:
    """A wrong secret for a real id: that token's id is the actor, one row per second."""
    token_id, secret = parse_token(live.token)
    wrong = format_token(token_id, ("B" if secret[0] != "B" else "C") + secret[1:])
    started, finished = flood(live, bearer(wrong))
    events = denials(live, "invalid token")
    assert 1 <= len(events) <= seconds(started, finished)
    assert {e["actor"] for e in events} == {token_id}
