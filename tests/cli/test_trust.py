"""SPEC §4.1 on SQLite and PostgreSQL: no switch-off from the client, explicit empty tokens,
admins that cannot be lost, and positive token lifetimes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dbstate import dump
from tests.helpers import CliResult, cli, fresh_postgres_database


@dataclass
class Store:
    url: str
    admin: str
    credentials: Path
    config_dir: Path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, clean_env: dict[str, str],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """``arbiter init`` on a SQLite file or a fresh PostgreSQL database."""
    config = Path(clean_env["ARBITER_CONFIG_DIR"])

    def ready(url: str) -> Store:
        init = cli("--json", "init")
        assert init.exit_code == 0, init
        return Store(url, init.json()["admin_token"], config / "credentials.toml", config)

    if request.param == "sqlite":
        yield ready(f"sqlite:///{Path(clean_env['ARBITER_DATA_DIR']) / 'arbiter.db'}")
    else:
        with fresh_postgres_database("trust") as url:
            monkeypatch.setenv("ARBITER_DATABASE__URL", url)
            yield ready(url)


def ok(result: CliResult) -> dict[str, Any]:
    assert result.exit_code == 0, result
    return result.json()


def tokens(store: Store) -> list[dict[str, Any]]:
    return ok(cli("--json", "--token", store.admin, "tokens", "list", "--limit", "0"))["items"]


def one_line(result: CliResult, code: int) -> str:
    assert result.exit_code == code, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result
    return result.stderr


# ---------------------------------------------------------------------------- H4


def test_security_cannot_be_switched_off_from_the_environment(store: Store):
    """The attack of H4: a permanent admin token with no token at all."""
    before = dump(store.url)
    result = cli("tokens", "create", "--role", "admin", "--name", "backdoor",
                 env={"ARBITER_SECURITY__ENABLED": "false"})
    assert "holds tokens" in one_line(result, 3) and "environment" in result.stderr
    assert dump(store.url) == before
    as_json = cli("--json", "agents", "list", env={"ARBITER_SECURITY__ENABLED": "false"})
    assert as_json.exit_code == 3 and as_json.error()["code"] == "config_invalid"


@pytest.mark.parametrize("layer", ["settings.toml", "--config"])
def test_security_cannot_be_switched_off_from_any_file_either(store: Store, layer: str,
                                                              tmp_path: Path):
    body = "[default.security]\nenabled = false\n"
    if layer == "settings.toml":
        (store.config_dir / "settings.toml").write_text(body)
        args: list[str] = []
    else:
        (tmp_path / "off.toml").write_text(body)
        args = ["--config", str(tmp_path / "off.toml")]
    before = dump(store.url)
    for command in (["whoami"], ["agents", "register", "--id", "x", "--name", "X",
                                 "--model-family", "m", "--task-type", "code-editing"]):
        one_line(cli(*args, *command), 3)
    assert dump(store.url) == before


# ---------------------------------------------------------------------------- M5


@pytest.mark.parametrize("how", ["root", "after", "environment"])
def test_an_explicitly_empty_token_is_exit_6_never_the_profile(store: Store, how: str):
    args = {"root": ["--token", "", "--json", "whoami"],
            "after": ["--json", "whoami", "--token", ""],
            "environment": ["--json", "whoami"]}[how]
    env = {"ARBITER_TOKEN": ""} if how == "environment" else None
    assert ok(cli("--json", "whoami"))["role"] == "admin"  # the profile would answer
    result = cli(*args, env=env)
    assert result.exit_code == 6, result
    assert result.error()["code"] == "unauthenticated" and "empty" in result.error()["message"]
    denied = [e for e in ok(cli("--json", "audit", "list", "--action", "auth.denied"))["items"]
              if e["details"].get("reason") == "empty token"]
    assert denied, "the refused call is audited"


# ---------------------------------------------------------------------------- M4


def test_init_never_replaces_a_profile_that_points_elsewhere(store: Store, tmp_path: Path):
    """A second database: its first admin token is refused the taken profile, never lost."""
    other = f"sqlite:///{tmp_path / 'other.db'}"
    before = store.credentials.read_bytes()
    refused = cli("init", "--database-url", other)
    assert "--profile NAME" in one_line(refused, 5)
    assert store.credentials.read_bytes() == before
    assert dump(other)["tokens"] == [] and dump(other)["tenants"] == []
    saved = ok(cli("--json", "--profile", "other", "init", "--database-url", other))
    assert saved["profile"] == "other" and saved["admin_token"].startswith("arb_")
    assert ok(cli("--json", "whoami"))["token_id"] == store.admin.split("_")[1]
    again = ok(cli("--json", "init"))  # idempotent: the taken profile is no obstacle
    assert again["admin_token"] is None


def test_init_force_replaces_the_profile(store: Store, tmp_path: Path):
    other = f"sqlite:///{tmp_path / 'other.db'}"
    replaced = ok(cli("--json", "init", "--database-url", other, "--force"))
    assert replaced["profile"] == "default"
    assert replaced["admin_token"] in store.credentials.read_text()


def test_tenants_create_save_checks_the_profile_before_creating_anything(store: Store):
    taken = ok(cli("--json", "tokens", "create", "--role", "viewer", "--name", "v"))["token"]
    ok(cli("--json", "login", "--token", taken, "--profile", "team-c"))
    file_before, db_before = store.credentials.read_bytes(), dump(store.url)
    result = cli("tenants", "create", "team-c", "--save")
    assert "nothing was created" in one_line(result, 5)
    assert dump(store.url) == db_before and store.credentials.read_bytes() == file_before
    assert "team-c" not in [t["tenant"] for t in ok(cli("--json", "tenants", "list"))["items"]]
    created = ok(cli("--json", "tenants", "create", "team-d", "--save"))
    assert created["saved"] is True
    assert ok(cli("--json", "--profile", "team-d", "whoami"))["tenant"] == "team-d"


def test_the_last_active_admin_token_is_kept_without_force(store: Store):
    own = store.admin.split("_")[1]
    refused = cli("--json", "tokens", "revoke", own, "--yes")
    assert refused.exit_code == 5 and "last active admin" in refused.error()["message"]
    expired = ok(cli("--json", "tokens", "create", "--role", "admin", "--name", "short",
                     "--expires-in", "1s"))
    viewer = ok(cli("--json", "tokens", "create", "--role", "viewer", "--name", "v"))
    time.sleep(1.1)  # an expired admin token is no admin
    assert cli("tokens", "revoke", own, "--yes").exit_code == 5
    assert ok(cli("--json", "tokens", "revoke", viewer["id"], "--yes"))["revoked_at"]
    second = ok(cli("--json", "tokens", "create", "--role", "admin", "--name", "second"))
    assert ok(cli("--json", "tokens", "revoke", own, "--yes"))["revoked_at"]  # one is left
    last = cli("--json", "--token", second["token"], "tokens", "revoke", second["id"], "--yes")
    assert last.exit_code == 5
    forced = cli("--json", "--token", second["token"], "tokens", "revoke", second["id"],
                 "--yes", "--force")
    assert forced.exit_code == 0, forced
    assert expired["id"]


def test_a_revoked_only_database_still_holds_tokens(store: Store):
    """Revoking every token does not turn a real database into a throwaway one."""
    mine = tokens(store)[0]["id"]
    ok(cli("--json", "tokens", "revoke", mine, "--yes", "--force"))
    refused = cli("whoami", env={"ARBITER_SECURITY__ENABLED": "false"})
    assert "holds tokens" in one_line(refused, 3)


# ---------------------------------------------------------------------------- L7


@pytest.mark.parametrize("duration", ["0s", "0m", "0h", "0d"])
def test_a_token_lifetime_must_be_positive(store: Store, duration: str):
    before = len(tokens(store))
    result = cli("--json", "tokens", "create", "--role", "viewer", "--name", "x",
                 "--expires-in", duration)
    assert result.exit_code == 2, result
    assert result.error()["details"] == {"field": "expires_in", "rule": "positive"}
    assert len(tokens(store)) == before
