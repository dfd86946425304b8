"""Database URLs: the one place that parses them, masks their passwords and names them.

A password can sit in a URL's user info (``postgresql://user:pw@host/db``) or in a query
argument (``?password=pw``; psycopg2 hands every query argument to libpq, so ``sslpassword=``
carries one too). Everything that shows, logs or stores a URL goes through this module:

- ``problem(url)`` / ``parse(url)``: the parts exactly as SQLAlchemy's ``make_url`` splits them
  (the same pattern, copied from SQLAlchemy 2.1 ``engine/url.py``; a property test keeps the two
  in step), or the reason the URL is refused. A refused URL is exit 3 and never echoed. Refused:
  anything that does not parse, and every URL whose password cannot be isolated safely:

  * an unencoded ``@`` in the user name or password (``user:p@ss@host``): the parser would
    take ``ss@host`` for the host, and every message naming the host would show the
    password's tail;
  * control characters anywhere, and spaces, quotes, ``<``, ``>`` or backslashes in the user
    info, host or port (a password containing one would be cut in two wherever a URL is found
    in free text);
  * a ``dsn=`` query argument (a whole libpq connection string, password included, that the
    URL's parts no longer describe) and password arguments other than ``password=`` and
    ``sslpassword=`` (libpq knows no other, and would fail at connect time).

- ``mask_url(text)``: a URL, or any text holding URLs or ``password=`` pairs (libpq key-value
  strings included), with every password replaced by ``***``;
- ``identity(url)``: the password-free form that names a primary: the breaker's and journal's
  key and the breaker file's label. ``?password=`` arguments are left out, so a URL names the
  same primary with or without one; for every other URL the form is the one arbiter has always
  used (existing data folders keep their keys);
- ``passwords(url)``: every password of a URL in the forms it can take, for redaction;
- ``with_password(url, password)``: ``database.password`` spliced into a URL that has none;
- ``render(url)``: a SQLAlchemy ``URL`` (a derived one: the scratch database of bench and
  soak) back to text that ``parse`` accepts.

This module imports only the standard library (no SQLAlchemy at start-up).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

from arbiter_cli.errors import ConfigInvalid

MASK = "***"
SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")
PASSWORD_ARGUMENTS = ("password", "sslpassword")  # libpq's connection keywords holding one
SHAPE = ("empty, sqlite:///PATH or postgresql+psycopg2://USER@HOST[:PORT]/DB (a password "
         "goes after USER and a colon, percent-encoded)")

# SQLAlchemy 2.1, sqlalchemy/engine/url.py, _parse_url (MIT licence): the same groups, so the
# password arbiter masks is the password SQLAlchemy connects with.
_PATTERN = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE = re.compile(r"[\s\"'<>\\`\x00-\x1f\x7f]")
_URL_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^\s\"<>`]*)")
_PASSWORD_PAIR = re.compile(r"(?i)(password\s*(?:=|%3D)\s*)('[^']*'|\"[^\"]*\"|[^\s&'\",;)\]}]*)")


@dataclass(frozen=True)
class QueryArgument:
    raw: str  # ``key=value`` as written

    @property
    def key(self) -> str:
        return unquote_plus(self.raw.partition("=")[0])

    @property
    def value(self) -> str:
        return self.raw.partition("=")[2]

    @property
    def secret(self) -> bool:
        return "password" in self.key.lower()


@dataclass(frozen=True)
class DatabaseUrl:
    """A URL that parsed and whose passwords are isolated; spans index into ``text``."""

    text: str
    scheme: str
    username_end: int | None  # end of the user name, where ``:password`` would start
    password_span: tuple[int, int] | None  # ``:password``, colon included
    query_start: int | None  # index after ``?``
    arguments: tuple[QueryArgument, ...]

    def masked(self) -> str:
        """The URL with ``***`` for every password."""
        return self._rebuilt(password=":" + MASK, secret=lambda a: a.raw.partition("=")[0]
                             + "=" + MASK)

    def identity(self) -> str:
        """The URL without its passwords, scheme ``postgresql+psycopg2`` as ``postgresql``."""
        bare = self._rebuilt(password="", secret=lambda _argument: None)
        return re.sub(r"^postgresql\+psycopg2://", "postgresql://", bare)

    def passwords(self) -> list[str]:
        found: list[str] = []
        if self.password_span is not None:
            raw = self.text[self.password_span[0] + 1:self.password_span[1]]
            found += [raw, unquote(raw)]
        for argument in self.arguments:
            if argument.secret:
                found += [argument.value, unquote_plus(argument.value)]
        return list(dict.fromkeys(p for p in found if p))

    def _rebuilt(self, *, password: str, secret: Callable[[QueryArgument], str | None]) -> str:
        text = self.text
        end = len(text) if self.query_start is None else self.query_start - 1
        head = text[:end]
        if self.password_span is not None:
            start, stop = self.password_span
            head = text[:start] + password + text[stop:end]
        if self.query_start is None:
            return head
        kept = [a.raw if not a.secret else secret(a) for a in self.arguments]
        query = "&".join(k for k in kept if k is not None)
        return f"{head}?{query}" if query or not self.arguments else head


def problem(url: str) -> str | None:
    """Why ``url`` is refused (never echoing it), or None when it is fine."""
    try:
        parse(url)
    except ConfigInvalid as exc:
        return exc.message.removeprefix("database URL ")
    return None


def parse(url: str) -> DatabaseUrl:
    """The parts of ``url``; ``ConfigInvalid`` (exit 3, the URL not echoed) if it is refused."""
    scheme = url.partition("://")[0]
    if scheme not in SCHEMES or (scheme == "sqlite" and not url.startswith("sqlite:///")):
        raise ConfigInvalid(f"database URL must be {SHAPE}")
    match = _PATTERN.match(url)
    if scheme == "sqlite":  # a path: no user info, nothing to isolate
        if match is None or match.end() != len(url) or "\n" in url:
            raise ConfigInvalid(f"database URL must be {SHAPE}")
        return _parsed(url, match, scheme)
    if _CONTROL.search(url):
        raise ConfigInvalid("database URL holds a control character: percent-encode it")
    if match is None or match.end() != len(url):
        raise ConfigInvalid(f"database URL must be {SHAPE}")
    if _UNSAFE.search(url[:_authority_end(match)]):
        raise ConfigInvalid("database URL holds a space, a quote or a backslash in its user "
                            "name, password or host: percent-encode it (a space is %20, a "
                            "quote %27)")
    parts = match.groupdict()
    if any("@" in (parts[name] or "") for name in ("username", "ipv4host", "port")):
        raise ConfigInvalid("database URL has an unencoded '@' in its user name or password: "
                            "write it as %40 (the password cannot be told from the host)")
    port = parts["port"]
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigInvalid("database URL has a port that is not a number from 1 to 65535")
    parsed = _parsed(url, match, scheme)
    for argument in parsed.arguments:
        key = argument.key.lower()
        if key == "dsn":
            raise ConfigInvalid("database URL has a dsn= query argument: give the host, user, "
                                "password and database as parts of the URL")
        if argument.secret and argument.key not in PASSWORD_ARGUMENTS:
            raise ConfigInvalid("database URL has a password argument that libpq does not "
                                "know: write password= or sslpassword= (lower case)")
    return parsed


def _authority_end(match: re.Match[str]) -> int:
    """Where the user info, host and port end: at the database path or the query."""
    for group in ("database", "query"):
        if match.group(group) is not None:
            return match.start(group) - 1
    return match.end()


def _parsed(url: str, match: re.Match[str], scheme: str) -> DatabaseUrl:
    password_span = None
    if match.group("password") is not None:
        start, stop = match.span("password")
        password_span = (start - 1, stop)
    username_end = match.end("username") if match.group("username") is not None else None
    query_start = match.start("query") if match.group("query") is not None else None
    query = match.group("query") or ""
    arguments = tuple(QueryArgument(piece) for piece in query.split("&") if piece)
    return DatabaseUrl(text=url, scheme=scheme, username_end=username_end,
                       password_span=password_span, query_start=query_start,
                       arguments=arguments)


def identity(url: str) -> str:
    """The password-free name of the database at ``url`` (breaker and journal keys)."""
    return parse(url).identity()


def passwords(url: str) -> list[str]:
    """The passwords in ``url``, raw and decoded; none for a URL that is refused."""
    try:
        return parse(url).passwords()
    except ConfigInvalid:
        return []


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (URL-quoted) in its user info, if it names a user and has none."""
    if not password or not url.startswith("postgresql"):
        return url
    parsed = parse(url)
    if parsed.username_end is None or parsed.passwords():
        return url
    at = parsed.username_end
    return f"{url[:at]}:{quote(password, safe='')}{url[at:]}"


