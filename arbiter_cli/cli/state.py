"""Per-invocation CLI state, set once by the root callback and kept on ``ctx.obj``."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter_cli.errors import ArbiterError, ConfigInvalid, InvalidInput

if TYPE_CHECKING:
    from arbiter_cli.adapters.metrics import RunGauge
    from arbiter_cli.bootstrap import App, RemoteApp
    from arbiter_cli.config import Settings
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.resilience.gateway import Resilience


#: Commands that show who the caller is: in remote mode they ask the server (``/v1/whoami``).
REMOTE_WHOAMI = frozenset({"whoami", "agents remove", "agents cleanup", "tokens revoke"})


def check_server(url: str) -> str:
    """A server URL of remote mode: http(s)://host[:port][/prefix]; exit 2 otherwise."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidInput(f"server: {url!r} is not a server URL (e.g. http://127.0.0.1:8787)",
                           field="server", rule="url")
    if parts.username or parts.password:
        raise InvalidInput("server: a server URL carries no user or password; the token "
                           "goes in --token or the profile", field="server", rule="url")
    return url.rstrip("/")


def private_transport(url: str) -> bool:
    """Whether a token sent to ``url`` is out of other hosts' sight: https, or a loopback host."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" or parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return False


@dataclass
class State:
    json: bool = False  # --json, or --format json
    format: str | None = None  # --format table|tsv (None: table on a terminal, else tsv)
    token: str | None = None
    config_file: Path | None = None
    env: str | None = None
    profile: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    correlation_id: str = ""
    metrics_file: Path | None = None
    verbose: bool = False
    server: str | None = None  # --server (SPEC §15 remote mode); "" forces local mode
    timeout_s: float = 30.0  # --timeout: the remote client's budget, retries included
    command: str = ""
    tenant: str | None = None
    gauges: list[RunGauge] = field(default_factory=list, repr=False)
    secrets: list[str] = field(default_factory=list, repr=False)  # e.g. a --database-url password
    telemetry: Telemetry | None = field(default=None, repr=False)  # set by the boundary
    _settings: Settings | None = field(default=None, repr=False)
    _closers: list[Callable[[], object]] = field(default_factory=list, repr=False)
    _app: App | RemoteApp | None = field(default=None, repr=False)
    _principal: Principal | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """Loaded and validated on first use, so ``--help`` never pays for it."""
        if self._settings is None:
            # deferred: start-up of `arbiter --help`
            from arbiter_cli.config import load_settings

            overrides: dict[str, Any] = {}
            if self.log_level:
                overrides["logging.level"] = self.log_level
            if self.log_format:
                overrides["logging.format"] = self.log_format
            self._settings = load_settings(
                environ=os.environ, env=self.env, config_file=self.config_file,
                overrides=overrides,
            )
        return self._settings

    def remote_url(self) -> str | None:
        """The server of remote mode: --server, then ARBITER_SERVER, then the profile's
        (``login --server``); None in local mode. An empty value forces local mode."""
        for given in (self.server, self.settings.server):
            if given is not None:
                return check_server(given) if given else None
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.adapters.credentials import load_server

        saved = load_server(self.settings.paths.credentials_file, self.profile_name())
        return None if saved is None else check_server(saved)

    def app(self) -> App | RemoteApp:
        """The application on ``database.url``, schema checked (exit 10), built once; in
        remote mode the server's services over HTTP."""
        if self._app is None:
            url = self.remote_url()
            if url is not None:
                # deferred: start-up of `arbiter --help`
                from arbiter_cli.bootstrap import remote_app

                token = self.resolve_token()
                if token and not private_transport(url):
                    # deferred: start-up of `arbiter --help`
                    from arbiter_cli.observability import logging as log

                    log.get_logger().warning(f"the token travels unencrypted to {url}: use "
                                             "https:// for a server off this host")
                self._app = remote_app(self.settings, url, token, timeout_s=self.timeout_s,
                                       correlation_id=self.correlation_id)
                self.on_close(self._app.close)
                return self._app
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.bootstrap import build

        if self._app is None:
            self._app = build(self.settings, resilient=True, telemetry=self.telemetry)
            self._app.correlation_id = self.correlation_id
            self.on_close(self._app.close)
            self.warn_stranded()
            res = self._app.resilience
            if res is not None:
                res.correlation_id = self.correlation_id
                self.on_close(res.flush_warnings)
                self.on_close(res.maybe_refresh)
                self._replay_first(res)
        return self._app

    def warn_stranded(self) -> None:
        """A warning per other journal of data_dir that holds pending writes (issue 17, F1):
        a directory scan and local file reads, no database I/O."""
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.observability.logging import get_logger
        from arbiter_cli.resilience.identity import stranded_warnings

        for message in stranded_warnings(self.settings):
            get_logger().warning(message)

    def _replay_first(self, res: Resilience) -> None:
        """Journaled writes go first, for at most ``resilience.replay_budget`` (SPEC §7)."""
        if res.outage is not None or res.journal.pending() == 0:
            return  # the primary already failed this command: replaying would only wait
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.bootstrap import replay_services
        from arbiter_cli.resilience.replay import replay

        report = replay(res, replay_services(self.settings, res.primary),
                        budget_s=self.settings.resilience.replay_budget,
                        within=res.deadline)
        if report["conflicts"]:
            res.warn(f"{report['conflicts']} journaled write(s) conflicted at replay: "
                     "see `arbiter journal list --conflicts`")
        if report["over_capacity"]:
            res.warn(f"{report['over_capacity']} decision(s) flagged over_capacity at replay: "
                     "their agent held more tasks than its capacity (`arbiter route history "
                     "--over-capacity`)")

    def admit(self) -> None:
        """Authenticate, authorize and rate-limit this command (SPEC §0 order: after 3 and 10)."""
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.bootstrap import RemoteApp
        from arbiter_cli.domain.principal import Principal
        from arbiter_cli.observability import logging as log
        from arbiter_cli.observability.runtime import bind_tenant

        settings = self.settings
        app = self.app()
        if isinstance(app, RemoteApp):  # the server admits every request itself
            self._principal = self._remote_principal(app)
            self.tenant = self._principal.tenant or None
            bind_tenant(self.telemetry, self.tenant)
            return
        if not settings.security.enabled:
            self._refuse_switch_off(app)
            log.get_logger().warning("security.enabled = false: every command acts as admin "
                                     "of tenant 'default'")
            self._principal = Principal.local_admin()
        else:
            self._principal = app.security.admit(self.resolve_token(), self.command)
        self.tenant = self._principal.tenant
        bind_tenant(self.telemetry, self.tenant)

    def _remote_principal(self, app: RemoteApp) -> Principal:
        """Who the token is, asked of the server only where the command shows it (``whoami``,
        the question before a destructive command); elsewhere each answer's ``meta`` says
        the tenant, and the server's admission of the request itself is the check."""
        from arbiter_cli.domain.principal import Principal

        if self.command in REMOTE_WHOAMI:
            return app.security.admit(None, self.command)
        return Principal(tenant="", role="remote", token_id=None)

    def _refuse_switch_off(self, app: App) -> None:
        """``security.enabled = false`` only on a database without tokens (SPEC §4.1).

        Whatever layer set it (a file, the environment, ``--config``), a client cannot switch
        off the security of a database that has tokens: exit 3.
        """

        if app.security.holds_tokens():
            source = self.settings.sources.get("security.enabled", "?")
            raise ConfigInvalid(f"security.enabled = false (from {source}) is refused: this "
                                "database holds tokens, and switching security off is for "
                                "throwaway databases only")

    def resolve_token(self) -> str | None:
        """--token, then ARBITER_TOKEN, then the credentials file's profile.

        An explicitly empty ``--token ""`` or ``ARBITER_TOKEN=`` is returned as ``""`` (exit 6
        at admission), never a fall-back to a profile's token (SPEC §4.1).
        """
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.adapters.credentials import load_token

        settings = self.settings
        if self.token is not None:
            return self.token
        if settings.token is not None:
            return settings.token
        return load_token(settings.paths.credentials_file, self.profile_name())

    def profile_name(self) -> str:
        """--profile, then ARBITER_PROFILE, then ``default``; exit 2 if it is not a valid name."""
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.adapters.credentials import check_profile

        return check_profile(self.profile if self.profile is not None else self.settings.profile)

    def gauge(self, name: str, help: str, value: float, **labels: str) -> None:
        """Add a figure to this run's ``--metrics-file`` (written when the command ends)."""
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.adapters.metrics import RunGauge

        self.gauges.append(RunGauge(name, help, value, labels))

    def on_close(self, closer: Callable[[], object]) -> None:
        """Run ``closer`` when the command ends, whatever happens."""
        self._closers.append(closer)

    def principal(self) -> Principal:
        """The admitted caller; commands of the no-token list act as admin of ``default``."""
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.domain.principal import Principal

        if self._principal is None:
            # deferred: start-up of `arbiter --help`
            from arbiter_cli.observability.runtime import bind_tenant

            self._principal = Principal.local_admin()
            self.tenant = self._principal.tenant
            bind_tenant(self.telemetry, self.tenant)
        return self._principal

    def meta(self, **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "correlation_id": self.correlation_id,
            "command": self.command,
            "tenant": self.tenant,
        }
        meta.update(extra)
        remote = getattr(self._app, "meta", None)
        if isinstance(remote, dict) and remote:  # remote mode: the server's own meta
            meta["tenant"] = remote.get("tenant", meta["tenant"])
            for name in ("durability", "journal", "stale", "stale_age_s"):
                if name in remote:
                    meta[name] = remote[name]
            if "durability" not in remote:
                meta.pop("durability", None)
            return meta
        res = self._app.resilience if self._app is not None else None
        if res is not None:
            if "durability" in extra:
                self._durability_of_writes(meta)
            if res.stale_age_s is not None:
                meta["stale"] = True
                meta["stale_age_s"] = res.stale_age_s
        return meta

    def _durability_of_writes(self, meta: dict[str, Any]) -> None:
        """What the command's writes returned wins over what the command expected: its last
        write's durability, and where a journaled write is held (``meta.journal``)."""
        writes = self._app.writes if self._app is not None else []
        if not writes:
            return
        durability = writes[-1]
        meta["durability"] = durability.state
        if durability.journal is not None:
            meta["journal"] = dict(durability.journal)  # the only copy: host and folder

    def close(self) -> None:
        """Run every closer, newest first. One that fails with an ``ArbiterError`` (the journal
        or the snapshot could not be opened after the command answered) is reported as a
        warning: it runs in the error boundary's ``finally``, where raising would print a
        traceback instead of the command's one line, and skip the closers after it."""

        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except ArbiterError as exc:
                # deferred: start-up of `arbiter --help`
                from arbiter_cli.observability.logging import get_logger

                get_logger().warning(exc.message)


