"""The schema revisions this package knows, newest last; checked against alembic by a test."""

REVISIONS = ("0001_initial",)
HEAD = REVISIONS[-1]
KNOWN = frozenset(REVISIONS)
