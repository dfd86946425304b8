"""The credentials file: ``[profiles.<name>] token = "arb_…"`` (SPEC §4, §4.1 "Files").

- Read with ``tomllib`` and written with ``tomli-w``, never by string formatting, so no profile
  name or token can inject TOML. Writing keeps every other key of the document.
- Created 0600 (in a 0700 folder when arbiter creates the folder) and replaced atomically.
- A file that group or others may access is refused with the ``chmod`` that fixes it, as ssh
  refuses a private key.
- Profile names match ``^[A-Za-z0-9._-]{1,64}$``; anything else is exit 2.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from arbiter_cli.adapters.files import FILE_MODE, others_may_access, private_dir
from arbiter_cli.errors import ConfigInvalid, Conflict, InvalidInput

PROFILE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_profile(name: str) -> str:
    """``name`` if it is a valid profile name; ``InvalidInput`` (exit 2) otherwise."""
    if not PROFILE_RE.fullmatch(name):
        shown = repr(name) if len(name) <= 70 else repr(name[:70]) + "…"
        raise InvalidInput(f"profile: {shown} is not a profile name (1 to 64 letters, digits, "
                           "'.', '_' or '-')", field="profile", rule="pattern")
    return name


def read_profiles(path: Path) -> dict[str, str]:
    """Profile name → token, for the valid names that hold a token."""
    profiles = _profiles(_document(path), path)
    return {name: body["token"] for name, body in profiles.items()
            if PROFILE_RE.fullmatch(name) and isinstance(body, dict)
            and isinstance(body.get("token"), str) and body["token"]}


def load_token(path: Path, profile: str) -> str | None:
    return read_profiles(path).get(check_profile(profile))


def load_server(path: Path, profile: str) -> str | None:
    """The server URL saved with ``profile`` (``login --server``), if any."""
    entry = _profiles(_document(path), path).get(check_profile(profile))
    server = entry.get("server") if isinstance(entry, dict) else None
    return server if isinstance(server, str) and server else None


def check_saveable(path: Path, profile: str, token: str | None = None, *, force: bool,
                   hint: str = "pass --force to replace it, or choose another profile "
                   "(--profile NAME)") -> bool:
    """Raise unless ``token`` may be saved as ``profile`` now; True if it would replace one.

    Commands call this before they commit anything, so a refusal (a bad name: 2, an unreadable
    or unsafe file: 3, a profile holding another token without ``force``: 5) leaves no trace.
    """
    check_profile(profile)
    held = read_profiles(path).get(profile)
    replaced = held is not None and held != token
    if replaced and not force:
        raise Conflict(f"profile {profile!r} already holds a token in {path}: {hint}")
    return replaced


def save_token(path: Path, profile: str, token: str, *, force: bool,
               server: str | None = None) -> bool:
    """Store ``token`` as ``profile``, with the ``server`` it is for (remote mode) or none (a
    local database's token); refuse to replace another token unless ``force``.

    Returns True when an existing, different token was replaced.
    """
    replaced = check_saveable(path, profile, token, force=force)
    document = _document(path)
    profiles = _profiles(document, path)
    entry = profiles.get(profile)
    profiles[profile] = {**(entry if isinstance(entry, dict) else {}), "token": token}
    if server:
        profiles[profile]["server"] = server
    else:  # a token of a local database: never sent to a server saved for an older token
        profiles[profile].pop("server", None)
    document["profiles"] = profiles
    _write(path, document)
    return replaced


def _document(path: Path) -> dict[str, Any]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigInvalid(f"cannot read credentials file {path}: {exc.strerror}") from None
    with handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigInvalid(f"credentials file {path} is not a regular file")
        if others_may_access(mode):
            raise ConfigInvalid(
                f"credentials file {path} is accessible by others (mode "
                f"{stat.S_IMODE(mode):04o}); it holds tokens: run `chmod 600 {path}`")
        try:
            return tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigInvalid(f"cannot read credentials file {path}: {exc}") from None


def _profiles(document: dict[str, Any], path: Path) -> dict[str, Any]:
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigInvalid(f"{path}: [profiles] must be a table")
    return profiles


def _write(path: Path, document: dict[str, Any]) -> None:
    import tomli_w

    body = tomli_w.dumps(document).encode()
    try:
        private_dir(path.parent)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    except OSError as exc:
        raise ConfigInvalid(f"cannot write credentials file {path}: {exc.strerror}") from None
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(handle, FILE_MODE)
            os.write(handle, body)
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigInvalid(f"cannot write credentials file {path}: {exc.strerror}") from None
    os.chmod(path, FILE_MODE)
