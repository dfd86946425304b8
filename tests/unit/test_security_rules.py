"""Security rules of SPEC §4 in the pure domain: roles, token format and checks, the token
bucket, the hash-chained audit log and redaction.

Time is passed in by hand (datetimes for tokens, float seconds for buckets), so every test is
deterministic. Bucket times and rates are dyadic fractions, exact in binary floating point, so
the boundaries asserted here are exact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter_cli.domain.principal import ROLES, Principal
from arbiter_cli.domain.security import (
    FIELD_PERMISSIONS,
    GENESIS,
    NO_TOKEN,
    PERMISSIONS,
    RANK,
    SECRET_BYTES,
    Anchor,
    AuditEvent,
    Bucket,
    TokenRecord,
    Undecodable,
    allowed,
    authorize,
    authorize_field,
    canonical,
    chain_hash,
    check_role,
    check_token,
    format_token,
    hash_secret,
    parse_anchor,
    parse_token,
    redact,
    retry_after,
    seal,
    spend,
    verify,
)
from arbiter_cli.errors import Forbidden, InvalidInput, Unauthenticated

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TOKEN_ID = "abcdefghij12"
SECRET = "A" * 20 + "b" * 20 + "-_9"  # 43 urlsafe characters
EPOCH = 1_700_000_000.0  # bucket clock origin, exactly representable

# SPEC §4, role table, written out so that a changed entry in PERMISSIONS is caught.
SPEC_PERMISSIONS = {
    "whoami": "viewer",
    "agents show": "viewer", "agents list": "viewer", "agents query": "viewer",
    "agents stats": "viewer",
    "route explain": "viewer", "route history": "viewer", "route stats": "viewer",
    "route task": "orchestrator", "route outcome": "orchestrator", "route reap": "orchestrator",
    "agents heartbeat": "orchestrator", "agents status": "orchestrator",
    "agents register": "manager", "agents update": "manager", "agents remove": "manager",
    "agents record": "manager", "agents cleanup": "manager",
    "tokens create": "admin", "tokens list": "admin", "tokens revoke": "admin",
    "audit list": "admin", "audit verify": "admin",
}
SPEC_NO_TOKEN = {
    "init", "demo", "login", "bench", "health", "serve", "soak", "mutate", "route simulate",
    "tenants create", "tenants list", "config show", "config validate", "db upgrade",
    "db downgrade", "db current", "db history", "db check", "journal status",
    "journal replay", "journal list", "journal resolve",  # SPEC §4: `journal *`
}


def unauthenticated(call: Any, *args: Any) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        call(*args)
    assert (caught.value.exit_code, caught.value.code) == (6, "unauthenticated")
    return caught.value


def record(**fields: Any) -> TokenRecord:
    values: dict[str, Any] = {"id": TOKEN_ID, "tenant": "acme", "name": "ci", "role": "manager",
                              "secret_hash": hash_secret(SECRET), "created_at": T0}
    values.update(fields)
    return TokenRecord(**values)


# ---------------------------------------------------------------------------- roles


def test_roles_rank_viewer_below_orchestrator_below_manager_below_admin():
    """The role order of SPEC §4 is viewer < orchestrator < manager < admin."""
    assert ROLES == ("viewer", "orchestrator", "manager", "admin")
    assert RANK == {"viewer": 0, "orchestrator": 1, "manager": 2, "admin": 3}


def test_permissions_are_exactly_the_spec_role_table():
    """Every token-checked command needs exactly the least role the SPEC table gives it."""
    assert dict(PERMISSIONS) == SPEC_PERMISSIONS


def test_no_token_commands_are_the_spec_list_and_have_no_role_entry():
    """The no-token list matches the SPEC and no command is on both lists."""
    assert set(NO_TOKEN) == SPEC_NO_TOKEN
    assert not set(NO_TOKEN) & set(PERMISSIONS)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("command", sorted(SPEC_PERMISSIONS))
def test_a_role_may_run_a_command_exactly_when_it_ranks_at_least_the_needed_role(role, command):
    """authorize allows iff rank(role) >= rank(needed), and otherwise raises Forbidden (6)."""
    principal = Principal(tenant="acme", role=role, token_id=TOKEN_ID)
    needed = SPEC_PERMISSIONS[command]
    if ROLES.index(role) >= ROLES.index(needed):
        assert authorize(principal, command) is None
    else:
        with pytest.raises(Forbidden) as caught:
            authorize(principal, command)
        assert (caught.value.exit_code, caught.value.code) == (6, "forbidden")
        assert caught.value.message == (f"role {role!r} may not run `{command}` "
                                        f"(needs {needed})")


@pytest.mark.parametrize("role", ROLES)
def test_only_an_admin_may_set_active_tasks_through_agents_update(role):
    """SPEC §2.1: active_tasks is an admin correction; every other field follows the command."""
    principal = Principal(tenant="acme", role=role, token_id=TOKEN_ID)
    assert FIELD_PERMISSIONS == {("agents update", "active_tasks"): "admin"}
    assert authorize_field(principal, "agents update", "capacity") is None
    assert authorize_field(principal, "agents register", "active_tasks") is None
    if role == "admin":
        assert authorize_field(principal, "agents update", "active_tasks") is None
        return
    with pytest.raises(Forbidden) as caught:
        authorize_field(principal, "agents update", "active_tasks")
    assert caught.value.message == (f"role {role!r} may not set active_tasks through `agents "
                                    "update` (needs admin: it changes through claims and "
                                    "outcomes)")
    with pytest.raises(Forbidden):
        authorize_field(Principal("acme", "root"), "agents update", "active_tasks")


@pytest.mark.parametrize("command", ["tokens destroy", "agents", "", "WHOAMI", "init", "db check"])
def test_a_command_without_a_permission_entry_is_denied_even_to_admin(command):
    """Deny by default: unknown and no-token commands are refused to admin, without 'needs'."""
    with pytest.raises(Forbidden) as caught:
        authorize(Principal(tenant="acme", role="admin"), command)
    assert caught.value.message == f"role 'admin' may not run `{command}`"


@pytest.mark.parametrize("role", ["none", "root", "Admin", ""])
def test_an_unknown_role_may_not_run_even_viewer_commands(role):
    """A principal whose role is not in the table ranks below viewer."""
    with pytest.raises(Forbidden):
        authorize(Principal(tenant="acme", role=role), "whoami")


@pytest.mark.parametrize("role", ROLES)
def test_check_role_returns_a_known_role(role):
    """The four roles are accepted as they are."""
    assert check_role(role) == role


@pytest.mark.parametrize("role", ["Admin", "root", "", "admin "])
def test_check_role_rejects_other_roles_as_invalid_input(role):
    """Anything else is exit 2 on field 'role' with rule 'allowed'."""
    with pytest.raises(InvalidInput) as caught:
        check_role(role)
    error = caught.value
    assert (error.exit_code, error.field, error.rule) == (2, "role", "allowed")
    assert error.message == "role: must be one of viewer, orchestrator, manager, admin"


# ---------------------------------------------------------------------------- token format


def test_format_token_joins_prefix_id_and_secret():
    """A token reads arb_<id>_<secret>."""
    assert format_token(TOKEN_ID, SECRET) == f"arb_{TOKEN_ID}_{SECRET}"


def test_parse_token_returns_id_and_secret():
    """parse_token inverts format_token."""
    assert parse_token(format_token(TOKEN_ID, SECRET)) == (TOKEN_ID, SECRET)


def test_a_secret_may_contain_underscores_and_be_longer_than_43():
    """The id is exactly 12 characters, so underscores in the secret do not confuse parsing."""
    secret = "_" * 10 + "x" * 50
    assert parse_token(f"arb_{TOKEN_ID}_{secret}") == (TOKEN_ID, secret)


def test_surrounding_whitespace_is_trimmed_before_parsing():
    """A token pasted with a trailing newline or spaces parses to the same id and secret."""
    assert parse_token(f"  arb_{TOKEN_ID}_{SECRET}\n") == (TOKEN_ID, SECRET)


@pytest.mark.parametrize("token", [
    f"arb_{TOKEN_ID}_{SECRET[:42]}",  # secret one character short
    f"arb_{TOKEN_ID[:11]}_{SECRET}",  # id one character short
    f"arb_{TOKEN_ID}x_{SECRET}",  # id one character long
    f"arb_ABCDEFGHIJ12_{SECRET}",  # upper-case id
    f"arb_abcdefghij-2_{SECRET}",  # id outside [a-z0-9]
    f"ARB_{TOKEN_ID}_{SECRET}",  # wrong prefix case
    f"arx_{TOKEN_ID}_{SECRET}",  # wrong prefix
    f"{TOKEN_ID}_{SECRET}",  # no prefix
    f"arb-{TOKEN_ID}-{SECRET}",  # wrong separators
    f"arb_{TOKEN_ID}{SECRET}",  # no separator before the secret
    f"arb_{TOKEN_ID}_{SECRET[:20]} {SECRET[20:]}",  # space inside
    f"arb_{TOKEN_ID}_{SECRET[:20]}\n{SECRET[20:]}",  # newline inside
    f"arb_{TOKEN_ID}_{SECRET}+/=",  # standard base64, not urlsafe
    f"x arb_{TOKEN_ID}_{SECRET}",  # text before the token
    f"arb_{TOKEN_ID}_{SECRET} x",  # text after the token
    "", "   ", "arb__",
])
def test_malformed_tokens_are_unauthenticated(token):
    """Anything not shaped arb_<12 lowercase alnum>_<>=43 urlsafe> is exit 6."""
    error = unauthenticated(parse_token, token)
    assert error.message == "malformed token: expected arb_<id>_<secret>"


@pytest.mark.parametrize("token", [None, 12, b"arb_abcdefghij12_" + SECRET.encode(), ["arb"]])
def test_non_string_tokens_are_unauthenticated(token):
    """A token that is not a str is exit 6 with the malformed-token message, not a crash."""
    error = unauthenticated(parse_token, token)
    assert error.message == "malformed token: expected arb_<id>_<secret>"


@settings(max_examples=100, derandomize=True, deadline=None)
@given(token_id=st.from_regex(r"[a-z0-9]{12}", fullmatch=True),
       secret=st.from_regex(r"[A-Za-z0-9_-]{43,80}", fullmatch=True))
def test_every_well_formed_token_round_trips(token_id, secret):
    """format_token then parse_token gives back the same id and secret."""
    assert parse_token(format_token(token_id, secret)) == (token_id, secret)


def test_secrets_have_at_least_192_bits():
    """Secrets are drawn from 32 bytes of randomness (SPEC asks >= 192 bits)."""
    assert SECRET_BYTES == 32


def test_hash_secret_is_the_sha256_hex_of_the_secret():
    """Only SHA-256(secret) is stored: a known vector and a fresh computation."""
    assert hash_secret("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert hash_secret(SECRET) == hashlib.sha256(SECRET.encode()).hexdigest()


# ---------------------------------------------------------------------------- token checks


def test_a_valid_token_yields_its_principal():
    """Tenant, role and token id come from the record."""
    assert check_token(record(), SECRET, T0) == Principal(tenant="acme", role="manager",
                                                          token_id=TOKEN_ID)


def test_an_unknown_token_id_is_unauthenticated():
    """No record: exit 6 'invalid token'."""
    assert unauthenticated(check_token, None, SECRET, T0).message == "invalid token"


def test_a_wrong_secret_is_unauthenticated():
    """A secret whose hash differs from the stored one is exit 6 'invalid token'."""
    error = unauthenticated(check_token, record(), SECRET[:-1] + "x", T0)
    assert error.message == "invalid token"


def test_a_wrong_secret_on_a_revoked_token_does_not_reveal_the_revocation():
    """The secret is checked first, so an attacker learns nothing about the token's state."""
    revoked = record(revoked_at=T0, expires_at=T0)
    assert unauthenticated(check_token, revoked, "y" * 43, T0).message == "invalid token"


