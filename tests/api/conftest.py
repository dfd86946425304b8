"""A live API server for each test: real uvicorn on a free loopback port, a real httpx client.

The store is initialized by the real CLI (`arbiter init`) on SQLite in the test's data dir, or
on a fresh PostgreSQL database; the admin token `init` printed is the client's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.helpers import cli, fresh_postgres_database


@dataclass
class Live:
    url: str
    token: str
    settings: Any

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {} if token == "" else {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20)


def start_server(settings: Any) -> Iterator[str]:
    """uvicorn serving create_api on 127.0.0.1:<free port> in a thread, stopped afterwards."""
    from arbiter_cli.api.server import create_api
    from arbiter_cli.bootstrap import sql_engine

    engine = sql_engine(settings)
    try:
        yield from serve_app(create_api(settings, engine))
    finally:
        engine.dispose()


def serve_app(app: Any) -> Iterator[str]:
    """uvicorn serving the ASGI ``app`` on 127.0.0.1:<free port> in a thread."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def sqlite_live(clean_env: dict[str, str]) -> Iterator[Live]:
    """The live server on SQLite only: for what does not depend on the backend."""
    from arbiter_cli.config import load_settings

    yield from _live(clean_env, load_settings)


@pytest.fixture(params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, clean_env: dict[str, str],
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    from arbiter_cli.config import load_settings

    if request.param == "postgres":
        with fresh_postgres_database("api") as url:
            monkeypatch.setenv("ARBITER_DATABASE__URL", url)
            yield from _live({**clean_env, "ARBITER_DATABASE__URL": url}, load_settings)
    else:
        yield from _live(clean_env, load_settings)


def _live(env: dict[str, str], load_settings: Any) -> Iterator[Live]:
    result = cli("--json", "init")
    assert result.exit_code == 0, result
    token = result.json()["admin_token"]
    settings = load_settings(environ=env)
    for url in start_server(settings):
        yield Live(url=url, token=token, settings=settings)
