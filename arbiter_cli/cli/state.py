"""Per-invocation CLI state, set once by the root callback and kept on ``ctx.obj``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arbiter_cli.bootstrap import App
    from arbiter_cli.config import Settings
    from arbiter_cli.domain.principal import Principal


@dataclass
class State:
    json: bool = False
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
    _settings: Settings | None = field(default=None, repr=False)
    _closers: list[Callable[[], object]] = field(default_factory=list, repr=False)

    @property
    def settings(self) -> Settings:
        """Loaded and validated on first use, so ``--help`` never pays for it."""
        if self._settings is None:
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

    def app(self, *, url: str | None = None, check_schema: bool = True) -> App:
        from arbiter_cli.bootstrap import build

        app = build(self.settings, url=url, check_schema=check_schema)
        self.on_close(app.close)
        return app

    def on_close(self, closer: Callable[[], object]) -> None:
        """Run ``closer`` when the command ends, whatever happens."""
        self._closers.append(closer)

    def principal(self) -> Principal:
        """The caller. Until tokens exist, local access acts as admin of tenant ``default``."""
        from arbiter_cli.domain.principal import Principal

        principal = Principal.local_admin()
        self.tenant = principal.tenant
        return principal

    def meta(self, **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "correlation_id": self.correlation_id,
            "command": self.command,
            "tenant": self.tenant,
        }
        meta.update(extra)
        return meta

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