def test_a_revoked_token_is_unauthenticated():
    """revoked_at set: exit 6 'token revoked', even with the right secret."""
    revoked = record(revoked_at=T0 - timedelta(days=1))
    assert unauthenticated(check_token, revoked, SECRET, T0).message == "token revoked"


def test_a_token_is_expired_exactly_at_expires_at():
    """now == expires_at is already expired."""
    expiring = record(expires_at=T0)
    assert unauthenticated(check_token, expiring, SECRET, T0).message == "token expired"


def test_a_token_is_expired_after_expires_at():
    """now > expires_at is expired."""
    expiring = record(expires_at=T0)
    error = unauthenticated(check_token, expiring, SECRET, T0 + timedelta(microseconds=1))
    assert error.message == "token expired"


def test_a_token_is_valid_one_microsecond_before_expires_at():
    """The last instant before expires_at still authenticates."""
    expiring = record(expires_at=T0)
    assert check_token(expiring, SECRET, T0 - timedelta(microseconds=1)).token_id == TOKEN_ID


def test_a_token_without_expiry_never_expires():
    """expires_at None: valid far in the future."""
    assert check_token(record(), SECRET, T0 + timedelta(days=36500)).role == "manager"


def test_token_record_to_dict_has_no_secret_hash():
    """The public view of a record lists its fields in RFC 3339, and never the hash."""
    data = record(expires_at=T0 + timedelta(days=1), rate=5.0, burst=7).to_dict()
    assert data == {"id": TOKEN_ID, "tenant": "acme", "name": "ci", "role": "manager",
                    "created_at": "2026-03-01T12:00:00.000Z",
                    "expires_at": "2026-03-02T12:00:00.000Z", "revoked_at": None,
                    "last_used_at": None, "rate": 5.0, "burst": 7}


