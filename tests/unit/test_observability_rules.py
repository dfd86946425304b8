"""The pure parts of observability: redaction, label values, error codes, the metric table."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter_cli.errors import AtCapacity, InvalidInput, NoCapableAgent
from arbiter_cli.observability.instrument import error_kind, operation_of
from arbiter_cli.observability.redact import make_redactor, redact_value
from arbiter_cli.observability.runtime import error_code

TOKEN = "arb_abcdefghij12_" + "S" * 43


def test_a_secret_is_hidden_raw_and_url_quoted():
    redact = make_redactor(["p@ss w0rd/x"])
    assert redact("password p@ss w0rd/x in a message") == "password *** in a message"
    assert redact("postgresql://u@h/db?password=p%40ss%20w0rd%2Fx") == \
        "postgresql://u@h/db?password=***"


def test_the_longest_secret_wins_when_secrets_overlap():
    redact = make_redactor(["abcd", "abcdefgh"])
    assert redact("xabcdefghx") == "x***x"


def test_short_or_empty_secrets_are_not_searched():
    redact = make_redactor(["", None, "abc"])
    assert redact("abc abc") == "abc abc"
    assert make_redactor(["abcd"])("abcd") == "***"


def test_token_secrets_are_hidden_and_their_id_kept():
    redact = make_redactor([])
    assert redact(f"bad token {TOKEN}!") == "bad token arb_abcdefghij12_***!"
    assert redact("arb_ not a token") == "arb_ not a token"


def test_dsn_passwords_are_masked():
    redact = make_redactor([])
    assert redact("connect postgresql://bob:hunter2@db:5432/x failed") == \
        "connect postgresql://bob:***@db:5432/x failed"
    assert redact("postgresql://bob@db/x") == "postgresql://bob@db/x"


def test_redact_value_walks_containers_and_stringifies_unknown_objects():
    redact = make_redactor(["s3cret"])

    class Thing:
        def __str__(self) -> str:
            return "thing with s3cret"

    value: Any = {"a": ["s3cret", ("x", "s3cret!")], "n": 3, "f": 1.5, "b": True, "none": None,
                  "obj": Thing(), 7: "key"}
    assert redact_value(value, redact) == {
        "a": ["***", ["x", "***!"]], "n": 3, "f": 1.5, "b": True, "none": None,
        "obj": "thing with ***", "7": "key"}


@pytest.mark.parametrize(("statement", "verb"), [
    ("SELECT 1", "select"), ("  insert into t values (?)", "insert"), ("UPDATE t", "update"),
    ("DELETE FROM t", "delete"), ("BEGIN IMMEDIATE", "begin"), ("WITH x AS (..) SELECT", "with"),
    ("VACUUM", "other"), ("", "other"), ("select\n1", "select"),
])
def test_the_operation_label_is_the_sql_verb_or_other(statement: str, verb: str):
    assert operation_of(statement) == verb


def test_the_error_kind_is_the_dbapi_family():
    class OperationalError(Exception):
        pass

    class SerializationFailure(OperationalError):  # psycopg2 raises subclasses like this
        pass

    class NotSupportedError(Exception):
        pass

    assert error_kind(SerializationFailure()) == "operational"
    assert error_kind(NotSupportedError()) == "not_supported"
    assert error_kind(ValueError()) == "other"
    assert error_kind(None) == "other"


def test_error_codes_of_a_failed_command():
    assert error_code(NoCapableAgent("none", excluded={})) == ("no_capable_agent", 8)
    assert error_code(AtCapacity("full", excluded={})) == ("at_capacity", 9)
    assert error_code(InvalidInput("bad")) == ("invalid_input", 2)
    assert error_code(KeyboardInterrupt()) == ("interrupted", 130)
    assert error_code(RuntimeError("bug")) == ("internal_error", 70)

    class Exit(Exception):
        def __init__(self, code: int) -> None:
            self.exit_code = code

    assert error_code(Exit(0)) == ("ok", 0)
    assert error_code(Exit(1)) == ("exit", 1)


def test_metrics_come_from_the_table_and_refuse_unknown_names():
    from arbiter_cli.observability.metrics import Metrics

    metrics = Metrics()
    metrics.inc("arbiter_outcomes_total", result="succeeded")
    metrics.inc("arbiter_outcomes_total", 2, result="succeeded")
    metrics.observe("arbiter_routing_decision_seconds", 0.0003)
    metrics.set("arbiter_breaker_state", 2)
    get = metrics.registry.get_sample_value
    assert get("arbiter_outcomes_total", {"result": "succeeded"}) == 3
    assert get("arbiter_routing_decision_seconds_bucket", {"le": "0.0005"}) == 1
    assert get("arbiter_routing_decision_seconds_bucket", {"le": "0.00025"}) == 0
    assert get("arbiter_breaker_state") == 2
    assert get("arbiter_outcomes_created", {"result": "succeeded"}) is None
    with pytest.raises(KeyError):
        metrics.inc("arbiter_made_up_total")


def test_a_labelled_child_is_made_once_per_label_values(monkeypatch):
    """serve observes arbiter_db_call_seconds per statement: labels() runs once per verb."""
    from arbiter_cli.observability.metrics import Metrics

    metrics = Metrics()
    histogram = metrics.get("arbiter_db_call_seconds")
    made: list[dict[str, str]] = []
    labels = histogram.labels

    def counting(**values: str) -> object:
        made.append(values)
        return labels(**values)

    monkeypatch.setattr(histogram, "labels", counting)
    for _ in range(3):
        metrics.observe("arbiter_db_call_seconds", 0.001, operation="select")
    metrics.observe("arbiter_db_call_seconds", 0.001, operation="insert")
    get = metrics.registry.get_sample_value
    assert made == [{"operation": "select"}, {"operation": "insert"}]
    assert get("arbiter_db_call_seconds_count", {"operation": "select"}) == 3
    assert get("arbiter_db_call_seconds_count", {"operation": "insert"}) == 1


def test_record_resilience_maps_the_breaker_state():
    from arbiter_cli.observability.metrics import Metrics, record_resilience

    for state, value in (("closed", 0), ("half_open", 1), ("open", 2), ("unknown", 0)):
        metrics = Metrics()
        record_resilience(metrics, {"backlog": 4, "conflicts": 1, "breaker": {"state": state}})
        get = metrics.registry.get_sample_value
        assert (get("arbiter_breaker_state"), get("arbiter_journal_backlog"),
                get("arbiter_journal_conflicts")) == (value, 4, 1)
