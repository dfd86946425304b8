"""The state file of a live soak run, read by ``arbiter health`` (check ``soak:rss``).

While ``arbiter soak`` runs it keeps ``<data_dir>/soak/<pid>.json``::

    {"pid", "started_at", "updated_at", "rss_bytes", "max_rss_bytes", "soft_limit_bytes",
     "status": "pass" | "warn"}

rewritten atomically (a temporary file, then ``os.replace``) at every sample and removed when
the run ends. ``status`` is ``warn`` once RSS is over the soft limit (80 % of ``--max-rss``).
A file whose process is gone (a run killed with SIGKILL) is stale: ``live_states`` removes it.
Standard library only: health imports this on every call.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

FIELDS = ("pid", "started_at", "updated_at", "rss_bytes", "max_rss_bytes", "soft_limit_bytes",
          "status")


def state_dir(data_dir: Path) -> Path:
    return data_dir / "soak"


def state_path(data_dir: Path, pid: int) -> Path:
    return state_dir(data_dir) / f"{pid}.json"


def write_state(data_dir: Path, state: dict[str, Any]) -> Path:
    """Write one run's state atomically; readers never see half a file."""
    path = state_path(data_dir, int(state["pid"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({k: state[k] for k in FIELDS}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_state(data_dir: Path, pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(data_dir, pid).unlink()


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def live_states(data_dir: Path) -> list[dict[str, Any]]:
    """The states of soak runs whose process is alive, by pid; stale or broken files removed."""
    folder = state_dir(data_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not ours: leave it alone
        if not isinstance(state, dict) or path.stem != str(pid):
            continue
        if not pid_alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(state)
    return sorted(found, key=lambda s: int(s["pid"]))