# ---------------------------------------------------------------------------- token bucket


def spend_many(bucket: Bucket | None, now: float, rate: float, burst: int, calls: int
               ) -> tuple[Bucket | None, list[bool]]:
    verdicts = []
    for _ in range(calls):
        bucket = spend(bucket, now, rate, burst)
        verdicts.append(allowed(bucket))
    return bucket, verdicts


def admitted_until_refused(bucket: Bucket | None, now: float, rate: float, burst: int
                           ) -> tuple[Bucket, int]:
    passed = 0
    while True:
        bucket = spend(bucket, now, rate, burst)
        if not allowed(bucket):
            return bucket, passed
        passed += 1
        assert passed <= burst  # never more than a full bucket at one instant


def test_a_new_bucket_starts_full_and_spends_one():
    """The first call sees burst tokens and leaves burst - 1, stamped now."""
    assert spend(None, EPOCH, 2.0, 3) == Bucket(tokens=2.0, updated_at=EPOCH)


def test_exactly_burst_calls_pass_at_one_instant():
    """With burst 3: three calls pass, the fourth is refused."""
    _, verdicts = spend_many(None, EPOCH, 2.0, 3, 4)
    assert verdicts == [True, True, True, False]


def test_allowed_means_no_debt():
    """A bucket at exactly zero tokens was a pass; any debt is a refusal."""
    assert allowed(Bucket(0.0, EPOCH)) is True
    assert allowed(Bucket(-0.001, EPOCH)) is False
    assert allowed(Bucket(0.5, EPOCH)) is True


