"""Use cases: load through the ports, let the domain decide, commit, return plain values."""
