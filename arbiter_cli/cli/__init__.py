"""The Typer CLI: parse, call a service, render. Entry point: ``arbiter_cli.cli.app:run``
(the console script; ``main`` for in-process callers)."""