@settings(max_examples=150, derandomize=True, deadline=None)
@given(burst=st.integers(1, 60), quarter_rate=st.integers(1, 80),
       sixty_fourths=st.integers(0, 64 * 120))
def test_burst_calls_pass_at_once_then_floor_rate_times_t_by_time_t(burst, quarter_rate,
                                                                    sixty_fourths):
    """burst calls pass at t=0, then exactly min(burst, floor(rate*t)) more at time t."""
    rate, t = quarter_rate / 4, sixty_fourths / 64
    bucket, passed = admitted_until_refused(None, EPOCH, rate, burst)
    assert passed == burst
    _, later = admitted_until_refused(Bucket(0.0, EPOCH), EPOCH + t, rate, burst)
    assert later == min(burst, math.floor(rate * t))


@settings(max_examples=100, derandomize=True, deadline=None)
@given(burst=st.integers(1, 20), quarter_rate=st.integers(1, 40),
       gaps=st.lists(st.integers(0, 64), min_size=1, max_size=120))
def test_no_call_pattern_gets_more_than_burst_plus_rate_times_elapsed(burst, quarter_rate, gaps):
    """Over any sequence of calls spanning T seconds, at most burst + floor(rate*T) pass."""
    rate = quarter_rate / 4
    bucket, now, passed = None, EPOCH, 0
    for gap in gaps:
        now += gap / 64
        bucket = spend(bucket, now, rate, burst)
        passed += allowed(bucket)
    assert passed <= burst + math.floor(rate * (now - EPOCH))


def test_a_refusal_still_spends_a_token():
    """Each refused call deepens the debt by one."""
    bucket, verdicts = spend_many(None, EPOCH, 2.0, 3, 5)
    assert verdicts == [True, True, True, False, False]
    assert bucket == Bucket(tokens=-2.0, updated_at=EPOCH)


def test_debt_delays_the_next_pass():
    """Two refusals leave -2: at rate 2 the next pass needs 1.5 s, not 0.5 s."""
    bucket, _ = spend_many(None, EPOCH, 2.0, 3, 5)
    assert not allowed(spend(bucket, EPOCH + 1.25, 2.0, 3))
    assert spend(bucket, EPOCH + 1.5, 2.0, 3) == Bucket(tokens=0.0, updated_at=EPOCH + 1.5)


def test_debt_is_floored_at_minus_burst():
    """A client hammering in a loop is slowed, not locked out for ever."""
    bucket, _ = spend_many(None, EPOCH, 2.0, 3, 50)
    assert bucket == Bucket(tokens=-3.0, updated_at=EPOCH)
    assert spend(bucket, EPOCH + 2.0, 2.0, 3) == Bucket(tokens=0.0, updated_at=EPOCH + 2.0)


def test_refill_never_exceeds_burst():
    """After a long idle, the bucket is full (burst), so one call leaves burst - 1."""
    assert spend(Bucket(0.0, EPOCH), EPOCH + 10_000.0, 2.0, 3) == Bucket(2.0, EPOCH + 10_000.0)
    assert spend(Bucket(-3.0, EPOCH), EPOCH + 2.5, 2.0, 3) == Bucket(1.0, EPOCH + 2.5)


def test_refill_is_rate_times_elapsed():
    """0.75 s at rate 4 adds 3 tokens."""
    assert spend(Bucket(-1.0, EPOCH), EPOCH + 0.75, 4.0, 10) == Bucket(1.0, EPOCH + 0.75)


def test_a_stamp_from_the_future_refills_nothing_and_is_replaced_by_now():
    """now < updated_at (a stamp from a clock that ran ahead): no refill, and the stamp
    becomes now, so the bucket refills from now on instead of staying shut until then."""
    later = EPOCH + 600.0
    bucket = spend(Bucket(0.0, later), EPOCH, 2.0, 3)
    assert bucket == Bucket(tokens=-1.0, updated_at=EPOCH)
    assert spend(bucket, EPOCH + 1.0, 2.0, 3) == Bucket(tokens=0.0, updated_at=EPOCH + 1.0)


def test_retry_after_is_the_time_to_one_whole_token():
    """-1 token at rate 2 needs 2 tokens: 1.0 s; -3 at rate 4: 1.0 s; 0 at rate 2: 0.5 s."""
    assert retry_after(Bucket(-1.0, EPOCH), 2.0) == 1.0
    assert retry_after(Bucket(-3.0, EPOCH), 4.0) == 1.0
    assert retry_after(Bucket(0.0, EPOCH), 2.0) == 0.5
    assert retry_after(Bucket(0.5, EPOCH), 1.0) == 0.5


