"""Pure rules of arbiter: agents, validation, query scoring, performance folding.

Nothing here does I/O or reads a clock or a global random source; time and randomness
are passed in.
"""
