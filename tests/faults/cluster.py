"""A throwaway PostgreSQL cluster for fault tests (SPEC §14): ours to stop, kill and restart.

The cluster lives in a ``mkdtemp`` directory under the system temp dir (mode 0755, owned by
``postgres`` when we run as root), listens on 127.0.0.1 on a free port chosen at start, keeps
its unix socket in that directory, and runs with ``fsync=on`` so that ``stop -m immediate``
is a real crash with recovery. PostgreSQL refuses to run as root, so its binaries run through
``runuser -u postgres --`` when we are root and directly otherwise.

The shared server at 127.0.0.1:5432 is never touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

POSTGRES_USER = "postgres"


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL binaries (or no ``postgres`` user to run them as root)."""


def find_bindir() -> Path | None:
    """``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin`` holding initdb."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                      reverse=True)
    candidates.extend(Path(p) for p in versions)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def unavailable_reason() -> str | None:
    """Why a throwaway cluster cannot run here, or None when it can."""
    if find_bindir() is None:
        return ("no PostgreSQL server binaries (initdb/pg_ctl): install postgresql-15 or put "
                "pg_config on PATH to run tests/faults")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: cannot start PostgreSQL as 'postgres'"
        try:
            import pwd

            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgCluster:
    """One PostgreSQL cluster in a temporary directory; ``cleanup()`` removes every trace.

    ``settings`` are extra ``postgresql.conf`` lines (name → value); ``max_connections`` is
    small by default so tests can exhaust it.
    """

    def __init__(self, *, max_connections: int = 20,
                 settings: Mapping[str, Any] | None = None) -> None:
        bindir = find_bindir()
        reason = unavailable_reason()
        if bindir is None or reason is not None:
            raise ClusterUnavailable(reason or "no PostgreSQL binaries")
        self.bindir = bindir
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self.base = Path(tempfile.mkdtemp(prefix="arbiter-pg-"))
        os.chmod(self.base, 0o755)
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.base, POSTGRES_USER, POSTGRES_USER)
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = 0
        self._initialized = False

    # -- lifecycle ---------------------------------------------------------------------------

    def init(self) -> None:
        """``initdb -A trust -U postgres`` and our settings (once)."""
        if self._initialized:
            return
        self._run_pg("initdb", "-D", str(self.data), "-A", "trust", "-U", POSTGRES_USER,
                     "-E", "UTF8", "--locale=C", "--no-sync", timeout=120)
        self._initialized = True

    def start(self, *, attempts: int = 5) -> None:
        """Start (initdb first if needed) on a fresh free port; waits until it accepts."""
        self.init()
        last = ""
        for _ in range(attempts):
            if not self.port:
                self.port = free_port()
                self._write_conf()
            try:
                self._run_pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                             "-t", "60", "start", timeout=90)
                self._wait_ready()
                return
            except subprocess.CalledProcessError as exc:
                last = f"{exc.stderr or ''}{self._log_tail()}"
                if "could not bind" in last or "already in use" in last:
                    self.port = 0  # someone took the port meanwhile: pick another
                    continue
                break
        raise RuntimeError(f"throwaway PostgreSQL did not start: {last[-2000:]}")

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m immediate|fast|smart``; a stopped cluster stays stopped."""
        if mode not in ("immediate", "fast", "smart"):
            raise ValueError(f"unknown stop mode {mode!r}")
        if not self.running():
            return
        self._run_pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                     timeout=90)

    def restart(self, mode: str = "immediate") -> None:
        """Stop with ``mode`` and start again on the same port."""
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        if not self._initialized:
            return False
        result = subprocess.run(self._pg_argv("pg_ctl", "-D", str(self.data), "status"),
                                capture_output=True, text=True, timeout=30, cwd=self.base)
        return result.returncode == 0

    def cleanup(self) -> None:
        """Stop (immediately) and remove the directory."""
        try:
            if self._initialized and self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- addresses and SQL -------------------------------------------------------------------

    def url(self, dbname: str = "postgres", *, port: int | None = None) -> str:
        """SQLAlchemy URL over TCP (``port`` overrides, e.g. a fault proxy in front)."""
        return f"postgresql+psycopg2://{POSTGRES_USER}@127.0.0.1:{port or self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq DSN for psycopg2, straight to the cluster."""
        return (f"host=127.0.0.1 port={self.port} user={POSTGRES_USER} dbname={dbname} "
                "connect_timeout=10 application_name=arbiter-faults")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql; returns unaligned, tuples-only output."""
        argv = [str(self.bindir / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER, "-d", dbname,
                "-c", sql]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def add_password_role(self, role: str, password: str) -> None:
        """A login role that must give ``password`` (scram-sha-256) over TCP, while every other
        role keeps ``trust``: a pg_hba.conf line in front of initdb's, then a reload."""
        self.psql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        hba = self.data / "pg_hba.conf"
        line = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
        text = hba.read_text()
        if line not in text:
            self._write_as_postgres(hba, line + text)
        self.psql("SELECT pg_reload_conf()")

    def backend_pids(self, application_name: str | None = None) -> list[int]:
        """Client backends (optionally only those of one application_name)."""
        where = "backend_type = 'client backend' AND pid <> pg_backend_pid()"
        if application_name is not None:
            where += f" AND application_name = '{application_name}'"
        out = self.psql(f"SELECT pid FROM pg_stat_activity WHERE {where}")
        return [int(line) for line in out.splitlines() if line.strip()]

    def major_version(self) -> int:
        out = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=30).stdout
        digits = out.strip().split()[-1].split(".")[0] if out.strip() else "0"
        return int(digits) if digits.isdigit() else 0

    # -- internals ---------------------------------------------------------------------------

    def _write_conf(self) -> None:
        lines = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "on",
            "max_connections": str(self.max_connections),
            "superuser_reserved_connections": "0",
            "shared_buffers": "'16MB'",
            "logging_collector": "off",
        }
        if self.major_version() >= 14:
            # after a crash PostgreSQL syncs the whole data directory before recovery; one
            # syncfs() instead of an fsync per file takes restarts from ~2 s to ~0.3 s here
            lines["recovery_init_sync_method"] = "syncfs"
        for name, value in self.settings.items():
            lines[name] = value if isinstance(value, str) else str(value)
        text = "".join(f"{k} = {v}\n" for k, v in lines.items())
        # a separate file included last, rewritten on each port change
        auto = self.data / "arbiter_faults.conf"
        self._write_as_postgres(auto, text)
        conf = self.data / "postgresql.conf"
        include = "include = 'arbiter_faults.conf'\n"
        if include not in conf.read_text():
            self._write_as_postgres(conf, conf.read_text() + include)

    def _write_as_postgres(self, path: Path, text: str) -> None:
        path.write_text(text)
        if self._as_root:
            shutil.chown(path, POSTGRES_USER, POSTGRES_USER)

    def _pg_argv(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bindir / program), *args]
        return ["runuser", "-u", POSTGRES_USER, "--", *argv] if self._as_root else argv

    def _run_pg(self, program: str, *args: str, timeout: float) -> None:
        subprocess.run(self._pg_argv(program, *args), capture_output=True, text=True,
                       timeout=timeout, check=True, cwd=self.base)

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        """``pg_ctl -w`` returns when the postmaster is up; also wait for a real connection."""
        import psycopg2

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg2.connect(self.dsn()).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