def test_retry_after_is_rounded_up_to_milliseconds():
    """1/3 s rounds up to 0.334 and 2/3 s to 0.667: waiting that long is always enough."""
    assert retry_after(Bucket(0.0, EPOCH), 3.0) == 0.334
    assert retry_after(Bucket(-1.0, EPOCH), 3.0) == 0.667


def test_retry_after_is_zero_with_a_whole_token():
    """A bucket holding at least one token needs no wait."""
    assert retry_after(Bucket(1.0, EPOCH), 2.0) == 0.0
    assert retry_after(Bucket(2.5, EPOCH), 2.0) == 0.0


def test_a_call_after_waiting_retry_after_is_admitted():
    """The docstring's promise: after retry_after seconds the next call is admitted."""
    bucket, verdicts = spend_many(None, EPOCH, 2.0, 3, 4)
    assert verdicts[-1] is False
    wait = retry_after(bucket, 2.0)
    assert allowed(spend(bucket, EPOCH + wait, 2.0, 3))


# ---------------------------------------------------------------------------- audit chain


def test_canonical_json_sorts_keys_without_spaces_and_keeps_unicode():
    """The canonical form is sorted, compact UTF-8 JSON."""
    body = {"b": 1, "a": "é", "c": [1, None, True], "d": {"z": 0, "y": 1.5}}
    assert canonical(body) == '{"a":"é","b":1,"c":[1,null,true],"d":{"y":1.5,"z":0}}'.encode()


def test_canonical_json_renders_other_values_with_str():
    """Values JSON cannot encode are written with str()."""
    assert canonical({"at": T0}) == b'{"at":"2026-03-01 12:00:00+00:00"}'


def test_chain_hash_is_sha256_of_canonical_json_then_prev_hash():
    """hash = SHA-256(canonical(entry) || prev_hash), a fixed vector."""
    body = {"seq": 1, "action": "x"}
    expected = hashlib.sha256(b'{"action":"x","seq":1}' + b"0" * 64).hexdigest()
    assert chain_hash(body, GENESIS) == expected
    assert chain_hash(body, "f" * 64) != expected


def test_genesis_is_sixty_four_zeros():
    """The first event links to 64 zero hex digits."""
    assert GENESIS == "0" * 64


def test_seal_fills_every_field_and_hashes_the_body_with_prev_hash():
    """A sealed event's hash covers its body and the previous hash."""
    event = seal("acme", 7, T0 + timedelta(microseconds=123_456), "ab" * 32, actor="tok",
                 action="agent.register", target="coder-1", result="ok", correlation_id="c-1",
                 details={"capacity": 4})
    assert event.body() == {"tenant": "acme", "seq": 7, "at": "2026-03-01T12:00:00.123Z",
                            "actor": "tok", "action": "agent.register", "target": "coder-1",
                            "result": "ok", "correlation_id": "c-1", "details": {"capacity": 4}}
    assert event.prev_hash == "ab" * 32
    assert event.hash == chain_hash(event.body(), "ab" * 32)
    assert event.to_dict() == {**event.body(), "prev_hash": "ab" * 32, "hash": event.hash}


def test_seal_copies_details():
    """Changing the caller's dict afterwards does not change the sealed event."""
    details = {"k": 1}
    event = seal("acme", 1, T0, GENESIS, actor=None, action="a", target=None, result="ok",
                 correlation_id=None, details=details)
    details["k"] = 2
    assert event.details == {"k": 1}


N_EVENTS = 2000
ACTIONS = ("agent.register", "agent.update", "route.task", "token.create", "auth.denied")
RESULTS = ("ok", "denied", "error")


@cache
def pristine_chain() -> tuple[AuditEvent, ...]:
    """2 000 varied events of one tenant, built once per session."""
    events: list[AuditEvent] = []
    prev = GENESIS
    for i in range(N_EVENTS):
        event = seal("acme", i + 1, T0 + timedelta(milliseconds=37 * i), prev,
                     actor=None if i % 7 == 0 else f"tok{i % 5:09d}",
                     action=ACTIONS[i % len(ACTIONS)],
                     target=None if i % 11 == 0 else f"agent-{i % 97}",
                     result=RESULTS[i % 3 if i % 4 == 0 else 0],
                     correlation_id=None if i % 3 == 0 else f"corr-{i // 10}",
                     details={"n": i, "fields": ["capacity"] if i % 2 else []})
        events.append(event)
        prev = event.hash
    return tuple(events)


def head_of(chain: Sequence[AuditEvent]) -> Anchor:
    return Anchor(chain[-1].seq, chain[-1].hash) if chain else Anchor(0, GENESIS)