# ------------------------------------------------------------- the collector during start-up
# Here, not in a module of its own: `arbiter --help` runs through it too and may load only the
# cli modules tests/cli/test_commands.py allows (docs/performance.md, Start-up).
#
# Before a command does its work it imports several hundred modules (SQLAlchemy, typer,
# arbiter's own): tens of thousands of objects that live until the process exits. CPython's
# collector, triggered by allocation counts, traversed them again and again (about 120 young,
# 11 middle and one full collection in every `arbiter agents list`), and none of them can be
# garbage. So the console script (``main()`` without ``argv``: the process's own command
# line) starts with the collector off; once the command is admitted, ``resume_collector``
# moves what is alive into the permanent generation (``gc.freeze``) and turns the collector
# back on, so what the command itself allocates (a long ``serve``, ``soak`` or ``bench``
# included) is collected as before. In-process callers pass ``argv`` (the tests, an embedding
# program) and are never paused: a freeze per call would keep each call's start-up garbage for
# the life of their process.


class _Pause:
    active = False  # the collector is off because of ``console_start``


@contextmanager
def console_start() -> Iterator[None]:
    """The console script's collector off until ``resume_collector`` (or the end: a usage
    error or ``--help`` never reaches admission); a no-op when it is off already."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    _Pause.active = True
    try:
        yield
    finally:
        _Pause.active = False
        gc.enable()


def resume_collector() -> None:
    """Start-up is over: what is alive now stays (``gc.freeze``), the collector runs again."""
    if not _Pause.active:
        return
    _Pause.active = False
    gc.freeze()
    gc.enable()
