"""Security views and verdicts: the local principal, token views, the anchored-head verdict and
nested redaction (first written to kill the mutants of docs/mutation.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.security import Anchor, AuditEvent, TokenRecord, redact, seal, verify

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_local_principal_is_the_admin_of_default_without_a_token():
    assert Principal.local_admin() == Principal(tenant="default", role="admin", token_id=None)
    assert Principal.local_admin("acme") == Principal("acme", "admin", None)


def test_a_token_view_renders_revocation_and_last_use_times():
    record = TokenRecord(id="abcdefghijkl", tenant="acme", name="ci", role="viewer",
                         secret_hash="0" * 64, created_at=T0,
                         revoked_at=T0 + timedelta(hours=2),
                         last_used_at=T0 + timedelta(hours=1, milliseconds=5))
    view = record.to_dict()
    assert view["revoked_at"] == "2026-03-01T14:00:00.000Z"
    assert view["last_used_at"] == "2026-03-01T13:00:00.005Z"


def chain(n: int) -> list[AuditEvent]:
    events, prev = [], "0" * 64
    for seq in range(1, n + 1):
        event = seal("acme", seq, T0 + timedelta(seconds=seq), prev, actor="tok", action="a",
                     target=None, result="ok", correlation_id=None, details={})
        events.append(event)
        prev = event.hash
    return events


def test_a_truncated_anchor_explains_itself_in_full():
    events = chain(3)
    verdict = verify(events[:2], Anchor(3, events[-1].hash))
    assert verdict.reason == ("the chain ends at seq 2, before the anchored seq 3: entries "
                              "were removed from the tail")


def test_redaction_reaches_into_nested_details_with_the_same_secrets():
    details = {
        "outer": {"token": "arb_x", "note": "contains s3cret here", "keep": 1,
                  "inner": {"password": "p", "id": "a1"}},
        "top": "s3cret",
    }
    assert redact(details, ["s3cret"]) == {
        "outer": {"note": "***", "keep": 1, "inner": {"id": "a1"}},
        "top": "***",
    }
