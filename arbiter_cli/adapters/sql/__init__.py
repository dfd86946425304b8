"""SQLite and PostgreSQL storage: SQLModel tables, engines, and the unit of work."""