def render(url: Any) -> str:
    """A SQLAlchemy ``URL`` as text that ``parse`` accepts: like ``render_as_string(
    hide_password=False)``, with the user name and password percent-encoded in full (SQLAlchemy
    leaves spaces and ``+`` in them as they are)."""
    text: str = url._replace(username=None, password=None).render_as_string(hide_password=False)
    if url.username is None:
        return text
    userinfo = quote(url.username, safe="")
    if url.password is not None:
        userinfo += ":" + quote(str(url.password), safe="")
    scheme, _, rest = text.partition("://")
    return f"{scheme}://{userinfo}@{rest}"


def mask_url(text: str) -> str:
    """``text`` with every password of a URL (or of a ``password=`` pair) replaced by ``***``."""
    if "://" not in text and "assword" not in text.lower():
        return text
    if not _UNSAFE.search(text):
        try:
            return parse(text).masked()  # one whole URL: exact, whatever it holds
        except ConfigInvalid:
            pass
    text = _URL_IN_TEXT.sub(_mask_user_info, text)
    return _PASSWORD_PAIR.sub(_mask_pair, text)


def _mask_user_info(match: re.Match[str]) -> str:
    """In free text, everything between ``user:`` and the last ``@`` of the URL is hidden.

    A host never holds an ``@``, so the last one ends the user info; when a database name or
    query holds one, more than the password is hidden, never less.
    """
    rest = match.group(2)
    at = rest.rfind("@")
    colon = rest.find(":", 0, max(at, 0))
    if at < 0 or colon < 0:
        return match.group(0)
    return f"{match.group(1)}{rest[:colon]}:{MASK}{rest[at:]}"


def _mask_pair(match: re.Match[str]) -> str:
    return match.group(1) + MASK if match.group(2) else match.group(0)
