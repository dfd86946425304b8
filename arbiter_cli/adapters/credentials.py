"""The credentials file: ``[profiles.<name>] token = "arb_…"``, mode 0600, replaced atomically."""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

from arbiter_cli.errors import ConfigInvalid, Conflict


def read_profiles(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigInvalid(f"cannot read credentials file {path}: {exc}") from None
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigInvalid(f"{path}: [profiles] must be a table")
    return {name: str(body.get("token", "")) for name, body in profiles.items()
            if isinstance(body, dict) and body.get("token")}


def load_token(path: Path, profile: str) -> str | None:
    return read_profiles(path).get(profile)


def save_token(path: Path, profile: str, token: str, *, force: bool) -> bool:
    """Store ``token`` as ``profile``; refuse to replace another token unless ``force``.

    Returns True when an existing, different token was replaced.
    """
    profiles = read_profiles(path)
    replaced = profile in profiles and profiles[profile] != token
    if replaced and not force:
        raise Conflict(f"profile {profile!r} already holds a token in {path}: use --force to "
                       "replace it, or --profile NAME")
    profiles[profile] = token
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f'[profiles."{name}"]\ntoken = "{value}"\n\n'
                   for name, value in sorted(profiles.items()))
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        os.fchmod(handle, 0o600)
        os.write(handle, body.encode())
        os.fsync(handle)
    finally:
        os.close(handle)
    os.replace(temporary, path)
    os.chmod(path, 0o600)
    return replaced