def test_an_untouched_chain_of_2000_verifies_with_its_last_event_as_head():
    """A genuine chain is never flagged; the head is SEQ:HASH of the last event."""
    chain = pristine_chain()
    verdict = verify(chain, head_of(chain))
    assert verdict == verify(chain)
    assert (verdict.ok, verdict.events, verdict.head) == (
        True, N_EVENTS, f"{N_EVENTS}:{chain[-1].hash}")
    assert (verdict.first_bad_seq, verdict.reason) == (None, None)


@settings(max_examples=30, derandomize=True, deadline=None)
@given(at=st.integers(0, N_EVENTS))
def test_an_anchor_taken_at_any_earlier_seq_still_holds_on_the_grown_chain(at):
    """A live log grows after its anchor was taken: the anchor keeps holding."""
    chain = pristine_chain()
    anchor = head_of(chain[:at])
    assert verify(chain, anchor).ok is True


@settings(max_examples=20, derandomize=True, deadline=None)
@given(length=st.integers(0, N_EVENTS))
def test_every_untouched_prefix_verifies_anchored_at_its_own_last_hash(length):
    """Each genuine prefix verifies, with its last hash (or genesis) as head."""
    prefix = pristine_chain()[:length]
    head = head_of(prefix)
    verdict = verify(prefix, head)
    assert (verdict.ok, verdict.events, verdict.head, verdict.first_bad_seq) == (
        True, length, str(head), None)


def flip(hex_text: str, at: int) -> str:
    """The same hex string with one digit changed."""
    digit = "1" if hex_text[at] == "0" else "0"
    return hex_text[:at] + digit + hex_text[at + 1:]


def changed(event: AuditEvent, field: str, k: int) -> AuditEvent:
    """``event`` with ``field`` given a different value (k varies the change)."""
    new: dict[str, Any] = {
        "tenant": event.tenant + "x",
        "seq": event.seq + (k % 3 - 3 if k % 2 else k % 3 + 1),
        "at": event.at + timedelta(milliseconds=1 + k),
        "actor": "mallory" if k % 2 or event.actor is None else None,
        "action": "forged." + event.action,
        "target": f"forged-{k}",
        "result": [r for r in RESULTS if r != event.result][k % 2],
        "correlation_id": f"forged-{k}",
        "details": {**event.details, "n": event.details["n"] + 1 + k},
        "prev_hash": flip(event.prev_hash, k % 64),
        "hash": flip(event.hash, k % 64),
    }
    return replace(event, **{field: new[field]})


def resealed(event: AuditEvent, field: str, k: int) -> AuditEvent:
    """A body change whose own hash is recomputed: only the next link can reveal it."""
    forged = changed(event, field, k)
    return replace(forged, hash=chain_hash(forged.body(), forged.prev_hash))


BODY_FIELDS = ("tenant", "seq", "at", "actor", "action", "target", "result", "correlation_id",
               "details")


@st.composite
def tamperings(draw: st.DrawFn) -> tuple[str, list[AuditEvent], int]:
    """One tampering of the pristine chain: (what, tampered chain, expected first bad seq)."""
    chain = list(pristine_chain())
    n = len(chain)
    kind = draw(st.sampled_from(["modify", "reseal", "delete", "insert", "replay", "swap",
                                 "truncate"]))
    k = draw(st.integers(0, 1000))
    if kind == "modify":
        i = draw(st.integers(0, n - 1))
        field = draw(st.sampled_from((*BODY_FIELDS, "prev_hash", "hash")))
        chain[i] = changed(chain[i], field, k)
        return f"modify {field} of row {i}", chain, i + 1
    if kind == "reseal":  # the break shows at the next link (or at the anchored head)
        i = draw(st.integers(0, n - 1))
        field = draw(st.sampled_from([f for f in BODY_FIELDS if f != "seq"]))
        chain[i] = resealed(chain[i], field, k)  # the last row: its hash differs from the anchor
        return f"reseal {field} of row {i}", chain, min(i + 2, n)
    if kind == "delete":
        i = draw(st.integers(0, n - 1))
        del chain[i]
        return f"delete row {i}", chain, i + 1
    if kind == "insert":  # a well-sealed forgery at position i: the displaced row breaks
        i = draw(st.integers(0, n - 1))
        prev = chain[i - 1].hash if i else GENESIS
        forged = seal("acme", i + 1, chain[i].at, prev, actor="mallory", action="token.create",
                      target=f"forged-{k}", result="ok", correlation_id=None, details={"k": k})
        chain.insert(i, forged)
        return f"insert a sealed forgery at {i}", chain, min(i + 2, n)
    if kind == "replay":  # a copy of row j inserted before row i
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        chain.insert(i, chain[j])
        return f"replay row {j} before row {i}", chain, i + 2 if j == i else i + 1
    if kind == "swap":
        i = draw(st.integers(0, n - 2))
        chain[i], chain[i + 1] = chain[i + 1], chain[i]
        return f"swap rows {i} and {i + 1}", chain, i + 1
    keep = draw(st.integers(0, n - 1))  # only the anchor can tell: it names its own seq
    return f"truncate to {keep} rows", chain[:keep], n


