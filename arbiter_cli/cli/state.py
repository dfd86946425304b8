"""Per-invocation CLI state, set once by the root callback and kept on ``ctx.obj``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter_cli.errors import ArbiterError, ConfigInvalid

if TYPE_CHECKING:
    from arbiter_cli.adapters.metrics import RunGauge
    from arbiter_cli.bootstrap import App
    from arbiter_cli.config import Settings
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.resilience.gateway import Resilience


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
    command: str = ""
    tenant: str | None = None
    gauges: list[RunGauge] = field(default_factory=list, repr=False)
    secrets: list[str] = field(default_factory=list, repr=False)  # e.g. a --database-url password
    telemetry: Telemetry | None = field(default=None, repr=False)  # set by the boundary
    _settings: Settings | None = field(default=None, repr=False)
    _closers: list[Callable[[], object]] = field(default_factory=list, repr=False)
    _app: App | None = field(default=None, repr=False)
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

    def app(self) -> App:
        """The application on ``database.url``, schema checked (exit 10), built once."""
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
        from arbiter_cli.domain.principal import Principal
        from arbiter_cli.observability import logging as log
        from arbiter_cli.observability.runtime import bind_tenant

        settings = self.settings
        app = self.app()
        if not settings.security.enabled:
            self._refuse_switch_off(app)
            log.get_logger().warning("security.enabled = false: every command acts as admin "
                                     "of tenant 'default'")
            self._principal = Principal.local_admin()
        else:
            self._principal = app.security.admit(self.resolve_token(), self.command)
        self.tenant = self._principal.tenant
        bind_tenant(self.telemetry, self.tenant)

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
