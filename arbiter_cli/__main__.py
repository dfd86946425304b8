"""``python -m arbiter_cli`` runs the CLI."""

from arbiter_cli.cli.app import main

raise SystemExit(main())
