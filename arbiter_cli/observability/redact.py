"""The one redaction rule for everything arbiter logs or traces (SPEC §4 "Secrets", §9).

A redactor replaces, in any string:

- every known secret value (``Settings.secret_values()``, the ``--token`` in use), also in its
  URL-quoted form as spliced into a DSN;
- the secret part of anything shaped like an API token (``arb_<id>_***``);
- every password of a database URL, and every ``password=`` pair (``dburl.mask_url``), whether
  or not it is a known secret.

Secrets shorter than ``MIN_SECRET`` characters are not searched for: replacing every ``e`` of a
log line would hide everything and protect nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from arbiter_cli.dburl import mask_url

MIN_SECRET = 4
MASK = "***"
_TOKEN_SECRET = re.compile(r"(arb_[a-z0-9]{12}_)[A-Za-z0-9_-]+")

Redactor = Callable[[str], str]


def make_redactor(secrets: Iterable[str | None]) -> Redactor:
    """A function hiding ``secrets``, token secrets and DSN passwords in a string."""
    needles = sorted({form for secret in secrets if secret and len(secret) >= MIN_SECRET
                      for form in (secret, quote(secret, safe=""))}, key=len, reverse=True)

    def redact(text: str) -> str:
        for needle in needles:
            if needle in text:
                text = text.replace(needle, MASK)
        if "arb_" in text:
            text = _TOKEN_SECRET.sub(r"\1" + MASK, text)
        return mask_url(text)

    return redact


def redact_value(value: Any, redact: Redactor) -> Any:
    """``value`` with every string inside it redacted; other objects become redacted text."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, redact) for v in value]
    return redact(str(value))
