"""Resilience of a network primary (SPEC §7): faults, deadlines, retries, breaker, journal."""
