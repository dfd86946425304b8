"""Alembic migrations shipped inside the package (script_location ``arbiter_cli:migrations``)."""
