"""The anchored audit (SPEC §4.1) on SQLite and PostgreSQL, through the real CLI.

Someone with write access to the database edits ``audit_events`` directly: deletes the tail,
deletes every row, edits an event and recomputes the chain without the key, or leaves a row
that cannot be decoded. ``audit verify`` must say so, exit 1, naming the seq, never exit 70;
and an anchor taken earlier must keep holding while the log grows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from arbiter_cli.domain.security import GENESIS, chain_hash
from tests.helpers import cli

KEY = "k3y-" + "x" * 40


@pytest.fixture
def store(sql_url: str, clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[dict[str, Any]]:
    """An initialized database with a few audited writes; ``sql(statement)`` edits it."""
    monkeypatch.setenv("ARBITER_DATABASE__URL", sql_url)
    admin = cli("--json", "init").json()["admin_token"]
    engine = create_engine(sql_url)

    def sql(statement: str, **params: Any) -> None:
        with engine.begin() as conn:
            conn.execute(text(statement), params)

    try:
        yield {"admin": admin, "sql": sql, "engine": engine,
               "postgres": engine.dialect.name == "postgresql"}
    finally:
        engine.dispose()


def register(admin: str, *ids: str) -> None:
    for agent_id in ids:
        result = cli("--json", "--token", admin, "agents", "register", "--id", agent_id,
                     "--name", "n", "--model-family", "x", "--task-type", "testing")
        assert result.exit_code == 0, result


def verify(admin: str, *extra: str) -> Any:
    return cli("--json", "--token", admin, "audit", "verify", *extra)


def head(admin: str) -> str:
    result = verify(admin)
    assert result.exit_code == 0, result
    return result.json()["head"]  # type: ignore[no-any-return]


def broken_at(result: Any, seq: int) -> str:
    assert result.exit_code == 1, result
    error = result.error()
    assert error["code"] == "check_failed"
    assert error["details"]["first_bad_seq"] == seq, error
    assert "Traceback" not in result.stderr
    return error["message"]  # type: ignore[no-any-return]


def test_an_anchor_holds_while_the_live_log_grows(store):
    register(store["admin"], "a1")
    anchor = head(store["admin"])
    register(store["admin"], "a2", "a3")
    grown = verify(store["admin"], "--expect-head", anchor)
    assert grown.exit_code == 0, grown
    assert grown.json()["head_seq"] == int(anchor.split(":")[0]) + 2


def test_deleting_the_tail_fails_at_the_anchored_seq(store):
    register(store["admin"], "a1", "a2", "a3")
    anchor = head(store["admin"])
    seq = int(anchor.split(":")[0])
    store["sql"]("DELETE FROM audit_events WHERE tenant = 'default' AND seq >= :s", s=seq - 1)
    assert verify(store["admin"]).exit_code == 0  # the rest still links: only the anchor knows
    message = broken_at(verify(store["admin"], "--expect-head", anchor), seq)
    assert "removed from the tail" in message


def test_deleting_every_row_fails_at_the_anchored_seq(store):
    register(store["admin"], "a1", "a2")
    anchor = head(store["admin"])
    store["sql"]("DELETE FROM audit_events")
    emptied = verify(store["admin"])
    assert emptied.exit_code == 0 and emptied.json()["head"] == f"0:{GENESIS}"
    broken_at(verify(store["admin"], "--expect-head", anchor), int(anchor.split(":")[0]))


def test_a_rewritten_event_under_the_anchor_fails_at_its_seq(store):
    """Edit seq 2 and recompute the whole chain: it links again, but not to the anchor."""
    register(store["admin"], "a1", "a2", "a3")
    anchor = head(store["admin"])
    recompute_from(store, 2)
    assert verify(store["admin"]).exit_code == 0  # unkeyed: the rewrite verifies on its own
    broken_at(verify(store["admin"], "--expect-head", anchor), int(anchor.split(":")[0]))


def recompute_from(store: dict[str, Any], seq: int, *, key: bytes | None = None) -> None:
    """Edit the event at ``seq`` and re-hash it and every later event (plain SHA-256)."""
    events = cli("--json", "--token", store["admin"], "audit", "list", "--limit", "0",
                 env={"ARBITER_SECURITY__AUDIT_KEY": KEY} if key else None).json()["items"]
    events.sort(key=lambda e: e["seq"])
    prev = GENESIS if seq == 1 else events[seq - 2]["hash"]
    for event in events[seq - 1:]:
        body = {k: event[k] for k in ("tenant", "seq", "at", "actor", "action", "target",
                                       "result", "correlation_id", "details")}
        if event["seq"] == seq:
            body["details"] = {**body["details"], "forged": True}
        new_hash = chain_hash(body, prev)
        store["sql"]("UPDATE audit_events SET details = :d, prev_hash = :p, hash = :h "
                     "WHERE tenant = :t AND seq = :s", d=json.dumps(body["details"]), p=prev,
                     h=new_hash, t=event["tenant"], s=event["seq"])
        prev = new_hash


def test_with_a_key_recomputing_the_chain_without_it_is_detected(store, monkeypatch):
    """security.audit_key seals each event with an HMAC: an edit recomputed with plain
    SHA-256 fails at the edited seq, with no anchor at all."""
    monkeypatch.setenv("ARBITER_SECURITY__AUDIT_KEY", KEY)
    register(store["admin"], "a1", "a2", "a3")
    verified = verify(store["admin"])
    assert verified.exit_code == 0 and verified.json()["keyed"] is True, verified
    first_keyed = 2  # seq 1 (the bootstrap token) was written before the key was set
    recompute_from(store, first_keyed + 1, key=KEY.encode())
    message = broken_at(verify(store["admin"]), first_keyed + 1)
    assert "recomputed without the key" in message
    monkeypatch.delenv("ARBITER_SECURITY__AUDIT_KEY")
    assert verify(store["admin"]).exit_code == 1  # a keyed chain needs its key to verify


def test_recomputing_every_event_without_the_key_is_detected_at_the_head(store, monkeypatch):
    monkeypatch.setenv("ARBITER_SECURITY__AUDIT_KEY", KEY)
    register(store["admin"], "a1", "a2")
    recompute_from(store, 1, key=KEY.encode())
    last = int(verify(store["admin"]).error()["details"]["first_bad_seq"])
    assert last >= 2
    message = broken_at(verify(store["admin"]), last)
    assert "recomputed without the key" in message


def test_the_key_is_a_secret_nobody_sees(store, monkeypatch):
    """Masked by config show, absent from every output and debug log; too short is exit 3."""
    monkeypatch.setenv("ARBITER_SECURITY__AUDIT_KEY", KEY)
    register(store["admin"], "a1")  # a keyed event: until one exists, verify says so (exit 1)
    shown = cli("--json", "config", "show")
    assert shown.exit_code == 0 and KEY not in shown.stdout + shown.stderr
    assert '"***"' in shown.stdout
    logged = cli("--json", "--log-level", "debug", "--token", store["admin"], "audit", "verify")
    assert logged.exit_code == 0 and KEY not in logged.stdout + logged.stderr
    short = cli("--json", "config", "validate", env={"ARBITER_SECURITY__AUDIT_KEY": "short"})
    assert short.exit_code == 3 and "security.audit_key" in short.stderr + short.stdout
    assert "short" not in short.stderr.replace("security", "")


def undecodable_edits(postgres: bool) -> list[tuple[str, str]]:
    if postgres:
        return [("details", "'[1, 2]'::jsonb"), ("details", "'\"text\"'::jsonb"),
                ("at", "'infinity'::timestamptz"), ("at", "'294276-01-01'::timestamptz")]
    return [("details", "'not json'"), ("details", "'[1, 2]'"), ("at", "'yesterday'"),
            ("at", "12345"), ("actor", "x'00ff'"), ("seq", "'two'")]


def test_a_row_that_cannot_be_decoded_is_tampering_at_its_seq(store):
    """Each kind of undecodable row: exit 1 naming its seq, for verify and list, never 70."""
    register(store["admin"], "a1", "a2")
    for column, value in undecodable_edits(store["postgres"]):
        with store["engine"].begin() as conn:
            original = conn.execute(text(f"SELECT {column} FROM audit_events WHERE seq = 2")
                                    ).scalar_one()
            conn.execute(text(f"UPDATE audit_events SET {column} = {value} WHERE seq = 2"))
        try:
            result = verify(store["admin"])
            message = broken_at(result, 2)  # a seq that is not a number leaves seq 2 missing
            assert ("missing" if column == "seq" else "cannot be decoded") in message, (
                column, value, message)
            listed = cli("--json", "--token", store["admin"], "audit", "list")
            assert listed.exit_code == 1, (column, value, listed)
            assert "Traceback" not in listed.stderr
        finally:
            restore = json.dumps(original) if column == "details" and store["postgres"] else None
            with store["engine"].begin() as conn:
                if column == "seq":
                    conn.execute(text("UPDATE audit_events SET seq = 2 WHERE seq = 'two'"))
                elif restore is not None:
                    conn.execute(text(f"UPDATE audit_events SET {column} = CAST(:v AS jsonb) "
                                      "WHERE seq = 2"), {"v": restore})
                else:
                    conn.execute(text(f"UPDATE audit_events SET {column} = :v WHERE seq = 2"),
                                 {"v": original})
        assert verify(store["admin"]).exit_code == 0, (column, value)