@settings(max_examples=250, derandomize=True, deadline=None)
@given(tampering=tamperings())
def test_any_single_tampering_of_a_2000_event_chain_is_caught_at_its_first_bad_seq(tampering):
    """Verified against the anchor of the untouched head, every tampering is flagged at the
    right seq."""
    what, chain, first_bad = tampering
    verdict = verify(chain, head_of(pristine_chain()))
    assert (verdict.ok, verdict.first_bad_seq) == (False, first_bad), what
    good = len(chain) if what.startswith("truncate") else first_bad - 1  # events that verify
    assert verdict.head_hash == (chain[good - 1].hash if good else GENESIS), what
    assert verdict.head_seq == good, what
    assert verdict.reason, what


def test_a_missing_seq_is_named_with_what_was_found():
    """Deleting seq 3 reports seq 3 missing, found 4."""
    chain = list(pristine_chain()[:5])
    del chain[2]
    verdict = verify(chain)
    assert (verdict.ok, verdict.events, verdict.head) == (False, 3, f"2:{chain[1].hash}")
    assert (verdict.first_bad_seq, verdict.reason) == (3, "seq 3 missing (found 4)")


def test_a_broken_link_is_reported_as_such():
    """A prev_hash that is not the previous hash is 'prev_hash does not link'."""
    chain = list(pristine_chain()[:5])
    chain[3] = replace(chain[3], prev_hash=flip(chain[3].prev_hash, 0))
    verdict = verify(chain)
    assert (verdict.ok, verdict.events, verdict.first_bad_seq) == (False, 4, 4)
    assert verdict.reason == "prev_hash does not link"


def test_an_edited_entry_is_reported_as_a_hash_mismatch():
    """A body change under an old hash is 'hash does not match the entry'."""
    chain = list(pristine_chain()[:5])
    chain[0] = replace(chain[0], result="error" if chain[0].result != "error" else "ok")
    verdict = verify(chain)
    assert (verdict.ok, verdict.events, verdict.head, verdict.first_bad_seq) == (
        False, 1, f"0:{GENESIS}", 1)
    assert verdict.reason.startswith("hash does not match the entry")


def test_truncation_is_caught_only_by_the_anchor_and_named_at_the_anchored_seq():
    """Without an anchor a shortened chain still verifies; with it, the anchored seq fails."""
    chain = pristine_chain()
    assert verify(chain[:10]).ok is True
    verdict = verify(chain[:10], head_of(chain))
    assert (verdict.ok, verdict.events, verdict.head, verdict.first_bad_seq) == (
        False, 10, f"10:{chain[9].hash}", N_EVENTS)
    assert verdict.reason == (f"the chain ends at seq 10, before the anchored seq {N_EVENTS}: "
                              "entries were removed from the tail")


def test_an_emptied_chain_fails_at_the_anchored_seq():
    """Deleting every row: the anchor's seq is named."""
    verdict = verify([], Anchor(7, "a" * 64))
    assert (verdict.ok, verdict.events, verdict.first_bad_seq, verdict.head) == (
        False, 0, 7, f"0:{GENESIS}")


def test_a_rewritten_event_under_the_anchor_is_named_at_its_seq():
    """The chain holds another hash at the anchored seq: rewritten."""
    chain = pristine_chain()[:20]
    verdict = verify(chain, Anchor(12, flip(chain[11].hash, 3)))
    assert (verdict.ok, verdict.first_bad_seq) == (False, 12)
    assert verdict.reason is not None and "rewritten" in verdict.reason


def test_an_empty_chain_verifies_with_genesis_at_seq_0_as_head():
    """No events: ok, zero events, head 0:<64 zeros>; anchored at genesis it still holds."""
    assert verify([]) == verify([], Anchor(0, GENESIS))
    assert (verify([]).ok, verify([]).events, verify([]).head) == (True, 0, f"0:{GENESIS}")
    wrong_genesis = verify([], Anchor(0, "a" * 64))
    assert (wrong_genesis.ok, wrong_genesis.first_bad_seq) == (False, 0)


def test_anchors_parse_from_seq_colon_hash_and_nothing_else():
    """SEQ:HASH with 64 hex digits (case ignored); a bare hash or junk is exit 2."""
    assert parse_anchor(f"42:{'AB' * 32}") == Anchor(42, "ab" * 32)
    assert str(Anchor(42, "ab" * 32)) == f"42:{'ab' * 32}"
    for bad in ("ab" * 32, f"-1:{'ab' * 32}", f"4:{'ab' * 31}", f"x:{'ab' * 32}", "",
                f"1:{'g' * 64}", f"{'9' * 19}:{'ab' * 32}"):
        with pytest.raises(InvalidInput) as caught:
            parse_anchor(bad)
        assert (caught.value.field, caught.value.rule) == ("expect_head", "format"), bad


KEY = b"k" * 32


