"""The schema revisions this package knows, newest last; checked against alembic by a test."""

REVISIONS = ("0001_initial", "0002_decision_examples", "0003_database_identity",
             "0004_decision_agent_unavailable", "0005_arm_change_detector",
             "0006_agent_capabilities")
HEAD = REVISIONS[-1]
KNOWN = frozenset(REVISIONS)
