"""The Typer CLI: parse, call a service, render. Entry point: ``arbiter_cli.cli.app:main``."""