def keyed_chain(n: int, *, key: bytes | None = KEY, unkeyed_first: int = 0) -> list[AuditEvent]:
    """``n`` events; the first ``unkeyed_first`` sealed without the key (before it was set)."""
    events: list[AuditEvent] = []
    prev = GENESIS
    for i in range(n):
        event = seal("acme", i + 1, T0 + timedelta(seconds=i), prev, actor="tok",
                     action="agent.update", target=f"a{i}", result="ok", correlation_id=None,
                     details={"i": i}, key=None if i < unkeyed_first else key)
        events.append(event)
        prev = event.hash
    return events


def test_a_keyed_event_is_an_hmac_of_the_canonical_body_and_prev_hash():
    """With security.audit_key the hash is HMAC-SHA256(key, canonical ‖ prev_hash)."""
    import hmac as hmac_module

    event = keyed_chain(1)[0]
    expected = hmac_module.new(KEY, canonical(event.body()) + GENESIS.encode(),
                               hashlib.sha256).hexdigest()
    assert event.hash == expected != chain_hash(event.body(), GENESIS)


def test_a_keyed_chain_verifies_with_its_key_and_not_without_it():
    """The key is needed to verify; without it the first keyed event is flagged."""
    chain = keyed_chain(5)
    assert verify(chain, key=KEY).ok is True
    unkeyed = verify(chain)
    assert (unkeyed.ok, unkeyed.first_bad_seq) == (False, 1)
    assert unkeyed.reason is not None and "security.audit_key" in unkeyed.reason
    assert verify(chain, key=b"x" * 32).first_bad_seq == 1


def test_an_unkeyed_prefix_before_the_key_was_set_verifies():
    """Events written before the key was configured stay valid below the first keyed one."""
    assert verify(keyed_chain(6, unkeyed_first=3), key=KEY).ok is True


def test_a_chain_recomputed_without_the_key_after_an_edit_is_caught():
    """Editing seq 3 and re-hashing every later event with plain SHA-256 is flagged."""
    chain = keyed_chain(6)
    prev = chain[1].hash
    forged: list[AuditEvent] = chain[:2]
    for event in chain[2:]:
        body = replace(event, details={"i": 99}) if event.seq == 3 else event
        resealed_event = seal("acme", body.seq, body.at, prev, actor=body.actor,
                              action=body.action, target=body.target, result=body.result,
                              correlation_id=None, details=body.details)
        forged.append(resealed_event)
        prev = resealed_event.hash
    verdict = verify(forged, key=KEY)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
    assert verdict.reason is not None and "recomputed without the key" in verdict.reason
    everything = keyed_chain(6, key=None)  # all of it recomputed: the head is not keyed
    whole = verify(everything, key=KEY)
    assert (whole.ok, whole.first_bad_seq) == (False, 6)
    assert whole.reason is not None and "no event is sealed" in whole.reason


def test_an_undecodable_row_is_reported_as_tampering_at_its_seq():
    """A row the store cannot read back breaks the chain at its seq (exit 1, never 70)."""
    chain: list[AuditEvent | Undecodable] = list(pristine_chain()[:5])
    chain[2] = Undecodable("acme", 3, "details is not a JSON object")
    verdict = verify(chain)
    assert (verdict.ok, verdict.first_bad_seq, verdict.head_seq) == (False, 3, 2)
    assert verdict.reason is not None and "cannot be decoded" in verdict.reason
    assert "details is not a JSON object" in verdict.reason
    chain[2] = Undecodable("acme", None, "seq is not an integer")
    assert verify(chain).first_bad_seq == 3


def test_a_chain_not_starting_at_seq_1_is_broken_at_seq_1():
    """The walk expects seq 1 first."""
    verdict = verify(pristine_chain()[1:4])
    assert (verdict.ok, verdict.first_bad_seq, verdict.reason) == (
        False, 1, "seq 1 missing (found 2)")


# ---------------------------------------------------------------------------- redaction


def test_redact_drops_secret_bearing_keys():
    """token, secret, password, secret_hash and admin_token never reach audit or logs."""
    details = {"token": "t", "secret": "s", "password": "p", "secret_hash": "h",
               "admin_token": "a", "token_id": "abc", "role": "admin", "n": 3}
    assert redact(details) == {"token_id": "abc", "role": "admin", "n": 3}


def test_redact_masks_values_that_contain_a_given_secret():
    """Any string value containing a known secret becomes ***."""
    details = {"url": f"postgresql://u:{SECRET}@h/db", "note": "fine", "n": 5, "raw": SECRET}
    assert redact(details, [SECRET]) == {"url": "***", "note": "fine", "n": 5, "raw": "***"}


def test_redact_ignores_empty_secrets_and_non_string_values():
    """An empty secret masks nothing; non-strings are never masked."""
    details = {"note": "fine", "n": 5, "list": [SECRET]}
    assert redact(details, ["", "absent"]) == details


def test_redact_leaves_its_input_alone():
    """The caller's mapping is not changed."""
    details = {"token": "t", "note": SECRET}
    redact(details, [SECRET])
    assert details == {"token": "t", "note": SECRET}
