"""Child Python processes of the operator tools (the bench's workers, clients and server)."""

from __future__ import annotations

import sys


def python_command(*args: str) -> list[str]:
    """This Python running ``args``, without the working directory on ``sys.path`` (``-P``):
    ``-c``/``-m`` would put it first, and a folder holding an ``arbiter_cli`` (a source
    checkout of another version, say) would then run instead of the arbiter being measured."""
    return [sys.executable, "-P", *args]
