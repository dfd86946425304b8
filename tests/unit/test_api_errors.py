"""What the API tells a caller about a failure on its side (SPEC §15 "Errors")."""

from __future__ import annotations

from arbiter_cli.api.errors import body_of, headers_of, status_of
from arbiter_cli.errors import ConfigInvalid, NotFound, RateLimited, StorageUnavailable


def test_an_outage_answers_503_without_the_driver_s_words():
    exc = StorageUnavailable('could not connect to server: Connection refused, is the server '
                             'running on host "db-7.internal" (10.0.0.7), port 5432?')
    body = body_of(exc)
    assert status_of(exc) == 503
    assert body["error"]["code"] == "storage_unavailable" and body["error"]["exit_code"] == 10
    assert "db-7" not in str(body) and "10.0.0.7" not in str(body) and "5432" not in str(body)
    assert headers_of(exc, unavailable_retry_s=9.5) == {"Retry-After": "10"}


def test_a_refused_configuration_is_500_without_its_message():
    exc = ConfigInvalid("connection to server at db.internal, user arbiter refused")
    assert status_of(exc) == 500 and "db.internal" not in str(body_of(exc))


def test_client_errors_keep_their_message_and_details():
    assert body_of(NotFound("no agent 'x'")) == NotFound("no agent 'x'").to_dict()
    limited = RateLimited("slow down", retry_after_s=2.2)
    assert body_of(limited)["error"]["details"] == {"retry_after_s": 2.2}
    assert headers_of(limited, unavailable_retry_s=10) == {"Retry-After": "3"}
