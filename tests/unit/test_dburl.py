"""Database URLs (SPEC §4.1 "Passwords"): parsed as SQLAlchemy parses them, every password
masked, refused (exit 3, unechoed) when the password cannot be isolated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from arbiter_cli import dburl
from arbiter_cli.errors import ConfigInvalid
from arbiter_cli.resilience.breaker import breaker_path, url_without_password
from arbiter_cli.resilience.journal import resilience_dir

MARK = "PW"  # every generated password starts with it; nothing else may contain it
PLAIN = "abcdefghijklmnopqrstuvwxyz0123456789._-"
NASTY = PLAIN + ":@/?#%&=+!$*,;~[]"


def old_identity(url: str) -> str:
    """The breaker/journal key source before this change (existing data folders use it)."""
    bare = re.sub(r"(://[^:/@]+):[^@]*@", r"\1@", url)
    return re.sub(r"^postgresql\+psycopg2://", "postgresql://", bare)


@st.composite
def urls(draw: st.DrawFn, *, password: bool = True, query_password: bool = True) -> str:
    user = draw(st.text(PLAIN, min_size=1, max_size=8))
    host = draw(st.sampled_from(["db", "127.0.0.1", "[::1]", "db.example.com", ""]))
    port = draw(st.sampled_from(["", ":5432", ":1"]))
    database = draw(st.text(PLAIN, max_size=8))
    userinfo = user
    if password and draw(st.booleans()):
        userinfo += ":" + MARK + draw(st.text(NASTY, max_size=10))
    arguments = draw(st.lists(st.sampled_from(["sslmode=require", "application_name=x",
                                                "connect_timeout=3"]), max_size=2))
    if query_password and draw(st.booleans()):
        value = MARK + draw(st.text(PLAIN + "%@:/", max_size=8))
        key = draw(st.sampled_from(["password", "sslpassword"]))
        arguments.insert(draw(st.integers(0, len(arguments))), f"{key}={value}")
    query = ("?" + "&".join(arguments)) if arguments else ""
    scheme = draw(st.sampled_from(["postgresql", "postgresql+psycopg2"]))
    return f"{scheme}://{userinfo}@{host}{port}/{database}{query}"


@given(urls())
def test_an_accepted_url_splits_as_sqlalchemy_splits_it(url: str) -> None:
    """Whatever password SQLAlchemy would connect with is one arbiter knows and masks."""
    try:
        parsed = dburl.parse(url)
    except ConfigInvalid as exc:
        assert MARK not in exc.message
        return
    sa = make_url(url)
    secrets = parsed.passwords()
    if sa.password is not None:
        assert sa.password in secrets
    for key, value in sa.query.items():
        if "password" in key:
            assert value in secrets
    assert MARK not in (sa.host or "") + (sa.database or "") + (sa.username or "")
    for shown in (dburl.mask_url(url), parsed.identity(), url_without_password(url)):
        assert MARK not in shown, shown


@given(urls(query_password=False))
def test_the_key_of_a_url_without_query_password_is_unchanged(url: str) -> None:
    """Existing breaker and journal folders keep their names."""
    if dburl.problem(url) is None:
        assert url_without_password(url) == old_identity(url)


@given(urls(password=False, query_password=False), st.text(PLAIN, min_size=1, max_size=8))
def test_a_query_password_names_the_same_database_as_none(url: str, secret: str) -> None:
    """``?password=`` changes neither the breaker file nor the journal folder."""
    joined = url + ("&" if "?" in url else "?") + f"password={secret}"
    assert url_without_password(joined) == url_without_password(url)
    assert breaker_path(Path("/d"), joined) == breaker_path(Path("/d"), url)
    assert resilience_dir(Path("/d"), joined) == resilience_dir(Path("/d"), url)


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql+psycopg2://bob:s3cr@t@db/arb", "unencoded '@'"),
    ("postgresql://bob@x:s3cret@db/arb", "unencoded '@'"),
    ("postgresql://bob:s3cret@db:5432@evil/arb", "unencoded '@'"),
    ("postgresql://bob:s3 cret@db/arb", "percent-encode"),
    ("postgresql://bob:s3cret\n@db/arb", "percent-encode"),
    ("postgresql://bob:s3\"cret@db/arb", "percent-encode"),
    ("postgresql://bob:s3cret@db:54x/arb", "port"),
    ("postgresql://bob:s3cret@db:70000/arb", "port"),
    ("postgresql://bob@db/arb?dsn=host%3Ddb%20password%3Ds3cret", "dsn="),
    ("postgresql://bob@db/arb?PASSWORD=s3cret", "password= or sslpassword="),
    ("postgresql://bob@db/arb?Password=s3cret", "password= or sslpassword="),
    ("mysql://bob:s3cret@db/arb", "must be empty"),
    ("postgres://bob:s3cret@db/arb", "must be empty"),
    ("host=db password=s3cret dbname=arb", "must be empty"),
    ("sqlite://s3cret", "must be empty"),
])
def test_a_url_whose_password_cannot_be_isolated_is_refused_unechoed(url: str,
                                                                      reason: str) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        dburl.parse(url)
    assert caught.value.exit_code == 3
    assert reason in caught.value.message
    assert "s3" not in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize(("url", "masked", "identity"), [
    ("postgresql://bob:hunter2@db/arb", "postgresql://bob:***@db/arb", "postgresql://bob@db/arb"),
    ("postgresql+psycopg2://bob@db:5432/arb?password=hunter2",
     "postgresql+psycopg2://bob@db:5432/arb?password=***", "postgresql://bob@db:5432/arb"),
    ("postgresql://bob@db/arb?sslmode=require&password=h%40nter&application_name=a",
     "postgresql://bob@db/arb?sslmode=require&password=***&application_name=a",
     "postgresql://bob@db/arb?sslmode=require&application_name=a"),
    ("postgresql://bob:p%40ss@db/arb?sslpassword=keypw",
     "postgresql://bob:***@db/arb?sslpassword=***", "postgresql://bob@db/arb"),
    ("postgresql://bob:pa:ss/w?rd@db/arb", "postgresql://bob:***@db/arb",
     "postgresql://bob@db/arb"),
    ("postgresql://:hunter2@db/arb", "postgresql://:***@db/arb", "postgresql://@db/arb"),
    ("postgresql://bob:hunter2@[::1]:5432/arb", "postgresql://bob:***@[::1]:5432/arb",
     "postgresql://bob@[::1]:5432/arb"),
    ("postgresql://bob@/arb?host=/tmp", "postgresql://bob@/arb?host=/tmp",
     "postgresql://bob@/arb?host=/tmp"),
    ("sqlite:////var/lib/my arbiter.db", "sqlite:////var/lib/my arbiter.db",
     "sqlite:////var/lib/my arbiter.db"),
])
def test_masked_and_identity_forms(url: str, masked: str, identity: str) -> None:
    assert dburl.mask_url(url) == masked
    assert dburl.identity(url) == identity


@pytest.mark.parametrize(("text", "expected"), [
    ("could not connect to postgresql://u:hunter2@h/db: refused",
     "could not connect to postgresql://u:***@h/db: refused"),
    ("postgresql://u:hun@ter2@h/db (refused)", "postgresql://u:***@h/db (refused)"),
    ("'postgresql://u:hunter2@h/db?password=other2'",
     "'postgresql://u:***@h/db?password=***'"),
    ("host=h user=u password=hunter2 dbname=d", "host=h user=u password=*** dbname=d"),
    ("PGPASSWORD=hunter2 psql", "PGPASSWORD=*** psql"),
    ("password = 'hunter 2' host=h", "password = *** host=h"),
    ("dsn=host%3Dh%20password%3Dhunter2", "dsn=host%3Dh%20password%3D***"),
    ("sqlite:///a.db and postgresql://u:hunter2@h/db", "sqlite:///a.db and postgresql://u:***@h/db"),
    ("no url here", "no url here"),
])
def test_passwords_in_free_text_are_masked(text: str, expected: str) -> None:
    assert dburl.mask_url(text) == expected
    assert "hunter" not in dburl.mask_url(text)


@pytest.mark.parametrize(("url", "password", "expected"), [
    ("postgresql://bob@db/arb", "p@ss w", "postgresql://bob:p%40ss%20w@db/arb"),
    ("postgresql://bob@db/arb?password=kept", "other", "postgresql://bob@db/arb?password=kept"),
    ("postgresql://bob:kept@db/arb", "other", "postgresql://bob:kept@db/arb"),
    ("postgresql://db/arb", "other", "postgresql://db/arb"),
])
def test_database_password_fills_only_a_url_without_one(url: str, password: str,
                                                       expected: str) -> None:
    assert dburl.with_password(url, password) == expected
    assert make_url(expected).password in (None, "kept", password)


def test_passwords_come_raw_and_decoded() -> None:
    url = "postgresql://bob:p%40ss@db/arb?password=a%2Bb&sslpassword=c+d"
    assert dburl.passwords(url) == ["p%40ss", "p@ss", "a%2Bb", "a+b", "c+d", "c d"]
    assert dburl.passwords("postgresql://bob:x@y@db/arb") == []  # refused: none known


@given(st.text(min_size=1, max_size=10).filter(lambda t: t.isprintable()),
       st.text(max_size=12).filter(lambda t: t.isprintable()),
       st.text(PLAIN + " ", min_size=1, max_size=10),
       st.dictionaries(st.sampled_from(["sslmode", "password", "application_name"]),
                       st.text(PLAIN + " +&=", min_size=1, max_size=6), max_size=2))
def test_a_derived_url_renders_to_text_that_parses_back(user: str, password: str,
                                                         database: str,
                                                         query: dict[str, str]) -> None:
    """bench and soak derive URLs (the scratch database): their text keeps every part, and
    passes the same check as the user's."""
    from sqlalchemy.engine import URL

    url = URL.create("postgresql+psycopg2", username=user, password=password, host="db",
                     port=5432, database=database, query=query)
    text = dburl.render(url)
    assert dburl.problem(text) is None, text
    back = make_url(text)
    assert (back.username, back.password, back.host, back.port, back.database, dict(back.query)
            ) == (user, password, "db", 5432, database, query)
    elsewhere = f"postgresql+psycopg2 {user} db 5432 {database} {sorted(query.items())}"
    if len(password) >= 4 and password not in elsewhere:
        assert password not in dburl.mask_url(text)
