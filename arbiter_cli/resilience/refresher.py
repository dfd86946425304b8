"""The local snapshot's refresh, off the command's critical path (issue 12 leftover).

Measured at 10 000 agents on PostgreSQL (docs/resilience.md): a first refresh takes seconds and
an incremental one about 0.3 s, far more than the 50 ms a command may spend on it. So after a
command that reached the primary, a refresh that is due runs in a *detached process*: the
command takes the refresh lock, starts ``python -m arbiter_cli.resilience.refresher`` through
``sh -c '… &'`` (so nothing is left for this process to reap) with the locked descriptor
inherited, and closes its own copy. The child holds the lock while it refreshes and exits
silently; the kernel frees the lock if it dies. Only one refresh runs per host at a time, so a
burst of commands starts one process, not one each.

``resilience.snapshot_refresh`` chooses: ``inline`` (in the command, as before), ``background``,
or ``auto`` (the default): inline while refreshes are cheap (the last one took under 50 ms, or
there is none yet and the primary holds fewer than 1 000 agents), in the background otherwise.
Where no ``sh`` exists (Windows) the refresh runs inline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from arbiter_cli.adapters.sql import deadline
from arbiter_cli.adapters.sql.engine import engine_for
from arbiter_cli.config import load_settings
from arbiter_cli.resilience.journal import resilience_dir
from arbiter_cli.resilience.snapshot import LocalStore

if TYPE_CHECKING:
    from arbiter_cli.config import Settings
    from arbiter_cli.resilience.snapshot import LocalStore

INLINE_MAX_S = 0.05  # the part of a command's critical path a refresh may take
FIRST_INLINE_AGENTS = 1_000  # below this a first refresh is cheap enough to run inline
BACKGROUND_BUDGET_S = 60.0  # the detached refresh's deadline (a blackhole cannot keep it)


def in_background(settings: Settings, store: LocalStore, count_agents: object) -> bool:
    """Whether this refresh should leave the critical path (see the module docstring).

    ``count_agents`` is a callable returning the primary's agent count, asked only before
    the first refresh."""
    mode = settings.resilience.snapshot_refresh
    if mode != "auto":
        return mode == "background"
    took = store.last_took_s()
    if took is not None:
        return took > INLINE_MAX_S
    try:
        return int(count_agents()) >= FIRST_INLINE_AGENTS  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - unknown cost: the inline path reports what is wrong
        return False


def spawn(settings: Settings, store: LocalStore) -> bool:
    """Start a detached refresh holding the refresh lock; False if it cannot (run inline)."""
    shell = shutil.which("sh")
    if shell is None:
        return False
    fd = store.try_lock()
    if fd is None:
        return True  # another process is refreshing right now: nothing to do
    argv = [sys.executable, "-m", "arbiter_cli.resilience.refresher", "--env", settings.env,
            "--lock-fd", str(fd)]
    config = _config_file(settings)
    if config is not None:
        argv += ["--config", config]
    try:
        subprocess.run([shell, "-c", 'exec "$@" </dev/null >/dev/null 2>&1 &', "arbiter-refresh",
                        *argv], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                       check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.close(fd)  # the child holds the lock now (or nobody does, if it failed to start)
    return True


def _config_file(settings: Settings) -> str | None:
    """The ``--config`` file of this run, if any (the others are found again by the child)."""
    own = {str(settings.paths.config_dir / "settings.toml"),
           str(settings.paths.config_dir / ".secrets.toml")}
    extra = [f for f in settings.files if f not in own]
    return extra[-1] if extra else None


def main(argv: list[str] | None = None) -> int:
    """The detached refresh: the same settings as the command, the lock already held."""
    parser = argparse.ArgumentParser(prog="arbiter-refresh", add_help=False)
    parser.add_argument("--env")
    parser.add_argument("--config")
    parser.add_argument("--lock-fd", type=int, required=True)
    options, _ = parser.parse_known_args(argv)
    try:
        return _refresh(options)
    except Exception:  # noqa: BLE001 - nobody is listening: the next command tries again
        return 1
    finally:
        os.close(options.lock_fd)


def _refresh(options: argparse.Namespace) -> int:
    settings = load_settings(environ=os.environ, env=options.env,
                             config_file=Path(options.config) if options.config else None)
    deadline.install()
    engine = engine_for(settings)  # a process of its own: no command's telemetry to add
    try:
        store = LocalStore(resilience_dir(settings.paths.data_dir, settings.database_url))
        with deadline.Deadline(BACKGROUND_BUDGET_S).active():
            store.refresh(engine, interval_s=settings.resilience.snapshot_interval,
                          lock_held=True)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
